r"""MMGCN
################################################

Reference:
    Yinwei Wei, Xiang Wang, Liqiang Nie, Xiangnan He, Richang Hong, Tat-Seng Chua.
    "MMGCN: Multi-modal Graph Convolution Network for Personalized Recommendation of
    Micro-video." ACM MM 2019.

Reference code:
    https://github.com/weiyinwei/MMGCN

One graph convolution network per modality over the same user-item graph. In modality ``m``
an item starts from its content projected to ``d`` (linear + LeakyReLU, L2-normalised), a user
from a free modality-specific preference vector; the ID embedding of every node is shared by
all modalities. Each layer ``l`` does, for every node ``v``:

* aggregation: ``h_v = LeakyReLU(sum_{j in N(v)} a_vj W1 x_j)`` over the symmetric-normalised
  graph (``a_vj = 1 / sqrt(|N(v)| |N(j)|)``);
* combination (the paper's element-wise form): ``x_v <- LeakyReLU(W3 h_v + LeakyReLU(W2 x_v) + e_v^id)``.

The final user / item representation is the sum over modalities of the last layer. The paper
has visual, acoustic and textual networks; here there is one per modality present (dense or
token), so two-modality and three-modality datasets differ only in the number of networks.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization

from recbole_metammf.layers.graph import SparseGraph, bipartite_adjacency, normalise
from recbole_metammf.model.base import MultimodalRecommender


class ModalityGCN(nn.Module):
    """The graph network of one modality: content projection, user preference, ``n_layers`` layers."""

    def __init__(self, in_dim: int, n_users: int, dim: int, n_layers: int, negative_slope: float):
        super().__init__()
        self.n_users = n_users
        self.slope = negative_slope
        self.projection = nn.Linear(in_dim, dim)
        self.preference = nn.Parameter(torch.empty(n_users, dim))
        self.aggregate = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(n_layers))  # W1
        self.self_transform = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))  # W2
        self.combine = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_layers))  # W3
        nn.init.xavier_normal_(self.preference)

    def forward(self, content: torch.Tensor, id_embedding: torch.Tensor, adj: SparseGraph) -> torch.Tensor:
        items = F.leaky_relu(self.projection(content), self.slope)  # [n_items, d]
        x = F.normalize(torch.cat([self.preference, items], dim=0), dim=-1)  # [U+I, d]
        for w1, w2, w3 in zip(self.aggregate, self.self_transform, self.combine):
            h = F.leaky_relu(adj(w1(x)), self.slope)  # [U+I, d]
            x_hat = F.leaky_relu(w2(x), self.slope) + id_embedding  # [U+I, d]
            x = F.leaky_relu(w3(h) + x_hat, self.slope)  # [U+I, d]
        return x


class MMGCN(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.negative_slope = config["negative_slope"]

        # define layers
        self.id_embedding = nn.Embedding(self.n_users + self.n_items, self.embedding_size)
        self.apply(xavier_normal_initialization)
        self.gcns = nn.ModuleList(
            ModalityGCN(spec.dim, self.n_users, self.embedding_size, self.n_layers, self.negative_slope)
            for spec in self.modalities.specs
        )

        # the graph, built once
        self.adj = SparseGraph(normalise(bipartite_adjacency(dataset), "sym"))

    def compute_all(self):
        ids = self.cold_id_table(self.id_embedding.weight, offset=self.n_users)  # [U+I, d]
        out = sum(
            gcn(content, ids, self.adj) for gcn, content in zip(self.gcns, self.modalities.per_modality())
        )  # [U+I, d]
        return torch.split(out, [self.n_users, self.n_items])

    def reg_embeddings(self, users, items_list):
        reg = [self.id_embedding(users)] + [self.id_embedding(items + self.n_users) for items in items_list]
        return reg + [gcn.preference[users] for gcn in self.gcns]
