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
    with np.errstate(divide="ignore"):
        if kind == "mean":
            inv = np.where(deg > 0, 1.0 / deg, 0.0)
            return sp.diags(inv.astype(np.float32)) @ adj
        if kind == "sym":
            inv_sqrt = np.where(deg > 0, deg ** -0.5, 0.0).astype(np.float32)
            d = sp.diags(inv_sqrt)
            return d @ adj @ d
    raise ValueError(f"unknown normalisation '{kind}'")


def to_torch_sparse(matrix: sp.spmatrix) -> torch.Tensor:
    """A scipy matrix as a torch sparse CSR tensor (float32)."""
    csr = sp.csr_matrix(matrix, dtype=np.float32)
    csr.sort_indices()
    return torch.sparse_csr_tensor(
        torch.from_numpy(csr.indptr.astype(np.int64)),
        torch.from_numpy(csr.indices.astype(np.int64)),
        torch.from_numpy(csr.data),
        size=csr.shape,
    )


class _SpMM(torch.autograd.Function):
    """``A @ h`` whose backward uses a precomputed ``A^T`` (no transpose or coalesce per step)."""

    @staticmethod
    def forward(ctx, adj, adj_t, h):
        ctx.adj_t = adj_t
        return adj @ h

    @staticmethod
    def backward(ctx, grad):
        return None, None, ctx.adj_t @ grad


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

    def forward(self, h: torch.Tensor, mean_adj: SparseGraph) -> torch.Tensor:
        return self.lin_neigh(mean_adj(h)) + self.lin_root(h)  # [N, out]


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


def edge_spmm(rows: torch.Tensor, cols: torch.Tensor, weight: torch.Tensor, h: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``A @ h`` for ``A[rows, cols] = weight`` (duplicates summed), differentiable in ``weight`` and ``h``."""
    adj = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), weight, (n_rows, h.shape[0]), check_invariants=False
    )
    return torch.sparse.mm(adj, h)  # [n_rows, d]


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of ``scores`` within each group of equal ``index`` (groups ``0..n-1``)."""
    group_max = torch.full((n,), float("-inf"), dtype=scores.dtype, device=scores.device)
    group_max = group_max.scatter_reduce(0, index, scores.detach(), reduce="amax")  # [n]
    e = torch.exp(scores - group_max[index])  # [E], <= 1
    denom = torch.zeros(n, dtype=scores.dtype, device=scores.device).index_add(0, index, e)  # [n]
    return e / denom[index]


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


def knn_graph(features, k: int, weighted: bool = True, chunk_size: int = 2048) -> sp.csr_matrix:
    """Sparse kNN graph [n, n] of :func:`knn_edges`: similarity values (``weighted``) or 1."""
    rows, cols, sims = knn_edges(features, k, chunk_size)
    n = features.shape[0]
    values = sims.clamp_min(0).cpu().numpy() if weighted else np.ones(len(rows), dtype=np.float32)
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
