"""Run a plan's trials as Ray tasks, one result file per finished trial: the one runner loop.

A *planner* (:class:`.plan.PlainPlan`, or :class:`.tune.TunedPlan` for tuned mode) says which trials
can start now (:class:`Action`); :func:`run` submits them, writes each trial's file the moment its task
returns, asks the planner again, and so on until it has nothing left. Resume, fingerprints, the manifest,
the progress bar and Ctrl-C are handled here once, for both modes.

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
keeps every finished trial and, run again, runs only the missing ones. A trial that was running
then goes on from its last snapshot (``resume.py``: at most every ``resume.EVERY_S`` seconds, at the
start of an epoch, in ``<out>/.resume/<folder>__<trial>__<fingerprint>/``) to the result it would have
had without the stop; its record says ``resumed``. The snapshot folder goes once the trial's file is
written. On a cluster the folder is on the node that ran the trial: a trial that lands on another
node starts from the beginning there.

A planner has: ``out_dir``; ``attempted`` (a set of trial ids run by this process); ``start()`` (the
first actions; raises :class:`ChangedTrialError` for files of another configuration, code or data);
``step()`` (the actions that can start now); ``put(sub, record)``; ``finish(action, record, fingerprint,
parts, cpus_per_trial)`` (a worker's record as stored); ``copy(action)`` (a 'reuse' action's record);
``manifest(previous, command, cpus_per_trial)``; ``resume_message()``; ``new_summary()``;
``close(summary)``; ``progress`` (the bar's ``(total, description, approximate)``).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone

from recbole_metammf.benchmark import store
from recbole_metammf.benchmark.fingerprint import Trial, fingerprint_of_parts
from recbole_metammf.errors import UserError

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESUME_DIR = ".resume"  # under the benchmark's folder: running trials' snapshots (never results)


def resume_folder(out_dir: str, sub: str, trial_id: str, fingerprint: str) -> str:
    """Where a running trial keeps its snapshots: named after the trial and the fingerprint it started with,
    so a snapshot of other code, data or config is never resumed."""
    return os.path.join(out_dir, RESUME_DIR, f"{sub}__{trial_id}__{fingerprint}")


def prepare_resume_folder(out_dir: str, sub: str, trial_id: str, fingerprint: str) -> str:
    """The trial's snapshot folder (its parent made, with a .gitignore); snapshots of the same trial under
    another fingerprint are removed: they can never be resumed."""
    root = os.path.join(out_dir, RESUME_DIR)
    os.makedirs(root, exist_ok=True)
    ignore = os.path.join(root, ".gitignore")
    if not os.path.exists(ignore):
        with open(ignore, "w") as f:
            f.write("# snapshots of running trials (recbole_metammf/benchmark/resume.py): never results\n*\n")
    folder = resume_folder(out_dir, sub, trial_id, fingerprint)
    prefix = f"{sub}__{trial_id}__"
    for name in os.listdir(root):
        path = os.path.join(root, name)
        if name.startswith(prefix) and path != folder and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
    return folder


def add_resume_info(record: dict, info: dict) -> dict:
    """A resumed trial's record: ``resumed`` (the epoch it went on from, the earlier runs' seconds), and
    those seconds added to its training and validation times (the whole trial's, over its runs)."""
    if info.get("resumed_at_epoch") is None:
        return record
    record["resumed"] = {"at_epoch": info["resumed_at_epoch"], "earlier_train_s": info.get("earlier_train_s", 0.0),
                         "earlier_valid_s": info.get("earlier_valid_s", 0.0)}
    for key, earlier in (("train_time_s", "earlier_train_s"), ("valid_time_s", "earlier_valid_s")):
        if isinstance(record.get(key), (int, float)):
            record[key] = round(record[key] + float(info.get(earlier, 0.0)), 3)
    return record


class ChangedTrialError(UserError, RuntimeError):
    """A finished trial's file was produced under a different configuration than asked now."""


@dataclass
class Action:
    """What a planner asks for: run ``trial`` (``kind='run'``), or copy ``source`` as its file (``'reuse'``)."""

    kind: str                     # "run": submit the trial; "reuse": copy ``source`` as the trial's file
    trial: Trial
    sub: str = store.TRIALS       # store folder: "trials" or "search"
    meta: dict = field(default_factory=dict)
    priority: tuple = ()
    source: dict | None = field(default=None, repr=False)


def ensure_datasets(trials) -> None:
    """Build the built-in dataset once in the driver, before parallel trials could race to build it."""
    from recbole_metammf.quick_start import BUILTIN_DATASET, ensure_builtin_dataset

    for trial in trials:
        if trial.dataset == BUILTIN_DATASET:
            ensure_builtin_dataset("BPR", trial.dataset, list(trial.config_files) or None, trial.config_dict)
            return


def failed_record(trial: Trial, error: str) -> dict:
    """The record of a trial whose worker died before it could return one."""
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
            self.latest = {}    # running trial id -> (epoch, score) of its last validation

        def start(self, trial_id, node_id=None, pid=None):
            self.running.add(trial_id)
            self.attempts.setdefault(trial_id, []).append((node_id, pid))

        def end(self, trial_id):
            self.running.discard(trial_id)
            self.latest.pop(trial_id, None)

        def validated(self, trial_id, epoch, score):
            """A running trial's validation (``CurveRecorder``'s ``on_epoch``; replayed ones too on resume)."""
            if trial_id in self.running:
                self.latest[trial_id] = (int(epoch), float(score))

        def status(self):
            """(trials running now, {trial id: attempts} of the trials started more than once,
            {running trial id: (epoch, score) of its last validation})."""
            return (len(self.running), {t: a for t, a in self.attempts.items() if len(a) > 1},
                    {t: self.latest[t] for t in self.running if t in self.latest})

    @ray.remote(num_cpus=cpus_per_trial, max_calls=1, max_retries=1)
    def trial_task(trial: Trial, cwd: str, threads: int, tracker, snapshots: str | None = None):
        # first of all (before the slow imports): an attempt lost early is still known as lost
        node_id = ray.get_runtime_context().get_node_id()
        tracker.start.remote(trial.id, node_id, os.getpid())
        import torch

        from recbole_metammf.benchmark import resume
        from recbole_metammf.benchmark.trial import run_trial

        sys.argv = sys.argv[:1]  # RecBole's Config parses sys.argv; a Ray worker's are Ray's own
        if os.path.isdir(cwd):  # relative data_path / log dirs resolve as in the driver
            os.chdir(cwd)
        torch.set_num_threads(threads)
        if snapshots:
            resume.activate(snapshots)
        try:
            record = run_trial(trial.model, trial.dataset, trial.seed, list(trial.config_files) or None,
                               dict(trial.config_dict),
                               on_epoch=lambda point: tracker.validated.remote(trial.id, point["epoch"], point["score"]))
            record = add_resume_info(record, resume.deactivate())
            record["ray_node_id"] = node_id  # which node of a cluster ran it
            return record
        finally:
            tracker.end.remote(trial.id)

    return Tracker, trial_task


def running_postfix(latest: dict, limit: int = 2) -> str:
    """The progress bar's word on the running trials: each one's last validated epoch (RecBole's 0-based
    count) and score, the first ``limit`` by id, then how many more; "" before any has validated."""
    items = sorted(latest.items())
    parts = [f"{tid} epoch {epoch} valid {score:.4f}" for tid, (epoch, score) in items[:limit]]
    if len(items) > limit:
        parts.append(f"+{len(items) - limit} more")
    return "; ".join(parts)


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
        # Ray's raylet gives its dashboard agent 30 s to register and dies if it has not: on a
        # loaded machine that lost whole trials (LocalRayletDiedError). A user's own value wins.
        os.environ.setdefault("RAY_agent_register_timeout_ms", "300000")
        # address="local": always a fresh local instance, never a Ray cluster some other
        # process happens to be running on this machine
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=verbose)
    return True


