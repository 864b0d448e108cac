r"""FREEDOM
################################################

Reference:
    Xin Zhou, Zhiqi Shen. "A Tale of Two Graphs: Freezing and Denoising Graph Structures for
    Multimodal Recommendation." ACM MM 2023.

Reference code:
    https://github.com/enoche/FREEDOM

Two graphs:

* **Frozen item-item graph.** Per modality, the kNN graph of the raw content (cosine, top
  ``knn_k``, 0/1 edges, ``D^-1/2 A D^-1/2`` with ``D`` the row sums), built once and never
  learned; the modalities are summed with fixed weights ``modality_weights`` (the paper's
  0.1 visual / 0.9 text generalised to one weight per modality present; ``~`` = equal
  weights). Item ID embeddings propagate ``n_mm_layers`` times over it: ``h``.
* **Denoised user-item graph.** At the start of every training epoch
  (``ceil(#train interactions / train_batch_size)`` steps) ``int(E * (1 - edge_prune_ratio))``
  edges are sampled without replacement with probability proportional to
  ``1 / sqrt(d_u d_i)`` (degree-sensitive pruning), and that graph, symmetric-normalised
  by its own degrees, carries the LightGCN propagation (``n_ui_layers``, mean of layers).
  Evaluation uses the full graph.

The item representation is the LightGCN item plus ``h``. The loss is BPR on those
representations plus ``modal_loss_weight`` times, for each modality, BPR between the user
and a linear projection of the positive / negative item's content (the paper's visual and
textual terms, one per modality present). Raw content of a token modality is its bag of
tokens as multi-hot rows (``layers/knn.py``). kNN is found in chunks: no ``n x n`` matrix.

Against the reference code (MMRec's ``src/models/freedom.py`` and ``configs/model/FREEDOM.yaml``),
the definitions differ only where a key says so; these settings reproduce the reference:

* **Modality mix** of the item-item graph: the reference mixes ``mm_image_weight`` (0.1) times the
  image graph and 0.9 times the text graph; ours ``modality_weights: ~`` weighs them equally:
  ``modality_weights: [0.1, 0.9]`` (visual first) is the reference's.
* **Features.** The reference reads the raw ``.npy`` features for both the kNN graph and the
  modality projections; ours standardises the dense ones for both (``standardize_modalities``, one
  key: the graph is always built on what the projections read). ``standardize_modalities: False``
  is the reference's on both counts.
* **Fine-tuned content.** The reference loads the features with ``nn.Embedding.from_pretrained(...,
  freeze=False)``: they are parameters, trained by the modality BPR terms (the only place they are
  read); ours keeps them fixed unless ``finetune_features: True`` (a trainable copy of each dense
  modality, ``layers/content.py``; a token modality's embeddings are trained either way). The kNN
  graph is built once at construction from the initial features in both (the reference builds it
  from ``.weight.detach()`` in ``__init__`` and caches it to a file) and never rebuilt.
* **Modality BPR weight**: the reference's ``reg_weight``, grid ``[0.0, 1e-05, 1e-04, 1e-03]``
  (first value 0: no modality terms, the features then get no gradient); ours
  ``modal_loss_weight: 1.0e-04``. Our own ``reg_weight`` (L2 on ID embeddings) has no counterpart
  there (0 reproduces it).
"""

import numpy as np
import torch
import torch.nn as nn
from recbole.model.init import xavier_uniform_initialization

from recbole_metammf.layers.content import TunableContent
from recbole_metammf.layers.graph import (
    SparseGraph,
    bipartite_adjacency,
    bipartite_from_edges,
    degree_sensitive_prune,
    knn_graph,
    lightgcn_propagate,
    normalise,
)
from recbole_metammf.layers.knn import raw_modalities, steps_per_epoch
from recbole_metammf.model.base import MultimodalRecommender


