"""What a benchmark is: models x datasets x seeds under stated configs, from the CLI or a YAML file.

A benchmark YAML file holds the same things as the command line::

    models: [MetaMMF_GCN, MetaMMF_MF, LightGCN, BPR]
    datasets: [mm-ml-100k, microlens]
    seeds: 3                       # a count (base_seed, base_seed+1, ...) or an explicit list
    base_seed: 2020
    config_files: [my_protocol.yaml]   # applied to every trial
    config: {epochs: 300}              # applied to every trial (above the files)
    model_config:                      # per model: a YAML file (e.g. run_hyper.py's output) or a dict
      MetaMMF_GCN: hyper/best/MetaMMF_GCN-mm-ml-100k.yaml
    dataset_config:
      microlens: {load_col: {inter: [user_id, item_id]}}
    note: >                            # free text the leaderboard prints under its command
      Every model at most 300 epochs; ...
    entries:                           # named rows: a name, a RecBole/plugin model and its config;
      MetaMMF_GCN-LightGCN:            # listed in ``models`` by name, with trial ids of their own
        model: MetaMMF_GCN
        config: {propagation: lightgcn}
    tune:                              # tuned mode (see :mod:`.tune`): search, then the seeds
      configs: 8                       # configurations sampled per row (the same for every row)
      rungs: [10, 30]                  # successive-halving epoch budgets ([] = every config to early stop)
      spaces: {BPR: my_bpr.hyper}      # default hyper/<row>.hyper, else hyper/<model>.hyper

Relative paths in the file are relative to the file. Priority of a trial's config, later wins:
the plugin's defaults < ``config_files`` < ``model_config`` file < ``config`` < the entry's
``config`` < ``model_config`` dict < ``dataset_config`` < (tuned mode) the sampled
hyper-parameters < the trial's seed. ``model_config`` is looked up by row name (a model's
name, or an entry's).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field

import yaml

DEFAULT_BASE_SEED = 2020
FINGERPRINT_VERSION = 3
ROW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # a file-name-safe row name (no '__', no '/')


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
        from recbole_metammf.benchmark.trial import trial_id

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


@dataclass
class BenchmarkSpec:
    models: list                                        # row names: models, or names of ``entries``
    datasets: list
    seeds: list
    config_files: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    model_config: dict = field(default_factory=dict)   # row -> YAML path or dict
    dataset_config: dict = field(default_factory=dict)  # dataset -> dict
    note: str = ""                                      # printed in the leaderboard (protocol choices)
    entries: dict = field(default_factory=dict)         # row name -> {model: ..., config: {...}}
    tune: dict = field(default_factory=dict)            # tuned mode's settings (see .tune); {} = plain mode
    published: dict = field(default_factory=dict)       # published figures shown beside ours (see .published)

    def __post_init__(self):
        self.seeds = expand_seeds(self.seeds)
        self.config_files = [os.path.abspath(p) for p in self.config_files]
        self.model_config = {m: os.path.abspath(v) if isinstance(v, str) else dict(v) for m, v in self.model_config.items()}
        if not self.models or not self.datasets or not self.seeds:
            raise ValueError("a benchmark needs at least one model, one dataset and one seed")
        self.entries = {n: _check_entry(n, e) for n, e in (self.entries or {}).items()}
        self.tune = dict(self.tune or {})
        for name in self.models:
            if not ROW_NAME.match(str(name)) or "__" in str(name):
                raise ValueError(f"row name {name!r}: use letters, digits and _ . + - (no '__')")

    def model_of(self, row: str) -> str:
        """The RecBole/plugin model a row runs (an entry's ``model``, else the row's own name)."""
        return self.entries[row]["model"] if row in self.entries else row

    def settings(self, dataset: str) -> dict:
        """``row -> (model, config files, config dict)`` on ``dataset``: the same for every seed."""
        out = {}
        for row in self.models:
            files = list(self.config_files)
            extra = self.model_config.get(row)
            if isinstance(extra, str):
                files.append(extra)
            config = dict(self.config)
            if row in self.entries:
                config.update(self.entries[row]["config"])
            if isinstance(extra, dict):
                config.update(extra)
            config.update(self.dataset_config.get(dataset, {}))
            out[row] = (self.model_of(row), tuple(files), config)
        return out

    def trials(self) -> list[Trial]:
        """Every (row, dataset, seed) trial, seed-major: all rows of the first seed come
        first, so a run stopped early still holds a complete single-seed comparison."""
        out = []
        for dataset in self.datasets:
            settings = self.settings(dataset)
            for seed in self.seeds:
                for row in self.models:
                    model, files, config = settings[row]
                    out.append(Trial(model, dataset, int(seed), files, config, name=row if row != model else ""))
        return out

    def to_dict(self) -> dict:
        out = {"models": self.models, "datasets": self.datasets, "seeds": self.seeds,
               "config_files": self.config_files, "config": self.config,
               "model_config": self.model_config, "dataset_config": self.dataset_config, "note": self.note}
        if self.entries:
            out["entries"] = self.entries
        if self.tune:
            out["tune"] = self.tune
        if self.published:
            out["published"] = self.published
        return out


def _check_entry(name: str, entry) -> dict:
    """An entry as ``{'model': str, 'config': dict}``, or a ValueError saying what is wrong with it."""
    if not isinstance(entry, dict) or not entry.get("model"):
        raise ValueError(f"entry {name!r} needs a 'model' (and optionally a 'config' dict)")
    unknown = set(entry) - {"model", "config"}
    if unknown:
        raise ValueError(f"entry {name!r}: unknown keys {sorted(unknown)} (an entry has 'model' and 'config')")
    config = entry.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError(f"entry {name!r}: 'config' must be a mapping of config keys")
    return {"model": str(entry["model"]), "config": dict(config)}


def expand_seeds(seeds, base_seed: int = DEFAULT_BASE_SEED) -> list[int]:
    """``3`` -> ``[base, base+1, base+2]``; a list stays as it is."""
    if isinstance(seeds, int):
        return [base_seed + i for i in range(seeds)]
    return [int(s) for s in seeds]


def load_spec(path: str, **overrides) -> BenchmarkSpec:
    """A :class:`BenchmarkSpec` from a benchmark YAML file (see the module docstring)."""
    with open(path) as f:
        raw = yaml.safe_load(f) or {}
    here = os.path.dirname(os.path.abspath(path))

    def rel(p):
        return p if os.path.isabs(p) else os.path.join(here, p)

    base_seed = int(raw.pop("base_seed", DEFAULT_BASE_SEED))
    raw["seeds"] = expand_seeds(raw.get("seeds", 1), base_seed)
    raw["config_files"] = [rel(p) for p in raw.get("config_files", [])]
    raw["model_config"] = {m: rel(v) if isinstance(v, str) else v for m, v in (raw.get("model_config") or {}).items()}
    unknown = set(raw) - {"models", "datasets", "seeds", "config_files", "config", "model_config", "dataset_config",
                        "note", "entries", "tune", "published"}
    if unknown:
        raise ValueError(f"unknown keys in benchmark file {path}: {sorted(unknown)}")
    raw["note"] = str(raw.get("note") or "").strip()
    if raw.get("published") is not None:
        from recbole_metammf.benchmark.published import check_published

        raw["published"] = check_published(raw["published"], path)
    if raw.get("tune"):
        from recbole_metammf.benchmark.tune import check_tune_settings

        raw["tune"] = check_tune_settings(raw["tune"], here, path)
    raw.update({k: v for k, v in overrides.items() if v})
    return BenchmarkSpec(**raw)
