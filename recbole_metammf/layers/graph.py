"""The user-item graph, built once, and the two propagations MetaMMF_GCN offers.

Nodes are users ``0..n_users-1`` followed by items ``n_users..n_users+n_items-1``
(RecBole internal ids, so item 0, the padding item, is an isolated node). The
graph is the undirected bipartite graph of training interactions, stored as a
torch sparse CSR tensor together with its transpose (the backward pass of a
sparse product needs ``A^T``; building it once saves a transpose per step).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F


def bipartite_adjacency(dataset) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency [(U+I), (U+I)] of the dataset's interactions."""
    inter = dataset.inter_matrix(form="coo").astype(np.float32)  # [U, I]
    inter.data[:] = 1.0  # duplicate interactions count once
    inter = inter.tocsr()
    inter.sum_duplicates()
    inter.data[:] = 1.0
    return sp.bmat([[None, inter], [inter.T, None]], format="csr", dtype=np.float32)


def normalise(adj: sp.csr_matrix, kind: str) -> sp.csr_matrix:
    """``mean``: D^-1 A (mean over neighbours); ``sym``: D^-1/2 A D^-1/2 (LightGCN)."""
    deg = np.asarray(adj.sum(axis=1)).flatten()
    with np.errstate(divide="ignore", invalid="ignore"):  # rows of degree <= 0 (signed weights) get 0
        if kind == "mean":
            inv = np.where(deg > 0, 1.0 / deg, 0.0)
            return sp.diags(inv.astype(np.float32)) @ adj
        if kind == "sym":
            inv_sqrt = np.where(deg > 0, deg ** -0.5, 0.0).astype(np.float32)
            d = sp.diags(inv_sqrt)
            return d @ adj @ d
    raise ValueError(f"unknown normalisation '{kind}'")


def index_dtype(*sizes: int) -> torch.dtype:
    """int32 for CSR indices when every size fits, else int64.

    torch's CPU sparse-dense product works on int32 indices: int64 ones are converted at
    every product (two index copies per call), int32 ones are used as they are.
    """
    return torch.int32 if max(sizes, default=0) < 2**31 - 1 else torch.int64


def to_torch_sparse(matrix: sp.spmatrix) -> torch.Tensor:
    """A scipy matrix as a torch sparse CSR tensor (float32; int32 indices when they fit)."""
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    csr.sort_indices()
    dtype = index_dtype(csr.nnz, *csr.shape)
    return torch.sparse_csr_tensor(
        torch.from_numpy(csr.indptr).to(dtype),
        torch.from_numpy(csr.indices).to(dtype),
        torch.from_numpy(csr.data),
        size=csr.shape,
    )


def csr_mm(adj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``adj @ h`` for a sparse CSR ``adj`` and a dense ``h``, into a new tensor (no autograd).

    On CPU, ``adj @ h`` runs as ``addmm`` on a zero-filled "self" that is then copied into the
    result: two passes over the output that the product itself does not need (at 369k non-zeros
    x 64 columns a third of the call: 2.30 ms against 1.48 ms, ``benchmarks/micro_ops.md``).
    ``addmm_`` with ``beta=0`` into an uninitialised output is the product alone: BLAS ignores
    the output's old values when ``beta`` is 0 (``tests/test_perf_fusion.py`` checks it on a
    NaN-filled output, empty rows and no non-zeros). Elsewhere (CUDA, other layouts, or ``h``
    recording a gradient: the in-place product has no backward for a sparse operand) the plain
    product.
    """
    if not _cpu_csr_product(adj, h) or (h.requires_grad and torch.is_grad_enabled()):
        return adj @ h
    out = torch.empty(adj.shape[0], h.shape[1], dtype=h.dtype, device=h.device)
    return out.addmm_(adj, h, beta=0.0)


def csr_addmm_(out: torch.Tensor, adj: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``out += adj @ h`` in place (no autograd): on CPU one ``addmm_`` (as fast as the product alone,
    no separate output and no pass to add it); elsewhere the plain product added."""
    if not _cpu_csr_product(adj, h):
        return out.add_(adj @ h)
    return out.addmm_(adj, h)


def _cpu_csr_product(adj: torch.Tensor, h: torch.Tensor) -> bool:
    """Whether ``adj @ h`` is torch's CPU sparse-CSR x dense product, which ``addmm_`` can write in place."""
    return adj.device.type == "cpu" and adj.layout == torch.sparse_csr and h.layout == torch.strided


