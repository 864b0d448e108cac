"""Generate raw data in the full MMGCN layout at the real shapes, with planted structure.

The real full datasets cannot be downloaded here; this writes files a converter
cannot tell from them (``train.npy`` with offset items, object-array
``val_full.npy`` / ``test_full.npy``, ``user_item_dict.npy``, the dataset's
feature files) so conversion and training can be exercised at scale.

Planted structure: every item belongs to one of ``N_CLUSTERS`` latent clusters;
its dense features are the cluster's centroid plus noise and its words come
mostly from the cluster's topic vocabulary; every user prefers a few clusters
and picks items from them (popularity-skewed within a cluster).  So item
features carry the signal that predicts who interacts with the item.
"""

from pathlib import Path

import numpy as np

from dataset_converters.safe_io import atomic_dir
from dataset_converters.splits import random_parts

N_CLUSTERS = 20
SHAPES = {  # users, items, interactions, {file: dim or "words"}
    "tiktok": (36656, 76085, 726065,
               {"feat_v.pt": 128, "feat_a.pt": 128, "feat_t.pt": "words"}),
    "kwai": (7010, 86483, 298492, {"feat_v.pt": 2048}),
    "movielens": (55485, 5986, 1239508,
                  {"FeatureVideo_normal.npy": 2048, "FeatureAudio_avg_normal.npy": 128,
                   "FeatureText_stl_normal.npy": 100}),
}
VOCAB, TOPIC_WORDS = 20000, 300