class FREEDOM(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.knn_k = config["knn_k"]
        self.n_mm_layers = config["n_mm_layers"]
        self.n_ui_layers = config["n_ui_layers"]
        self.edge_prune_ratio = config["edge_prune_ratio"]
        self.modal_loss_weight = config["modal_loss_weight"]
        n_modalities = len(self.modalities.specs)
        weights = config["modality_weights"]
        weights = [1.0 / n_modalities] * n_modalities if weights is None else list(weights)
        if len(weights) != n_modalities:
            raise ValueError(
                f"modality_weights needs one weight per modality {[s.field for s in self.modalities.specs]}, got {weights}"
            )
        self.steps_per_epoch = steps_per_epoch(config, dataset)
        self.train_steps = 0

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.projections = nn.ModuleList(nn.Linear(spec.dim, self.embedding_size) for spec in self.modalities.specs)
        self.apply(xavier_uniform_initialization)
        self.content = TunableContent(self.modalities, config["finetune_features"])  # the modality terms' input

        # graphs, built once: the frozen item-item graph (initial content) and the full user-item graph (evaluation)
        mm_adj = sum(
            w * normalise(knn_graph(raw, self.knn_k, weighted=False, chunk_size=config["knn_chunk_size"]), "sym")
            for w, raw in zip(weights, raw_modalities(self.modalities))
        )
        self.mm_adj = SparseGraph(mm_adj)
        self.full_adj = SparseGraph(normalise(bipartite_adjacency(dataset), "sym"))
        inter = dataset.inter_matrix(form="coo").tocsr()
        inter.sum_duplicates()
        inter = inter.tocoo()
        self.edge_users, self.edge_items = inter.row.astype(np.int64), inter.col.astype(np.int64)
        self.train_adj = self.full_adj  # replaced by a pruned graph at each epoch's first step

        # storage for the modality loss (the batch users' final embeddings of the current step)
        self._batch_user_e = None

    def resample_train_graph(self):
        kept = degree_sensitive_prune(self.edge_users, self.edge_items, self.edge_prune_ratio)
        adj = bipartite_from_edges(self.edge_users[kept], self.edge_items[kept], self.n_users, self.n_items)
        self.train_adj = SparseGraph(normalise(adj, "sym")).to(self.user_embedding.weight.device)

    def compute_all(self):
        if self.training:
            if self.train_steps % self.steps_per_epoch == 0 and self.edge_prune_ratio > 0:
                self.resample_train_graph()
            self.train_steps += 1
        adj = self.train_adj if self.training else self.full_adj
        h = item_ids = self.cold_id_table(self.item_embedding.weight)  # [I, d]; cold items: see cold_item_id
        for _ in range(self.n_mm_layers):
            h = self.mm_adj(h)  # [I, d]
        ego = torch.cat([self.user_embedding.weight, item_ids], dim=0)  # [U+I, d]
        user_g, item_g = torch.split(lightgcn_propagate(ego, adj, self.n_ui_layers), [self.n_users, self.n_items])
        return user_g, item_g + h

    def batch_embeddings(self, users, items_list):
        u_e, items_e = super().batch_embeddings(users, items_list)
        self._batch_user_e = u_e
        return u_e, items_e

    def calculate_loss(self, interaction):
        loss = super().calculate_loss(interaction)
        if self.modal_loss_weight > 0:
            u_e = self._batch_user_e  # [batch, d]
            pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
            for proj, pos_c, neg_c in zip(
                self.projections, self.content(self.modalities, pos), self.content(self.modalities, neg)
            ):
                pos_score = (u_e * proj(pos_c)).sum(-1)
                neg_score = (u_e * proj(neg_c)).sum(-1)
                loss = loss + self.modal_loss_weight * self.bpr_loss(pos_score, neg_score)
        self._batch_user_e = None
        return loss

    def reg_embeddings(self, users, items_list):
        return [self.user_embedding(users)] + [self.item_embedding(items) for items in items_list]
