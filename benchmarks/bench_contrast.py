"""The contrastive denominator (``layers/contrast.py``) block by block, against the whole-matrix forms.

Times forward + backward of ``log sum_j exp(scale * a_r . c_j)`` over unit rows at the shapes MGCN,
LGMRec and DiffMM meet on TikTok (a batch of users or items against all users / items, d = 64), one
thread, interleaved repeats, for three forms: autograd's ``torch.logsumexp(a @ c.T * scale)``, the
previous version of ``bounded_logsumexp`` (the whole [n, m] softmax kept for the backward; read from
git at ``--previous``) and the current, blockwise one. Checks that all three agree, writes the medians.

    python benchmarks/bench_contrast.py [--previous 9a69ad3] [--repeats 9]
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
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from recbole_metammf.layers import contrast  # noqa: E402
from git_revision import module_at  # noqa: E402  (benchmarks/)

SHAPES = [("LGMRec / MGCN users: batch 2,048 x 9,308 users", 2048, 9308),
          ("LGMRec / MGCN items: batch 2,048 x 6,710 items", 2048, 6710),
          ("DiffMM users: batch 1,024 x 9,308 users", 1024, 9308),
          ("DiffMM items: batch 1,024 x 6,710 items", 1024, 6710)]


def load_previous(commit: str):
    return module_at(commit, "recbole_metammf/layers/contrast.py").bounded_logsumexp


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--previous", default="9a69ad3")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default=str(HERE / "contrast_blocks.md"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    scale = 1 / 0.2
    forms = {"autograd logsumexp": lambda a, c: torch.logsumexp(a @ c.t() * scale, dim=1),
             f"previous ({args.previous})": lambda a, c, f=load_previous(args.previous): f(a, c, scale),
             "blockwise (now)": lambda a, c: contrast.bounded_logsumexp(a, c, scale)}
    load_start = os.getloadavg()[0]
    rows = []
    for label, n, m in SHAPES:
        torch.manual_seed(0)
        a = torch.nn.functional.normalize(torch.randn(n, 64), dim=1).requires_grad_()
        c = torch.nn.functional.normalize(torch.randn(m, 64), dim=1).requires_grad_()
        w = torch.randn(n)
        results, times = {}, {k: [] for k in forms}
        for name, fn in forms.items():  # warm-up, and the values to compare
            a.grad = c.grad = None
            out = fn(a, c)
            (out * w).sum().backward()
            results[name] = (out.detach(), a.grad.clone(), c.grad.clone())
        base = results["autograd logsumexp"]
        err = max((x - y).abs().max().item() for r in results.values() for x, y in zip(r, base))
        for r in range(args.repeats):
            for name in (list(forms) if r % 2 == 0 else list(forms)[::-1]):
                a.grad = c.grad = None
                t0 = time.perf_counter()
                (forms[name](a, c) * w).sum().backward()
                times[name].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) * 1000 for k, v in times.items()}
        names = list(forms)
        rows.append(f"| {label} | {contrast.block_rows(m)} | " + " | ".join(f"{med[k]:.0f}" for k in names)
                    + f" | {med[names[2]] / med[names[1]]:.2f} | {med[names[2]] / med[names[0]]:.2f} | {err:.1e} |")
        print(rows[-1], flush=True)
    names = list(forms)
    lines = ["# The contrastive denominator, block by block", "",
             "Written by `benchmarks/bench_contrast.py` (`recbole_metammf/layers/contrast.py`): forward + backward of "
             "`log sum_j exp(a_r . c_j / 0.2)` over unit rows (d = 64), one thread, medians of "
             f"{args.repeats} interleaved repeats (the order alternating) after a warm-up, in ms. "
             "Max |difference| from autograd's values and gradients in the last column (float32).", "",
             "    python benchmarks/bench_contrast.py --previous " + args.previous, "",
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {platform.node()}; torch {torch.__version__}; "
             f"niceness {os.nice(0)}; load average at start {load_start:.2f}, at end {os.getloadavg()[0]:.2f} "
             f"({os.cpu_count()} cores; other work shared the machine, the forms alternate so their ratios are "
             "the figures).", "",
             f"| shape | rows per block | {names[0]} | {names[1]} | {names[2]} | now / previous | now / autograd "
             "| max abs diff |", "|---|---|---|---|---|---|---|---|", *rows, "",
             "Memory: the previous form and autograd keep the [n, m] matrix until the backward (76 MB at "
             "2,048 x 9,308; LGMRec has two such terms per step, DiffMM four of 1,024 rows); the blockwise form "
             "keeps the n log-sums and one block.", ""]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
