"""The contrastive terms over a batch's distinct rows (DiffMM, LGMRec), against the previous form, by training epochs.

A training batch repeats users and items: on TikTok a batch of 1,024 interactions holds about 400 distinct users and
800 distinct items. DiffMM's InfoNCE and LGMRec's hypergraph contrast put every row of the batch, repeats included,
through a [rows, all users / items] denominator; since that term depends on the row only, the models now compute each
distinct row once and weight it by its count (the same loss and gradients: ``tests/test_diffmm.py``,
``tests/test_bm3_mgcn_lgmrec.py``). This script trains the previous model file (read from git at ``--previous``) and
the current one side by side on the converted TikTok subset, one thread, the same batches (negatives included) and
the same seed before each epoch, alternating which goes first, and writes:

* the training epoch's wall time (RecBole's loop: zero_grad, loss, backward, step over every batch; for DiffMM the
  epoch's diffusion step and graph rebuild included, as its first batch runs them), median per model and form, and
  the ratio now / previous;
* one step from identical states (the same batch and seed): the relative difference of the two forms' losses and
  gradients (rounding only: they compute the same thing), and the largest relative difference between their epoch
  losses over the run (Adam's normalised steps carry the rounding forward, so the trajectories part slowly).

    python -m dataset_converters diffmm --src ../shared/data/tiktok-diffmm --out dataset --name tiktok-diffmm
    python benchmarks/bench_distinct_rows.py --previous ab5b281 [--epochs 2 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import recbole_metammf  # noqa: E402,F401  (registers the plugin)
import torch  # noqa: E402
from recbole.config import Config  # noqa: E402
from recbole.data import create_dataset, data_preparation  # noqa: E402
from recbole.utils import get_model, init_seed  # noqa: E402

from recbole_metammf.allocator import tune_allocator  # noqa: E402

from git_revision import module_at  # noqa: E402  (benchmarks/)

MODELS = {"DiffMM": "diffmm", "LGMRec": "lgmrec"}


def previous_class(commit: str, model: str):
    """The model class as its file was at ``commit``."""
    return getattr(module_at(commit, f"recbole_metammf/model/{MODELS[model]}.py"), model)


def require_tiktok(data_path: str) -> None:
    """Exit with one line unless ``data_path`` holds the converted TikTok subset."""
    if not os.path.isdir(os.path.join(data_path, "tiktok-diffmm")):
        sys.exit(f"no converted TikTok subset in {data_path}/tiktok-diffmm: convert it first "
                 "(python -m dataset_converters diffmm --src ../shared/data/tiktok-diffmm --out dataset "
                 "--name tiktok-diffmm)")


def train_epoch(net, optimizer, batches) -> tuple[float, float]:
    """RecBole's training loop over ``batches``: (wall seconds, mean loss)."""
    net.train()
    total = 0.0
    t0 = time.perf_counter()
    for batch in batches:
        optimizer.zero_grad()
        loss = net.calculate_loss(batch)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return time.perf_counter() - t0, total / len(batches)