def l2_normalize(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=-1, eps=eps)`` with a backward of four passes over ``x`` instead of
    autograd's chain through norm, clamp, expand and division (about ten); the same values and
    gradients (``tests/test_perf_grcn.py``), zero rows included."""
    return _L2Normalize.apply(x, eps)


def l2_normalize_forward(x: torch.Tensor, eps: float = 1e-12):
    """(y, 1 / max(|x|, eps), |x| > eps) per row: the normalised rows and what the backward needs."""
    norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
    inv = 1.0 / norm.clamp_min(eps)
    return x * inv, inv, norm > eps


def l2_normalize_backward(grad: torch.Tensor, y: torch.Tensor, inv: torch.Tensor, above: torch.Tensor):
    """The gradient of ``x`` from that of ``y = x / max(|x|, eps)``: ``(g - y (y . g)) / |x|`` where
    ``|x| > eps``, ``g / eps`` elsewhere (``grad`` is not modified)."""
    dot = (grad * y).sum(dim=-1, keepdim=True).mul_(above)
    return torch.mul(y, dot).neg_().add_(grad).mul_(inv)


class _L2Normalize(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, eps):
        y, inv, above = l2_normalize_forward(x, eps)
        ctx.save_for_backward(y, inv, above)
        return y

    @staticmethod
    def backward(ctx, grad):
        return l2_normalize_backward(grad, *ctx.saved_tensors), None


class _SpMM(torch.autograd.Function):
    """``A @ h`` whose backward uses a precomputed ``A^T`` (no transpose or coalesce per step)."""

    @staticmethod
    def forward(ctx, adj, adj_t, h):
        ctx.adj_t = adj_t
        return csr_mm(adj, h)

    @staticmethod
    def backward(ctx, grad):
        return None, None, csr_mm(ctx.adj_t, grad)


class SparseGraph(nn.Module):
    """A fixed sparse operator and its transpose (CSR), moved with the model, multiplied with autograd."""

    def __init__(self, matrix: sp.spmatrix):
        super().__init__()
        self.register_buffer("adj", to_torch_sparse(matrix), persistent=False)
        self.register_buffer("adj_t", to_torch_sparse(matrix.T), persistent=False)
        self.shape = matrix.shape

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return _SpMM.apply(self.adj, self.adj_t, h)  # [N, d]

    def __deepcopy__(self, memo):
        # torch cannot deep-copy CSR tensors (RecBole's get_flops deep-copies the model);
        # the operator never changes, so a copy is a new module sharing the same tensors
        clone = SparseGraph.__new__(SparseGraph)
        nn.Module.__init__(clone)
        clone.register_buffer("adj", self.adj, persistent=False)
        clone.register_buffer("adj_t", self.adj_t, persistent=False)
        clone.shape = self.shape
        memo[id(self)] = clone
        return clone


class SAGEConv(nn.Module):
    """GraphSAGE, mean aggregation with a root weight: ``h' = W_l · mean_N(v) h + b + W_r · h_v``.

    No self loops, no degree normalisation beyond the mean (as the reference code).
    """

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.lin_neigh = nn.Linear(in_dim, out_dim, bias=True)
        self.lin_root = nn.Linear(in_dim, out_dim, bias=False)

    def reset_parameters(self) -> None:
        """torch's Linear init (Kaiming-uniform weights, bias U(±1/sqrt(in))), as PyG's SAGEConv."""
        self.lin_neigh.reset_parameters()
        self.lin_root.reset_parameters()

    def forward(self, h: torch.Tensor, mean_adj: SparseGraph, rows: torch.Tensor | None = None) -> torch.Tensor:
        """[N, out]; with ``rows`` only those nodes' outputs [len(rows), out] (the mean still over all of h).

        On all nodes computed as ``mean_N(h W_l^T) + b + h W_r^T`` (the mean is linear; the bias after
        it, so a node without neighbours still gets ``b``): the linear maps then save only ``h`` for
        their weight gradients, not the [N, in] neighbour means as well (one node matrix less live per
        layer). On ``rows``, the mean first: the maps then run on those rows only."""
        if rows is None:  # lin_neigh's bias added once, inside the root map's product
            return mean_adj(F.linear(h, self.lin_neigh.weight)) + F.linear(h, self.lin_root.weight, self.lin_neigh.bias)
        neigh = mean_adj(h).index_select(0, rows)
        return self.lin_neigh(neigh) + self.lin_root(h.index_select(0, rows))


def mask_dropout(h: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout as ``F.dropout`` (each element kept with probability ``1 - p``, kept ones scaled
    by ``1 / (1 - p)``), its mask drawn with ``torch.rand`` instead of ``bernoulli_``.

    The same law, a different random stream: on CPU torch's ``bernoulli_`` draws about half as fast
    as ``rand`` (a [28k, 64] mask: 7.4 ms vs 3.4 ms, 2 threads), and MetaMMF_GCN draws one for every
    node at every step. The backward is ``grad * mask * scale`` as for ``F.dropout``.
    """
    if not training or p == 0.0:
        return h
    if p >= 1.0:
        return h * 0.0
    keep = (torch.rand(h.shape, device=h.device) >= p).to(h.dtype).mul_(1.0 / (1.0 - p))  # 0 or 1/(1-p)
    return h * keep


