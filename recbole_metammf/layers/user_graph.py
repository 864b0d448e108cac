"""The user-user co-occurrence graph (DRAGON; DualGNN's is the same), built from the training
interactions in memory: no side file.

Definition (DRAGON's ``tools/generate-u-u-matrix.py``, MMRec's
``preprocessing/dualgnn-gen-u-u-matrix.py``): the weight of users ``u != v`` is the number of
*distinct* training items both interacted with; each user keeps the users of highest weight
(the script keeps 200 in ``user_graph_dict.npy``, the model reads the first ``k`` of them, so for
``k <= 200`` that is the top ``k``). Users sharing no item are not neighbours. The script breaks
ties in weight by ``torch.topk``'s unspecified order; here the smaller user id comes first, so the
graph is a function of the interactions alone.

:func:`cooccurrence_topk` computes it in row chunks of the sparse product ``R R^T`` (``R`` the 0/1
user-item matrix): memory follows the non-zeros of a chunk, never ``n_users x n_users``.
:func:`sample_padded_neighbours` is DRAGON's per-epoch sampling of the neighbour lists.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def cooccurrence_topk(inter: sp.spmatrix, k: int, chunk_size: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's ``k`` most co-occurring other users.

    ``inter``: [n_users, n_items], any non-zero is an interaction (repeats count once).
    Returns ``(neighbours [n_users, k] int64, counts [n_users, k] float32, n [n_users] int64)``:
    row ``u`` holds its ``n[u] <= k`` neighbours first, by decreasing count then increasing id;
    the rest of the row is ``-1`` (neighbours) and ``0`` (counts).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    r = sp.csr_matrix(inter, dtype=np.float32)
    r.sum_duplicates()
    r.data[:] = 1.0
    r.eliminate_zeros()
    r_t = r.T.tocsr()
    n_users = r.shape[0]
    neighbours = np.full((n_users, k), -1, dtype=np.int64)
    counts = np.zeros((n_users, k), dtype=np.float32)
    n = np.zeros(n_users, dtype=np.int64)
    for start in range(0, n_users, chunk_size):
        end = min(start + chunk_size, n_users)
        co = (r[start:end] @ r_t).tocoo()  # [chunk, n_users]: shared items
        rows, cols, vals = co.row.astype(np.int64), co.col.astype(np.int64), co.data
        other = (rows + start) != cols  # a user is not its own neighbour
        rows, cols, vals = rows[other], cols[other], vals[other]
        order = np.lexsort((cols, -vals, rows))  # by row, then count down, then id up
        rows, cols, vals = rows[order], cols[order], vals[order]
        first = np.searchsorted(rows, np.arange(end - start))  # each row's first entry
        rank = np.arange(len(rows)) - first[rows]
        keep = rank < k
        neighbours[rows[keep] + start, rank[keep]] = cols[keep]
        counts[rows[keep] + start, rank[keep]] = vals[keep]
        n[start:end] = np.minimum(np.bincount(rows, minlength=end - start), k)
    return neighbours, counts, n


def sample_padded_neighbours(neighbours: np.ndarray, counts: np.ndarray, n: np.ndarray,
                             generator: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """DRAGON's per-epoch neighbour lists: ``k`` slots per user and their softmax weights.

    A user with ``k`` neighbours keeps them. A user with ``0 < n < k`` fills the ``k - n`` free slots
    with neighbours drawn uniformly, with replacement, from its own ``n`` (so a drawn neighbour
    weighs more this epoch); the weights are the softmax of the ``k`` slots' counts. A user without
    neighbours gets slots pointing at user 0 with weight 0 (no message). Draws come from ``generator``,
    else numpy's global generator (seeded by RecBole's ``init_seed``, as the reference's ``np.random``).
    Returns ``(index [n_users, k] int64, weight [n_users, k] float32)``.
    """
    n_users, k = neighbours.shape
    uniform = generator.random((n_users, k)) if generator is not None else np.random.random((n_users, k))
    index = neighbours.copy()
    count = counts.copy()
    slot = np.arange(k)[None, :]
    free = (slot >= n[:, None]) & (n[:, None] > 0)  # [n_users, k]
    draws = np.floor(uniform * np.maximum(n, 1)[:, None]).astype(np.int64)  # in [0, n)
    rows = np.nonzero(free)[0]
    index[free] = neighbours[rows, draws[free]]
    count[free] = counts[rows, draws[free]]
    weight = np.exp(count - count.max(axis=1, keepdims=True))
    weight /= weight.sum(axis=1, keepdims=True)
    isolated = n == 0
    index[isolated] = 0
    weight[isolated] = 0.0
    return index, weight.astype(np.float32)


def slots_to_matrix(index: np.ndarray, weight: np.ndarray, n_users: int) -> sp.csr_matrix:
    """The neighbour slots as a sparse [n_users, n_users] matrix (repeated slots summed, zero weights dropped)."""
    rows = np.repeat(np.arange(index.shape[0]), index.shape[1])
    m = sp.csr_matrix((weight.ravel(), (rows, index.ravel())), shape=(n_users, n_users), dtype=np.float32)
    m.sum_duplicates()
    m.eliminate_zeros()
    return m
