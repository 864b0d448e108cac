"""What an entry point checks before RecBole starts: the model, the config, the dataset.

RecBole accepts any config key silently, opens config files and datasets deep
inside its pipeline and fails there with a traceback. :func:`preflight` checks
first and raises one typed error (:mod:`recbole_metammf.errors`) whose message
names the problem and what to do:

* the model name (``registry.get_model``: the closest names on a typo);
* every config file exists and is YAML;
* every config key the user gave (config files, config dict and, for the
  command lines, ``--key=value``) is one that RecBole or the plugin defines: a key
  of RecBole's or the plugin's YAML defaults, a key their code reads
  (``config["key"]``, ``"key" in config``, ``config.get("key")`` in the
  ``recbole`` and ``recbole_metammf`` packages and in the model's own module), or
  one of RecBole's run arguments. Otherwise it is most likely a typo, reported
  with the closest known key. ``check_config_keys: False`` turns this off;
* values: a number or True/False where the default is one, the plugin's
  choices (``fusion_form``, ``propagation``, ``edge_weight_mode``,
  ``missing_item_features``, ``cf_model``, ``test_mask``), metric names (the
  closest on a typo) and a ``valid_metric`` among the metrics; ``test_mask: train``
  only where it applies (a full-sort test of a non-sequential model);
* the dataset's atomic files exist where RecBole will look, else the message
  says where it looked and the converter command that makes them (the built-in
  dataset is built on first use; a name RecBole knows how to download is left to
  RecBole).
"""

from __future__ import annotations

import functools
import glob
import inspect
import os
import re
import sys

import yaml

from recbole_metammf.errors import ConfigError, DatasetNotFoundError
from recbole_metammf.paths import PROPERTIES_DIR
from recbole_metammf.registry import closest, get_model

BUILTIN_DATASET = "mm-ml-100k"  # built from RecBole's bundled ml-100k on first use (quick_start.ensure_builtin_dataset)

# RecBole's run arguments (recbole.quick_start.run / run_recbole.py's command line) and the plugin's
RUN_ARGUMENTS = ("model", "dataset", "config_files", "nproc", "ip", "port", "world_size", "group_offset", "offset")

# where a key is read in code: config["key"], "key" in config, config.get("key")
_KEY_PATTERNS = (
    re.compile(r"""config(?:_dict)?\s*\[\s*['"]([A-Za-z_]\w*)['"]\s*\]"""),
    re.compile(r"""['"]([A-Za-z_]\w*)['"]\s+(?:not\s+)?in\s+(?:self\.)?(?:final_|external_)?config(?:_dict)?\b"""),
    re.compile(r"""config(?:_dict)?\.get\(\s*['"]([A-Za-z_]\w*)['"]"""),
)
# YAML files under RecBole's properties/ that map dataset names to URLs, not config keys
_NOT_CONFIG_YAMLS = ("url.yaml", "kg_url.yaml")


def _recbole_dir() -> str:
    import recbole

    return os.path.dirname(os.path.realpath(recbole.__file__))


def _yaml_keys(folder: str) -> set[str]:
    keys = set()
    for path in glob.glob(os.path.join(folder, "**", "*.yaml"), recursive=True):
        if os.path.basename(path) in _NOT_CONFIG_YAMLS:
            continue
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
        if isinstance(data, dict):
            keys.update(str(k) for k in data)
    return keys


def _code_keys(paths) -> set[str]:
    keys = set()
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError):
            continue
        for pattern in _KEY_PATTERNS:
            keys.update(pattern.findall(text))
    return keys


@functools.lru_cache(maxsize=None)
def _base_known_keys() -> frozenset:
    plugin_dir = os.path.dirname(os.path.abspath(__file__))
    recbole_dir = _recbole_dir()
    keys = _yaml_keys(os.path.join(recbole_dir, "properties")) | _yaml_keys(PROPERTIES_DIR)
    keys |= _code_keys(glob.glob(os.path.join(recbole_dir, "**", "*.py"), recursive=True))
    keys |= _code_keys(glob.glob(os.path.join(plugin_dir, "**", "*.py"), recursive=True))
    return frozenset(keys | set(RUN_ARGUMENTS))


def known_keys(model_class=None) -> frozenset:
    """Every config key RecBole or the plugin defines, plus those the model's own module reads."""
    keys = _base_known_keys()
    source = None
    if model_class is not None:
        try:
            source = inspect.getsourcefile(model_class)
        except TypeError:
            source = None
    return keys | _code_keys([source]) if source else keys


