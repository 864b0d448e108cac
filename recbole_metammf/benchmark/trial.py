"""One benchmark trial: (model, dataset, seed) through RecBole's own pipeline.

:func:`run_trial` is the pipeline of ``recbole.quick_start.run_recbole`` step
for step (same seeding, same trainer, best-on-validation checkpoint reloaded for
the test), plus what a leaderboard needs and RecBole does not keep: the
validation result of every evaluated epoch (through the trainer's own
``callback_fn`` hook and a thin wrapper around the trainer instance's
``_valid_epoch``), the best epoch, wall times, peak memory and the dataset's
statistics. It returns a plain, JSON-safe dict (a *trial record*). With
``diagnose_best_test_epoch: True`` the record also holds, under
``diagnostic_best_test_over_epochs``, the test result of every evaluated epoch and the
best of them (``evaluation.py``): a diagnostic beside the result, never the result.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone

import torch

from recbole_metammf.paths import PROPERTIES_DIR


def trial_id(model: str, dataset: str, seed: int) -> str:
    """File-name-safe identity of a trial."""
    return f"{dataset}__{model}__seed{seed}"


def json_safe(value):
    """``value`` as plain JSON types (numpy scalars -> numbers, enums/devices/etc. -> strings)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:  # numpy / torch scalar
        return value.item()
    return str(value)


class CurveRecorder:
    """Collects every validation evaluation of one ``Trainer.fit`` call.

    RecBole's ``callback_fn(epoch_idx, valid_score)`` tells the epoch and the score
    after early stopping has been updated; the full metric dict of that epoch is
    taken from ``_valid_epoch``, which the recorder wraps on this trainer instance only.
    ``on_epoch`` (optional) is called with each new curve point, e.g. to report to Ray Tune.
    """

    def __init__(self, trainer, on_epoch=None):
        self.trainer = trainer
        self.curve: list[dict] = []
        self.best_epoch: int | None = None
        self.valid_time = 0.0
        self._last_result = None
        self._on_epoch = on_epoch
        original = trainer._valid_epoch

        def _valid_epoch(valid_data, show_progress=False):
            start = time.perf_counter()
            score, result = original(valid_data, show_progress=show_progress)
            self.valid_time += time.perf_counter() - start
            self._last_result = dict(result)
            return score, result

        trainer._valid_epoch = _valid_epoch

    def __call__(self, epoch_idx: int, valid_score: float) -> None:
        point = {"epoch": int(epoch_idx), "score": float(valid_score), "result": json_safe(self._last_result)}
        self.curve.append(point)
        if self.trainer.cur_step == 0:  # early_stopping reset the counter: this epoch is the new best
            self.best_epoch = int(epoch_idx)
        if self._on_epoch is not None:
            self._on_epoch(point)


def model_param_names(model: str) -> list[str]:
    """Keys of the model's own YAML defaults (RecBole's and the plugin's), for stating configs."""
    import yaml
    from recbole.config import configurator

    recbole_props = os.path.join(os.path.dirname(os.path.realpath(configurator.__file__)), "..", "properties")
    names: list[str] = []
    for base in (recbole_props, PROPERTIES_DIR):
        path = os.path.join(base, "model", f"{model}.yaml")
        if os.path.isfile(path):
            with open(path) as f:
                names += [k for k in (yaml.safe_load(f) or {}) if k not in names]
    return names


# The settings every leaderboard states besides the model's own hyper-parameters.
TRAINING_KEYS = ["epochs", "train_batch_size", "learning_rate", "learner", "weight_decay",
                 "train_neg_sample_args", "stopping_step", "eval_step", "seed", "reproducibility"]
PROTOCOL_KEYS = ["eval_args", "test_mask", "metrics", "topk", "valid_metric", "valid_metric_bigger", "eval_batch_size",
                 "metric_decimal_place"]


def dataset_stats(dataset, train_data, valid_data, test_data) -> dict:
    item_fields = [f for f in dataset.field2type if f in (dataset.item_feat.columns if dataset.item_feat is not None else [])]
    return {
        "n_users": int(dataset.user_num - 1),  # RecBole's id 0 is padding
        "n_items": int(dataset.item_num - 1),
        "n_interactions": int(dataset.inter_num),
        "density": float(dataset.inter_num / ((dataset.user_num - 1) * (dataset.item_num - 1))),
        "split_interactions": [int(len(d.dataset.inter_feat)) for d in (train_data, valid_data, test_data)],
        "item_features": {f: str(dataset.field2type[f]).split(".")[-1] for f in item_fields if f != dataset.iid_field},
    }