def run(planner, ray_address=None, cpus_per_trial: int = 1, verbose: bool = False, command: str | None = None,
        progress: bool = True) -> dict:
    """Run every trial ``planner`` asks for into its ``out_dir``; the planner's summary of ids.

    The folder must be writable (else one :class:`~.store.RunFolderError` line before anything runs) and not
    held by another live driver (its lock, :func:`.store.acquire_lock`). A trial whose file cannot be written
    (disk full, folder gone) is reported as failed (``summary['failed']`` and ``summary['unsaved']``), and the
    next run runs it again.
    """
    out_dir = planner.out_dir
    store.check_writable(out_dir)  # one line before any trial runs, not a lost trial after its training
    lock = store.acquire_lock(out_dir, command)
    try:
        return _run(planner, ray_address, cpus_per_trial, verbose, command, progress)
    finally:
        store.release_lock(out_dir, lock)


def _run(planner, ray_address, cpus_per_trial, verbose, command, progress) -> dict:
    import ray

    out_dir = planner.out_dir
    actions = planner.start()
    manifest = planner.manifest(store.load_manifest(out_dir), command, cpus_per_trial)
    store.save_manifest(out_dir, manifest)
    summary = planner.new_summary()
    message = planner.resume_message()
    if message:
        print(message, file=sys.stderr)
    started_ray = False
    try:
        actions = _copy_reused(planner, actions, summary)
        if actions:
            ensure_datasets(a.trial for a in actions)
            started_ray = init_ray(ray_address, verbose)
            _loop(planner, actions, cpus_per_trial, summary, progress)
    finally:
        if started_ray:
            ray.shutdown()
    planner.close(summary)
    return summary


