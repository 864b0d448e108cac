"""Build ``mm-ml-100k``: RecBole's bundled ml-100k with three item modalities.

Offline and deterministic; the built-in dataset the plugin can train on with
nothing downloaded.  Input: ``recbole/dataset_example/ml-100k/ml-100k.{inter,item}``.
Output (``DATA_DIR/NAME/``):

* ``NAME.inter``: all 100,000 ratings as implicit interactions
  (``user_id:token item_id:token timestamp:float``);
* ``NAME.item``: 1,682 items with
  ``title:token_seq`` (lower-cased title words, punctuation stripped, a
  ``(YYYY)`` year dropped), ``genre:float_seq`` (multi-hot over the sorted genre
  vocabulary, 19 genres) and ``year:float_seq`` (``[(year-1900)/100]`` plus a
  one-hot over release-decade buckets; zeros when the year is missing).
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd

from dataset_converters.recbole_files import (ConvertedDataset, Interactions, Modality,
                                              write_dataset)
from dataset_converters.safe_io import ConversionError

DEFAULT_NAME = "mm-ml-100k"
# Decade buckets of the year vector: before 1960, 1960s, 1970s, 1980s, 1990s and later.
YEAR_BUCKETS = (1960, 1970, 1980, 1990)
_YEAR_IN_PARENS = re.compile(r"\(\s*\d{4}\s*\)")
_APOSTROPHE = re.compile(r"['\u2019]")
_NON_WORD = re.compile(r"[^\w]+")


def bundled_ml100k_dir():
    """Directory of the ml-100k atomic files shipped inside the recbole package."""
    import recbole

    return Path(recbole.__file__).parent / "dataset_example" / "ml-100k"


def title_tokens(title):
    """'Children\\'s Story, The (1995)' -> ['childrens', 'story', 'the']."""
    text = _YEAR_IN_PARENS.sub(" ", str(title)).lower()
    text = _APOSTROPHE.sub("", text)
    return [w for w in _NON_WORD.sub(" ", text).split() if w]


def genre_multi_hot(genre_lists):
    """Lists of genre names -> (multi-hot ``[n_items, n_genres]``, sorted vocabulary)."""
    vocab = sorted({g for genres in genre_lists for g in genres})
    column = {g: j for j, g in enumerate(vocab)}
    out = np.zeros((len(genre_lists), len(vocab)), dtype=np.float32)
    for i, genres in enumerate(genre_lists):
        out[i, [column[g] for g in genres]] = 1.0
    return out, vocab


def year_vector(year):
    """Year (int or None) -> ``[(year-1900)/100, one-hot over 5 decade buckets]``."""
    out = np.zeros(1 + len(YEAR_BUCKETS) + 1, dtype=np.float32)
    if year is None:
        return out
    out[0] = (year - 1900) / 100.0
    out[1 + int(np.searchsorted(YEAR_BUCKETS, year, side="right"))] = 1.0
    return out


def _parse_year(text):
    text = str(text).strip()
    return int(text) if re.fullmatch(r"\d{4}", text) else None


def _read_atomic(path, columns):
    """Read selected columns of a RecBole atomic file as strings."""
    if not path.is_file():
        raise ConversionError(f"{path}: missing file (recbole without its dataset_example?)")
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8")
    names = {c.split(":")[0]: c for c in df.columns}
    missing = [c for c in columns if c not in names]
    if missing:
        raise ConversionError(f"{path}: missing column(s) {missing}")
    return df[[names[c] for c in columns]].set_axis(columns, axis=1)


def convert_ml100k(src=None, name=DEFAULT_NAME):
    """Read ml-100k from ``src`` (default: RecBole's bundled copy) into a ConvertedDataset."""
    src = Path(src) if src is not None else bundled_ml100k_dir()
    inter = _read_atomic(src / "ml-100k.inter", ["user_id", "item_id", "timestamp"])
    items = _read_atomic(src / "ml-100k.item", ["item_id", "movie_title", "release_year", "class"])

    titles = [title_tokens(t) for t in items["movie_title"]]
    genres, vocab = genre_multi_hot([c.split() for c in items["class"]])  # [n_items, 19]
    years = np.stack([year_vector(_parse_year(y)) for y in items["release_year"]])  # [n_items, 6]

    unknown = sorted(set(inter["item_id"]) - set(items["item_id"]))
    if unknown:
        raise ConversionError(f"{src / 'ml-100k.inter'}: {len(unknown)} item ids are not in "
                              "ml-100k.item")
    return ConvertedDataset(
        name=name,
        description="RecBole's bundled ml-100k, all ratings as implicit feedback, "
                    "title / genre / year item modalities",
        inter=Interactions(inter["user_id"].to_numpy(), inter["item_id"].to_numpy(),
                           inter["timestamp"].astype(np.float64).to_numpy()),
        item_ids=items["item_id"].to_numpy(),
        modalities=[
            Modality("title", "token_seq", titles, "lower-cased title words"),
            Modality("genre", "float_seq", genres, f"multi-hot over {len(vocab)} genres"),
            Modality("year", "float_seq", years, "(year-1900)/100 + decade one-hot"),
        ],
    )


def build_ml100k(out_dir, name=DEFAULT_NAME):
    """Write ``out_dir/name/`` from RecBole's bundled ml-100k and return that path."""
    return write_dataset(convert_ml100k(name=name), out_dir)
