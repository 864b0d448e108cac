"""Run a benchmark's trials as Ray tasks, one result file per finished trial.

Locally Ray is started with every core of the machine and each trial asks for
``cpus_per_trial`` of them, so ``cores // cpus_per_trial`` trials run at once; inside
the task torch uses exactly that many threads (Ray also sets ``OMP_NUM_THREADS``),
so parallel trials never oversubscribe the cores. With ``ray_address`` the same
tasks go to an existing cluster (the plugin must be importable there and the data
under the same ``data_path``).

Each task runs in a fresh worker process (``max_calls=1``): RecBole keeps global
state (logger handlers, seeds) and the peak memory of a process is only the trial's
own if the process ran nothing else. The driver writes each trial's file the moment
the task returns, so a run killed at any point (Ctrl-C, ``kill -9``, a lost node)
keeps every finished trial and, run again, runs only the missing ones.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import datetime, timezone

from recbole_metammf.benchmark import store
from recbole_metammf.benchmark.spec import BenchmarkSpec, Trial
from recbole_metammf.errors import UserError

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class ChangedTrialError(UserError, RuntimeError):
    """A finished trial's file was produced under a different configuration than asked now."""


def plan(spec: BenchmarkSpec, out_dir: str, force: bool = False, retry_failed: bool = True):
    """Split the spec's trials into (to_run, finished) given the files in ``out_dir``."""
    to_run, finished, changed = [], [], []
    for trial in spec.trials():
        record = store.load_trial(out_dir, trial.id)
        reason = None if record is None else trial.stale_reason(record)
        if record is None:
            to_run.append(trial)
        elif reason:
            if force:
                to_run.append(trial)
            else:
                changed.append(f"{trial.id} ({reason})")
        elif record["status"] == "failed" and retry_failed:
            to_run.append(trial)
        else:
            finished.append(trial)
    if changed:
        raise ChangedTrialError(
            f"{out_dir} holds trials run under another configuration, code or data ({', '.join(changed)}); "
            "use another --out, or --force to run them again and replace their files")
    return to_run, finished


def _ensure_datasets(spec: BenchmarkSpec) -> None:
    """Build the built-in dataset once in the driver, before parallel trials could race to build it."""
    from recbole_metammf.quick_start import BUILTIN_DATASET, ensure_builtin_dataset

    for trial in spec.trials():
        if trial.dataset == BUILTIN_DATASET:
            ensure_builtin_dataset("BPR", trial.dataset, list(trial.config_files) or None, trial.config_dict)
            return


def _failed_record(trial: Trial, error: str) -> dict:
    from recbole_metammf.benchmark.trial import trial_id

    return {"trial_id": trial_id(trial.model, trial.dataset, trial.seed), "model": trial.model,
            "dataset": trial.dataset, "seed": trial.seed, "status": "failed", "error": error,
            "config_files": list(trial.config_files), "config_overrides": trial.config_dict,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def _remote_functions(cpus_per_trial: int):
    import ray

    @ray.remote(num_cpus=0)
    class Tracker:
        """Which trials are running now (a task tells it when it starts and ends), and every attempt
        of each trial: where it ran (node id, worker pid). Ray retries a task whose worker or node
        was lost (``max_retries``), so a trial with a second attempt lost its first one (issue 23)."""

        def __init__(self):
            self.running = set()
            self.attempts = {}  # trial id -> [(node id, pid), ...] in start order

        def start(self, trial_id, node_id=None, pid=None):
            self.running.add(trial_id)
            self.attempts.setdefault(trial_id, []).append((node_id, pid))

        def end(self, trial_id):
            self.running.discard(trial_id)

        def count(self):
            return len(self.running)

        def status(self):
            """(trials running now, {trial id: attempts} of the trials started more than once)."""
            return len(self.running), {t: a for t, a in self.attempts.items() if len(a) > 1}

    @ray.remote(num_cpus=cpus_per_trial, max_calls=1, max_retries=1)
    def trial_task(trial: Trial, cwd: str, threads: int, tracker):
        # first of all (before the slow imports): an attempt lost early is still known as lost
        node_id = ray.get_runtime_context().get_node_id()
        tracker.start.remote(trial.id, node_id, os.getpid())
        import torch

        from recbole_metammf.benchmark.trial import run_trial

        sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv; a Ray worker's are Ray's own
        if os.path.isdir(cwd):  # relative data_path / log dirs resolve as in the driver
            os.chdir(cwd)
        torch.set_num_threads(threads)
        try:
            record = run_trial(trial.model, trial.dataset, trial.seed, list(trial.config_files) or None,
                               dict(trial.config_dict))
            record["ray_node_id"] = node_id  # which node of a cluster ran it
            return record
        finally:
            tracker.end.remote(trial.id)

    return Tracker, trial_task


def init_ray(ray_address=None, verbose: bool = False) -> bool:
    """Connect to ``ray_address`` or start local Ray on every core; True if this call started Ray."""
    import ray

    if ray.is_initialized():
        return False
    if ray_address:
        ray.init(address=ray_address, log_to_driver=verbose)
    else:
        # Workers inherit the driver's environment: make the plugin importable in them from a checkout.
        paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        if _PACKAGE_ROOT not in paths:
            os.environ["PYTHONPATH"] = os.pathsep.join([_PACKAGE_ROOT, *paths])
        # address="local": always a fresh local instance, never a Ray cluster some other
        # process happens to be running on this machine
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=verbose)
    return True


