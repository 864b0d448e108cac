"""Trial files: one JSON file per finished trial, written atomically; the run's manifest.

Layout of a benchmark directory ``results/NAME``::

    benchmark.json            the spec and the command that produced the run
    trials/<dataset>__<model>__seed<seed>.json    one per finished trial ('ok' or 'failed')
    search/<dataset>__<row>__cfg<k>__r<rung>.json  (tuned mode) one per finished search trial
    <dataset>/leaderboard.md  <dataset>/leaderboard.csv  <dataset>/*.png   (the report)

A trial file appears complete or not at all (temporary file in the same directory,
fsync, ``os.replace``), so a run killed at any moment leaves only whole trials behind.
A trial file that is not valid JSON all the same (hand-edited, or cut short where a filesystem
gives no atomic rename) is named in one line: a resumed run sets it aside as ``*.corrupt`` (kept)
and runs the trial again; the report leaves it out and says so.

While a run goes on, ``.run.lock`` names its driver (host, pid, since when): a second driver on the
same folder refuses with one line naming it; a lock whose driver is gone (same host, pid not running,
its ``flock`` released) is taken over with a warning.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import tempfile
from datetime import datetime, timezone

from recbole_metammf.errors import UserError

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


class RunFolderError(UserError, OSError):
    """The results folder cannot hold this run: not writable, or another live run holds it."""


class DamagedTrialFile(UserError, ValueError):
    """A trial file that is not valid JSON."""

    def __init__(self, path: str, err: Exception):
        self.path = path
        super().__init__(f"{path}: damaged trial file, not valid JSON ({err})")


def _read_json(path: str):
    with open(path) as f:
        text = f.read()
    try:
        return json.loads(text)
    except ValueError as err:  # json.JSONDecodeError, or bytes that are not UTF-8 text
        raise DamagedTrialFile(path, err) from None


def set_aside(path: str) -> str:
    """Rename a damaged file to ``<path>.corrupt`` (``.corrupt.1`` ... if taken) and return the new name."""
    target, n = path + ".corrupt", 0
    while os.path.exists(target):
        n += 1
        target = f"{path}.corrupt.{n}"
    os.replace(path, target)
    return target


def trial_path(out_dir: str, trial_id: str, sub: str = TRIALS) -> str:
    return os.path.join(out_dir, sub, f"{trial_id}.json")


def save_trial(out_dir: str, record: dict, sub: str = TRIALS) -> str:
    """Write ``record`` as ``out_dir/<sub>/<trial_id>.json`` (``sub``: ``trials``, or ``search`` in tuned mode)."""
    path = trial_path(out_dir, record["trial_id"], sub)
    atomic_write_text(path, json.dumps(record, indent=1, sort_keys=False) + "\n")
    return path


def load_trial(out_dir: str, trial_id: str, sub: str = TRIALS, set_aside_damaged: bool = False):
    """A trial's record, or None if it has no file. A damaged file raises :class:`DamagedTrialFile`, or with
    ``set_aside_damaged`` is renamed ``*.corrupt`` (kept), named in one line on stderr, and counts as missing."""
    path = trial_path(out_dir, trial_id, sub)
    if not os.path.isfile(path):
        return None
    try:
        return _read_json(path)
    except DamagedTrialFile as err:
        if not set_aside_damaged:
            raise
        moved = set_aside(path)
        print(f"warning: {err}; set aside as {os.path.basename(moved)}, the trial runs again", file=sys.stderr)
        return None


def load_trials(out_dir: str, sub: str = TRIALS, damaged: list | None = None) -> list[dict]:
    """Every trial record under ``out_dir/<sub>`` (sorted by file name). A damaged file raises
    :class:`DamagedTrialFile`, or, given a ``damaged`` list, is left out and its path appended to it."""
    directory = os.path.join(out_dir, sub)
    if not os.path.isdir(directory):
        return []
    records = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json") and not name.startswith("."):
            try:
                records.append(_read_json(os.path.join(directory, name)))
            except DamagedTrialFile as err:
                if damaged is None:
                    raise
                damaged.append(err.path)
    return records


def report_damaged(damaged: list, out_dir: str) -> list[str]:
    """One stderr line per damaged file left out of a report; the markdown lines that say so."""
    for path in damaged:
        print(f"warning: {path}: damaged trial file, not valid JSON; the report is written without it",
              file=sys.stderr)
    if not damaged:
        return []
    names = ", ".join(f"`{os.path.relpath(p, out_dir)}`" for p in damaged)
    return [f"**Left out:** {len(damaged)} damaged trial file(s), not valid JSON: {names}. A resumed run sets "
            "them aside (`*.corrupt`) and runs those trials again.", ""]


def check_writable(out_dir: str) -> None:
    """Refuse, in one line, a results folder this run could not write its trial files into."""
    try:
        for directory in (out_dir, os.path.join(out_dir, TRIALS)):
            if os.path.exists(directory) and not os.path.isdir(directory):
                raise NotADirectoryError(f"{directory} is a file, not a folder")
            if directory != out_dir and not os.path.isdir(directory):
                continue  # made when the first trial file is written (a writable out_dir can hold it)
            os.makedirs(directory, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=directory, prefix=".probe-")
            try:
                os.write(fd, b"probe")
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(probe)
    except OSError as err:
        raise RunFolderError(f"cannot write trial files into {out_dir}: {err.strerror or err}"
                             + (f" ({err.filename})" if getattr(err, "filename", None) else "")) from None


LOCK = ".run.lock"


def acquire_lock(out_dir: str, command: str | None = None) -> int:
    """Take ``out_dir``'s run lock (an open, ``flock``-ed file naming this driver); returns its descriptor.

    A live holder (its ``flock`` still held) makes this raise :class:`RunFolderError` naming it (host, pid,
    since when). A lock file whose driver is gone (its ``flock`` released: the process ended, ``kill -9``
    included) is taken over with a warning naming the driver it was left by.
    """
    path = os.path.join(out_dir, LOCK)
    host = socket.gethostname()
    for _ in range(10):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_lock(fd)
            os.close(fd)
            raise RunFolderError(f"{out_dir} is in use by another run_benchmark.py: {_describe(holder)} "
                                 f"(lock file {path}); wait for it to end, or use another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the file was released and removed between our open and our flock: try again
            os.close(fd)
            continue
        holder = _read_lock(fd)
        if holder and holder.get("host") not in (None, host):
            os.close(fd)
            raise RunFolderError(f"{out_dir} is locked by a run on another host: {_describe(holder)} (lock file "
                                 f"{path}); if that run is gone, delete the lock file")
        if holder:
            print(f"warning: {out_dir}: taking over the lock left by {_describe(holder)}, which is no longer "
                  "running", file=sys.stderr)
        me = {"host": host, "pid": os.getpid(),
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        return fd
    raise RunFolderError(f"{out_dir}: could not take the lock file {path} (it keeps changing)")


def release_lock(out_dir: str, fd: int) -> None:
    """Remove the lock file, then release it (in that order: no other driver can take a file being removed)."""
    try:
        os.unlink(os.path.join(out_dir, LOCK))
    except FileNotFoundError:
        pass
    finally:
        os.close(fd)


def _read_lock(fd: int):
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data.strip() else None
    except (OSError, ValueError):
        return None


def _describe(holder) -> str:
    if not holder:
        return "a driver that left no name in the lock file"
    return f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('since')}"


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
