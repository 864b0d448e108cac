"""MMRec's dataset layout, with its split kept exactly.

MMRec (github.com/enoche/MMRec) keeps a dataset as a folder with

* ``NAME.inter``: tab-separated, a header line naming the columns, among them
  ``userID``, ``itemID`` and ``x_label`` (0 / 1 / 2 = train / valid / test); ids are
  0-based; ``rating`` and ``timestamp`` columns may be there (``timestamp`` is kept);
* ``image_feat.npy`` and ``text_feat.npy`` (``[n_items, d]``, row = itemID), either
  optional; they become the modalities ``visual`` and ``textual``.

The input is the folder's single ``*.inter`` file (MMRec's ``u_id_mapping.csv`` /
``i_id_mapping.csv`` are not needed: the 0-based ids are kept as tokens).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_converters.fixed_split import check_parts, dense_modalities, fixed_split_dataset
from dataset_converters.recbole_files import SPLIT_NAMES, Interactions
from dataset_converters.safe_io import ConversionError

FEATURE_FILES = {"visual": "image_feat.npy", "textual": "text_feat.npy"}
REQUIRED_COLUMNS = ("userID", "itemID", "x_label")


def _inter_file(src):
    files = sorted(src.glob("*.inter"))
    if not files:
        raise ConversionError(f"{src}: missing file: no *.inter file (MMRec's NAME.inter)")
    if len(files) > 1:
        raise ConversionError(f"{src}: {len(files)} *.inter files ({', '.join(f.name for f in files)}); "
                              "an MMRec dataset folder holds exactly one")
    return files[0]


def _int_column(path, values, column):
    try:
        out = values.astype(np.float64)
    except ValueError:
        bad = next(v for v in values if not _is_number(v))
        raise ConversionError(f"{path}: column {column} holds a non-number ({bad!r})") from None
    if np.isnan(out).any() or (out != np.round(out)).any():
        raise ConversionError(f"{path}: column {column} holds a missing or non-integer value")
    return out.astype(np.int64)


def _is_number(v):
    try:
        float(v)
    except ValueError:
        return False
    return True


def read_inter(path):
    """``NAME.inter`` -> (user, item, label, timestamp or None) arrays."""
    with open(path, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").rstrip("\r").split("\t")
    names = [h.split(":")[0].strip() for h in header]  # tolerate RecBole-style "userID:token"
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise ConversionError(f"{path}: header lacks column(s) {', '.join(missing)} (found "
                              f"{', '.join(names)}); MMRec's .inter is tab-separated with "
                              "userID, itemID and x_label")
    try:
        table = np.loadtxt(path, dtype=str, delimiter="\t", skiprows=1, ndmin=2)
    except ValueError as e:
        raise ConversionError(f"{path}: rows do not all have {len(names)} tab-separated "
                              f"fields ({e})") from None
    if table.shape[0] == 0:
        raise ConversionError(f"{path}: holds no interactions")
    col = {n: table[:, i] for i, n in enumerate(names)}
    user = _int_column(path, col["userID"], "userID")
    item = _int_column(path, col["itemID"], "itemID")
    label = _int_column(path, col["x_label"], "x_label")
    bad = ~np.isin(label, (0, 1, 2))
    if bad.any():
        raise ConversionError(f"{path}: {int(bad.sum())} x_label value(s) not 0/1/2 (first "
                              f"{int(label[np.argmax(bad)])} on data line {int(np.argmax(bad)) + 1})")
    ts = None
    if "timestamp" in col:
        try:
            ts = col["timestamp"].astype(np.float64)
        except ValueError:
            ts = None  # a non-numeric timestamp is not needed for a fixed split
        if ts is not None and not np.isfinite(ts).all():
            ts = None
    return user, item, label, ts


def convert_mmrec(src, name=None):
    """Convert an MMRec dataset folder into a ConvertedDataset with MMRec's split."""
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: missing source directory")
    path = _inter_file(src)
    user, item, label, ts = read_inter(path)
    for what, ids in (("userID", user), ("itemID", item)):
        if ids.min() < 0:
            raise ConversionError(f"{path}: negative {what} {int(ids.min())}; MMRec ids are 0-based")
    present = {m: src / f for m, f in FEATURE_FILES.items() if (src / f).is_file()}
    if not present:
        raise ConversionError(f"{src}: missing file: neither image_feat.npy nor text_feat.npy")
    # items are the feature rows (MMRec indexes features by itemID); ids are checked against them
    mods = dense_modalities(present)
    n_items = mods[0].values.shape[0]
    n_users = int(user.max()) + 1
    parts = {p: Interactions(user[label == k], item[label == k],
                             None if ts is None else ts[label == k])
             for k, p in enumerate(SPLIT_NAMES)}
    for p in SPLIT_NAMES:
        if len(parts[p]) == 0:
            raise ConversionError(f"{path}: no interaction has x_label {SPLIT_NAMES.index(p)} "
                                  f"({p}); MMRec's split needs all three parts")
    check_parts(parts, n_users, n_items, {p: path for p in SPLIT_NAMES})
    notes = [f"{m}: absent ({FEATURE_FILES[m]} not in {src})" for m in FEATURE_FILES if m not in present]
    return fixed_split_dataset(
        name or path.stem, f"MMRec layout from {path.name}", parts, n_users, n_items, mods,
        f"MMRec's own split (x_label 0/1/2 of {path.name})", notes,
        "MMRec selects on validation Recall@20")
