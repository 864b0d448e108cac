"""The DiffMM / MMSSL layout (TikTok as DiffMM distributes it), with its split kept exactly.

A folder with

* ``trnMat.pkl``, ``valMat.pkl``, ``tstMat.pkl``: pickled ``scipy.sparse.coo_matrix``
  ``[n_users, n_items]`` of 0/1 values, one per part of the split (all three required);
* ``image_feat.npy``, ``audio_feat.npy``, ``text_feat.npy``: ``[n_items, d]`` item
  features (row = item id), any subset, at least one. They become the modalities
  ``visual``, ``acoustic`` and ``textual`` (the names the other converters use).

The pickles are read by :func:`~dataset_converters.safe_io.load_coo_pickle`, which
admits a COO matrix of numpy arrays and nothing else and runs no code. User and item
ids stay the matrices' 0-based row / column indices (as tokens). The dataset YAML
selects on validation Recall@20, the metric DiffMM's table reports.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_converters.fixed_split import check_parts, dense_modalities, fixed_split_dataset
from dataset_converters.recbole_files import SPLIT_NAMES, Interactions
from dataset_converters.safe_io import ConversionError, load_coo_pickle, require_file

MATRIX_FILES = {"train": "trnMat.pkl", "valid": "valMat.pkl", "test": "tstMat.pkl"}
FEATURE_FILES = {"visual": "image_feat.npy", "acoustic": "audio_feat.npy", "textual": "text_feat.npy"}


def _load_part(path, shape_ref):
    """One split matrix -> (Interactions, shape); values must be 0/1 (stored zeros dropped)."""
    row, col, data, shape = load_coo_pickle(path)
    if shape_ref is not None and shape != shape_ref[1]:
        raise ConversionError(f"{path}: matrix shape {shape} differs from {shape_ref[0].name}'s "
                              f"{shape_ref[1]}; the three parts must share users and items")
    bad = ~np.isin(data, (0, 1))
    if bad.any():
        raise ConversionError(f"{path}: {int(bad.sum())} value(s) are not 0/1 (first "
                              f"{data[np.argmax(bad)]!r}); an interaction matrix holds 0/1")
    keep = data == 1
    for what, ids, n in (("row (user)", row, shape[0]), ("column (item)", col, shape[1])):
        out = (ids < 0) | (ids >= n)
        if out.any():
            raise ConversionError(f"{path}: {int(out.sum())} {what} index(es) outside the "
                                  f"matrix shape {shape} (first {int(ids[np.argmax(out)])})")
    return Interactions(row[keep], col[keep]), shape, int((~keep).sum())


def convert_diffmm(src, name="tiktok-diffmm"):
    """Convert a DiffMM-layout folder into a ConvertedDataset with its own split."""
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: missing source directory")
    parts, ref, zeros = {}, None, 0
    for part in SPLIT_NAMES:
        path = require_file(src / MATRIX_FILES[part], f"{part} matrix ({MATRIX_FILES[part]})")
        parts[part], shape, n_zero = _load_part(path, ref)
        ref = ref or (path, shape)
        zeros += n_zero
    n_users, n_items = ref[1]
    sources = {p: src / MATRIX_FILES[p] for p in SPLIT_NAMES}
    check_parts(parts, n_users, n_items, sources)
    present = {m: src / f for m, f in FEATURE_FILES.items() if (src / f).is_file()}
    if not present:
        raise ConversionError(f"{src}: missing file: none of {', '.join(FEATURE_FILES.values())}")
    mods = dense_modalities(present, n_items)
    notes = [f"{m}: absent ({FEATURE_FILES[m]} not in {src})" for m in FEATURE_FILES if m not in present]
    if zeros:
        notes.append(f"{zeros:,} explicitly stored zero(s) dropped (not interactions)")
    return fixed_split_dataset(
        name, f"DiffMM layout from {src.name}", parts, n_users, n_items, mods,
        "the data's own train / valid / test (trnMat / valMat / tstMat)", notes,
        "DiffMM's table reports Recall@20 / NDCG@20")