def scaled_shape(like, scale):
    """(users, items, interactions, files) of ``like`` scaled by ``scale``."""
    users, items, inter, files = SHAPES[like]
    u, i = max(10, round(users * scale)), max(20, round(items * scale))
    n = min(max(u * 3, round(inter * scale)), u * i // 4)
    return u, i, n, files


def _degrees(rng, n_users, n_inter, cap):
    """Per-user interaction counts [U], skewed, each >= min(5, mean), summing to n_inter."""
    floor = max(1, min(5, n_inter // n_users))
    weights = rng.lognormal(0.0, 1.0, n_users)
    deg = floor + rng.multinomial(n_inter - floor * n_users, weights / weights.sum())
    return np.minimum(deg, cap)


def _sample_items(rng, pref, cluster, n_items, users):
    """For each entry of ``users`` [N], an item from a cluster drawn from the user's preference."""
    cum = np.cumsum(pref, axis=1)  # [U, K]
    c = (cum[users] < rng.random(len(users))[:, None]).sum(axis=1)  # [N] chosen cluster
    c = np.minimum(c, N_CLUSTERS - 1)
    order = np.argsort(cluster, kind="stable")  # [I] items grouped by cluster
    cw = np.cumsum(rng.pareto(1.5, n_items) + 1.0)  # [I] cumulative popularity, in `order`
    edges = np.concatenate([[0.0], cw])[np.searchsorted(cluster[order], np.arange(N_CLUSTERS + 1))]
    lo, hi = edges[c], edges[c + 1]  # [N] weight range of the chosen cluster
    pick = np.searchsorted(cw, lo + rng.random(len(c)) * (hi - lo), side="right")
    return order[np.minimum(pick, n_items - 1)]


def _distinct_first(users, items, n_items, rng):
    """Indices of one occurrence of each distinct (user, item), chosen at random, sorted."""
    key = users.astype(np.int64) * n_items + items
    perm = rng.permutation(len(key))
    _, first = np.unique(key[perm], return_index=True)
    return np.sort(perm[first])


def interactions(rng, n_users, n_items, n_inter, cluster):
    """Exactly ``n_inter`` distinct (user, item) pairs with planted preferences."""
    pref = rng.dirichlet(np.full(N_CLUSTERS, 0.1), n_users)  # [U, K] few favourite clusters
    deg = _degrees(rng, n_users, n_inter, cap=n_items // 4)
    users = np.repeat(np.arange(n_users), np.ceil(deg * 1.5).astype(np.int64) + 2)
    items = _sample_items(rng, pref, cluster, n_items, users)
    cand = _distinct_first(users, items, n_items, rng)
    u = users[cand]
    rank = np.arange(len(cand)) - np.searchsorted(u, np.arange(n_users))[u]
    keep = cand[rank < deg[u]]  # at most deg[u] items a user
    users, items = users[keep], items[keep]
    while len(users) < n_inter:  # a user whose clusters ran dry: top up with random items
        short = n_inter - len(users)
        all_u = np.concatenate([users, rng.choice(n_users, 2 * short, p=deg / deg.sum())])
        all_i = np.concatenate([items, rng.integers(0, n_items, 2 * short)])
        _, first = np.unique(all_u.astype(np.int64) * n_items + all_i, return_index=True)
        new = np.sort(first[first >= len(users)])[:short]  # pairs not seen before
        users, items = np.concatenate([users, all_u[new]]), np.concatenate([items, all_i[new]])
    order = np.argsort(users, kind="stable")
    return users[order], items[order]


def dense_features(rng, cluster, dim):
    """``[n_items, dim]`` float32: cluster centroid + noise."""
    centroids = rng.standard_normal((N_CLUSTERS, dim), dtype=np.float32)
    noise = rng.standard_normal((len(cluster), dim), dtype=np.float32)
    return centroids[cluster] + np.float32(0.8) * noise


def word_pairs(rng, cluster):
    """int64 ``[2, M]`` (item, word id): ~8 words an item, 70 % from its cluster's topic."""
    n_items = len(cluster)
    topics = rng.integers(0, VOCAB, (N_CLUSTERS, TOPIC_WORDS))
    length = 2 + rng.poisson(6, n_items)
    item = np.repeat(np.arange(n_items), length)
    on_topic = rng.random(len(item)) < 0.7
    word = np.where(on_topic, topics[cluster[item], rng.integers(0, TOPIC_WORDS, len(item))],
                    rng.integers(0, VOCAB, len(item)))
    return np.stack([item, word]).astype(np.int64)


def _object_rows(users, items, n_users):
    """Rows ``[user, item + U, ...]`` as a 1-d object array of lists (users with items only)."""
    rows = np.empty(len(np.unique(users)), dtype=object)
    order = np.argsort(users, kind="stable")
    u_sorted, i_sorted = users[order], items[order] + n_users
    bounds = np.searchsorted(u_sorted, np.unique(users))
    for r, (s, e) in enumerate(zip(bounds, list(bounds[1:]) + [len(order)])):
        rows[r] = [int(u_sorted[s])] + i_sorted[s:e].tolist()
    return rows


def _save_feature(path, arr):
    if path.suffix == ".pt":
        import torch

        torch.save(torch.from_numpy(arr), path)
    else:
        np.save(path, arr, allow_pickle=False)


def generate(like, out, scale=1.0, seed=0):
    """Write the full MMGCN layout of ``like`` into ``out`` (atomically); return a report."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_inter, files = scaled_shape(like, scale)
    cluster = rng.integers(0, N_CLUSTERS, n_items)  # [I] latent cluster of each item
    users, items = interactions(rng, n_users, n_items, n_inter, cluster)
    part = random_parts(users, seed)  # 0 train / 1 valid / 2 test
    out = Path(out)
    with atomic_dir(out) as tmp:
        train = np.stack([users[part == 0], items[part == 0] + n_users], axis=1)  # [N_tr, 2]
        np.save(tmp / "train.npy", train.astype(np.int64))
        np.save(tmp / "val_full.npy", _object_rows(users[part == 1], items[part == 1], n_users),
                allow_pickle=True)
        np.save(tmp / "test_full.npy", _object_rows(users[part == 2], items[part == 2], n_users),
                allow_pickle=True)
        user_items = {int(r[0]): r[1:] for r in _object_rows(train[:, 0], train[:, 1] - n_users,
                                                              n_users)}
        np.save(tmp / "user_item_dict.npy", np.array(user_items, dtype=object), allow_pickle=True)
        for name, dim in files.items():
            arr = word_pairs(rng, cluster) if dim == "words" else dense_features(rng, cluster, dim)
            _save_feature(tmp / name, arr)
    return (f"wrote {out}: {like}-shaped MMGCN layout, {n_users:,} users, {n_items:,} items, "
            f"{n_inter:,} interactions (train {int((part == 0).sum()):,}, valid "
            f"{int((part == 1).sum()):,}, test {int((part == 2).sum()):,}), "
            f"features {', '.join(files)}\nconvert with:\n  python -m dataset_converters {like} "
            f"--src {out} --out DATA_DIR")
