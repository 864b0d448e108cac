"""Hyper-parameter search: RecBole's ``HyperTuning`` (hyperopt) or Ray Tune with ASHA early stopping.

Search spaces use RecBole's ``.hyper`` format, one parameter a line (``hyper/*.hyper``)::

    learning_rate loguniform -8 0        # bounds in log space: exp(-8) .. exp(0)
    embedding_size choice [32,64]
    dropout uniform 0.0 0.5
    reg_weight quniform 0 1 0.1

Every point runs :func:`~recbole_metammf.benchmark.trial.run_trial` with the same seed, so
points differ only in their hyper-parameters; the selection is on the validation metric
(best epoch), never on the test split. The best point is written as a YAML config that
``run_recbole.py --config_files`` and ``run_benchmark.py --model_config MODEL=FILE`` accept.
"""

from __future__ import annotations

import json
import math
import os
import sys
from datetime import datetime, timezone

import yaml

from recbole_metammf.benchmark.runner import init_ray
from recbole_metammf.benchmark.space import _plain, parse_space  # noqa: F401  (parse_space: run_hyper.py's)
from recbole_metammf.benchmark.store import atomic_write_text
from recbole_metammf.benchmark.trial import run_trial


def _objective(model, dataset, seed, config_file_list, config_dict, points: list):
    """An objective with RecBole HyperTuning's signature that runs one seeded trial and logs it in ``points``."""
    def objective(params, fixed_config_file_list=None, saved=True):
        params = {k: _plain(v) for k, v in params.items()}
        record = run_trial(model, dataset, seed, config_file_list, {**(config_dict or {}), **params})
        if record["status"] != "ok":
            raise RuntimeError(f"trial with {params} failed: {record['error']}\n{record.get('traceback', '')}")
        points.append({"params": params, "best_valid_score": record["best_valid_score"],
                       "best_epoch": record["best_epoch"], "best_valid_result": record["best_valid_result"],
                       "test_result": record["test_result"]})
        return {"model": model, "best_valid_score": record["best_valid_score"],
                "valid_score_bigger": record["config"]["valid_metric_bigger"],
                "best_valid_result": record["best_valid_result"], "test_result": record["test_result"]}

    return objective


def best_point(points: list, bigger: bool = True) -> dict:
    """The point with the best validation score (the first one on ties)."""
    best = points[0]
    for p in points[1:]:
        if (p["best_valid_score"] > best["best_valid_score"]) if bigger else (p["best_valid_score"] < best["best_valid_score"]):
            best = p
    return best


def search_hyperopt(model, dataset, params_file, seed=2020, config_file_list=None, config_dict=None,
                    algo="exhaustive", max_evals=100, early_stop=10) -> dict:
    """RecBole's ``HyperTuning``; returns ``{'best_params', 'best_valid_score', 'points': [...]}``.

    The best point is taken from the recorded points (``HyperTuning.best_params`` treats a
    best score of exactly 0 as "none yet"). Interrupted (Ctrl-C, ``kill``: :func:`entry.stop_on_signals`)
    after at least one finished point, it returns the best of those with ``'interrupted': True``
    (the point that was running is lost); before any, the interrupt goes on up.
    """
    from recbole.config import Config
    from recbole.trainer import HyperTuning

    bigger = Config(model=model, dataset=dataset, config_file_list=config_file_list,
                    config_dict=config_dict)["valid_metric_bigger"]
    points: list = []
    tuner = HyperTuning(_objective(model, dataset, seed, config_file_list, config_dict, points),
                        params_file=params_file, algo=algo, max_evals=max_evals, early_stop=early_stop)
    interrupted = False
    try:
        tuner.run()
    except KeyboardInterrupt:
        if not points:
            raise
        interrupted = True
    best = best_point(points, bigger)
    out = {"best_params": best["params"], "best_valid_score": best["best_valid_score"], "points": points}
    return {**out, "interrupted": True} if interrupted else out