def lightgcn_propagate(h: torch.Tensor, sym_adj: SparseGraph, n_layers: int) -> torch.Tensor:
    """Mean of ``h, Â h, Â² h, ...`` (LightGCN, no weights, no activation)."""
    out = h
    for _ in range(n_layers):
        h = sym_adj(h)
        out = out + h
    return out / (n_layers + 1)


# ----------------------------------------------------------------------------
# Helpers of the multimodal baselines (GRCN, LATTICE, FREEDOM)
# ----------------------------------------------------------------------------
def bipartite_from_edges(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Symmetric 0/1 adjacency [(U+I), (U+I)] of the given (user, item) edges (duplicates count once)."""
    inter = sp.csr_matrix(
        (np.ones(len(users), dtype=np.float32), (np.asarray(users), np.asarray(items))), shape=(n_users, n_items)
    )
    inter.data[:] = 1.0
    return sp.bmat([[None, inter], [inter.T, None]], format="csr", dtype=np.float32)


def sym_normalise_edges(rows: torch.Tensor, cols: torch.Tensor, weight: torch.Tensor, n: int) -> torch.Tensor:
    """Edge values of ``D^-1/2 A D^-1/2`` with ``D`` the row sums of ``A`` (as :func:`normalise` ``sym``)."""
    deg = torch.zeros(n, dtype=weight.dtype, device=weight.device).index_add(0, rows, weight)  # [n]
    inv_sqrt = torch.where(deg > 0, deg.clamp_min(1e-12).rsqrt(), torch.zeros_like(deg))
    return weight * inv_sqrt[rows] * inv_sqrt[cols]


def knn_edges(features, k: int, chunk_size: int = 2048) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's ``k`` most cosine-similar rows: ``(rows, cols, similarity)``, one entry per kept pair.

    ``features`` is a dense tensor [n, d] or a scipy sparse matrix [n, d] (a bag of tokens as
    multi-hot rows). A row is its own nearest neighbour (cosine 1), as in LATTICE's and
    FREEDOM's reference code. Rows with zero norm (RecBole's padding item) get no neighbours
    and are nobody's neighbour. The similarity is computed ``chunk_size`` rows at a time, so
    memory is ``chunk_size x n``, never ``n x n``.
    """
    if sp.issparse(features):
        x = sp.csr_matrix(features, dtype=np.float32)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).flatten())
        x = sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-12), 0.0).astype(np.float32)) @ x
        x_t = x.T.tocsr()
        valid = torch.from_numpy(norms > 0)

        def similarity(start, end):
            return torch.from_numpy((x[start:end] @ x_t).toarray().astype(np.float32))

    else:
        x = features.detach().float()
        valid = x.norm(dim=1) > 0
        x = torch.nn.functional.normalize(x, dim=1)  # zero rows stay zero

        def similarity(start, end):
            return x[start:end] @ x.t()

    n = valid.shape[0]
    k = min(k, int(valid.sum()))
    rows, cols, sims = [], [], []
    for start in range(0, n, chunk_size):
        end = min(start + chunk_size, n)
        sim = similarity(start, end)  # [chunk, n]
        sim[:, ~valid] = float("-inf")
        val, idx = torch.topk(sim, k, dim=1)  # [chunk, k]
        keep = valid[start:end]
        rows.append(torch.arange(start, end).repeat_interleave(k).view(-1, k)[keep].flatten())
        cols.append(idx[keep].flatten())
        sims.append(val[keep].flatten())
    device = x.device if torch.is_tensor(x) else "cpu"
    return torch.cat(rows).to(device), torch.cat(cols).to(device), torch.cat(sims).to(device)


