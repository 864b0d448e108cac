"""Issue 12, round 3: the single operations behind this round's changes, timed in one process.

Each row times the plain PyTorch form and the plugin's form of the same computation (same inputs,
same results: the tests in ``tests/test_perf_fusion.py`` and ``tests/test_perf_grcn.py`` check
values and gradients), at the sizes of GRCN's mid-size step (3 modalities x 123,077 training
edges, 8,001 users, 20,001 items, 64 columns). Median of 30 calls after 3 warm-up calls, the
process's 2 torch threads; the ratio is what matters (the machine is shared).

    python benchmarks/micro_ops.py          # -> benchmarks/micro_ops.md
"""

from __future__ import annotations

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def timed(fn, repeats: int = 30) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    import torch
    import torch.nn.functional as F

    from recbole_metammf.layers.graph import csr_mm, l2_normalize

    torch.set_num_threads(2)
    torch.manual_seed(0)
    n_rows, n_cols, nnz, d = 3 * 8_001, 3 * 20_001, 3 * 123_077, 64
    rows, cols = torch.randint(0, n_rows, (nnz,)), torch.randint(0, n_cols, (nnz,))
    order = torch.argsort(rows * n_cols + cols)
    rows, cols = rows[order], cols[order]
    crow = torch.zeros(n_rows + 1, dtype=torch.int64)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    adj = torch.sparse_csr_tensor(crow.int(), cols.int(), torch.rand(nnz), (n_rows, n_cols))
    h = torch.randn(n_cols, d)

    table = torch.randn(20_001, 256, requires_grad=True)
    batch = torch.randint(0, 20_001, (4_096,))
    x = torch.randn(n_cols, d, requires_grad=True)
    grad = torch.randn(n_cols, d)

    def forward_backward(make, wrt, grad_out=None):
        return lambda: torch.autograd.grad(make(), wrt, grad_out)

    rows_out = [
        ("sparse CSR x dense product, 369k non-zeros x 64 (`adj @ h` vs `csr_mm`)",
         timed(lambda: adj @ h), timed(lambda: csr_mm(adj, h))),
        ("gather 4,096 rows of a [20,001 x 256] table, forward + backward (`t[idx]` vs `index_select`)",
         timed(forward_backward(lambda: table[batch].sum(), table)),
         timed(forward_backward(lambda: table.index_select(0, batch).sum(), table))),
        ("L2-normalise [60,003 x 64] rows, forward + backward (`F.normalize` vs `l2_normalize`)",
         timed(forward_backward(lambda: F.normalize(x, dim=-1), x, grad)),
         timed(forward_backward(lambda: l2_normalize(x), x, grad))),
    ]
    lines = [
        "# Single operations behind round 3 (issue 12)",
        "",
        "Written by `python benchmarks/micro_ops.py` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} (load average {os.getloadavg()[0]:.1f}, 2 torch "
        "threads, median of 30 calls). Each pair computes the same numbers; the ratio is the point.",
        "",
        "| operation | plain PyTorch (ms) | plugin (ms) | plain / plugin |",
        "|---|---|---|---|",
    ]
    for name, plain, ours in rows_out:
        lines.append(f"| {name} | {plain:.2f} | {ours:.2f} | {plain / ours:.1f}x |")
    text = "\n".join(lines) + "\n"
    with open(os.path.join(HERE, "micro_ops.md"), "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
