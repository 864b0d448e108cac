"""The denominator of a cosine contrastive loss (InfoNCE), block by block (MGCN, LGMRec, DiffMM).

``log sum_j exp(scale * a_r . c_j)`` for every row ``r``: with unit rows ``a`` and ``c`` the
exponent is bounded by ``|scale|``, so no running maximum is needed (``exp(1 / 0.2) = 148``;
float32 holds sums of millions of those). Autograd's ``logsumexp(a @ c.T * scale)`` makes about
eight passes over the [n, m] matrix and keeps it for the backward; on TikTok's 9,308 users a batch
of 2,048 makes it 19 M entries (76 MB), and with an inner dimension of 64 those passes are
memory-bound. Here the rows go in blocks small enough for the core's cache (about 2 MB of the
matrix at a time): the forward keeps only each row's log-sum, and the backward recomputes each
block's softmax from it (``exp(scale * a_r . c_j - lse_r)``) and multiplies it into both
gradients while the block is in cache, so the [n, m] matrix is never stored. Three products of
the block per step instead of two, but no pass over memory: about twice as fast at TikTok's shapes
on one core, and the 76 MB per term are no longer held until the backward
(``benchmarks/contrast_blocks.md``).
"""

from __future__ import annotations

import torch

BLOCK_BYTES = 1 << 21  # the [rows, m] block of the score matrix kept under the core's L2 cache


def block_rows(m: int) -> int:
    """Rows per block for ``m`` candidates: about :data:`BLOCK_BYTES` of float32 scores, at least 16."""
    return max(16, BLOCK_BYTES // (4 * max(int(m), 1)))


class _BoundedLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, c, scale):
        rows = block_rows(c.shape[0])
        lse = a.new_empty(a.shape[0])
        ct = c.t()
        for r0 in range(0, a.shape[0], rows):
            block = torch.mm(a[r0 : r0 + rows] * scale, ct).exp_()  # [rows, m]
            torch.sum(block, dim=1, out=lse[r0 : r0 + rows])
        lse.log_()
        ctx.scale = scale
        ctx.save_for_backward(a, c, lse)
        return lse

    @staticmethod
    def backward(ctx, grad):
        a, c, lse = ctx.saved_tensors
        scale = ctx.scale
        rows = block_rows(c.shape[0])
        grad_a = torch.empty_like(a) if ctx.needs_input_grad[0] else None
        grad_c = torch.zeros_like(c) if ctx.needs_input_grad[1] else None
        weight = grad * scale  # d lse_r / d (a_r . c_j) = scale * softmax_rj
        ct = c.t()
        for r0 in range(0, a.shape[0], rows):
            r1 = r0 + rows
            a_block = a[r0:r1]
            probs = torch.mm(a_block * scale, ct).sub_(lse[r0:r1, None]).exp_()  # the block's softmax
            probs.mul_(weight[r0:r1, None])
            if grad_a is not None:
                torch.mm(probs, c, out=grad_a[r0:r1])
            if grad_c is not None:
                grad_c.addmm_(probs.t(), a_block)
        return grad_a, grad_c, None


def bounded_logsumexp(a: torch.Tensor, c: torch.Tensor, scale: float) -> torch.Tensor:
    """``torch.logsumexp(scale * a @ c.T, dim=1)`` [n] for ``a`` [n, d], ``c`` [m, d] whose products are
    bounded (unit rows: cosines), differentiable in both; equal up to rounding (``tests/test_bm3_mgcn_lgmrec.py``)."""
    return _BoundedLogSumExp.apply(a, c, float(scale))
