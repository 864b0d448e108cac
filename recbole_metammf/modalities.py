"""Item modalities: from a RecBole dataset to aligned tensors, and their encoder.

A modality is a column of the ``.item`` atomic file:

* ``float_seq``: a dense vector per item (visual, acoustic, a text embedding,
  a multi-hot genre vector...). Standardised per dimension over the real items
  (configurable), so modalities of very different scales meet on equal terms.
* ``token_seq``: a bag of word/tag ids per item (TikTok's word ids, title
  words, hashtags), encoded by a learned mean-pooled embedding.

The columns are named by the config key ``modality_fields``; when it is empty,
every ``float_seq`` and ``token_seq`` column loaded from the ``.item`` file is
a modality. Row ``i`` of every tensor belongs to RecBole's internal item id
``i``; row 0 is RecBole's padding item and stays zero.

The tensors are registered as non-persistent buffers: they move to the model's
device once, with the model, are never copied per step, and are rebuilt from
the dataset rather than stored in checkpoints.

Checked where they are read, for every model (from the ``.item`` rows as read,
kept by ``compat.py`` section 5, since RecBole pads what it loads):

* every non-empty row of a dense modality has the same length, else one
  :class:`~recbole_metammf.errors.DataError` names the file, the column, the first
  offending item and the lengths seen;
* items with no row in ``.item`` (and, for a dense modality, items whose cell is
  empty) are *missing*. ``missing_item_features`` decides: ``error``; ``zeros`` or
  ``mean`` (the mean of the present items) fill them, with a warning giving their
  number and share; ``auto`` (default) fills with the mean up to
  ``missing_item_features_max_share`` of the items and refuses above. Filling comes
  before standardisation, whose statistics use the present items only. A token
  modality's missing item gets an empty bag (``zeros``) or the mean of the present
  items' bag embeddings (``mean``); an empty bag in the file is a valid value, not a
  missing one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from logging import getLogger

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn

from recbole.utils import FeatureSource, FeatureType

from recbole_metammf.compat import ITEM_ROWS_ATTR
from recbole_metammf.errors import ConfigError, DataError
from recbole_metammf.layers.graph import SparseGraph

MISSING_POLICIES = ("auto", "error", "zeros", "mean")
DEFAULT_MAX_MISSING_SHARE = 0.01  # auto: fill at most 1% of the items (see properties/overall.yaml)


@dataclass(frozen=True)
class ModalitySpec:
    field: str
    kind: str  # "dense" or "token"
    dim: int  # feature width (dense) or embedding size (token)
    num_tokens: int = 0  # vocabulary size incl. padding (token)


def modality_fields(config, dataset) -> list[str]:
    """The ``.item`` columns used as modalities, in a stable order."""
    named = config["modality_fields"] if "modality_fields" in config else None
    loaded = dataset.item_feat.columns if dataset.item_feat is not None else []
    item_fields = [
        f
        for f in loaded
        if dataset.field2source.get(f) == FeatureSource.ITEM
        and dataset.field2type[f] in (FeatureType.FLOAT_SEQ, FeatureType.TOKEN_SEQ)
    ]
    if named:
        missing = [f for f in named if f not in item_fields]
        if missing:
            raise ConfigError(
                f"modality_fields {missing} of dataset '{config['dataset']}' are not float_seq/token_seq "
                f"columns loaded from its .item file (loaded: {item_fields}); check load_col and the .item header"
            )
        return list(named)
    return item_fields


def _item_column(dataset, field: str) -> torch.Tensor:
    item_feat = dataset.get_item_feature()
    if field not in item_feat.interaction:
        raise ValueError(f"dataset '{dataset.dataset_name}' has no item column '{field}'")
    return item_feat[field]


# ----------------------------------------------------------------------------
# checks of the .item rows as read
# ----------------------------------------------------------------------------
@dataclass
class ItemRows:
    """The ``.item`` file's rows, aligned with RecBole's internal item ids."""

    path: str
    present: np.ndarray  # [n_items] bool: the item has a row (row 0, padding: False)
    lengths: dict  # field -> [n_items] int: values in the item's cell as read (0 when no row)
    file_ids: np.ndarray  # raw item ids in file order
    file_lengths: dict  # field -> lengths in file order
    dropped_items: int = 0  # items with no row whose interactions RecBole dropped (filter_inter_by_user_or_item)
    dropped_interactions: int = 0
    dropped_examples: tuple = ()


def item_rows(dataset) -> ItemRows | None:
    """What ``compat.py`` recorded while RecBole read ``.item``; None for a dataset loaded otherwise."""
    record = getattr(dataset, ITEM_ROWS_ATTR, None)
    if record is None:
        return None
    token2id = dataset.field2token_id[dataset.iid_field]
    internal = np.fromiter((token2id.get(t, -1) for t in record["ids"]), dtype=np.int64, count=len(record["ids"]))
    kept = internal > 0  # rows of items that RecBole's filtering dropped have no id
    present = np.zeros(dataset.item_num, dtype=bool)
    present[internal[kept]] = True
    lengths = {}
    for field, file_lengths in record["lengths"].items():
        per_item = np.zeros(dataset.item_num, dtype=np.int64)
        per_item[internal[kept]] = file_lengths[kept]
        lengths[field] = per_item
    dropped = record.get("dropped") or {}
    return ItemRows(record["path"], present, lengths, record["ids"], record["lengths"],
                    dropped.get("items", 0), dropped.get("interactions", 0), tuple(dropped.get("examples", ())))


def check_dense_lengths(rows: ItemRows, field: str) -> None:
    """Every non-empty cell of a dense column holds the same number of values, else one DataError."""
    lengths = rows.file_lengths[field]
    seen = Counter(lengths[lengths > 0].tolist())
    if len(seen) <= 1:
        return
    expected = seen.most_common(1)[0][0]
    first = int(np.flatnonzero((lengths > 0) & (lengths != expected))[0])
    listed = ", ".join(f"{n} values in {c:,} row{'s' if c > 1 else ''}" for n, c in seen.most_common())
    raise DataError(
        f"{rows.path}: column '{field}' (float_seq) has rows of different lengths: item {rows.file_ids[first]} "
        f"has {lengths[first]} values where most rows have {expected} (seen: {listed}); every row of a dense "
        f"modality needs the same length"
    )


def missing_items(rows: ItemRows, field: str, dense: bool) -> tuple[np.ndarray, int, int]:
    """(mask [n_items] of the items without this modality, how many have no row, how many an empty cell)."""
    absent = ~rows.present
    absent[0] = False  # padding
    missing = absent.copy()
    empty = np.zeros_like(absent)
    if dense:
        empty = rows.present & (rows.lengths[field] == 0)
        missing |= empty
    return missing, int(absent.sum()), int(empty.sum())


def missing_policy(config) -> tuple[str, float]:
    """``missing_item_features`` and ``missing_item_features_max_share``, checked."""
    policy = config["missing_item_features"] if "missing_item_features" in config else "auto"
    policy = "auto" if policy is None else str(policy)
    if policy not in MISSING_POLICIES:
        raise ConfigError(f"missing_item_features must be one of {', '.join(MISSING_POLICIES)}, got '{policy}'")
    share = config["missing_item_features_max_share"] if "missing_item_features_max_share" in config else None
    share = DEFAULT_MAX_MISSING_SHARE if share is None else share
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
        raise ConfigError(f"missing_item_features_max_share must be a number from 0 to 1, got {share!r}")
    return policy, float(share)


def resolve_missing(dataset, rows: ItemRows, field: str, mask: np.ndarray, n_absent: int, n_empty: int,
                    policy: str, max_share: float) -> str | None:
    """How to fill this modality's missing items ('zeros' / 'mean'), None when there are none; refuses per policy.

    Items whose interactions RecBole dropped (no ``.item`` row, ``filter_inter_by_user_or_item``)
    count as missing too, out of all items including them; there is nothing left of them to fill.
    """
    n_kept = int(mask.sum())
    n_missing = n_kept + rows.dropped_items
    if n_missing == 0:
        return None
    n_items = dataset.item_num - 1 + rows.dropped_items
    share = n_missing / n_items
    parts = []
    if n_absent:
        parts.append(f"{n_absent:,} with no row")
    if n_empty:
        parts.append(f"{n_empty:,} with an empty cell")
    if rows.dropped_items:
        parts.append(f"{rows.dropped_items:,} with no row whose {rows.dropped_interactions:,} interactions RecBole "
                     f"dropped (filter_inter_by_user_or_item)")
    examples = [str(t) for t in dataset.id2token(dataset.iid_field, np.flatnonzero(mask)[:3])]
    examples = (examples + [str(t) for t in rows.dropped_examples])[:3]
    what = (f"{rows.path}: {n_missing:,} of {n_items:,} items ({share:.1%}) have no '{field}' features "
            f"({'; '.join(parts)}; e.g. item {', '.join(examples)})")
    if policy == "error" or (policy == "auto" and share > max_share):
        limit = "" if policy == "error" else f", more than missing_item_features_max_share ({max_share:.1%})"
        raise DataError(
            f"{what}{limit}: check that the .item file covers the items of the interactions, or set "
            f"missing_item_features to 'mean' or 'zeros' to fill them"
        )
    if n_kept and n_kept == dataset.item_num - 1:
        raise DataError(f"{what}: there is nothing to fill them from")
    fill = "mean" if policy == "auto" else policy
    done = []
    if n_kept:
        done.append(f"{n_kept:,} filled with {'the mean of the other items' if fill == 'mean' else 'zeros'}")
    if rows.dropped_items:
        done.append(f"{rows.dropped_items:,} left out with their interactions (filter_inter_by_user_or_item: "
                    f"False keeps and fills them)")
    getLogger().warning(f"{what}: {'; '.join(done)} (missing_item_features: {policy})")
    return fill if n_kept else None


def standardise(x: torch.Tensor, present: torch.Tensor | None = None) -> torch.Tensor:
    """Per-dimension zero mean / unit variance over rows 1.. (row 0 is padding).

    With ``present`` (bool [n]), the statistics come from those rows only (filled rows do not count).
    """
    real = x[1:] if present is None else x[present]
    mean = real.mean(dim=0, keepdim=True)
    std = real.std(dim=0, unbiased=False, keepdim=True)
    std = torch.where(std > 0, std, torch.ones_like(std))  # constant columns stay finite
    out = (x - mean) / std
    out[0] = 0.0
    return out


def mean_pooling_matrix(tokens: torch.Tensor, num_tokens: int) -> sp.csr_matrix:
    """``P`` [n, num_tokens] with ``P @ E`` = each row's mean token embedding, padding (0) excluded.

    What ``nn.EmbeddingBag(mode="mean", padding_idx=0)`` computes: a repeated token counts
    as often as it appears, a row of padding only is zero.
    """
    tokens = tokens.cpu().numpy()
    real = tokens > 0
    counts = real.sum(axis=1)
    rows = np.nonzero(real)[0]
    values = (1.0 / counts[rows]).astype(np.float32)
    return sp.csr_matrix((values, (rows, tokens[real])), shape=(tokens.shape[0], num_tokens), dtype=np.float32)


class ModalityEncoder(nn.Module):
    """All item modalities of a dataset -> one content matrix ``x`` [n_items, d_in]."""

    def __init__(self, config, dataset):
        super().__init__()
        fields = modality_fields(config, dataset)
        if not fields:
            raise DataError(
                f"dataset '{config['dataset']}' has no item modality: add float_seq/token_seq columns to its "
                f".item file and list them in load_col (and optionally modality_fields)"
            )
        standardise_dense = config["standardize_modalities"] if "standardize_modalities" in config else True
        token_size = config["token_embedding_size"] if "token_embedding_size" in config else 32
        policy, max_share = missing_policy(config)
        rows = item_rows(dataset)
        if rows is None:
            getLogger().warning(
                f"dataset '{config['dataset']}' was not loaded through RecBole's loader with the plugin imported: "
                f"its item modalities cannot be checked for ragged rows or missing items"
            )
        self.specs: list[ModalitySpec] = []
        self.token_encoders = nn.ModuleDict()
        self.token_pooling = nn.ModuleDict()  # the same means for all items at once, as one sparse product
        self.token_fill: dict[str, int] = {}  # token field -> modality index whose missing items get the mean bag
        self._dense_columns: dict[int, tuple[int, int]] = {}  # dense modality index -> its columns of ``dense``
        dense_blocks = []
        for i, field in enumerate(fields):
            column = _item_column(dataset, field)
            dense_kind = dataset.field2type[field] == FeatureType.FLOAT_SEQ
            fill, missing = None, None
            if rows is not None:
                if dense_kind:
                    check_dense_lengths(rows, field)
                mask, n_absent, n_empty = missing_items(rows, field, dense_kind)
                fill = resolve_missing(dataset, rows, field, mask, n_absent, n_empty, policy, max_share)
                missing = torch.from_numpy(mask)
            if dense_kind:
                dense = column.float()  # [n_items, dim]
                if dense.dim() != 2:
                    raise ValueError(f"modality '{field}' must be a float_seq vector per item, got shape {tuple(dense.shape)}")
                if not torch.isfinite(dense).all():
                    bad = (~torch.isfinite(dense)).any(dim=1).nonzero().flatten()[:5].tolist()
                    raise DataError(
                        f"modality '{field}' of dataset '{config['dataset']}' has NaN or infinite values "
                        f"(internal item ids {bad}...)"
                    )
                present = None
                if fill is not None:
                    present = ~missing
                    present[0] = False
                    dense = dense.clone()  # .float() of a float column is the dataset's own tensor
                    dense[missing] = dense[present].mean(dim=0) if fill == "mean" else 0.0
                if standardise_dense:
                    dense = standardise(dense, present)
                start = sum(block.shape[1] for block in dense_blocks)
                self._dense_columns[i] = (start, start + dense.shape[1])
                dense_blocks.append(dense)
                self.specs.append(ModalitySpec(field, "dense", dense.shape[1]))
            else:
                tokens = column.long()  # [n_items, max_len], 0 = padding
                self.register_buffer(f"mod_{i}", tokens.contiguous(), persistent=False)
                num_tokens = dataset.num(field)
                self.token_encoders[field] = nn.EmbeddingBag(num_tokens, token_size, mode="mean", padding_idx=0)
                pooling = mean_pooling_matrix(tokens, num_tokens)  # [n_items, num_tokens]
                self.token_pooling[field] = SparseGraph(pooling)
                if fill == "mean":
                    # a missing item's bag embedding = the mean of the present items' ones = mean_row @ E
                    present = ~missing.numpy()
                    present[0] = False
                    mean_row = np.asarray(pooling[np.flatnonzero(present)].mean(axis=0), dtype=np.float32)  # [1, V]
                    self.register_buffer(f"fill_{i}", torch.from_numpy(mean_row), persistent=False)
                    self.register_buffer(f"missing_{i}", missing, persistent=False)
                    self.token_fill[field] = i
                self.specs.append(ModalitySpec(field, "token", token_size, num_tokens))
        self.output_dim = sum(spec.dim for spec in self.specs)
        # the dense modalities side by side in ONE buffer [n_items, sum of dims], each a column view of it:
        # a consumer that wants them concatenated (MetaFusionNetwork's constant blocks) takes a view of
        # the buffer instead of a second copy of every item's features (78 MB at TikTok shape)
        if not dense_blocks:
            dense = None
        elif len(dense_blocks) == 1:
            dense = dense_blocks[0].contiguous()  # no copy of a single modality
        else:
            dense = torch.cat(dense_blocks, dim=1)
        self.register_buffer("dense", dense, persistent=False)

    def data(self, i: int) -> torch.Tensor:
        """Modality ``i``'s stored content for all items: dense [n_items, dim] (standardised, missing items
        filled; a column view of ``dense``) or token ids [n_items, max_len] (0 = padding)."""
        if i in self._dense_columns:
            start, end = self._dense_columns[i]
            return self.dense[:, start:end]
        return getattr(self, f"mod_{i}")

    def per_modality(self, items: torch.Tensor | None = None) -> list[torch.Tensor]:
        """One content tensor per modality, in ``specs`` order: [n, spec.dim] each."""
        parts = []
        for i, spec in enumerate(self.specs):
            data = self.data(i)
            if items is not None:
                data = data[items]
            if spec.kind == "dense":
                parts.append(data)  # [n, dim]
                continue
            weight = self.token_encoders[spec.field].weight  # [num_tokens, token_size]
            if items is None:
                # all items: P @ E with the constant mean-pooling matrix P (backward: P^T @ grad),
                # the same means as the EmbeddingBag without its per-step sort of every token
                bags = self.token_pooling[spec.field](weight)  # [n_items, token_size]
            else:
                bags = self.token_encoders[spec.field](data)  # [n, token_size]
            if spec.field in self.token_fill:  # missing items filled with the mean bag embedding
                missing = getattr(self, f"missing_{i}")
                missing = missing if items is None else missing[items]
                mean_bag = getattr(self, f"fill_{i}") @ weight  # [1, token_size]
                bags = torch.where(missing.unsqueeze(-1), mean_bag, bags)
            parts.append(bags)
        return parts

    def forward(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Content vectors of ``items`` (all items when None): [n, d_in]."""
        return torch.cat(self.per_modality(items), dim=-1)

    def extra_repr(self) -> str:
        return ", ".join(f"{s.field}:{s.kind}[{s.dim}]" for s in self.specs)