def run_model(model: str, previous: str, epochs: int, data_path: str, seed: int) -> dict:
    sys.argv = sys.argv[:1]  # RecBole's Config reads the command line too
    config = Config(model=model, dataset="tiktok-diffmm",
                    config_dict={"data_path": data_path, "state": "ERROR", "show_progress": False, "seed": seed})
    init_seed(seed, True)
    train, _, _ = data_preparation(config, create_dataset(config))
    classes = {f"previous ({previous})": previous_class(previous, model), "distinct rows (now)": get_model(model)}
    nets, optimizers = {}, {}
    for label, cls in classes.items():
        init_seed(seed, True)
        nets[label] = cls(config, train._dataset).to(config["device"])
        optimizers[label] = torch.optim.Adam(nets[label].parameters(), lr=config["learning_rate"])
    # one step from identical states, the same batch and seed: the two forms' loss and gradients
    batch = next(iter(train))
    first = {}
    for label, cls in classes.items():
        init_seed(seed, True)
        net = cls(config, train._dataset).to(config["device"])
        net.train_steps = 1  # DiffMM: the recommender's step alone (no diffusion step or rebuild first)
        init_seed(seed, True)
        loss = net.calculate_loss(batch)
        loss.backward()
        first[label] = (loss.item(), {n: p.grad for n, p in net.named_parameters() if p.grad is not None})
    (loss_a, grad_a), (loss_b, grad_b) = first.values()
    if set(grad_a) != set(grad_b):
        raise RuntimeError(f"{model}: the two forms give gradients to different parameters")
    grad_rel = max(((grad_a[n] - grad_b[n]).abs().max() / grad_a[n].abs().max().clamp_min(1e-30)).item() for n in grad_a)
    step = (abs(loss_a - loss_b) / abs(loss_a), grad_rel)
    times = {label: [] for label in classes}
    losses = {label: [] for label in classes}
    distinct = []
    for epoch in range(epochs):
        init_seed(seed + epoch, True)
        batches = list(train)  # the same batches and negatives for both forms
        distinct.append((sum(b[config["USER_ID_FIELD"]].unique().numel() for b in batches),
                         sum(b[config["ITEM_ID_FIELD"]].unique().numel() for b in batches),
                         sum(len(b) for b in batches)))
        order = list(classes) if epoch % 2 == 0 else list(classes)[::-1]
        for label in order:
            init_seed(seed + epoch, True)  # the diffusion step's noise and permutation alike for both
            wall, loss = train_epoch(nets[label], optimizers[label], batches)
            times[label].append(wall)
            losses[label].append(loss)
            print(f"{model} epoch {epoch} {label}: {wall:.1f} s, loss {loss:.6f}", flush=True)
    names = list(classes)
    rel = max(abs(a - b) / abs(b) for a, b in zip(losses[names[1]], losses[names[0]]))
    users, items, rows = (sum(x) for x in zip(*distinct))
    return {"model": model, "times": times, "losses": losses, "rel": rel, "step": step,
            "distinct": (users / rows, items / rows)}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--previous", default="ab5b281", help="the commit of the row-by-row form")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--epochs", type=int, nargs="+", default=[2, 3],
                        help="training epochs per form, one number per model (in --models' order)")
    parser.add_argument("--data-path", default=str(REPO / "dataset"))
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default=str(HERE / "distinct_rows.md"))
    args = parser.parse_args()
    require_tiktok(args.data_path)
    torch.set_num_threads(1)
    tune_allocator()  # as run_recbole.py
    os.chdir(tempfile.mkdtemp())  # RecBole may write log/ under the working directory
    load_start = os.getloadavg()[0]
    epochs = dict(zip(args.models, args.epochs + [args.epochs[-1]] * len(args.models)))
    rows = []
    for model in args.models:
        r = run_model(model, args.previous, epochs[model], args.data_path, args.seed)
        names = list(r["times"])
        med = {k: statistics.median(v) for k, v in r["times"].items()}
        rows.append(f"| {model} | {epochs[model]} | {r['distinct'][0]:.2f} / {r['distinct'][1]:.2f} | "
                    f"{med[names[0]]:.1f} | {med[names[1]]:.1f} | **{med[names[1]] / med[names[0]]:.2f}** | "
                    f"{r['step'][0]:.1e} / {r['step'][1]:.1e} | {r['rel']:.1e} |")
        print(rows[-1], flush=True)
    lines = ["# Contrastive terms over a batch's distinct rows (DiffMM, LGMRec)", "",
             "Written by `benchmarks/bench_distinct_rows.py`: the training epoch (every batch: zero_grad, loss, "
             "backward, Adam step; DiffMM's diffusion step and graph rebuild included, as its first batch runs "
             f"them) of the model file at `{args.previous}` (every row of the batch through the contrastive "
             "denominator, repeats included) and of the current one (each distinct row once, weighted by its "
             "count), on the converted TikTok subset (9,308 users x 6,710 items, training batches of 1,024 (DiffMM) "
             "and 2,048 (LGMRec) interactions, the YAMLs' defaults), one thread, the same batches and seeds for both, the order alternating by "
             "epoch; medians in seconds. *One step*: from identical states, the same batch and seed, the relative "
             "difference of the two forms' losses and the largest of the gradients' (per parameter, relative to its "
             "largest entry): rounding, they compute the same thing. *Epoch losses*: the largest relative difference "
             "between the forms' epoch losses over the run; Adam's normalised steps carry those rounding differences "
             "forward (a parameter whose gradient is rounding-sized moves by a learning-rate-sized step), so the "
             "trajectories part slowly.", "",
             f"    python benchmarks/bench_distinct_rows.py --previous {args.previous} --models {' '.join(args.models)} "
             f"--epochs {' '.join(str(epochs[m]) for m in args.models)}", "",
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.node()}; torch {torch.__version__}; "
             f"niceness {os.nice(0)}; load average at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f} "
             f"({os.cpu_count()} cores; other work shared the machine: the ratio is the figure).", "",
             "| model | epochs per form | distinct users / items per batch row | previous s | now s | now / previous "
             "| one step: loss / gradients rel. diff | epoch losses rel. diff |", "|---|---|---|---|---|---|---|---|", *rows, ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
