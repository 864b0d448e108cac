"""Writing a converted dataset as RecBole atomic files plus its dataset YAML.

Layout written into ``DATA_DIR/NAME/`` (RecBole's own):

* ``NAME.inter``: every interaction (``user_id:token item_id:token`` [+ ``timestamp:float``]);
* ``NAME.{train,valid,test}.inter`` for a fixed split, read through RecBole's
  ``benchmark_filename``;
* ``NAME.item``: ``item_id:token`` plus one column per modality
  (``float_seq`` for dense features, ``token_seq`` for word / tag ids);
* ``NAME.yaml``: the dataset config, loaded by the plugin from
  ``{data_path}/{dataset}/{dataset}.yaml``.

Floats are written with ``%.9g`` after a cast to float32, which round-trips
float32 exactly.
"""

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dataset_converters.safe_io import atomic_dir

SPLIT_NAMES = ("train", "valid", "test")
_CHUNK_ROWS = 4096


@dataclass
class Modality:
    """One item modality column.

    ``values`` is a float array ``[n_items, dim]`` for ``float_seq`` or a list of
    token sequences (one per item, possibly empty) for ``token_seq``.
    """

    name: str
    ftype: str  # "float_seq" | "token_seq"
    values: object
    note: str = ""

    def describe(self):
        """Short human description: dense dim or vocabulary size."""
        if self.ftype == "float_seq":
            return f"float_seq dim {self.values.shape[1]}"
        vocab = len({t for seq in self.values for t in seq})
        return f"token_seq vocab {vocab}"


@dataclass
class Interactions:
    """Parallel arrays of user tokens, item tokens and optional timestamps."""

    user: np.ndarray
    item: np.ndarray
    timestamp: np.ndarray = None

    def __len__(self):
        return len(self.user)

    def take(self, index):
        """Rows at ``index`` (a boolean mask or integer index array)."""
        ts = None if self.timestamp is None else self.timestamp[index]
        return Interactions(self.user[index], self.item[index], ts)


@dataclass
class ConvertedDataset:
    """Everything a converter produces, before it is written."""

    name: str
    description: str  # one line, becomes the YAML's first comment
    inter: Interactions  # all interactions
    item_ids: np.ndarray  # [n_items] item tokens, row order of the modality arrays
    modalities: list
    splits: dict = None  # {"train"|"valid"|"test": Interactions} for a fixed split
    split_note: str = ""
    notes: list = field(default_factory=list)
    yaml_extra: list = field(default_factory=list)  # further YAML lines (e.g. the data's own metric)


# ----------------------------------------------------------------- formatting
def _format_floats(matrix):
    """``[rows, dim]`` floats -> list of space-joined ``%.9g`` strings (float32 round-trip)."""
    matrix = np.asarray(matrix, dtype=np.float32)
    if matrix.shape[1] == 0:
        return [""] * matrix.shape[0]
    row_fmt = " ".join(["%.9g"] * matrix.shape[1])
    return [row_fmt % tuple(row) for row in matrix.tolist()]


def _format_column(values, ftype):
    """Format one chunk of a column as strings."""
    if ftype == "float_seq":
        return _format_floats(values)
    if ftype == "token_seq":
        return [" ".join(map(str, seq)) for seq in values]
    if ftype == "float":
        return ["%.9g" % v for v in np.asarray(values, dtype=np.float64).tolist()]
    return [str(v) for v in (values.tolist() if isinstance(values, np.ndarray) else values)]


def write_atomic_file(path, columns):
    """Write a RecBole atomic file.

    ``columns`` is a list of ``(name, ftype, values)``; all ``values`` have the
    same length and support slicing.  Rows are formatted in chunks so a large
    float matrix never exists as one giant string.
    """
    n_rows = len(columns[0][2])
    header = "\t".join(f"{name}:{ftype}" for name, ftype, _ in columns)
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.write(header + "\n")
        for start in range(0, n_rows, _CHUNK_ROWS):
            stop = min(start + _CHUNK_ROWS, n_rows)
            texts = [_format_column(values[start:stop], ftype) for _, ftype, values in columns]
            f.write("".join("\t".join(cells) + "\n" for cells in zip(*texts)))


