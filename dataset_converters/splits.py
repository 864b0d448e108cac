"""Per-user 8:1:1 splits (random with a seed, or chronological), vectorised.

The per-user counts follow RecBole's ``RS`` split: valid and test get
``int(0.1 * n)`` each, train the rest, and a user whose share of valid/test is
between 0 and 1 still gets one valid/test interaction while train keeps at
least one.  So a user with 5 interactions splits 3/1/1, one with 2 splits 1/0/1.

``--cold-items SHARE`` (:func:`split_with_cold_items`) holds a share of the items out of
training entirely: their interactions go to valid and test only (each to one of the two
at random, in the ratio of their shares), the other interactions split per user as above.
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


def held_out_items(items, share, seed):
    """``round(share * #distinct items)`` item tokens (at least one), drawn with ``default_rng(seed)``."""
    if not 0 < share < 1:
        raise ValueError(f"the share of cold items must be between 0 and 1 (exclusive), got {share}")
    distinct = np.unique(items)
    n = max(1, int(round(share * len(distinct))))
    rng = np.random.default_rng([seed, 1])  # a stream of its own: the warm split's draws are unchanged
    return np.sort(rng.choice(distinct, size=n, replace=False))


def split_with_cold_items(users, items, warm_parts, share, seed, ratios=RATIOS):
    """Split with ``share`` of the items held out of training: (which [N] 0/1/2, held-out item tokens).

    ``warm_parts(mask)`` splits the interactions at ``mask`` (the others' items) per user, as
    the converter does without cold items (:func:`random_parts`, :func:`chrono_parts`), and
    returns their 0/1/2 parts. A held-out item's interactions go to valid (1) or test (2) at
    random, in the ratio ``ratios[1] : ratios[2]``.
    """
    cold = held_out_items(items, share, seed)
    is_cold = np.isin(items, cold)  # [N]
    which = np.empty(len(items), dtype=np.int8)
    which[~is_cold] = warm_parts(~is_cold)
    p_valid = ratios[1] / (ratios[1] + ratios[2])
    rng = np.random.default_rng([seed, 2])
    which[is_cold] = np.where(rng.random(int(is_cold.sum())) < p_valid, 1, 2)
    return which, cold


def cold_note(which, items, held):
    """One line for the split note: how many items were held out and where their interactions went."""
    is_cold = np.isin(items, held)
    n_valid = int((which[is_cold] == 1).sum())
    return (f"{len(held):,} items held out of training (cold; --cold-items): their "
            f"{int(is_cold.sum()):,} interactions in valid {n_valid:,} / test {int(is_cold.sum()) - n_valid:,}")
