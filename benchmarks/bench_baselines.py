"""Per-epoch training time of the multimodal baselines (and MetaMMF_GCN) on mm-ml-100k.

Each model is built through RecBole's own pipeline (``Config`` -> ``create_dataset`` ->
``data_preparation``) with its default properties, and RecBole's training step (``zero_grad``,
``calculate_loss``, ``backward``, Adam ``step``, batches from RecBole's train dataloader) is timed
over ``--steps`` batches after ``--warmup`` untimed ones; the epoch time is the mean step time
x batches per epoch. With ``--before REV`` every baseline is also timed as it was at git
revision ``REV`` (its model file loaded from ``git show REV:...``, run against today's
helpers), in the same process, interleaved with the current version, so that the machine's
load affects both alike. LATTICE's once-per-epoch kNN refresh and FREEDOM's once-per-epoch
graph resampling are timed separately and added once to the epoch.

    OMP_NUM_THREADS=1 python benchmarks/bench_baselines.py [--before HEAD] [--steps 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import warnings  # noqa: E402

import torch  # noqa: E402

warnings.filterwarnings("ignore")

import recbole_metammf  # noqa: E402,F401  (registers the plugin)
from git_revision import module_at  # noqa: E402  (benchmarks/)

BASELINES = {"VBPR": "vbpr", "MMGCN": "mmgcn", "GRCN": "grcn", "LATTICE": "lattice", "FREEDOM": "freedom"}


def old_class(model: str, rev: str):
    """The model class as it was at git revision ``rev`` (its file only; helpers are today's)."""
    return getattr(module_at(rev, f"recbole_metammf/model/{BASELINES[model]}.py"), model)


def prepare(model: str):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    config = Config(
        model=model,
        dataset="mm-ml-100k",
        config_dict={"data_path": str(REPO / "dataset"), "state": "ERROR", "show_progress": False, "seed": 2020},
    )
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    return config, train


def time_epoch(cls, config, train, steps: int, warmup: int) -> tuple[float, float, int, float]:
    """(extrapolated epoch seconds, once-per-epoch extra seconds, batches per epoch, build seconds)."""
    torch.manual_seed(2020)
    t0 = time.perf_counter()
    net = cls(config, train._dataset)
    build = time.perf_counter() - t0
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=config["learning_rate"])
    batches = list(zip(range(warmup + steps), train))
    n_batches = len(train)
    # once-per-epoch work (LATTICE's kNN refresh, FREEDOM's graph resampling), timed on its own
    extra = 0.0
    if hasattr(net, "refresh_learned_neighbours"):
        t0 = time.perf_counter()
        net.refresh_learned_neighbours()
        extra = time.perf_counter() - t0
    elif hasattr(net, "resample_train_graph") and net.edge_prune_ratio > 0:
        t0 = time.perf_counter()
        net.resample_train_graph()
        extra = time.perf_counter() - t0
    net.train_steps = 1 if hasattr(net, "train_steps") else None  # keep per-epoch work out of the steps
    times = []
    for k, (_, inter) in enumerate(batches):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = net.calculate_loss(inter)
        loss.backward()
        opt.step()
        if k >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.mean(times) * n_batches + extra, extra, n_batches, build


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", default=None, help="git revision of the 'before' baselines")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--models", default="MetaMMF_GCN,VBPR,MMGCN,GRCN,LATTICE,FREEDOM")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from recbole.utils import get_model

    os.chdir(tempfile.mkdtemp())  # RecBole's log/ goes there
    rows = []
    for model in args.models.split(","):
        config, train = prepare(model)
        variants = [("after", get_model(model))]
        if args.before and model in BASELINES:
            variants.insert(0, ("before", old_class(model, args.before)))
        res = {}
        for label, cls in variants:
            epoch, extra, n_batches, build = time_epoch(cls, config, train, args.steps, args.warmup)
            res[label] = (epoch, extra, build)
            print(f"{model:12s} {label:6s} epoch {epoch:8.2f} s  (per-epoch extra {extra:.2f} s, "
                  f"{n_batches} batches, build {build:.2f} s)", flush=True)
        rows.append((model, res, n_batches))

    lines = [
        f"threads: {torch.get_num_threads()}, steps timed: {args.steps} (after {args.warmup} warm-up), "
        f"torch {torch.__version__}",
        "",
        "| model | batches/epoch | before: s/epoch | after: s/epoch | speed-up | after: once-per-epoch part | after: model build |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, res, n_batches in rows:
        after = res["after"]
        before = res.get("before")
        b = f"{before[0]:.2f}" if before else "-"
        s = f"{before[0] / after[0]:.1f}x" if before else "-"
        lines.append(f"| {model} | {n_batches} | {b} | {after[0]:.2f} | {s} | {after[1]:.2f} | {after[2]:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
