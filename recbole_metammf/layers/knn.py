"""What the item-item kNN models (LATTICE, FREEDOM) share: the content their graphs are built
from, and the epoch length at which they refresh a graph.

The kNN search itself (chunked, sparse) is in :mod:`recbole_metammf.layers.graph`.
"""

import math

import numpy as np
import scipy.sparse as sp


def raw_modalities(modalities) -> list:
    """Each modality's raw content: a dense tensor [n_items, dim], or a multi-hot scipy matrix for tokens.

    A dense modality is used as the model sees it (standardised, missing items filled: see
    ``modalities.py``); a token modality as its bag of tokens, each token once, so an item with an
    empty bag (or one missing from ``.item``) has a zero row and no kNN neighbour from it.
    """
    raws = []
    for i, spec in enumerate(modalities.specs):
        data = modalities.data(i)
        if spec.kind == "dense":
            raws.append(data)
            continue
        tokens = data.cpu().numpy()  # [n_items, max_len], 0 = padding
        rows, cols = np.nonzero(tokens)
        bag = sp.csr_matrix(
            (np.ones(len(rows), dtype=np.float32), (rows, tokens[rows, cols])),
            shape=(tokens.shape[0], spec.num_tokens),
        )
        bag.data[:] = 1.0  # a token repeated in a bag counts once
        raws.append(bag)
    return raws


def steps_per_epoch(config, dataset) -> int:
    """Training batches in one epoch: ``ceil(#train interactions / train_batch_size)``."""
    return max(1, math.ceil(len(dataset.inter_feat) / config["train_batch_size"]))
