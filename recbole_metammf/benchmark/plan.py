"""Which trials a benchmark runs, and the benchmark run itself: plan -> runner -> report.

* plain mode, :class:`PlainPlan`: every (row, dataset, seed) trial of the spec that has no finished file
  (or only a failed one), seed-major;
* tuned mode (a spec with a ``tune`` section), :class:`.tune.TunedPlan`: a planner that emits search
  trials rung by rung, then each row's chosen configuration over the seeds.

:func:`run_benchmark` and :func:`run_tuned` hand the planner to the one runner loop
(:func:`.runner.run`) and write the report from the trial files at the end.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone

from recbole_metammf.benchmark import store
from recbole_metammf.benchmark.report import write_report
from recbole_metammf.benchmark.runner import Action, ChangedTrialError, run
from recbole_metammf.benchmark.tune import TunedPlan
from recbole_metammf.benchmark.tuned_report import write_tuned_report


def plan(spec, out_dir: str, force: bool = False, retry_failed: bool = True):
    """Split the spec's trials into (to_run, finished) given the files in ``out_dir``."""
    to_run, finished, changed = [], [], []
    for trial in spec.trials():
        record = store.load_trial(out_dir, trial.id, set_aside_damaged=True)
        reason = None if record is None else trial.stale_reason(record)
        if record is None:
            to_run.append(trial)
        elif record["status"] == "failed" and retry_failed:
            # a failed trial keeps no result: it runs again whatever changed since (e.g. the dataset it could
            # not find is there now), instead of refusing the whole run as a changed finished one would
            to_run.append(trial)
        elif reason:
            if force:
                to_run.append(trial)
            else:
                changed.append(f"{trial.id} ({reason})")
        else:
            finished.append(trial)
    if changed:
        raise ChangedTrialError(
            f"{out_dir} holds trials run under another configuration, code or data ({', '.join(changed)}); "
            "use another --out, or --force to run them again and replace their files")
    return to_run, finished


class PlainPlan:
    """The plain planner: every missing trial of the spec, once, in the spec's (seed-major) order."""

    def __init__(self, spec, out_dir: str, force: bool = False, retry_failed: bool = True, max_trials=None):
        self.spec, self.out_dir, self.force, self.retry_failed = spec, out_dir, force, retry_failed
        self.max_trials = max_trials
        self.attempted: set = set()
        self.to_run: list = []
        self.finished: list = []

    def start(self) -> list[Action]:
        self.to_run, self.finished = plan(self.spec, self.out_dir, force=self.force, retry_failed=self.retry_failed)
        if self.max_trials is not None:
            self.to_run = self.to_run[:self.max_trials]
        return self.step()

    def step(self) -> list[Action]:
        return [Action("run", t, store.TRIALS, {"row": t.name} if t.name else {}, (i,))
                for i, t in enumerate(self.to_run) if t.id not in self.attempted]

    def put(self, sub: str, record: dict) -> None:
        store.save_trial(self.out_dir, record, sub)

    def finish(self, action: Action, record: dict, fingerprint: str, parts: dict, cpus_per_trial: int) -> dict:
        record["trial_id"] = action.trial.id  # a named entry's id carries its row name, not the model's
        record.update(action.meta)
        record["fingerprint"] = fingerprint
        record["fingerprint_parts"] = parts
        record["cpus_per_trial"] = cpus_per_trial
        return record

    def copy(self, action: Action) -> dict:
        raise AssertionError("a plain plan copies no trial")

    def manifest(self, previous: dict, command, cpus_per_trial: int) -> dict:
        runs = previous.get("runs", [])
        runs.append({"command": command, "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                     "to_run": len(self.to_run), "skipped": len(self.finished)})
        return {"command": command or previous.get("command"),
                "spec": store.merged_spec(previous, self.spec.to_dict()),
                "cpus_per_trial": cpus_per_trial, "runs": runs}

    def resume_message(self):
        if self.finished:
            return f"{len(self.finished)} finished trial(s) in {self.out_dir} kept; {len(self.to_run)} to run."
        return None

    def new_summary(self) -> dict:
        return {"ran": [], "skipped": [t.id for t in self.finished], "failed": []}

    @property
    def progress(self):
        return len(self.to_run), "trials", False

    def close(self, summary: dict) -> None:
        pass


def run_benchmark(spec, out_dir: str, ray_address=None, cpus_per_trial: int = 1,
                  force: bool = False, retry_failed: bool = True, verbose: bool = False,
                  command: str | None = None, progress: bool = True, max_trials=None, report: bool = True) -> dict:
    """Run every missing trial of ``spec`` into ``out_dir``; returns ``{'ran', 'skipped', 'failed'}`` ids.

    ``max_trials`` stops submitting after that many (for trying a setup out).
    The report is written at the end (``report=False`` to skip).
    """
    planner = PlainPlan(spec, os.path.abspath(out_dir), force=force, retry_failed=retry_failed,
                        max_trials=max_trials)
    summary = run(planner, ray_address=ray_address, cpus_per_trial=cpus_per_trial, verbose=verbose,
                  command=command, progress=progress)
    if report:
        write_report(planner.out_dir)
    return summary


def run_tuned(spec, out_dir: str, ray_address=None, cpus_per_trial: int = 1, force: bool = False,
              retry_failed: bool = True, verbose: bool = False, command: str | None = None, progress: bool = True,
              report: bool = True) -> dict:
    """Run the tuned benchmark ``spec`` into ``out_dir`` (resuming); ``{'ran', 'skipped', 'reused', 'failed'}``.

    Raises :class:`~.runner.ChangedTrialError` naming every file whose config, code or data changed
    (``force`` reruns them instead). Trials are submitted as the plan allows, at most as many at once as
    the Ray cluster has slots of ``cpus_per_trial`` cores, earlier datasets and rows first.
    """
    planner = TunedPlan(spec, os.path.abspath(out_dir), force=force, retry_failed=retry_failed)
    summary = run(planner, ray_address=ray_address, cpus_per_trial=cpus_per_trial, verbose=verbose,
                  command=command, progress=progress)
    if report:
        write_tuned_report(planner.out_dir)
    return summary


def run_spec(spec, out_dir: str, **kwargs) -> dict:
    """:func:`run_tuned` for a spec with a ``tune`` section, else :func:`run_benchmark`."""
    return (run_tuned if spec.tune else run_benchmark)(spec, out_dir, **kwargs)
