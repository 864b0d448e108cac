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
