"""Which trial a file holds: a :class:`Trial`'s identity (its id and file name) and its fingerprint.

A trial's fingerprint is a hash of everything that decides its result (config, the plugin's default
YAMLs, the plugin's code the trial runs, the dataset's files). A resumed run takes a trial file as
finished only if its stored fingerprint is this trial's; :meth:`Trial.stale_reason` says what changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import yaml

from recbole_metammf.benchmark.trial import trial_id

FINGERPRINT_VERSION = 3


def plugin_defaults_digest(model: str, dataset: str) -> str:
    """sha256 of the plugin's default YAMLs a (model, dataset) trial loads: overall, model, dataset."""
    from recbole_metammf import paths

    h = hashlib.sha256()
    for rel in ("overall.yaml", os.path.join("model", f"{model}.yaml"), os.path.join("dataset", f"{dataset}.yaml")):
        path = os.path.join(paths.PROPERTIES_DIR, rel)
        if os.path.isfile(path):
            with open(path, "rb") as f:
                h.update(rel.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Trial:
    """One run of ``model`` on ``dataset`` with ``seed``.

    ``name`` is the row it belongs to when that is not the model's own name (a named entry such as
    ``MetaMMF_GCN-LightGCN``); ``tag`` replaces the seed in the id of a tuned mode's search trial
    (``cfg3__r0``). Neither is in the fingerprint: they name a trial, they do not change its result.
    """

    model: str
    dataset: str
    seed: int
    config_files: tuple = ()
    config_dict: dict = field(default_factory=dict, hash=False, compare=False)
    name: str = ""
    tag: str = ""

    @property
    def row(self) -> str:
        return self.name or self.model

    @property
    def id(self) -> str:
        if self.tag:
            return f"{self.dataset}__{self.row}__{self.tag}"
        return trial_id(self.row, self.dataset, self.seed)

    def _config_items(self, version: int) -> list:
        contents = []
        for path in self.config_files:
            with open(path, "rb") as f:
                contents.append(hashlib.sha256(f.read()).hexdigest())
        items = [self.model, self.dataset, self.seed, contents, self.config_dict]
        if version >= 2:
            items.append(plugin_defaults_digest(self.model, self.dataset))
        return items

    def fingerprint_parts(self) -> dict:
        """The three things a version-3 fingerprint covers, each as a digest (stored beside it, so that a
        changed trial can be told apart by *what* changed):

        * ``config``: names, seed, the config files' contents, the config dict and the plugin's default
          YAMLs that apply (overall, model, dataset): everything version 2 covered;
        * ``code``: the plugin's code that runs in the trial (:func:`code_digest`);
        * ``data``: the dataset's files (:func:`data_digest`).
        """
        config = json.dumps(self._config_items(3), sort_keys=True, default=str)
        return {"config": hashlib.sha256(config.encode()).hexdigest()[:16],
                "code": code_digest(self.model),
                "data": data_digest(dataset_dir(self.dataset, self.config_files, self.config_dict))}

    def fingerprint(self, version: int = FINGERPRINT_VERSION) -> str:
        """Hash of everything that decides the trial's result.

        Version 3 (``v3-``): the :meth:`fingerprint_parts`: config and plugin defaults, the plugin's
        code and the dataset's files, so that a resumed run never takes a trial of older code or data
        as finished. Version 2 (``v2-``): names, seed, config files' *contents*, dict and the plugin's
        default YAMLs. Version 1 (no prefix): the same without the defaults. Trial files written under
        versions 1 and 2 are still checked by their own rule, so their benchmarks resume.
        """
        if version >= 3:
            return fingerprint_of_parts(self.fingerprint_parts())
        payload = json.dumps(self._config_items(version), sort_keys=True, default=str)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
        return digest if version == 1 else f"v{version}-{digest}"

    def matches(self, stored: str | None) -> bool:
        """Whether a trial file's stored fingerprint is this trial's, under the rule it was written with."""
        version = fingerprint_version(stored)
        return version is not None and stored == self.fingerprint(version)

    def stale_reason(self, record: dict) -> str | None:
        """None if ``record`` (a trial file) is this trial's; else what changed, in a few words."""
        stored = record.get("fingerprint")
        if self.matches(stored):
            return None
        version = fingerprint_version(stored)
        parts = record.get("fingerprint_parts")
        if version is None:
            return "no or unreadable fingerprint"
        if version < 3 or not isinstance(parts, dict):
            return "config or plugin defaults changed"
        now = self.fingerprint_parts()
        changed = [k for k in ("config", "code", "data") if parts.get(k) != now[k]]
        words = {"config": "config or plugin defaults", "code": "plugin code", "data": "dataset files"}
        return " and ".join(words[k] for k in changed) + " changed" if changed else "fingerprint differs"


def fingerprint_of_parts(parts: dict) -> str:
    """The version-3 fingerprint of :meth:`Trial.fingerprint_parts` (taken once, stored with them)."""
    return "v3-" + hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def fingerprint_version(stored) -> int | None:
    """The rule a stored fingerprint was written under (1 = no prefix), or None for one this code never wrote."""
    if not stored or not isinstance(stored, str):
        return None
    if not stored.startswith("v"):
        return 1
    prefix = stored.split("-", 1)[0][1:]
    return int(prefix) if prefix.isdigit() else None  # 'vX-...': a changed trial, not a crash


# --- what a version-3 fingerprint covers besides the config -----------------------------------------
# Modules that run no trial code (entry points, tools, the benchmark's own driver and report): editing
# them does not make a finished trial stale. Everything else in the package is covered, new files too.
_CODE_EXCLUDED = {"__main__.py", "entry.py", "errors.py", "checks.py", "quiet.py", "export.py", "checkpoint.py",
                  "quick_start.py", "inspect.py"}
_digest_cache: dict = {}
PLUGIN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the recbole_metammf package


def code_digest(model: str) -> str:
    """sha256 of the plugin's code a trial of ``model`` runs: every module of the package except the
    model files of *other* plugin models, the benchmark package (but ``benchmark/trial.py``, which runs
    the trial) and the tools in ``_CODE_EXCLUDED``; plus the torch and RecBole versions. A RecBole
    model (BPR, LightGCN) is covered by the shared modules (config layers, metrics, trial) alone.
    """
    import recbole
    import torch

    from recbole_metammf.registry import MODELS

    package = PLUGIN_DIR
    own = MODELS.get(model, "").rsplit(".", 1)[-1] + ".py" if model in MODELS else None
    h = hashlib.sha256(f"torch {torch.__version__} recbole {recbole.__version__}".encode())
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if not d.startswith((".", "__pycache__")))
        rel_dir = os.path.relpath(root, package)
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if rel_dir == "benchmark" and name != "trial.py":
                continue
            if rel_dir == "." and name in _CODE_EXCLUDED:
                continue
            if rel_dir == "model" and name not in ("__init__.py", "base.py") and name != own:
                continue
            h.update(rel.encode() + b"\0" + _file_sha256(os.path.join(root, name)).encode() + b"\0")
    return h.hexdigest()[:16]