# ----------------------------------------------------------------------------
# config files, keys, values
# ----------------------------------------------------------------------------
def check_config_files(config_file_list) -> None:
    """Each file exists and holds a YAML mapping (RecBole would fail deep inside Config otherwise)."""
    for path in config_file_list or []:
        if not os.path.isfile(path):
            raise ConfigError(f"config file {path}: no such file")
        try:
            with open(path, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except yaml.YAMLError as err:
            where = getattr(err, "problem_mark", None)
            line = f" (line {where.line + 1})" if where is not None else ""
            raise ConfigError(f"config file {path}: not valid YAML{line}: {getattr(err, 'problem', err)}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"config file {path}: not a UTF-8 text file") from None
        if data is not None and not isinstance(data, dict):
            raise ConfigError(f"config file {path}: holds a {type(data).__name__}, not 'key: value' lines")


def user_keys(config, config_file_list=None, config_dict=None, cmd_line: bool = False) -> dict:
    """key -> where the user gave it ('config file X', 'config dict', 'command line')."""
    where = {}
    for path in config_file_list or []:
        with open(path, encoding="utf-8") as f:
            for key in yaml.safe_load(f) or {}:
                where.setdefault(str(key), f"config file {path}")
    for key in config_dict or {}:
        where.setdefault(str(key), "config dict")
    if cmd_line:
        for key in getattr(config, "cmd_config_dict", {}) or {}:
            where.setdefault(str(key), "command line")
    return where


def check_keys(where: dict, model_class=None) -> None:
    """Every key in ``where`` is known, else one ConfigError with the closest known key."""
    known = known_keys(model_class)
    for key, origin in where.items():
        if key in known:
            continue
        suggestions = closest(key, known, n=1)
        hint = f"did you mean '{suggestions[0]}'? " if suggestions else ""
        raise ConfigError(
            f"unknown config key '{key}' ({origin}): {hint}neither RecBole nor the plugin defines it "
            f"(set check_config_keys: False to pass keys of your own)"
        )


def _choices() -> dict:
    from recbole_metammf.evaluation import TEST_MASKS
    from recbole_metammf.layers.fusion import CONTENT_SCALES, FORMS
    from recbole_metammf.modalities import MISSING_POLICIES
    from recbole_metammf.model.base import CONTENT_REG_SCOPES
    from recbole_metammf.model.diffmm import CL_METHODS, FEAT_TRANSFORMS
    from recbole_metammf.model.grcn import EDGE_WEIGHT_MODES
    from recbole_metammf.model.lgmrec import CF_MODELS
    from recbole_metammf.model.metammf_gcn import PROPAGATIONS

    return {"fusion_form": FORMS, "propagation": PROPAGATIONS, "edge_weight_mode": EDGE_WEIGHT_MODES,
            "missing_item_features": MISSING_POLICIES, "content_scale": CONTENT_SCALES,
            "content_reg_scope": CONTENT_REG_SCOPES, "cf_model": CF_MODELS, "cl_method": CL_METHODS,
            "feat_transform": FEAT_TRANSFORMS, "test_mask": TEST_MASKS}


def check_values(config, where: dict) -> None:
    """The user's values: the kind of the default, the plugin's choices, metric names."""
    defaults = getattr(config, "internal_config_dict", {}) or {}
    for key, origin in where.items():
        value = config[key] if key in config else None
        default = defaults.get(key)
        if isinstance(value, str) and isinstance(default, bool):
            raise ConfigError(f"config key '{key}' ({origin}) must be True or False, got '{value}'")
        if isinstance(value, str) and isinstance(default, (int, float)) and not isinstance(default, bool):
            raise ConfigError(f"config key '{key}' ({origin}) must be a number, got '{value}'")
    for key, allowed in _choices().items():
        if key in where and key in config and config[key] is not None and config[key] not in allowed:
            raise ConfigError(
                f"config key '{key}' ({where[key]}) must be one of {', '.join(map(str, allowed))}, got '{config[key]}'"
            )
    _check_metrics(config, where)
    _check_test_mask(config, where)


def _check_test_mask(config, where: dict) -> None:
    """``test_mask: train`` changes RecBole's full-sort mask of a general model's test ranking, nothing else."""
    if "test_mask" not in where or config["test_mask"] != "train":
        return
    from recbole.utils import ModelType

    mode = (config["eval_args"] or {}).get("mode")
    test_mode = mode.get("test", "full") if isinstance(mode, dict) else mode
    if test_mode != "full":
        raise ConfigError(
            f"config key 'test_mask' ({where['test_mask']}) is 'train', which applies to the full ranking only, "
            f"but the test mode is '{test_mode}': set eval_args mode to full or drop test_mask"
        )
    if config["MODEL_TYPE"] == ModelType.SEQUENTIAL:
        raise ConfigError(
            f"config key 'test_mask' ({where['test_mask']}) is 'train', but {config['model']} is a sequential "
            "model, whose test ranking masks no history: drop test_mask"
        )


def _check_metrics(config, where: dict) -> None:
    """``valid_metric`` is one of ``metrics`` at one of ``topk`` (RecBole would fail after the first epoch)."""
    if not {"valid_metric", "metrics", "topk"} & set(where):
        return
    metrics = config["metrics"] if "metrics" in config else None
    valid = config["valid_metric"] if "valid_metric" in config else None
    if not valid or metrics is None:
        return
    names = [str(m) for m in ([metrics] if isinstance(metrics, str) else metrics)]
    name, _, k = str(valid).partition("@")
    if name.lower() not in {m.lower() for m in names}:
        raise ConfigError(
            f"config key 'valid_metric' is '{valid}', which is not among the metrics {names}: "
            f"add it to metrics or choose one of them"
        )
    topk = config["topk"] if "topk" in config else None
    topk = [topk] if isinstance(topk, int) else list(topk or [])
    if k and topk and k.isdigit() and int(k) not in topk:
        raise ConfigError(
            f"config key 'valid_metric' is '{valid}', but topk is {topk}: add {k} to topk or choose "
            f"valid_metric at one of them"
        )


# ----------------------------------------------------------------------------
# the dataset
# ----------------------------------------------------------------------------
def _recbole_downloadable(dataset: str) -> bool:
    path = os.path.join(_recbole_dir(), "properties", "dataset", "url.yaml")
    with open(path, encoding="utf-8") as f:
        return dataset.lower() in (yaml.safe_load(f) or {})


def converter_kinds() -> list[str]:
    """The subcommands of ``python -m dataset_converters``."""
    try:
        import argparse

        from dataset_converters.cli import build_parser

        actions = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
        return [k for k in actions[0].choices if k != "synthetic"]
    except Exception:  # the hint is a courtesy: never fail the check on it
        return ["movielens", "tiktok", "kwai", "microlens", "ml100k"]


def check_dataset(config) -> None:
    """The atomic files RecBole will read for ``config['dataset']`` exist, else one DatasetNotFoundError."""
    dataset = config["dataset"]
    if dataset == BUILTIN_DATASET:
        return  # built on first use
    folder = os.path.abspath(config["data_path"])  # RecBole's data_path already ends in the dataset name
    parts = config["benchmark_filename"] if "benchmark_filename" in config else None
    wanted = [f"{dataset}.{p}.inter" for p in parts] if parts else [f"{dataset}.inter"]
    missing = [f for f in wanted if not os.path.isfile(os.path.join(folder, f))]
    if not missing:
        return
    if not os.path.isdir(folder) and _recbole_downloadable(dataset):
        return  # RecBole downloads its own datasets
    looked = f"{folder} does not exist" if not os.path.isdir(folder) else f"{folder} has no {', '.join(missing)}"
    parent = os.path.dirname(folder)
    raise DatasetNotFoundError(
        f"dataset '{dataset}' not found: {looked}; make it with 'python -m dataset_converters KIND --src RAW_DIR "
        f"--out {parent} --name {dataset}' (KIND: {', '.join(converter_kinds())}), or set data_path to the "
        f"folder that holds {dataset}/"
    )


# ----------------------------------------------------------------------------
# all of it
# ----------------------------------------------------------------------------
def build_config(model, dataset, config_file_list=None, config_dict=None, cmd_line: bool = False):
    """RecBole's ``Config`` for the run; its own validation errors become one ConfigError.

    Without ``cmd_line`` the process's arguments are kept out of it (a benchmark driver's
    ``--models A B`` are not config keys).
    """
    from recbole.config import Config

    saved_argv = sys.argv
    if not cmd_line:
        sys.argv = sys.argv[:1]
    try:
        return Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    except NotImplementedError as err:  # RecBole's answer to an unknown metric name
        match = re.search(r"no metric named '(.+)'", str(err))
        if match is None:
            raise
        from recbole.evaluator.register import metrics_dict

        suggestions = closest(match.group(1), list(metrics_dict), n=1)
        hint = f": did you mean '{suggestions[0]}'?" if suggestions else ""
        raise ConfigError(f"config key 'metrics': unknown metric '{match.group(1)}'{hint}") from err
    except (ValueError, SyntaxError) as err:
        raise ConfigError(f"invalid configuration for {model} on {dataset}: {err}") from err
    finally:
        sys.argv = saved_argv


def preflight(model, dataset, config_file_list=None, config_dict=None, cmd_line: bool = False):
    """Check a run before RecBole starts it; returns its ``Config``. Raises a :class:`UserError` subclass."""
    model_class = get_model(model)
    check_config_files(config_file_list)
    config = build_config(model, dataset, config_file_list, config_dict, cmd_line=cmd_line)
    where = user_keys(config, config_file_list, config_dict, cmd_line=cmd_line)
    if config["check_config_keys"] if "check_config_keys" in config else True:
        check_keys(where, model_class)
    check_values(config, where)
    check_dataset(config)
    return config


def check_trials(trials) -> None:
    """:func:`preflight` for each distinct (model, dataset, config) of a benchmark, before any trial runs."""
    import json

    seen = set()
    for trial in trials:
        key = (trial.model, trial.dataset, tuple(trial.config_files),
               json.dumps(trial.config_dict, sort_keys=True, default=str))
        if key in seen:
            continue
        seen.add(key)
        preflight(trial.model, trial.dataset, list(trial.config_files) or None, dict(trial.config_dict))
