"""Trial files: one JSON file per finished trial, written atomically; the run's manifest.

Layout of a benchmark directory ``results/NAME``::

    benchmark.json            the spec and the command that produced the run
    trials/<dataset>__<model>__seed<seed>.json    one per finished trial ('ok' or 'failed')
    search/<dataset>__<row>__cfg<k>__r<rung>.json  (tuned mode) one per finished search trial
    <dataset>/leaderboard.md  <dataset>/leaderboard.csv  <dataset>/*.png   (the report)

A trial file appears complete or not at all (temporary file in the same directory,
fsync, ``os.replace``), so a run killed at any moment leaves only whole trials behind.
"""

from __future__ import annotations

import json
import os
import tempfile

TRIALS = "trials"
SEARCH = "search"
MANIFEST = "benchmark.json"
# The tuned mode's settings where a benchmark file leaves them out: the planner (.tune) fills them in and the
# report (.tuned_report) reads a manifest written before a setting existed with them.
TUNE_DEFAULTS = {"configs": 8, "seed": None, "rungs": [], "eta": 2, "spaces": {}, "max_last_epoch_share": 0.2}


def atomic_write_text(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def trial_path(out_dir: str, trial_id: str, sub: str = TRIALS) -> str:
    return os.path.join(out_dir, sub, f"{trial_id}.json")


def save_trial(out_dir: str, record: dict, sub: str = TRIALS) -> str:
    """Write ``record`` as ``out_dir/<sub>/<trial_id>.json`` (``sub``: ``trials``, or ``search`` in tuned mode)."""
    path = trial_path(out_dir, record["trial_id"], sub)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False) + "\n")
    return path


def load_trial(out_dir: str, trial_id: str, sub: str = TRIALS):
    """A trial's record, or None if it has no file."""
    path = trial_path(out_dir, trial_id, sub)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def load_trials(out_dir: str, sub: str = TRIALS) -> list[dict]:
    """Every trial record under ``out_dir/<sub>`` (sorted by file name)."""
    directory = os.path.join(out_dir, sub)
    if not os.path.isdir(directory):
        return []
    records = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json") and not name.startswith("."):
            with open(os.path.join(directory, name)) as f:
                records.append(json.load(f))
    return records


def trial_ids(out_dir: str, sub: str = TRIALS) -> list[str]:
    """The ids of the trial files under ``out_dir/<sub>`` (sorted)."""
    directory = os.path.join(out_dir, sub)
    if not os.path.isdir(directory):
        return []
    return sorted(n[:-5] for n in os.listdir(directory) if n.endswith(".json") and not n.startswith("."))


def save_manifest(out_dir: str, manifest: dict) -> None:
    atomic_write_text(os.path.join(out_dir, MANIFEST), json.dumps(manifest, indent=1) + "\n")


def merged_spec(manifest: dict, spec: dict) -> dict:
    """``spec`` (a run's) with the models and datasets of the directory's earlier runs kept, in their
    order, before its own: a run of a subset (``--models GRCN``) must not drop the other rows' order."""
    previous = manifest.get("spec") or {}
    merged = dict(spec)
    for key in ("models", "datasets"):
        before = list(previous.get(key) or [])
        merged[key] = before + [x for x in spec.get(key) or [] if x not in before]
    return merged


def load_manifest(out_dir: str) -> dict:
    path = os.path.join(out_dir, MANIFEST)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)