def run_benchmark(spec: BenchmarkSpec, out_dir: str, ray_address=None, cpus_per_trial: int = 1,
                  force: bool = False, retry_failed: bool = True, verbose: bool = False,
                  command: str | None = None, progress: bool = True, max_trials=None, report: bool = True) -> dict:
    """Run every missing trial of ``spec`` into ``out_dir``; returns ``{'ran', 'skipped', 'failed'}`` ids.

    ``max_trials`` stops submitting after that many (for trying a setup out).
    The report is written at the end (``report=False`` to skip).
    """
    import ray
    from tqdm import tqdm

    out_dir = os.path.abspath(out_dir)
    to_run, finished = plan(spec, out_dir, force=force, retry_failed=retry_failed)
    if max_trials is not None:
        to_run = to_run[:max_trials]
    manifest = store.load_manifest(out_dir)
    runs = manifest.get("runs", [])
    runs.append({"command": command, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "to_run": len(to_run), "skipped": len(finished)})
    store.save_manifest(out_dir, {"command": command or manifest.get("command"),
                                  "spec": store.merged_spec(manifest, spec.to_dict()),
                                  "cpus_per_trial": cpus_per_trial, "runs": runs})
    summary = {"ran": [], "skipped": [t.id for t in finished], "failed": []}
    if finished:
        print(f"{len(finished)} finished trial(s) in {out_dir} kept; {len(to_run)} to run.", file=sys.stderr)

    if to_run:
        _ensure_datasets(spec)
        started_ray = init_ray(ray_address, verbose)
        try:
            _run_tasks(to_run, out_dir, cpus_per_trial, summary, progress)
        finally:
            if started_ray:
                ray.shutdown()
    if report:
        from recbole_metammf.benchmark.report import write_report

        write_report(out_dir)
    return summary


def _run_tasks(to_run, out_dir, cpus_per_trial, summary, progress):
    import ray
    from tqdm import tqdm

    Tracker, trial_task = _remote_functions(cpus_per_trial)
    # On the driver's own node, which the driver cannot outlive anyway: a zero-CPU actor may otherwise
    # land on any node of a cluster and die with it, and with it the record of lost attempts (issue 23)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    tracker = Tracker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=False)).remote()
    # fingerprints taken now, from the configs, code and data the trials start with (not from files
    # edited meanwhile)
    from recbole_metammf.benchmark.spec import fingerprint_of_parts

    parts = {t.id: t.fingerprint_parts() for t in to_run}
    fingerprints = {t.id: fingerprint_of_parts(parts[t.id]) for t in to_run}
    pending = {trial_task.remote(t, os.getcwd(), cpus_per_trial, tracker): t for t in to_run}
    bar = tqdm(total=len(to_run), desc="trials", unit="trial", disable=not progress, file=sys.stderr,
               bar_format="{desc}: {n_fmt}/{total_fmt} |{bar}| {postfix} [elapsed {elapsed}]")
    n_failed = 0
    lost = {}  # trial id -> its lost attempts reported so far (issue 23)

    def report_lost(trial_id, attempts, last_lost=False):
        # every attempt but the last (all of them once the trial has failed) was lost: its worker or
        # its node died, and Ray ran the trial again
        for number, (node_id, pid) in enumerate(attempts if last_lost else attempts[:-1], start=1):
            if number > len(lost.setdefault(trial_id, [])):
                lost[trial_id].append({"attempt": number, "ray_node_id": node_id, "pid": pid})
                again = ("" if number == len(attempts) else
                         f"; Ray runs the trial again (attempt {number + 1}, node {attempts[number][0]})")
                bar.write(f"LOST ATTEMPT {trial_id}: attempt {number} (node {node_id}, pid {pid}) was lost with "
                          f"its worker or node{again}")

    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                trial = pending.pop(ref)
                all_lost = False
                try:
                    record = ray.get(ref)
                except Exception as exc:  # the worker died (OOM, segfault, lost node): recorded, others go on
                    record = _failed_record(trial, f"{type(exc).__name__}: {exc}")
                    all_lost = True
                try:  # lost attempts the loop's poll has not seen yet
                    attempts = ray.get(tracker.status.remote(), timeout=5)[1].get(trial.id, [])
                    report_lost(trial.id, attempts, last_lost=all_lost)
                except Exception:
                    pass
                if lost.get(trial.id):
                    record["lost_attempts"] = lost[trial.id]
                record["trial_id"] = trial.id  # a named entry's id carries its row name, not the model's
                if trial.name:
                    record["row"] = trial.name
                record["fingerprint"] = fingerprints[trial.id]
                record["fingerprint_parts"] = parts[trial.id]
                record["cpus_per_trial"] = cpus_per_trial
                store.save_trial(out_dir, record)
                summary["ran"].append(trial.id)
                if record["status"] != "ok":
                    n_failed += 1
                    summary["failed"].append(trial.id)
                    bar.write(f"FAILED {trial.id}: {record.get('error', '')[:300]}")
                bar.update(1)
            try:
                running, retried = ray.get(tracker.status.remote(), timeout=5)
                for trial_id, attempts in retried.items():
                    report_lost(trial_id, attempts)
            except Exception:
                running = "?"
            bar.set_postfix_str(f"done {bar.n - n_failed}, running {running}, failed {n_failed}")
    except KeyboardInterrupt:
        bar.write("Interrupted: finished trials are saved; run the same command again to resume.")
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