def _peak_memory_mb() -> float:
    """Peak resident memory of this process (MiB); plus the CUDA peak when a GPU was used."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    if sys.platform == "darwin":
        peak /= 1024.0  # macOS: bytes
    return round(peak, 1)


def run_trial(model: str, dataset: str, seed: int, config_file_list=None, config_dict=None,
              on_epoch=None) -> dict:
    """Train ``model`` on ``dataset`` with ``seed``; the trial record (``status`` 'ok' or 'failed').

    Never raises for a failing model or config: the error and its traceback go into the record.
    Checkpoints go to a private temporary directory (two trials started in the same second
    would otherwise share RecBole's time-stamped file name) and are removed afterwards.
    """
    import recbole_metammf  # noqa: F401  (registers the plugin in this process, e.g. a Ray worker)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_logger, init_seed

    from recbole_metammf.allocator import tune_allocator
    from recbole_metammf.evaluation import DIAGNOSTIC_KEY, TestEpochDiagnostic, diagnostic_requested
    from recbole_metammf.registry import get_model as plugin_get_model

    record = {
        "trial_id": trial_id(model, dataset, seed),
        "model": model,
        "dataset": dataset,
        "seed": int(seed),
        "status": "running",
        "config_files": list(config_file_list or []),
        "config_overrides": json_safe(config_dict or {}),
        "host": platform.node(),
        "threads": torch.get_num_threads(),
        "allocator": tune_allocator(),  # the same maths either way; it changes the timings (allocator.py)
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "machine": machine(),
    }
    checkpoint_dir = tempfile.mkdtemp(prefix="recbole-metammf-trial-")
    t0 = time.perf_counter()
    try:
        plugin_get_model(model)  # an unknown name fails plainly, not as RecBole's "No module named 'lightgbm'"
        config = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                        config_dict={**(config_dict or {}), "seed": int(seed), "checkpoint_dir": checkpoint_dir})
        init_seed(config["seed"], config["reproducibility"])
        init_logger(config)
        data = create_dataset(config)
        train_data, valid_data, test_data = data_preparation(config, data)
        init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
        net = get_model(config["model"])(config, train_data._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, net)
        recorder = CurveRecorder(trainer, on_epoch=on_epoch)
        callback = recorder
        diagnostic = None
        if diagnostic_requested(config):  # wraps the recorder's _valid_epoch: its test time is not validation time
            diagnostic = TestEpochDiagnostic(trainer, test_data)

            def callback(epoch_idx, valid_score):
                recorder(epoch_idx, valid_score)
                diagnostic(epoch_idx, valid_score)

        fit_start = time.perf_counter()
        best_valid_score, best_valid_result = trainer.fit(
            train_data, valid_data, saved=True, show_progress=config["show_progress"], callback_fn=callback)
        fit_time = time.perf_counter() - fit_start - (diagnostic.time_s if diagnostic else 0.0)
        test_start = time.perf_counter()
        test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
        test_time = time.perf_counter() - test_start

        final = config.final_config_dict
        record.update({
            "status": "ok",
            "valid_metric": config["valid_metric"],
            "best_epoch": recorder.best_epoch,
            "epochs_run": len(trainer.train_loss_dict),
            "best_valid_score": float(best_valid_score),
            "best_valid_result": json_safe(best_valid_result),
            "test_result": json_safe(test_result),
            "valid_curve": recorder.curve,
            "train_loss": {str(k): json_safe(v) for k, v in trainer.train_loss_dict.items()},
            "train_time_s": round(fit_time - recorder.valid_time, 3),
            "valid_time_s": round(recorder.valid_time, 3),
            "test_time_s": round(test_time, 3),
            "dataset_stats": dataset_stats(data, train_data, valid_data, test_data),
            "model_params": {k: json_safe(final.get(k)) for k in model_param_names(model)},
            "training": {k: json_safe(final.get(k)) for k in TRAINING_KEYS},
            "protocol": {k: json_safe(final.get(k)) for k in PROTOCOL_KEYS},
            "config": {k: json_safe(v) for k, v in final.items() if k != "checkpoint_dir"},
        })
        if diagnostic is not None:
            record[DIAGNOSTIC_KEY] = json_safe(diagnostic.summary())
        if torch.cuda.is_available() and str(config["device"]).startswith("cuda"):
            record["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    except Exception as exc:  # a failing trial is data, not a crash of the benchmark
        record.update({"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    finally:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    record["total_time_s"] = round(time.perf_counter() - t0, 3)
    record["peak_memory_mb"] = _peak_memory_mb()
    record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return record


def machine() -> dict:
    """The CPU a run ran on: its model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere), the
    vector instructions torch's CPU kernels chose (``torch.backends.cpu.get_cpu_capability()``) and a
    digest of the CPU's feature flags, its family / model / stepping and microcode, and its cache sizes.
    Two runs of the same code, data and seed agree to the last digit on one machine, but not always
    across machines: a model whose validation curve swings from epoch to epoch (MMGCN on TikTok) parts
    after two epochs when only the rounding differs (torch's ``default`` kernels instead of AVX512:
    ``benchmarks/run_to_run.md``), and a different best epoch follows. The record says which machine
    made it, so such a difference can be told from a change of code."""
    import hashlib

    name, flags, ident = "", "", {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and not name:
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
                elif key in ("cpu family", "model", "stepping", "microcode") and key not in ident:
                    ident[key] = value.strip()
    except OSError:
        pass
    caches = []
    cache_dir = "/sys/devices/system/cpu/cpu0/cache"
    for index in sorted(os.listdir(cache_dir)) if os.path.isdir(cache_dir) else []:
        try:
            with open(os.path.join(cache_dir, index, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(cache_dir, index, "type")) as f:
                kind = {"Data": "d", "Instruction": "i"}.get(f.read().strip(), "")
            with open(os.path.join(cache_dir, index, "size")) as f:
                caches.append(f"L{level}{kind} {f.read().strip()}")
        except OSError:
            continue
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except AttributeError:  # older torch
        capability = None
    return {"cpu": name or platform.processor() or platform.machine(), "cpu_capability": capability,
            "cpu_flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:12] if flags else None,
            "cpu_id": " ".join(f"{k} {v}" for k, v in ident.items()) or None,
            "caches": ", ".join(caches) or None, "cores": os.cpu_count()}


def _versions() -> dict:
    import numpy
    import recbole
    import scipy

    from recbole_metammf import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "recbole": recbole.__version__,
            "recbole_metammf": __version__, "numpy": numpy.__version__, "scipy": scipy.__version__}
