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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn

from recbole.utils import FeatureSource, FeatureType

from recbole_metammf.layers.graph import SparseGraph


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
            raise ValueError(
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


def standardise(x: torch.Tensor) -> torch.Tensor:
    """Per-dimension zero mean / unit variance over rows 1.. (row 0 is padding)."""
    real = x[1:]
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
            raise ValueError(
                f"dataset '{config['dataset']}' has no item modality: add float_seq/token_seq columns to its "
                f".item file and list them in load_col (and optionally modality_fields)"
            )
        standardise_dense = config["standardize_modalities"] if "standardize_modalities" in config else True
        token_size = config["token_embedding_size"] if "token_embedding_size" in config else 32
        self.specs: list[ModalitySpec] = []
        self.token_encoders = nn.ModuleDict()
        self.token_pooling = nn.ModuleDict()  # the same means for all items at once, as one sparse product
        for i, field in enumerate(fields):
            column = _item_column(dataset, field)
            if dataset.field2type[field] == FeatureType.FLOAT_SEQ:
                dense = column.float()  # [n_items, dim]
                if dense.dim() != 2:
                    raise ValueError(f"modality '{field}' must be a float_seq vector per item, got shape {tuple(dense.shape)}")
                if not torch.isfinite(dense).all():
                    bad = (~torch.isfinite(dense)).any(dim=1).nonzero().flatten()[:5].tolist()
                    raise ValueError(
                        f"modality '{field}' of dataset '{config['dataset']}' has NaN or infinite values "
                        f"(internal item ids {bad}...)"
                    )
                if standardise_dense:
                    dense = standardise(dense)
                self.register_buffer(f"mod_{i}", dense.contiguous(), persistent=False)
                self.specs.append(ModalitySpec(field, "dense", dense.shape[1]))
            else:
                tokens = column.long()  # [n_items, max_len], 0 = padding
                self.register_buffer(f"mod_{i}", tokens.contiguous(), persistent=False)
                num_tokens = dataset.num(field)
                self.token_encoders[field] = nn.EmbeddingBag(num_tokens, token_size, mode="mean", padding_idx=0)
                self.token_pooling[field] = SparseGraph(mean_pooling_matrix(tokens, num_tokens))
                self.specs.append(ModalitySpec(field, "token", token_size, num_tokens))
        self.output_dim = sum(spec.dim for spec in self.specs)

    def per_modality(self, items: torch.Tensor | None = None) -> list[torch.Tensor]:
        """One content tensor per modality, in ``specs`` order: [n, spec.dim] each."""
        parts = []
        for i, spec in enumerate(self.specs):
            data = getattr(self, f"mod_{i}")
            if items is not None:
                data = data[items]
            if spec.kind == "dense":
                parts.append(data)  # [n, dim]
            elif items is None:
                # all items: P @ E with the constant mean-pooling matrix P (backward: P^T @ grad),
                # the same means as the EmbeddingBag without its per-step sort of every token
                parts.append(self.token_pooling[spec.field](self.token_encoders[spec.field].weight))
            else:
                parts.append(self.token_encoders[spec.field](data))  # [n, token_size]
        return parts

    def forward(self, items: torch.Tensor | None = None) -> torch.Tensor:
        """Content vectors of ``items`` (all items when None): [n, d_in]."""
        return torch.cat(self.per_modality(items), dim=-1)

    def extra_repr(self) -> str:
        return ", ".join(f"{s.field}:{s.kind}[{s.dim}]" for s in self.specs)