def dataset_dir(dataset: str, config_files=(), config_dict=None) -> str:
    """``{data_path}/{dataset}`` of a trial, resolved as RecBole does for a user-set ``data_path``
    (config dict over config files, later files over earlier ones; RecBole's default ``dataset/``)."""
    data_path = None
    for path in config_files:
        with open(path) as f:
            loaded = yaml.safe_load(f) or {}
        if isinstance(loaded, dict) and loaded.get("data_path"):
            data_path = loaded["data_path"]
    if (config_dict or {}).get("data_path"):
        data_path = config_dict["data_path"]
    return os.path.join(str(data_path or "dataset/"), dataset)


def data_digest(directory: str) -> str:
    """sha256 of every file directly in a dataset's folder (names and contents; the atomic files, the
    fixed split and the converter's YAML); ``missing`` if there is no such folder."""
    if not os.path.isdir(directory):
        return "missing"
    h = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if name.startswith(".") or not os.path.isfile(path):
            continue
        h.update(name.encode() + b"\0" + _file_sha256(path).encode() + b"\0")
    return h.hexdigest()[:16]


def _file_sha256(path: str) -> str:
    """A file's sha256, cached on (path, size, mtime) so that a planner asking often reads each file once."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _digest_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _digest_cache[key] = h.hexdigest()
    return _digest_cache[key]
