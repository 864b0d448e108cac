"""The MMGCN raw layouts shared by MovieLens, TikTok and Kwai (SPEC section 7).

Full layout (detected by ``train.npy``):

* ``train.npy``: int ``[N, 2]`` rows ``[user, item + n_users]``;
* ``val_full.npy`` / ``test_full.npy``: 1-d object arrays, each row a list
  ``[user, item + n_users, ...]``;
* ``user_item_dict.npy``: 0-d object array of ``{user: [item + n_users, ...]}``
  (training interactions; its keys define ``n_users``);
* per-dataset feature files named in :class:`LayoutSpec`.

Sample layout (detected by ``user_item_dict_sample.npy``): a dict
``{user: [item, ...]}`` with 0-based items and all interactions, and
``{v,a,t}_feat_sample.{npy,pt}``, any of which may be missing.

Feature rows are indexed by the 0-based item id.  A dense feature is
``[n_items, d]``; a word feature is an int ``[2, M]`` array of
``(item index, word id)`` pairs and becomes a ``token_seq`` of word ids.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dataset_converters.pca import pca_reduce
from dataset_converters.recbole_files import ConvertedDataset, Interactions, Modality
from dataset_converters.safe_io import ConversionError, load_array, load_npy, require_file
from dataset_converters.splits import cold_note, random_parts, split_with_cold_items

MODALITIES = ("visual", "acoustic", "textual")
_SAMPLE_PREFIX = {"visual": "v", "acoustic": "a", "textual": "t"}


@dataclass
class LayoutSpec:
    """Per-dataset file names of the full layout."""

    kind: str
    feature_files: dict  # modality -> file name in the full layout
    required: tuple  # modalities whose file must exist in the full layout
    description: str


# ------------------------------------------------------------- interactions
def detect_layout(src):
    """'full' or 'sample', from which interaction file is present."""
    src = Path(src)
    if not src.is_dir():
        raise ConversionError(f"{src}: missing source directory")
    if (src / "train.npy").exists():
        return "full"
    if (src / "user_item_dict_sample.npy").exists():
        return "sample"
    raise ConversionError(f"{src}: missing file: neither train.npy (full MMGCN layout) nor "
                          "user_item_dict_sample.npy (sample layout) is there")


def _as_int_list(seq, path, where):
    """A list/array of ints -> int64 array; raise on anything else."""
    try:
        arr = np.asarray(seq)
    except Exception:
        arr = None
    if arr is None or arr.ndim != 1 or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        raise ConversionError(f"{path}: {where} is not a list of integer ids")
    return arr.astype(np.int64)


def _load_dict(path):
    """``{user: [ids]}`` from a 0-d object .npy -> (users [U] int64, list of id arrays)."""
    arr = load_npy(path)
    obj = arr.item() if arr.dtype == object and arr.shape == () else None
    if not isinstance(obj, dict):
        raise ConversionError(f"{path}: not a pickled {{user: [items]}} dict "
                              f"(found {arr.dtype} array of shape {arr.shape})")
    users, lists = [], []
    for user, items in obj.items():
        if not isinstance(user, (int, np.integer)) or isinstance(user, bool):
            raise ConversionError(f"{path}: user key {user!r} is not an integer")
        users.append(int(user))
        lists.append(_as_int_list(items, path, f"the value of user {user}"))
    return np.asarray(users, dtype=np.int64), lists


def _check_users(users, path):
    """Users must be 0..U-1 (each once)."""
    if len(users) == 0:
        raise ConversionError(f"{path}: holds no users")
    if not np.array_equal(np.sort(users), np.arange(len(users))):
        raise ConversionError(f"{path}: user ids are not 0..{len(users) - 1} "
                              f"(min {users.min()}, max {users.max()}, {len(users)} users)")


def _check_items(items, lo, hi, path, offset_note):
    """All ``items`` in ``[lo, hi)``; the message says how the layout offsets them."""
    if items.size == 0:
        return
    bad = (items < lo) | (items >= hi)
    if bad.any():
        first = int(items[np.argmax(bad)])
        raise ConversionError(f"{path}: {int(bad.sum())} item id(s) out of range [{lo}, {hi}) "
                              f"(first {first}); {offset_note}")


def load_sample(src, n_items):
    """Sample layout -> (Interactions, None); items are 0-based."""
    path = src / "user_item_dict_sample.npy"
    users, lists = _load_dict(path)
    _check_users(users, path)
    for u, items in zip(users, lists):
        if items.size == 0:
            raise ConversionError(f"{path}: user {u} has no interactions (empty user)")
    items = np.concatenate(lists)
    _check_items(items, 0, n_items, path,
                 f"the sample layout uses 0-based item ids below the {n_items} feature rows")
    user_col = np.repeat(users, [len(x) for x in lists])
    return Interactions(user_col, items), None


def _load_rows(path, n_users, n_items):
    """``val_full``/``test_full`` object array of ``[user, item+U, ...]`` -> (users, items)."""
    arr = load_npy(path)
    if arr.ndim != 1 or arr.dtype != object:
        raise ConversionError(f"{path}: expected a 1-d object array of lists, "
                              f"found {arr.dtype} array of shape {arr.shape}")
    users, items = [], []
    for r, row in enumerate(arr):
        ids = _as_int_list(row, path, f"row {r}")
        if ids.size < 2:
            raise ConversionError(f"{path}: row {r} has no items (empty user)")
        users.append(np.full(ids.size - 1, ids[0]))
        items.append(ids[1:])
    users = np.concatenate(users) if users else np.zeros(0, np.int64)
    items = np.concatenate(items) if items else np.zeros(0, np.int64)
    _check_items(users, 0, n_users, path, "the first entry of each row is the user id")
    _check_items(items, n_users, n_users + n_items, path,
                 f"item ids must be offset by the user count {n_users}")
    return users, items - n_users


def load_full(src, n_items):
    """Full layout -> (all Interactions, {train, valid, test} Interactions); items 0-based."""
    dict_path = require_file(src / "user_item_dict.npy")
    train_path = require_file(src / "train.npy")
    val_path, test_path = require_file(src / "val_full.npy"), require_file(src / "test_full.npy")
    users, lists = _load_dict(dict_path)
    _check_users(users, dict_path)
    n_users = len(users)
    for u, items in zip(users, lists):
        if items.size == 0:
            raise ConversionError(f"{dict_path}: user {u} has no training interactions "
                                  "(empty user)")
    train = load_npy(train_path)
    if train.ndim != 2 or train.shape[1] != 2 or not np.issubdtype(train.dtype, np.integer):
        raise ConversionError(f"{train_path}: expected an int array [N, 2] of "
                              f"[user, item + n_users], found {train.dtype} {train.shape}")
    _check_items(train[:, 0], 0, n_users, train_path, f"user ids must be below {n_users}")
    _check_items(train[:, 1], n_users, n_users + n_items, train_path,
                 f"item ids must be offset by the user count {n_users}")
    dict_items = np.concatenate(lists)
    _check_items(dict_items, n_users, n_users + n_items, dict_path,
                 f"item ids must be offset by the user count {n_users}")
    if len(dict_items) != len(train):
        raise ConversionError(f"{dict_path}: holds {len(dict_items)} training interactions "
                              f"but {train_path.name} has {len(train)}")
    parts = {"train": Interactions(train[:, 0].astype(np.int64), train[:, 1] - n_users)}
    for part, path in (("valid", val_path), ("test", test_path)):
        parts[part] = Interactions(*_load_rows(path, n_users, n_items))
    inter = Interactions(*(np.concatenate([getattr(parts[p], f) for p in parts])
                           for f in ("user", "item")))
    return inter, parts


# ----------------------------------------------------------------- features
def _feature_paths(src, layout, spec):
    """modality -> existing path (None when absent); raise if a required one is missing."""
    found = {}
    for m in MODALITIES:
        if layout == "full":
            name = spec.feature_files.get(m)
            path = src / name if name else None
            if m in spec.required:
                require_file(path, f"{m} feature file")
        else:
            stem = f"{_SAMPLE_PREFIX[m]}_feat_sample"
            path = next((src / f"{stem}{ext}" for ext in (".npy", ".pt")
                         if (src / f"{stem}{ext}").exists()), None)
        found[m] = path if path is not None and path.exists() else None
    if not any(found.values()):
        raise ConversionError(f"{src}: missing file: no feature file for any modality")
    return found


def _is_word_pairs(arr):
    return arr.ndim == 2 and arr.shape[0] == 2 and np.issubdtype(arr.dtype, np.integer)


def _check_dense(arr, path):
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
        raise ConversionError(f"{path}: expected a numeric feature matrix [n_items, d] or "
                              f"int (item, word) pairs [2, M], found {arr.dtype} {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.nonzero(bad.any(axis=1))[0]
        raise ConversionError(f"{path}: {int(bad.sum())} NaN or infinite value(s) in "
                              f"{len(rows)} row(s) (first row {int(rows[0])})")


def word_pairs_to_tokens(pairs, n_items, path):
    """int ``[2, M]`` (item index, word id) -> list of n_items word-id lists (file order)."""
    items, words = pairs[0].astype(np.int64), pairs[1].astype(np.int64)
    _check_items(items, 0, n_items, path, f"word pairs index items 0..{n_items - 1}")
    if words.size and words.min() < 0:
        raise ConversionError(f"{path}: negative word id {int(words.min())}")
    order = np.argsort(items, kind="stable")
    bounds = np.searchsorted(items[order], np.arange(n_items + 1))
    words = words[order]
    return [words[bounds[i]:bounds[i + 1]].tolist() for i in range(n_items)]


def load_features(paths):
    """Load every present modality; return (modalities, n_items).

    ``n_items`` is the common row count of the dense features; a dense file
    with a different count is an error naming it.
    """
    arrays = {m: (p, load_array(p)) for m, p in paths.items() if p is not None}
    n_items = None
    for m, (p, arr) in arrays.items():
        if _is_word_pairs(arr):
            continue
        _check_dense(arr, p)
        if n_items is None:
            n_items, first = arr.shape[0], p
        elif arr.shape[0] != n_items:
            raise ConversionError(f"{p}: {arr.shape[0]} feature rows but {first.name} has "
                                  f"{n_items}; every feature file needs one row per item")
    if n_items is None:  # only word pairs: items are those the pairs mention
        n_items = int(max(arr[0].max() for _, arr in arrays.values())) + 1
    mods = []
    for m, (p, arr) in arrays.items():
        if _is_word_pairs(arr):
            mods.append(Modality(m, "token_seq", word_pairs_to_tokens(arr, n_items, p),
                                 f"word ids from {p.name}"))
        else:
            mods.append(Modality(m, "float_seq", arr.astype(np.float32, copy=False),
                                 f"from {p.name}"))
    return mods, n_items


# -------------------------------------------------------------------- convert
def _pick_split(split, layout, src):
    if split is None:
        return "original" if layout == "full" else "random"
    if split == "original" and layout == "sample":
        raise ConversionError(f"{src / 'user_item_dict_sample.npy'}: the sample layout has no "
                              "original split (it holds all interactions); use --split random")
    return split


def _apply_pca(mods, dim):
    for m in mods:
        if m.ftype == "float_seq" and dim is not None and dim < m.values.shape[1]:
            m.note = f"{m.note}, PCA {m.values.shape[1]} -> {dim}"
            m.values = pca_reduce(m.values, dim)


def convert_layout(spec, src, name=None, split=None, seed=2020, pca=None, cold_items=None):
    """Convert ``src`` (full or sample layout of ``spec.kind``) into a ConvertedDataset.

    ``cold_items``: share of the items held out of training (random split only).
    """
    src = Path(src)
    layout = detect_layout(src)
    split = _pick_split(split, layout, src)
    if cold_items is not None and split != "random":
        raise ConversionError(f"{src}: --cold-items needs a split the converter writes; the authors' "
                              "original split is the data's own (add --split random)")
    mods, n_items = load_features(_feature_paths(src, layout, spec))
    if layout == "full":
        inter, parts = load_full(src, n_items)
    else:
        inter, parts = load_sample(src, n_items)
    if split == "random":
        note = f"random per-user 8:1:1, seed {seed}"
        if cold_items is None:
            which = random_parts(inter.user, seed)
        else:
            which, held = split_with_cold_items(inter.user, inter.item,
                                                lambda warm: random_parts(inter.user[warm], seed),
                                                cold_items, seed)
            note = f"{note}; {cold_note(which, inter.item, held)}"
        parts = {p: inter.take(which == k) for k, p in enumerate(("train", "valid", "test"))}
    else:
        note = "the authors' original train / val / test"
    _apply_pca(mods, pca)
    return ConvertedDataset(
        name=name or spec.kind,
        description=f"{spec.description} ({layout} MMGCN layout)",
        inter=inter,
        item_ids=np.arange(n_items),
        modalities=mods,
        splits=parts,
        split_note=note,
        notes=[f"{m}: absent" for m in MODALITIES if m not in {x.name for x in mods}],
    )


def convert_mmgcn(kind, src, **kwargs):
    """Dispatch to the movielens / tiktok / kwai module's spec."""
    import importlib

    module = importlib.import_module(f"dataset_converters.{kind}")
    return convert_layout(module.SPEC, src, **kwargs)
