"""DiffMM's denoisers computed faster (``layers/diffusion.py``'s ``Denoiser.forward``; first written as the model
file's ``denoise``) against the previous model file and its plain denoiser.

Two changes, both to how the same values are computed: the first layer's backward no longer forms the gradient of
the noised rows (no parameter's), and the item-width output layer multiplies by its weight padded with zero rows to a
multiple of 16 columns (MKL's one-thread product ran about 1.5x slower at TikTok's 6,710 columns than at 6,720).
This script builds the previous model file (read from git at ``--previous``, its denoisers running the plain
``Denoiser.forward`` of ``layers/diffusion.py`` at that commit) and the current one from identical states on the converted TikTok subset, one thread, and writes:

* the two denoiser parts of an epoch, alternating which form goes first: the diffusion step (the denoisers trained
  over every user) and the graph rebuild (five reverse steps per user and modality), median wall seconds;
* whole training epochs (RecBole's loop over every batch: zero_grad, loss, backward, step; the epoch's first batch
  runs the diffusion step and the rebuild), the same batches and seeds for both forms, alternating order;
* from identical states and seeds: the relative difference of the two forms' diffusion-step losses and the share of
  users whose rebuilt top items are the same (rounding only: they compute the same thing).

    python -m dataset_converters diffmm --src ../shared/data/tiktok-diffmm --out dataset --name tiktok-diffmm
    python benchmarks/bench_diffmm_denoiser.py --previous 6900c47 [--rounds 2 --epochs 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
import types
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

from bench_distinct_rows import require_tiktok, train_epoch  # noqa: E402  (benchmarks/)
from git_revision import module_at  # noqa: E402  (benchmarks/)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--previous", default="6900c47", help="the commit of the previous model file")
    parser.add_argument("--rounds", type=int, default=2, help="timed diffusion steps and rebuilds per form")
    parser.add_argument("--epochs", type=int, default=2, help="timed training epochs per form")
    parser.add_argument("--data-path", default=str(REPO / "dataset"))
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default=str(HERE / "diffmm_denoiser.md"))
    args = parser.parse_args()
    require_tiktok(args.data_path)
    torch.set_num_threads(1)
    tune_allocator()  # as run_recbole.py
    data_path = os.path.abspath(args.data_path)
    os.chdir(tempfile.mkdtemp())  # RecBole may write log/ under the working directory
    load_start = os.getloadavg()[0]
    sys.argv = sys.argv[:1]  # RecBole's Config reads the command line too
    config = Config(model="DiffMM", dataset="tiktok-diffmm",
                    config_dict={"data_path": data_path, "state": "ERROR", "show_progress": False, "seed": args.seed})
    init_seed(args.seed, True)
    train, _, _ = data_preparation(config, create_dataset(config))
    classes = {"previous": getattr(module_at(args.previous, "recbole_metammf/model/diffmm.py"), "DiffMM"),
               "now": get_model("DiffMM")}
    nets, optimizers = {}, {}
    for label, cls in classes.items():
        init_seed(args.seed, True)
        nets[label] = cls(config, train._dataset).to(config["device"])
        optimizers[label] = torch.optim.Adam(nets[label].parameters(), lr=config["learning_rate"])
    plain = module_at(args.previous, "recbole_metammf/layers/diffusion.py").Denoiser.forward
    for denoiser in nets["previous"].denoisers:  # the previous form throughout: today's layer is the fast one
        denoiser.forward = types.MethodType(plain, denoiser)
    a, b = nets.values()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters())), "different initial states"

    # identical states and seeds: one diffusion step and one rebuild of each form, compared
    losses, items = {}, {}
    for label, net in nets.items():
        init_seed(args.seed, True)
        net.train()
        losses[label] = net.diffusion_epoch()
        init_seed(args.seed + 1, True)
        net.rebuild_graphs()
        items[label] = net.diffusion_items.clone()
    loss_rel = abs(losses["now"] - losses["previous"]) / abs(losses["previous"])
    same_top = (items["now"] == items["previous"]).all(dim=2).float().mean().item()
    print(f"diffusion loss rel. diff {loss_rel:.1e}; users with the same rebuilt top items {same_top:.4f}", flush=True)

    parts = {label: {"diffusion step": [], "graph rebuild": []} for label in nets}
    for r in range(args.rounds):
        order = list(nets) if r % 2 == 0 else list(nets)[::-1]
        for label in order:
            net = nets[label]
            init_seed(args.seed + 10 + r, True)
            parts[label]["diffusion step"].append(timed(net.diffusion_epoch))
            init_seed(args.seed + 20 + r, True)
            parts[label]["graph rebuild"].append(timed(net.rebuild_graphs))
            print(f"round {r} {label}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in parts[label].items()), flush=True)
    epochs = {label: [] for label in nets}
    for e in range(args.epochs):
        init_seed(args.seed + 100 + e, True)
        batches = list(train)  # the same batches and negatives for both forms
        order = list(nets) if e % 2 == 0 else list(nets)[::-1]
        for label in order:
            nets[label].train_steps = 0  # the epoch's first batch runs the diffusion step and the rebuild
            init_seed(args.seed + 100 + e, True)
            epochs[label].append(train_epoch(nets[label], optimizers[label], batches)[0])  # (wall s, mean loss)
            print(f"epoch {e} {label}: {epochs[label][-1]:.1f} s", flush=True)

    def row(name, values):
        prev, now = statistics.median(values["previous"]), statistics.median(values["now"])
        return f"| {name} | {len(values['now'])} | {prev:.1f} | {now:.1f} | **{now / prev:.2f}** |"

    rows = [row(k, {label: parts[label][k] for label in nets}) for k in ("diffusion step", "graph rebuild")]
    rows.append(row("training epoch (all of it)", epochs))
    lines = ["# DiffMM's denoisers computed faster", "",
             f"Written by `benchmarks/bench_diffmm_denoiser.py`: the model file at `{args.previous}` (*previous*: "
             "`Denoiser.forward` of `layers/diffusion.py`) against the current one (*now*: `denoise` of "
             "`model/diffmm.py`, the first layer's backward without the gradient of the noised rows, the item-width "
             "output layer at a multiple of 16 columns), from identical states on the converted TikTok subset (9,308 "
             "users x 6,710 items, the YAML's defaults: batches of 1,024, denoisers 6,720 -> 1,000 -> 6,710), one "
             "thread, alternating which form goes first; medians of wall seconds.", "",
             f"    python benchmarks/bench_diffmm_denoiser.py --previous {args.previous} --rounds {args.rounds} "
             f"--epochs {args.epochs}", "",
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.node()}; torch {torch.__version__}; "
             f"niceness {os.nice(0)}; load average at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f} "
             f"({os.cpu_count()} cores; other work shared the machine: the ratio is the figure).", "",
             "| part | runs per form | previous s | now s | now / previous |", "|---|---|---|---|---|", *rows, "",
             f"The same computation: from identical states and seeds, the two forms' diffusion-step losses differ by "
             f"{loss_rel:.1e} (relative), and {same_top:.2%} of the users get the same rebuilt top items.", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
