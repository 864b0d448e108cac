r"""LATTICE
################################################

Reference:
    Jinghao Zhang, Yanqiao Zhu, Qiang Liu, Shu Wu, Shuhui Wang, Liang Wang. "Mining Latent
    Structures for Multimedia Recommendation." ACM MM 2021.

Reference code:
    https://github.com/CRIPAC-DIG/LATTICE

Per modality ``m``, an item-item graph mixes a frozen kNN graph of the raw content
(``A^m``, cosine, top ``knn_k``, similarity-weighted, ``D^-1/2 A D^-1/2``) with a learned one
built the same way from a linear projection of the content (``Ã^m``):
``A^m_mix = (1 - lambda) Ã^m + lambda A^m``. The modalities combine with softmax-normalised
learned weights, ``A = sum_m softmax(alpha)_m A^m_mix``. Item ID embeddings propagate
``n_layers`` times over ``A`` (``h``); users and items propagate LightGCN-style
``n_ui_layers`` times over the user-item graph; the item representation is the LightGCN
item plus ``normalise(h)``.

Generalised from the paper's visual + text to any number of modalities (one ``A^m``, one
projection and one ``alpha_m`` each). The raw graph of a dense modality uses its
(standardised, if ``standardize_modalities``) vectors; of a token modality, its bag of tokens
as multi-hot rows (cosine = shared tokens over the geometric mean of the bag sizes).

Scale (76,085 items): no ``n x n`` matrix. kNN graphs are found ``knn_chunk_size`` rows at a
time and stored as sparse edge lists. The reference code rebuilds the learned graph on the
first batch of each epoch and freezes it for the rest; here the *neighbour sets* of the learned
graph are re-found once per epoch (``ceil(#train interactions / train_batch_size)`` steps),
while their edge weights (cosine of the current projections, clamped at 0, normalised) and
``alpha`` stay differentiable at every step.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.init import xavier_uniform_initialization

from recbole_metammf.layers.graph import (
    EdgePattern,
    SparseGraph,
    bipartite_adjacency,
    knn_graph,
    knn_edges,
    lightgcn_propagate,
    normalise,
    sym_normalise_edges,
)
from recbole_metammf.layers.knn import raw_modalities, steps_per_epoch
from recbole_metammf.model.base import MultimodalRecommender


class LATTICE(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.feat_embedding_size = config["feat_embedding_size"]
        self.knn_k = config["knn_k"]
        self.lambda_coeff = config["lambda_coeff"]
        self.n_layers = config["n_layers"]
        self.n_ui_layers = config["n_ui_layers"]
        self.chunk_size = config["knn_chunk_size"]
        self.steps_per_epoch = steps_per_epoch(config, dataset)
        self.train_steps = 0

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.apply(xavier_uniform_initialization)
        self.projections = nn.ModuleList(
            nn.Linear(spec.dim, self.feat_embedding_size) for spec in self.modalities.specs
        )
        self.modal_weight = nn.Parameter(torch.zeros(len(self.modalities.specs)))  # softmax -> uniform at start

        # graphs, built once: user-item (LightGCN) and each modality's frozen raw-content kNN graph
        self.ui_adj = SparseGraph(normalise(bipartite_adjacency(dataset), "sym"))
        self.raw_adj = nn.ModuleList(
            SparseGraph(normalise(knn_graph(raw, self.knn_k, weighted=True, chunk_size=self.chunk_size), "sym"))
            for raw in raw_modalities(self.modalities)
        )
        # neighbour sets of the learned graphs (buffers: they move with the model), refreshed once per epoch
        self.refresh_learned_neighbours()

    def projected(self) -> list[torch.Tensor]:
        return [proj(x) for proj, x in zip(self.projections, self.modalities.per_modality())]  # [I, f] each

    @torch.no_grad()
    def refresh_learned_neighbours(self):
        for m, p in enumerate(self.projected()):
            p[0] = 0.0  # the padding item (a projection bias would make it everyone's neighbour)
            rows, cols, _ = knn_edges(p, self.knn_k, self.chunk_size)
            self.register_buffer(f"learned_rows_{m}", rows, persistent=False)
            self.register_buffer(f"learned_cols_{m}", cols, persistent=False)
            setattr(self, f"learned_pattern_{m}", EdgePattern(rows, cols, self.n_items, self.n_items))

    def learned_edges(self, m: int) -> tuple[torch.Tensor, torch.Tensor]:
        return getattr(self, f"learned_rows_{m}"), getattr(self, f"learned_cols_{m}")

    def item_graph_propagate(self, h: torch.Tensor) -> torch.Tensor:
        """``A h`` for the combined item-item graph ``A`` (learned weights differentiable)."""
        weights = torch.softmax(self.modal_weight, dim=0)  # [M]
        out = 0
        for m, (p, raw) in enumerate(zip(self.projected(), self.raw_adj)):
            rows, cols = self.learned_edges(m)
            pattern = getattr(self, f"learned_pattern_{m}")  # the same edges, CSR, built at the refresh
            p = F.normalize(p, dim=-1)
            sim = pattern.dot(p, p).clamp_min(0)  # [E_m], cosine of the current projections
            learned = pattern.spmm(sym_normalise_edges(rows, cols, sim, self.n_items), h)
            out = out + weights[m] * ((1 - self.lambda_coeff) * learned + self.lambda_coeff * raw(h))
        return out  # [I, d]

    def compute_all(self):
        if self.training:
            if self.train_steps > 0 and self.train_steps % self.steps_per_epoch == 0:
                self.refresh_learned_neighbours()
            self.train_steps += 1
        h = item_ids = self.cold_id_table(self.item_embedding.weight)  # [I, d]; cold items: see cold_item_id
        for _ in range(self.n_layers):
            h = self.item_graph_propagate(h)  # [I, d]
        ego = torch.cat([self.user_embedding.weight, item_ids], dim=0)  # [U+I, d]
        user_g, item_g = torch.split(lightgcn_propagate(ego, self.ui_adj, self.n_ui_layers), [self.n_users, self.n_items])
        return user_g, item_g + F.normalize(h, dim=-1)

    def reg_embeddings(self, users, items_list):
        return [self.user_embedding(users)] + [self.item_embedding(items) for items in items_list]
