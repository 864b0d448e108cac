"""Item content as a model reads it: fixed, or fine-tuned as a parameter (BM3, MGCN).

Several reference implementations (MMRec's BM3 and MGCN among them) load the item features
with ``nn.Embedding.from_pretrained(features, freeze=False)``: the features themselves are
trained along with the model. :class:`TunableContent` gives that to any model of the plugin:
each *dense* modality's content [n_items, dim] becomes a parameter initialised from the
modality as the encoder stores it (standardised, missing items filled); a token modality is
already learned (its token embeddings are parameters of the encoder) and is passed through.

It reads the encoder by duck typing (``specs``, ``data(i)``, ``per_modality()``), so this layer
does not import :mod:`recbole_metammf.modalities`.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class TunableContent(nn.Module):
    """Each modality's content for all items, the dense ones trainable when ``trainable``."""

    def __init__(self, modalities, trainable: bool):
        super().__init__()
        self.trainable = bool(trainable)
        self.tables = nn.ParameterDict()
        if self.trainable:
            for i, spec in enumerate(modalities.specs):
                if spec.kind == "dense":
                    self.tables[str(i)] = nn.Parameter(modalities.data(i).detach().clone())  # [n_items, dim]

    def forward(self, modalities, items: torch.Tensor | None = None) -> list[torch.Tensor]:
        """[n_items, dim_m] per modality, in ``modalities.specs`` order; with ``items``, their rows [n, dim_m]."""
        parts = modalities.per_modality(items)
        return [self._table(str(i), items) if str(i) in self.tables else part for i, part in enumerate(parts)]

    def _table(self, key: str, items: torch.Tensor | None) -> torch.Tensor:
        table = self.tables[key]
        return table if items is None else table.index_select(0, items)
