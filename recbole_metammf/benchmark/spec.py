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

import os
import re
from dataclasses import dataclass, field

import yaml

from recbole_metammf.benchmark.fingerprint import Trial

DEFAULT_BASE_SEED = 2020
ROW_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")  # a file-name-safe row name (no '__', no '/')


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