def _tune_space(space: dict, grid: bool):
    from ray import tune

    out = {}
    for name, (kind, args) in space.items():
        if kind == "choice":
            out[name] = tune.grid_search(args) if grid else tune.choice(args)
        elif kind == "uniform":
            out[name] = tune.uniform(*args)
        elif kind == "loguniform":  # RecBole/hyperopt bounds are in log space
            out[name] = tune.loguniform(math.exp(args[0]), math.exp(args[1]))
        else:
            out[name] = tune.quniform(*args)
    return out


def search_ray(model, dataset, params_file, seed=2020, config_file_list=None, config_dict=None,
               max_evals=None, cpus_per_trial=1, grace_period=1, storage_dir="ray_tune", ray_address=None) -> dict:
    """Ray Tune over the same space with ASHA stopping bad points early on the validation curve.

    A space of only ``choice`` parameters with ``max_evals=None`` is searched exhaustively (grid).
    """
    import ray
    from ray import air, tune
    from ray.air import session
    from ray.tune.schedulers import ASHAScheduler

    from recbole.config import Config

    base = Config(model=model, dataset=dataset, config_file_list=config_file_list, config_dict=config_dict)
    mode = "max" if base["valid_metric_bigger"] else "min"
    space = parse_space(params_file)
    grid = max_evals is None and all(kind == "choice" for kind, _ in space.values())
    cwd = os.getcwd()

    def trainable(params):
        import torch

        sys.argv = sys.argv[:1]
        os.chdir(cwd)  # Tune starts trials in their own directory; relative data paths are the driver's
        torch.set_num_threads(cpus_per_trial)
        record = run_trial(model, dataset, seed, config_file_list, {**(config_dict or {}), **params},
                           on_epoch=lambda p: session.report({"valid_score": p["score"], "epoch": p["epoch"]}))
        if record["status"] != "ok":
            raise RuntimeError(record["error"])

    started = init_ray(ray_address)
    try:
        tuner = tune.Tuner(
            tune.with_resources(trainable, {"cpu": cpus_per_trial}),
            param_space=_tune_space(space, grid),
            tune_config=tune.TuneConfig(
                metric="valid_score", mode=mode, num_samples=1 if grid else (max_evals or 10),
                scheduler=ASHAScheduler(max_t=int(base["epochs"]), grace_period=grace_period)),
            run_config=air.RunConfig(local_dir=os.path.abspath(storage_dir), name=f"{model}-{dataset}", verbose=1),
        )
        results = tuner.fit()
        points = []
        for r in results:
            if r.error is None and r.metrics_dataframe is not None and len(r.metrics_dataframe):
                scores = r.metrics_dataframe["valid_score"]
                points.append({"params": {k: r.config[k] for k in space},
                               "best_valid_score": float(scores.max() if mode == "max" else scores.min()),
                               "epochs_run": int(len(scores))})
        best = results.get_best_result(metric="valid_score", mode=mode, scope="all")
    finally:
        if started:
            ray.shutdown()
    best_params = {k: best.config[k] for k in space}
    best_score = next(p["best_valid_score"] for p in points if p["params"] == best_params)
    return {"best_params": best_params, "best_valid_score": best_score, "points": points}


def write_best_config(path: str, result: dict, model: str, dataset: str, seed: int, command: str | None) -> None:
    """The best point as a YAML config (with where it came from in comments) and a JSON of all points beside it."""
    header = [f"# Best hyper-parameters of {model} on {dataset} (validation score {result['best_valid_score']}, "
              f"seed {seed}),", f"# found {datetime.now(timezone.utc):%Y-%m-%d} over {len(result['points'])} point(s)"
              + (" (the search was interrupted: the best of the points it finished)" if result.get("interrupted") else "")]
    if command:
        header.append(f"# by: {command}")
    header.append("# Use: run_recbole.py --config_files=THIS  |  run_benchmark.py --model_config " + f"{model}=THIS")
    body = yaml.safe_dump({k: _plain(v) for k, v in result["best_params"].items()}, sort_keys=False)
    atomic_write_text(path, "\n".join(header) + "\n" + body)
    atomic_write_text(os.path.splitext(path)[0] + ".points.json",
                      json.dumps({"model": model, "dataset": dataset, "seed": seed, **result}, indent=1, default=str))
