"""Training epoch time with and without the item feature columns in each batch (``batch_item_features``).

RecBole's training loader joins every item feature column into each batch, for the positive and the
sampled negative items; no general recommender reads them (compat.py section 8). This builds, for each
model, the same dataset and model twice, one loader per setting, and times RecBole's own
``Trainer._train_epoch`` over full epochs, interleaved (``--rounds`` rounds, the order alternating), in one
process with one thread; it writes the median epoch of each setting and their ratio.

    python benchmarks/bench_batch_join.py [--dataset tiktok-diffmm --data_path dataset] [--models VBPR BPR ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

import warnings  # noqa: E402

import torch  # noqa: E402

warnings.filterwarnings("ignore")

import recbole_metammf  # noqa: E402,F401  (registers the plugin)
from bench_setup import one_thread_in_scratch  # noqa: E402  (beside this script)


def build(model: str, dataset: str, data_path: str, join: bool):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config = Config(model=model, dataset=dataset, config_dict={
        "data_path": data_path, "benchmark_filename": ["train", "valid", "test"], "show_progress": False,
        "state": "ERROR", "batch_item_features": join})
    init_seed(config["seed"], True)
    data = create_dataset(config)
    train, _, _ = data_preparation(config, data)
    net = get_model(model)(config, train._dataset).to(config["device"])
    return get_trainer(config["MODEL_TYPE"], config["model"])(config, net), train


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="tiktok-diffmm")
    parser.add_argument("--data_path", default=str(REPO / "dataset"))
    parser.add_argument("--models", nargs="+", default=["BPR", "VBPR", "LightGCN", "FREEDOM"])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--out", default=str(HERE / "batch_join.md"))
    args = parser.parse_args()

    data_path = one_thread_in_scratch("bench_batch_join", args.data_path, args.dataset,
                                      "convert it first (README, 'Datasets')")
    load_start = os.getloadavg()
    rows = []
    for model in args.models:
        runs = {join: build(model, args.dataset, data_path, join) for join in (True, False)}
        for join, (trainer, train) in runs.items():  # one warm-up epoch each
            trainer._train_epoch(train, 0, show_progress=False)
        times = {True: [], False: []}
        for r in range(args.rounds):
            for join in ((True, False) if r % 2 == 0 else (False, True)):
                trainer, train = runs[join]
                t0 = time.perf_counter()
                trainer._train_epoch(train, r + 1, show_progress=False)
                times[join].append(time.perf_counter() - t0)
        joined, lean = statistics.median(times[True]), statistics.median(times[False])
        rows.append((model, len(runs[True][1]), joined, lean, lean / joined))
        print(f"{model}: joined {joined:.3f} s, ids only {lean:.3f} s, ratio {lean / joined:.2f}", flush=True)
    lines = [
        "# Training batches with and without the item feature columns", "",
        "Written by `benchmarks/bench_batch_join.py` (compat.py section 8, `batch_item_features`). Each model is "
        "built twice on the same data, one training loader joining every item feature column into each batch "
        "(RecBole's way, `batch_item_features: True`) and one building the same batches from item ids alone "
        "(the default); RecBole's `Trainer._train_epoch` is timed over full epochs, interleaved "
        f"({args.rounds} rounds after a warm-up epoch each, the order alternating), one thread, one process. "
        "The two give the same batches and the same trained model (tests/test_batch_item_features.py).", "",
        "    python benchmarks/bench_batch_join.py --dataset " + args.dataset + " --models " + " ".join(args.models), "",
        f"Dataset `{args.dataset}`; {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.node()}; torch "
        f"{torch.__version__}; niceness {os.nice(0)}; load average at start {load_start[0]:.2f}, at end "
        f"{os.getloadavg()[0]:.2f} ({os.cpu_count()} cores). On a shared machine the seconds are inflated by the "
        "other work; the two settings alternate epoch by epoch, so their ratio is the figure.", "",
        "| model | batches / epoch | joined: median epoch s | ids only: median epoch s | ids only / joined |",
        "|---|---|---|---|---|",
        *[f"| {m} | {n} | {a:.3f} | {b:.3f} | {ratio:.2f} |" for m, n, a, b, ratio in rows], ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
