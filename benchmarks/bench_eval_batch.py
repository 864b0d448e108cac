"""Full-sort evaluation time against ``eval_batch_size`` (scores per batch).

RecBole's full-sort evaluation scores a block of users against every item, masks their
training items, takes the top K and builds a 0/1 matrix of the block's positives; with
16,777,216 scores a block is a 64 MB float matrix (plus an int matrix as large), which
falls out of the CPU cache at every step. This times RecBole's own
``Trainer.evaluate`` on a dataset's validation set for each batch size, interleaved
(``--repeats`` rounds, the order of sizes alternating), in one process with one thread,
and writes the mean times and their ratio to the first (largest) size.

    python benchmarks/bench_eval_batch.py [--dataset microlens --data_path dataset] [--model BPR] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path[:0] = [str(REPO), str(HERE)]

import warnings  # noqa: E402

import torch  # noqa: E402

warnings.filterwarnings("ignore")

import recbole_metammf  # noqa: E402,F401  (registers the plugin)
from bench_setup import one_thread_in_scratch  # noqa: E402  (beside this script)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset", default="microlens")
    parser.add_argument("--data_path", default=str(REPO / "dataset"))
    parser.add_argument("--model", default="BPR")
    parser.add_argument("--sizes", default="16777216,2097152,524288")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "eval_batch_results.md"))
    args = parser.parse_args()

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    data_path = one_thread_in_scratch("bench_eval_batch", args.data_path, args.dataset,
                                      "build it first (see README, 'Datasets')")
    sizes = [int(s) for s in args.sizes.split(",")]

    def make_config(size):
        return Config(model=args.model, dataset=args.dataset,
                      config_dict={"data_path": data_path, "show_progress": False, "state": "ERROR",
                                   "eval_batch_size": size})

    config = make_config(sizes[0])
    init_seed(2020, True)
    dataset = create_dataset(config)
    train, first, _ = data_preparation(config, dataset)
    # the same validation dataloader rebuilt per size (its batch size is fixed when it is built)
    loaders = {s: type(first)(make_config(s), first._dataset, first._sampler, shuffle=False) for s in sizes[1:]}
    loaders[sizes[0]] = first
    model = get_model(args.model)(config, train.dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], args.model)(config, model)

    times = {s: [] for s in sizes}
    results = {}
    for r in range(args.repeats):
        for s in (sizes if r % 2 == 0 else sizes[::-1]):
            t0 = time.perf_counter()
            results[s] = trainer.evaluate(loaders[s], load_best_model=False)
            times[s].append(time.perf_counter() - t0)
            print(f"round {r} eval_batch_size {s:>9d}: {times[s][-1]:.2f} s", flush=True)
    base = statistics.mean(times[sizes[0]])
    n_users = first.user_df.length if hasattr(first, "user_df") else "?"
    lines = [
        f"`python benchmarks/bench_eval_batch.py --dataset {args.dataset} --model {args.model} --repeats {args.repeats}`: RecBole "
        f"`Trainer.evaluate` on the validation set ({n_users} users x {dataset.item_num} items), 1 thread, "
        f"mean of {args.repeats} interleaved rounds, torch {torch.__version__}.",
        "",
        "| eval_batch_size (scores) | users per batch | seconds | time vs first row | same metrics as first row |",
        "|---|---|---|---|---|",
    ]
    for s in sizes:
        m = statistics.mean(times[s])
        same = "yes" if results[s] == results[sizes[0]] else "NO"
        lines.append(f"| {s:,} | {max(1, s // dataset.item_num):,} | {m:.2f} | {m / base:.2f} | {same} |")
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
