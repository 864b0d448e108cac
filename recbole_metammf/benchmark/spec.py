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

Relative paths in the file are relative to the file. Priority of a trial's config, later wins:
the plugin's defaults < ``config_files`` < ``model_config`` file < ``config`` < ``model_config``
dict < ``dataset_config`` < the trial's seed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field

import yaml

DEFAULT_BASE_SEED = 2020
FINGERPRINT_VERSION = 2


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
    model: str
    dataset: str
    seed: int
    config_files: tuple = ()
    config_dict: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def id(self) -> str:
        from recbole_metammf.benchmark.trial import trial_id

        return trial_id(self.model, self.dataset, self.seed)

    def fingerprint(self, version: int = FINGERPRINT_VERSION) -> str:
        """Hash of everything that decides the trial's result: names, seed, config files' *contents*, dict,
        and (version 2) the plugin's own default YAMLs that apply to the trial, so that a trial run under
        other defaults (an edited ``properties/``, another plugin release) is not taken as finished.

        Version 1 (no prefix) is what trial files written before version 2 hold; they are still checked
        by the version-1 rule, so their benchmarks resume.
        """
        contents = []
        for path in self.config_files:
            with open(path, "rb") as f:
                contents.append(hashlib.sha256(f.read()).hexdigest())
        items = [self.model, self.dataset, self.seed, contents, self.config_dict]
        if version >= 2:
            items.append(plugin_defaults_digest(self.model, self.dataset))
        payload = json.dumps(items, sort_keys=True, default=str)
        digest = hashlib.sha256(payload.encode()).hexdigest()[:16]
        return digest if version == 1 else f"v{version}-{digest}"

    def matches(self, stored: str | None) -> bool:
        """Whether a trial file's stored fingerprint is this trial's, under the rule it was written with."""
        if not stored:
            return False
        version = 1
        if stored.startswith("v"):
            prefix = stored.split("-", 1)[0][1:]
            if not prefix.isdigit():  # not a fingerprint this code writes: a changed trial, not a crash
                return False
            version = int(prefix)
        return stored == self.fingerprint(version)


@dataclass
class BenchmarkSpec:
    models: list
    datasets: list
    seeds: list
    config_files: list = field(default_factory=list)
    config: dict = field(default_factory=dict)
    model_config: dict = field(default_factory=dict)   # model -> YAML path or dict
    dataset_config: dict = field(default_factory=dict)  # dataset -> dict
    note: str = ""                                      # printed in the leaderboard (protocol choices)

    def __post_init__(self):
        self.seeds = expand_seeds(self.seeds)
        self.config_files = [os.path.abspath(p) for p in self.config_files]
        self.model_config = {m: os.path.abspath(v) if isinstance(v, str) else dict(v) for m, v in self.model_config.items()}
        if not self.models or not self.datasets or not self.seeds:
            raise ValueError("a benchmark needs at least one model, one dataset and one seed")

    def trials(self) -> list[Trial]:
        """Every (model, dataset, seed) trial, seed-major: all models of the first seed come
        first, so a run stopped early still holds a complete single-seed comparison."""
        out = []
        for dataset in self.datasets:
            settings = {}  # model -> (config files, config dict): the same for every seed
            for model in self.models:
                files = list(self.config_files)
                extra = self.model_config.get(model)
                if isinstance(extra, str):
                    files.append(extra)
                config = dict(self.config)
                if isinstance(extra, dict):
                    config.update(extra)
                config.update(self.dataset_config.get(dataset, {}))
                settings[model] = (tuple(files), config)
            for seed in self.seeds:
                for model in self.models:
                    out.append(Trial(model, dataset, int(seed), *settings[model]))
        return out

    def to_dict(self) -> dict:
        return {"models": self.models, "datasets": self.datasets, "seeds": self.seeds,
                "config_files": self.config_files, "config": self.config,
                "model_config": self.model_config, "dataset_config": self.dataset_config, "note": self.note}


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
                        "note"}
    if unknown:
        raise ValueError(f"unknown keys in benchmark file {path}: {sorted(unknown)}")
    raw["note"] = str(raw.get("note") or "").strip()
    raw.update({k: v for k, v in overrides.items() if v})
    return BenchmarkSpec(**raw)