def _inter_columns(inter):
    cols = [("user_id", "token", inter.user), ("item_id", "token", inter.item)]
    if inter.timestamp is not None:
        cols.append(("timestamp", "float", inter.timestamp))
    return cols


# ----------------------------------------------------------------------- YAML
def dataset_yaml(ds):
    """The dataset config text for ``ds``: typed and commented, one key a line."""
    inter_cols = ["user_id", "item_id"] + (["timestamp"] if ds.inter.timestamp is not None else [])
    mod_names = [m.name for m in ds.modalities]
    lines = [
        f"# {ds.name}: {ds.description}",
        "# Written by dataset_converters; RecBole atomic files live beside this file.",
        "USER_ID_FIELD: user_id                # (str) user id column of the .inter files",
        "ITEM_ID_FIELD: item_id                # (str) item id column of .inter and .item",
    ]
    if ds.inter.timestamp is not None:
        lines.append("TIME_FIELD: timestamp                 # (str) interaction order column")
    lines += [
        "load_col:                             # (dict) columns loaded from each atomic file",
        f"  inter: [{', '.join(inter_cols)}]",
        f"  item: [{', '.join(['item_id'] + mod_names)}]",
        f"modality_fields: [{', '.join(mod_names)}]"
        "   # (list) .item columns used as item modalities",
    ]
    for m in ds.modalities:
        lines.append(f"# modality {m.name}: {m.describe()}{' - ' + m.note if m.note else ''}")
    if ds.splits is not None:
        lines.append("benchmark_filename: [train, valid, test]"
                     "   # (list) fixed split: NAME.train/valid/test.inter")
        if ds.split_note:
            lines.append(f"# split: {ds.split_note}")
    lines += ds.yaml_extra
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- write
def write_dataset(ds, out_dir):
    """Write ``ds`` into ``out_dir/ds.name/`` atomically and return that path."""
    target = Path(out_dir) / ds.name
    with atomic_dir(target) as tmp:
        write_atomic_file(tmp / f"{ds.name}.inter", _inter_columns(ds.inter))
        if ds.splits is not None:
            for part in SPLIT_NAMES:
                write_atomic_file(tmp / f"{ds.name}.{part}.inter", _inter_columns(ds.splits[part]))
        item_cols = [("item_id", "token", ds.item_ids)]
        item_cols += [(m.name, m.ftype, m.values) for m in ds.modalities]
        write_atomic_file(tmp / f"{ds.name}.item", item_cols)
        (tmp / f"{ds.name}.yaml").write_text(dataset_yaml(ds), encoding="utf-8")
    return target


def summary(ds, path, data_dir):
    """Human report of what was written and the command to train on it."""
    n_users = len(np.unique(ds.inter.user))
    n_active = len(np.unique(ds.inter.item))
    lines = [
        f"wrote {path}",
        f"  users: {n_users:,}   items: {len(ds.item_ids):,} in .item "
        f"({n_active:,} interacted with)   interactions: {len(ds.inter):,}",
    ]
    for m in ds.modalities:
        lines.append(f"  modality {m.name}: {m.describe()}")
    if ds.splits is not None:
        sizes = "  ".join(f"{p} {len(ds.splits[p]):,}" for p in SPLIT_NAMES)
        lines.append(f"  split ({ds.split_note or 'fixed'}): {sizes}")
    else:
        lines.append("  split: none written (RecBole splits by eval_args)")
    lines += [f"  note: {n}" for n in ds.notes]
    lines.append("train with:")
    lines.append(f"  python run_recbole.py --model=MetaMMF_GCN --dataset={ds.name} "
                 f"--data_path={data_dir}")
    return "\n".join(lines)
