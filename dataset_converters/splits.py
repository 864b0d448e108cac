"""Per-user 8:1:1 splits (random with a seed, or chronological), vectorised.

The per-user counts follow RecBole's ``RS`` split: valid and test get
``int(0.1 * n)`` each, train the rest, and a user whose share of valid/test is
between 0 and 1 still gets one valid/test interaction while train keeps at
least one.  So a user with 5 interactions splits 3/1/1, one with 2 splits 1/0/1.
"""

import numpy as np

RATIOS = (0.8, 0.1, 0.1)


def split_counts(n, ratios=RATIOS):
    """Per-user totals ``n`` [n_users] -> counts ``[n_users, 3]`` (train, valid, test)."""
    n = np.asarray(n, dtype=np.int64)
    ratios = np.asarray(ratios, dtype=np.float64) / np.sum(ratios)
    cnt = np.stack([(r * n).astype(np.int64) for r in ratios], axis=1)  # [n_users, 3]
    cnt[:, 0] = n - cnt[:, 1:].sum(axis=1)
    for j in (2, 1):  # test first, then valid, as RecBole does
        bump = (cnt[:, 0] > 1) & (ratios[j] * n > 0) & (ratios[j] * n < 1)
        cnt[bump, j] += 1
        cnt[bump, 0] -= 1
    return cnt


def split_parts(users, order_key):
    """Assign each interaction to 0=train / 1=valid / 2=test.

    ``users``: [N] user tokens; ``order_key``: [N] distinct sort keys, within a
    user the smallest keys go to train, then valid, then test.
    """
    _, codes = np.unique(users, return_inverse=True)  # [N] user index
    order = np.lexsort((order_key, codes))  # [N] grouped by user, key ascending
    sorted_codes = codes[order]
    counts = np.bincount(codes)  # [n_users]
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.empty(len(codes), dtype=np.int64)
    rank[order] = np.arange(len(codes)) - starts[sorted_codes]  # position within the user
    cnt = split_counts(counts)[codes]  # [N, 3]
    return (rank >= cnt[:, 0]).astype(np.int8) + (rank >= cnt[:, 0] + cnt[:, 1])


def random_parts(users, seed):
    """Per-user random 8:1:1 (the paper's protocol) with ``numpy.random.default_rng(seed)``."""
    key = np.random.default_rng(seed).permutation(len(users))
    return split_parts(users, key)


def chrono_parts(users):
    """Per-user chronological 8:1:1: rows are in time order within each user."""
    return split_parts(users, np.arange(len(users)))