def _copy_reused(planner, actions: list, summary: dict) -> list:
    """Write every 'reuse' action's copy and step again until only trials to run are left."""
    while True:
        reuse = [a for a in actions if a.kind == "reuse"]
        if not reuse:
            return actions
        for a in reuse:
            planner.put(a.sub, planner.copy(a))
            planner.attempted.add(a.trial.id)
            summary["reused"].append(a.trial.id)
        actions = planner.step()


def _loop(planner, actions: list, cpus_per_trial: int, summary: dict, progress: bool) -> None:
    """Submit what the plan allows (at most as many trials at once as the cluster has slots of
    ``cpus_per_trial`` cores, in the plan's order), store each trial's file as its task returns, step again."""
    import ray
    from tqdm import tqdm

    Tracker, trial_task = _remote_functions(cpus_per_trial)
    # On the driver's own node, which the driver cannot outlive anyway: a zero-CPU actor may otherwise
    # land on any node of a cluster and die with it, and with it the record of lost attempts (issue 23)
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    tracker = Tracker.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=False)).remote()
    slots = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_trial)
    pending: dict = {}  # ref -> (action, fingerprint, parts): fingerprints taken at submission
    total, desc, approximate = planner.progress
    bar = tqdm(total=total, desc=desc, unit="trial", disable=not progress, file=sys.stderr,
               bar_format="{desc}: {n_fmt}/" + ("~" if approximate else "") + "{total_fmt} |{bar}| {postfix} "
                          "[elapsed {elapsed}]")
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
        while True:
            running = {a.trial.id for a, _, _ in pending.values()}
            for a in [a for a in actions if a.kind == "run" and a.trial.id not in running][:slots - len(pending)]:
                # taken now, from the configs, code and data the trial starts with (not from files edited later)
                parts = a.trial.fingerprint_parts()
                fingerprint = fingerprint_of_parts(parts)
                snapshots = prepare_resume_folder(os.path.abspath(planner.out_dir), a.sub, a.trial.id, fingerprint)
                ref = trial_task.remote(a.trial, os.getcwd(), cpus_per_trial, tracker, snapshots)
                pending[ref] = (a, fingerprint, parts)
                planner.attempted.add(a.trial.id)
            if not pending:
                return
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                action, fingerprint, parts = pending.pop(ref)
                all_lost = False
                try:
                    record = ray.get(ref)
                except Exception as exc:  # the worker died (OOM, segfault, lost node): recorded, others go on
                    record = failed_record(action.trial, f"{type(exc).__name__}: {exc}")
                    all_lost = True
                try:  # lost attempts the loop's poll has not seen yet
                    attempts = ray.get(tracker.status.remote(), timeout=5)[1].get(action.trial.id, [])
                    report_lost(action.trial.id, attempts, last_lost=all_lost)
                except Exception:
                    pass
                if lost.get(action.trial.id):
                    record["lost_attempts"] = lost[action.trial.id]
                record = planner.finish(action, record, fingerprint, parts, cpus_per_trial)
                try:
                    planner.put(action.sub, record)
                except OSError as exc:  # its result is lost: say so, and record it as failed where we still can
                    record = planner.finish(action, failed_record(
                        action.trial, f"its trial file could not be written ({exc}); the next run runs it again"),
                        fingerprint, parts, cpus_per_trial)
                    summary.setdefault("unsaved", []).append(action.trial.id)
                    try:
                        planner.put(action.sub, record)
                    except OSError:
                        pass
                if not all_lost:  # its file is written (or it failed for good): nothing left to resume
                    shutil.rmtree(resume_folder(os.path.abspath(planner.out_dir), action.sub, action.trial.id,
                                                fingerprint), ignore_errors=True)
                summary["ran"].append(action.trial.id)
                if record["status"] != "ok":
                    n_failed += 1
                    summary["failed"].append(action.trial.id)
                    where = "" if action.sub == store.TRIALS else f"{action.sub}/"
                    bar.write(f"FAILED {where}{action.trial.id}: {record.get('error', '')[:300]}")
                bar.update(1)
            if ready:
                actions = _copy_reused(planner, planner.step(), summary)
            try:
                n_running, retried, latest = ray.get(tracker.status.remote(), timeout=5)
                for trial_id, attempts in retried.items():
                    report_lost(trial_id, attempts)
            except Exception:
                n_running, latest = "?", {}
            copied = f", copied {len(summary['reused'])}" if summary.get("reused") else ""
            where = running_postfix(latest)
            bar.set_postfix_str(f"done {bar.n - n_failed}, running {n_running}, failed {n_failed}{copied}"
                                + (f"; {where}" if where else ""))
    except KeyboardInterrupt:
        bar.write("Interrupted: finished trials are saved; run the same command again to resume.")
        for ref in pending:
            ray.cancel(ref, force=True)
        raise
    finally:
        bar.close()
