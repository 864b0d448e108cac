"""What the converters of data that comes with its own split share (DiffMM, MMRec).

* :func:`dense_modalities`: the feature files present -> ``float_seq`` modalities,
  each checked (a numeric ``[n_items, d]`` matrix, finite, one row per item);
* :func:`check_parts`: the train / valid / test interactions are in range and hold
  no pair twice, neither within a part nor across parts;
* :func:`split_notes`: what is unusual about the split, said instead of hidden:
  users with no training interaction, items with none (cold items) and how many
  validation / test interactions fall on them.
"""

from __future__ import annotations

import numpy as np

from dataset_converters.recbole_files import SPLIT_NAMES, ConvertedDataset, Interactions, Modality
from dataset_converters.safe_io import ConversionError, load_npy

# How RecBole treats an item that has no training interaction; printed by the converters.
COLD_ITEM_NOTE = (
    "RecBole ranks every item, cold ones included, and samples training negatives from every "
    "item, so a cold item's ID embedding is trained only as a negative (pushed down); its "
    "content is what can lift it")


def dense_modalities(paths, n_items=None):
    """``{modality: path}`` of the present feature files -> list of float32 ``Modality``.

    Every file must hold a finite numeric ``[n_items, d]`` matrix (``n_items=None``: the
    first file's row count); float16 files (as DiffMM distributes them) are widened to
    float32 exactly.
    """
    mods, first = [], None
    for name, path in paths.items():
        arr = load_npy(path)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_:
            raise ConversionError(f"{path}: expected a numeric feature matrix [n_items, d], "
                                  f"found {arr.dtype} array of shape {arr.shape}")
        if n_items is None:
            n_items, first = arr.shape[0], path
        if arr.shape[0] != n_items:
            whose = f"{first.name} has" if first is not None else "the interactions have"
            raise ConversionError(f"{path}: {arr.shape[0]} feature rows but {whose} "
                                  f"{n_items} items; the file needs one row per item")
        if arr.shape[1] == 0:
            raise ConversionError(f"{path}: the feature matrix has no columns")
        bad = ~np.isfinite(arr)
        if bad.any():
            rows = np.nonzero(bad.any(axis=1))[0]
            raise ConversionError(f"{path}: {int(bad.sum())} NaN or infinite value(s) in "
                                  f"{len(rows)} row(s) (first item {int(rows[0])})")
        mods.append(Modality(name, "float_seq", arr.astype(np.float32), f"from {path.name}"))
    return mods


def _pair_keys(inter, n_items):
    return inter.user.astype(np.int64) * n_items + inter.item.astype(np.int64)


def check_parts(parts, n_users, n_items, sources):
    """Raise ConversionError on out-of-range ids or a (user, item) pair seen twice.

    ``parts``: {"train"|"valid"|"test": Interactions}; ``sources``: part -> the file
    name to blame.
    """
    seen = {}
    for part in SPLIT_NAMES:
        inter, src = parts[part], sources[part]
        for what, ids, n in (("user", inter.user, n_users), ("item", inter.item, n_items)):
            bad = (ids < 0) | (ids >= n)
            if bad.any():
                raise ConversionError(f"{src}: {int(bad.sum())} {what} id(s) out of range "
                                      f"[0, {n}) (first {int(ids[np.argmax(bad)])})")
        keys = _pair_keys(inter, n_items)
        uniq, counts = np.unique(keys, return_counts=True)
        if (counts > 1).any():
            k = int(uniq[np.argmax(counts > 1)])
            raise ConversionError(f"{src}: {int((counts > 1).sum())} duplicate interaction(s) in "
                                  f"the {part} part (first: user {k // n_items}, item "
                                  f"{k % n_items})")
        for other, other_keys in seen.items():
            both = np.intersect1d(uniq, other_keys)
            if both.size:
                k = int(both[0])
                raise ConversionError(f"{src}: {both.size} interaction(s) of the {part} part are "
                                      f"also in the {other} part (first: user {k // n_items}, "
                                      f"item {k % n_items}); a split must not overlap")
        seen[part] = uniq


def split_notes(parts, n_users, n_items):
    """Lines on users / items without training interactions and the cold test share."""
    train = parts["train"]
    train_users = np.zeros(n_users, bool)
    train_users[train.user] = True
    train_items = np.zeros(n_items, bool)
    train_items[train.item] = True
    any_users = np.zeros(n_users, bool)
    for p in SPLIT_NAMES:
        any_users[parts[p].user] = True
    notes = []
    n_no_train = int((any_users & ~train_users).sum())
    if n_no_train:
        notes.append(f"{n_no_train:,} user(s) have no training interaction (only validation / "
                     "test ones): they are ranked from an untrained user embedding")
    n_silent = int((~any_users).sum())
    if n_silent:
        notes.append(f"{n_silent:,} user id(s) have no interaction at all (not in the .inter "
                     "files, so RecBole does not know them)")
    cold = ~train_items
    if cold.any():
        line = f"{int(cold.sum()):,} of {n_items:,} items have no training interaction (cold)"
        for p in ("valid", "test"):
            on_cold = cold[parts[p].item]
            if len(parts[p]):
                line += (f"; {len(np.unique(parts[p].item[on_cold])):,} of them appear in {p} "
                         f"({int(on_cold.sum()):,} {p} interactions, "
                         f"{100.0 * on_cold.mean():.1f} %)")
        notes.append(line)
        notes.append(COLD_ITEM_NOTE)
    return notes


def concat_parts(parts):
    """All interactions of the three parts, in part order (timestamps kept when all have them)."""
    user, item = (np.concatenate([getattr(parts[p], f) for p in SPLIT_NAMES])
                  for f in ("user", "item"))
    stamps = [parts[p].timestamp for p in SPLIT_NAMES]
    ts = None if any(t is None for t in stamps) else np.concatenate(stamps)
    return Interactions(user, item, ts)


def fixed_split_dataset(name, layout, parts, n_users, n_items, mods, split_note, notes, metric_note):
    """The ConvertedDataset of a layout with its own split: items 0..n_items-1, every part's
    interactions, the split notes, and a YAML selecting on validation Recall@20."""
    return ConvertedDataset(
        name=name,
        description=f"{layout}: {n_users:,} users x {n_items:,} items, "
                    f"modalities {', '.join(m.name for m in mods)}",
        inter=concat_parts(parts),
        item_ids=np.arange(n_items),
        modalities=mods,
        splits=parts,
        split_note=split_note,
        notes=split_notes(parts, n_users, n_items) + notes,
        yaml_extra=[
            f"valid_metric: Recall@20                # (str) {metric_note}",
            "topk: [10, 20]                        # (list) cut-offs K",
        ],
    )