def knn_graph(features, k: int, weighted: bool = True, chunk_size: int = 2048, signed: bool = False) -> sp.csr_matrix:
    """Sparse kNN graph [n, n] of :func:`knn_edges`: similarity values (``weighted``; clamped at 0 unless
    ``signed``) or 1."""
    rows, cols, sims = knn_edges(features, k, chunk_size)
    n = features.shape[0]
    if weighted:
        values = (sims if signed else sims.clamp_min(0)).cpu().numpy()
    else:
        values = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((values.astype(np.float32), (rows.cpu().numpy(), cols.cpu().numpy())), shape=(n, n))


def degree_sensitive_keep_weights(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """FREEDOM's edge weights ``1 / sqrt(d_u d_i)`` (degrees in the given edge list)."""
    d_u = np.bincount(users)
    d_i = np.bincount(items)
    return (1.0 / np.sqrt(d_u[users] * d_i[items])).astype(np.float64)


def degree_sensitive_prune(
    users: np.ndarray, items: np.ndarray, ratio: float, generator: torch.Generator | None = None
) -> np.ndarray:
    """Indices of the edges kept after degree-sensitive pruning (FREEDOM).

    Keeps ``int(E * (1 - ratio))`` edges, sampled without replacement with probability
    proportional to ``1 / sqrt(d_u d_i)``: edges between popular nodes are pruned first.
    Sampling uses the Gumbel-top-k trick (no category limit, unlike ``torch.multinomial``).
    """
    n_keep = int(len(users) * (1.0 - ratio))
    if n_keep >= len(users):
        return np.arange(len(users))
    log_w = torch.from_numpy(np.log(degree_sensitive_keep_weights(users, items)))
    u = torch.rand(len(users), generator=generator, dtype=torch.float64).clamp_min(1e-300)
    keys = log_w - torch.log(-torch.log(u))  # log w + Gumbel noise
    kept = torch.topk(keys, n_keep).indices
    return np.sort(kept.numpy())


# ----------------------------------------------------------------------------
# Fixed-pattern edge operators (GRCN, LATTICE): the sparsity pattern is built once, the edge
# values change every step. CSR products (forward and both backward products) and a sampled
# dense-dense product for the gradient of the values: no COO coalesce, sort or [E, d] gather.
# ----------------------------------------------------------------------------
def _csr_order(rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int):
    """(crow_indices [n_rows + 1], col_indices [E], perm [E]): edge ``perm[k]`` is the ``k``-th in CSR order."""
    perm = torch.argsort(rows * n_cols + cols, stable=True)
    counts = torch.bincount(rows, minlength=n_rows)
    crow = torch.zeros(n_rows + 1, dtype=torch.int64, device=rows.device)
    crow[1:] = torch.cumsum(counts, 0)
    return crow, cols[perm].contiguous(), perm, counts


def _permute(x: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """``x[index]`` along the first dimension (``index_select``: several times faster than ``x[index]``)."""
    return x if index is None else x.index_select(0, index)


def _group_softmax(s: torch.Tensor, counts: torch.Tensor, group: torch.Tensor, bounded: bool) -> torch.Tensor:
    """Softmax of ``s`` within consecutive groups (``counts`` long; ``group``: each entry's group)."""
    if bounded:
        e = torch.exp(s)
    else:
        group_max = torch.segment_reduce(s, "max", lengths=counts, unsafe=True)  # [groups]
        e = torch.exp(s - group_max.index_select(0, group))  # <= 1
    denom = torch.segment_reduce(e, "sum", lengths=counts, unsafe=True)
    return e / denom.index_select(0, group)


def _group_softmax_backward(a: torch.Tensor, grad: torch.Tensor, counts: torch.Tensor, group: torch.Tensor):
    """The gradient of the scores from that of ``a = _group_softmax(...)``."""
    ag = a * grad
    inner = torch.segment_reduce(ag, "sum", lengths=counts, unsafe=True)  # sum_j a_j g_j per group
    return ag - a * inner.index_select(0, group)


class EdgePattern(nn.Module):
    """The fixed pattern of ``A [n_rows, n_cols]`` with ``A[rows[e], cols[e]] = w[e]``, ``w`` given per call.

    Edges are in the caller's order; a pair listed twice is summed (as :func:`edge_spmm`). Products,
    all differentiable in the edge values and the dense operands:

    * :meth:`spmm` ``(w, h)``: ``A @ h`` [n_rows, d] (as ``edge_spmm(rows, cols, w, h, n_rows)``);
    * :meth:`spmm_t` ``(w, h)``: ``A^T @ h`` [n_cols, d] (as ``edge_spmm(cols, rows, w, h, n_cols)``);
    * :meth:`dot` ``(a, b)``: ``(a[rows] * b[cols]).sum(-1)`` [E], per edge;
    * :meth:`softmax` ``(scores, over)``: as ``segment_softmax(scores, rows, n_rows)`` (``over="rows"``)
      or ``segment_softmax(scores, cols, n_cols)`` (``over="cols"``).

    The index tensors (CSR of ``A`` and of ``A^T``, the permutations from the caller's edge order
    to each and back, none when the caller's order already is that order) are plain buffers:
    they move with the model and deep-copy.
    """

    def __init__(self, rows: torch.Tensor, cols: torch.Tensor, n_rows: int, n_cols: int):
        super().__init__()
        rows, cols = rows.long(), cols.long()
        self.n_rows, self.n_cols, self.n_edges = int(n_rows), int(n_cols), len(rows)
        crow, col, perm, row_counts = _csr_order(rows, cols, n_rows, n_cols)
        ccol, row, perm_t, col_counts = _csr_order(cols, rows, n_cols, n_rows)
        dtype = index_dtype(len(rows), n_rows, n_cols)  # CSR indices used as they are (see index_dtype)
        crow, col, ccol, row = (t.to(dtype) for t in (crow, col, ccol, row))
        identity = torch.arange(self.n_edges, device=rows.device)
        # each edge's row (of A, of A^T) in CSR order: expands per-row values to edges
        row_of = torch.repeat_interleave(torch.arange(n_rows, device=rows.device), row_counts)
        col_of = torch.repeat_interleave(torch.arange(n_cols, device=rows.device), col_counts)
        for name, t in [("crow", crow), ("col", col), ("row_counts", row_counts), ("row_of", row_of),
                        ("ccol", ccol), ("row", row), ("col_counts", col_counts), ("col_of", col_of)]:  # fmt: skip
            self.register_buffer(name, t, persistent=False)
        for name, t in [("perm", perm), ("perm_t", perm_t)]:
            is_identity = torch.equal(t, identity)
            inverse = torch.empty_like(t)
            inverse[t] = identity
            self.register_buffer(name, None if is_identity else t, persistent=False)
            self.register_buffer(name + "_inv", None if is_identity else inverse, persistent=False)

    def _side(self, transpose: bool):
        """(crow, col, (counts, group of each edge), to CSR order, from CSR order, shape) of ``A`` or ``A^T``."""
        if transpose:
            groups = (self.col_counts, self.col_of)
            return self.ccol, self.row, groups, self.perm_t, self.perm_t_inv, (self.n_cols, self.n_rows)
        groups = (self.row_counts, self.row_of)
        return self.crow, self.col, groups, self.perm, self.perm_inv, (self.n_rows, self.n_cols)

    def _csr(self, w: torch.Tensor, transpose: bool) -> torch.Tensor:
        crow, col, _, to_csr, _, shape = self._side(transpose)
        return torch.sparse_csr_tensor(crow, col, _permute(w, to_csr), shape, check_invariants=False)

    def csr(self, w: torch.Tensor) -> torch.Tensor:
        """``A`` as a torch sparse CSR tensor with edge values ``w`` (caller's order)."""
        return self._csr(w, False)

    def csr_t(self, w: torch.Tensor) -> torch.Tensor:
        """``A^T`` as a torch sparse CSR tensor with edge values ``w`` (caller's order)."""
        return self._csr(w, True)

    def sddmm(self, a: torch.Tensor, b: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """Per edge ``a[rows[e]] . b[cols[e]]`` (``a[cols[e]] . b[rows[e]]`` if ``transpose``), caller's order."""
        crow, col, _, _, from_csr, shape = self._side(transpose)
        if a.shape[1] == 0:
            return a.new_zeros(self.n_edges)
        pattern = torch.sparse_csr_tensor(crow, col, a.new_zeros(self.n_edges), shape, check_invariants=False)
        values = torch.sparse.sampled_addmm(pattern, a.contiguous(), b.t(), beta=0.0).values()  # CSR order
        return _permute(values, from_csr)

    def softmax_values(self, scores: torch.Tensor, transpose: bool, bounded: bool):
        """(softmax in the caller's order, the same in CSR order) within rows (columns if ``transpose``);
        no autograd."""
        _, _, (counts, group), to_csr, from_csr, _ = self._side(transpose)
        a_csr = _group_softmax(_permute(scores, to_csr), counts, group, bounded)
        return _permute(a_csr, from_csr), a_csr

    def softmax_grad(self, a_csr: torch.Tensor, grad: torch.Tensor, transpose: bool) -> torch.Tensor:
        """The scores' gradient (caller's order) from the softmax's (``a_csr`` from :meth:`softmax_values`)."""
        _, _, (counts, group), to_csr, from_csr, _ = self._side(transpose)
        return _permute(_group_softmax_backward(a_csr, _permute(grad, to_csr), counts, group), from_csr)

    def softmax(self, scores: torch.Tensor, over: str = "rows", bounded: bool = False) -> torch.Tensor:
        """``bounded``: the caller knows ``|scores|`` is small (e.g. cosines): no max subtraction
        (the same softmax up to rounding, three passes over the edges fewer)."""
        if over not in ("rows", "cols"):
            raise ValueError(f"over must be 'rows' or 'cols', got '{over}'")
        return _PatternSoftmax.apply(scores, self, over == "cols", bounded)

    def spmm(self, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return _PatternSpmm.apply(w, h, self, False)

    def spmm_t(self, w: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return _PatternSpmm.apply(w, h, self, True)

    def dot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _PatternDot.apply(a, b, self)


class _PatternSpmm(torch.autograd.Function):
    """``A @ h`` (``A^T @ h`` if ``transpose``) for ``A`` with pattern ``pattern`` and edge values ``w``."""

    @staticmethod
    def forward(ctx, w, h, pattern, transpose):
        ctx.pattern, ctx.transpose = pattern, transpose
        ctx.save_for_backward(w, h)
        adj = pattern.csr_t(w) if transpose else pattern.csr(w)
        return csr_mm(adj, h)

    @staticmethod
    def backward(ctx, grad):
        w, h = ctx.saved_tensors
        pattern, transpose = ctx.pattern, ctx.transpose
        grad = grad.contiguous()
        grad_w = grad_h = None
        if ctx.needs_input_grad[0]:  # d/dw[e] = grad[receiver(e)] . h[sender(e)]
            grad_w = pattern.sddmm(grad, h, transpose=transpose)
        if ctx.needs_input_grad[1]:
            grad_h = csr_mm(pattern.csr(w) if transpose else pattern.csr_t(w), grad)
        return grad_w, grad_h, None, None


class _PatternSoftmax(torch.autograd.Function):
    """Softmax of the edge scores within each row (each column if ``transpose``), in CSR order."""

    @staticmethod
    def forward(ctx, scores, pattern, transpose, bounded):
        a, a_csr = pattern.softmax_values(scores, transpose, bounded)
        ctx.pattern, ctx.transpose = pattern, transpose
        ctx.save_for_backward(a_csr)
        return a

    @staticmethod
    def backward(ctx, grad):
        (a_csr,) = ctx.saved_tensors
        return ctx.pattern.softmax_grad(a_csr, grad, ctx.transpose), None, None, None


class _PatternDot(torch.autograd.Function):
    """Per edge ``a[rows[e]] . b[cols[e]]``."""

    @staticmethod
    def forward(ctx, a, b, pattern):
        ctx.pattern = pattern
        ctx.save_for_backward(a, b)
        return pattern.sddmm(a, b)

    @staticmethod
    def backward(ctx, grad):
        a, b = ctx.saved_tensors
        pattern = ctx.pattern
        grad_a = csr_mm(pattern.csr(grad), b) if ctx.needs_input_grad[0] else None
        grad_b = csr_mm(pattern.csr_t(grad), a) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None
