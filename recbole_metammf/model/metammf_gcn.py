r"""MetaMMF_GCN
################################################

Reference:
    Han Liu, Yinwei Wei, Fan Liu, Wenjie Wang, Liqiang Nie, Tat-Seng Chua.
    "Dynamic Multimodal Fusion via Meta-Learning Towards Micro-Video Recommendation."
    ACM Transactions on Information Systems (TOIS), 2024. arXiv:2501.07110.

Reference code:
    https://github.com/hanliu95/MetaMMF

Items enter the user-item graph as ``e_i = [e_i^m ; e_i^c]`` (item-specific
fusion of their modalities beside a free ID embedding), users as free ID
embeddings. ``propagation: sage`` (default, as the reference code): two
GraphSAGE layers, mean aggregation with a root weight, weights shared by users
and items, LeakyReLU + dropout after layer 1, dropout after layer 2, the last
layer's output is the final representation. ``propagation: lightgcn``: LightGCN's
weightless propagation over the symmetric-normalised graph, mean of the layers.
Every training step fuses all items once (one batched pass) and propagates on
the whole graph; evaluation reuses cached final tensors.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization

from recbole_metammf.layers.graph import (
    SAGEConv,
    SparseGraph,
    bipartite_adjacency,
    lightgcn_propagate,
    mask_dropout,
    normalise,
)
from recbole_metammf.layers.fusion import MetaFusionNetwork
from recbole_metammf.model.base import MultimodalRecommender

PROPAGATIONS = ("sage", "lightgcn")


class MetaMMF_GCN(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["fused_size"] + config["id_embedding_size"]
        self.propagation = config["propagation"]
        if self.propagation not in PROPAGATIONS:
            raise ValueError(f"propagation must be one of {PROPAGATIONS}, got '{self.propagation}'")
        self.negative_slope = config["negative_slope"]
        self.dropouts = list(config["dropout"])
        self.n_layers = config["n_layers"]

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_id_embedding = nn.Embedding(self.n_items, config["id_embedding_size"])
        widths = [self.embedding_size, *config["gcn_hidden_sizes"]] if self.propagation == "sage" else []
        self.convs = nn.ModuleList(SAGEConv(a, b) for a, b in zip(widths[:-1], widths[1:]))
        if self.propagation == "sage" and len(self.dropouts) != len(self.convs):
            raise ValueError(f"dropout needs one value per SAGE layer ({len(self.convs)}), got {self.dropouts}")
        self.apply(xavier_normal_initialization)
        for conv in self.convs:  # the reference's PyG SAGEConv keeps torch's Linear init
            conv.reset_parameters()
        self.fusion = MetaFusionNetwork.from_config(  # content at the ID part's scale (content_scale)
            config, self.modalities.output_dim, self.item_id_embedding.weight, self.modalities.per_modality)

        # the graph, built once
        adj = bipartite_adjacency(dataset)
        kind = "mean" if self.propagation == "sage" else "sym"
        self.adj = SparseGraph(normalise(adj, kind))
        self._ego = None  # [U+I, d] vectors before propagation of the current training step

    def item_representation(self) -> torch.Tensor:
        content = self.fusion(self.modalities.per_modality())  # [n_items, fused]; blocks: see MetaFusionNetwork.forward
        ids = self.cold_id_table(self.item_id_embedding.weight)  # cold items: see cold_item_id
        return torch.cat([content, ids], dim=-1)  # [n_items, fused + id]

    # Fast path (default): a training batch's user, positive and negative rows are gathered from the
    # propagated vectors (and from the vectors before propagation, for content_reg_weight) with ONE
    # index_select each, instead of splitting into users / items and indexing each list apart: the same
    # rows and the same loss, two gathers and two scatter-adds in the backward pass instead of six
    # (tests/test_perf_fusion.py compares both). False uses the generic path of MultimodalRecommender.
    batched_gather = True
    # Fast path (default): SAGE dropout masks drawn with torch.rand (layers.graph.mask_dropout: the
    # same law as F.dropout, half its cost on CPU). False: F.dropout.
    fast_dropout = True
    # Fast path (default, with batched_gather): the last SAGE layer's linear maps and its dropout are
    # applied only to the batch's distinct rows (its neighbour mean is still taken over the whole graph),
    # and each node keeps ONE dropout mask, shared by its repeats in the batch, as when the whole
    # matrix is masked and then gathered. tests/test_perf_fusion.py checks both against the whole-matrix
    # computation. False: the last layer on every node, then the batch's rows gathered.
    last_layer_on_rows = True

    def _dropout(self, h: torch.Tensor, p: float) -> torch.Tensor:
        if self.fast_dropout:
            return mask_dropout(h, p, self.training)
        return F.dropout(h, p=p, training=self.training)

    def propagate(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Final representations of all nodes, users first: [U+I, d]; with ``rows``, only those rows."""
        h = torch.cat([self.user_embedding.weight, self.item_representation()], dim=0)  # [U+I, d]
        self._ego = h if self.training else None  # the vectors before propagation, for content_reg_weight
        if self.propagation == "lightgcn":
            out = lightgcn_propagate(h, self.adj, self.n_layers)
            return out if rows is None else out.index_select(0, rows)
        last = len(self.convs) - 1
        for i, (conv, p) in enumerate(zip(self.convs, self.dropouts)):
            if i == last and rows is not None and self.last_layer_on_rows:
                distinct, inverse = torch.unique(rows, return_inverse=True)  # [k], [len(rows)]
                out = conv(h, self.adj, rows=distinct)  # [k, d]
                return self._dropout(out, p).index_select(0, inverse)
            h = conv(h, self.adj)
            if i < last:
                h = F.leaky_relu(h, self.negative_slope)
            h = self._dropout(h, p)
        return h if rows is None else h.index_select(0, rows)

    def compute_all(self):
        return torch.split(self.propagate(), [self.n_users, self.n_items])

    def _batch_rows(self, users, items_list) -> tuple[torch.Tensor, list[int]]:
        rows = torch.cat([users, *(self.n_users + items for items in items_list)])  # node ids
        return rows, [len(users), *(len(items) for items in items_list)]

    def batch_embeddings(self, users, items_list):
        if not self.batched_gather:
            return super().batch_embeddings(users, items_list)
        rows, sizes = self._batch_rows(users, items_list)
        user_e, *item_e = self.propagate(rows).split(sizes)
        return user_e, item_e

    def content_reg_columns(self):
        return slice(0, self.fusion.layers[-1].out_dim)  # e^m and the user columns that meet it

    def reg_embeddings(self, users, items_list):
        return [self.user_embedding(users)] + [self.item_id_embedding(i) for i in items_list]

    def content_reg_embeddings(self, users, items_list, user_e, item_e_list):
        # the user's and items' vectors before propagation (the item's is [e^m ; e^c], content included)
        ego = self._ego
        if self.batched_gather:
            rows, sizes = self._batch_rows(users, items_list)
            return list(ego.index_select(0, rows).split(sizes))  # EmbLoss: one norm per part, as below
        return [ego[users]] + [ego[self.n_users + items] for items in items_list]
