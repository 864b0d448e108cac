r"""MGCN
################################################

Reference:
    Penghang Yu, Zhiyi Tan, Guanming Lu, Bing-Kun Bao. "Multi-View Graph Convolutional Network
    for Multimedia Recommendation." ACM MM 2023.

Reference code:
    https://github.com/demonph10/MGCN, ``src/models/mgcn.py``; the copy in enoche/MMRec,
    ``src/models/mgcn.py``, with its settings in ``src/configs/model/MGCN.yaml``

Three steps:

* **Behaviour-guided purifier.** Each modality's content is projected (``f^m = W_m x^m + b_m``)
  and gates the item ID embedding: ``e^m_i = e_i * sigmoid(G_m f^m_i + g_m)``.
* **Views.** User-item view: LightGCN over ``Â = D^-1/2 A D^-1/2`` (``n_ui_layers``, mean of
  layers): ``h`` for users and items. Item-item view per modality: ``e^m`` propagates
  ``n_layers`` times over the modality's kNN graph (cosine of the content, top ``knn_k``,
  similarity-weighted, ``D^-1/2 S D^-1/2`` with ``D`` the row sums, built once), and a user's
  is ``R̂ e^m`` with ``R̂`` the user-item block of ``Â``.
* **Behaviour-aware fuser.** Per node, attention over the modalities with a shared query
  ``a_m = softmax_m(q^T tanh(Q e^m + c))`` gives the common part ``c = sum_m a_m e^m``; each
  modality's specific part ``e^m - c`` is gated by the node's behaviour,
  ``sigmoid(P_m h + p_m)``; ``side = (sum_m gated specific_m + c) / (M + 1)``.

The representation is ``h + side``; the score an inner product. The loss is BPR, plus
``reg_weight * (|u|^2 + |i+|^2 + |i-|^2) / (2 * train_batch_size)`` on the batch's final
vectors (the reference divides by the configured batch size, also for a shorter last batch),
plus ``cl_loss`` times two InfoNCE terms (temperature 0.2, in-batch negatives) between ``side``
and ``h``: over the batch's positive items and over its users.

**Any number of modalities.** The paper has visual and text; each modality present gets its
projection, purifier gate, kNN graph and preference gate; the attention is a softmax over the
modalities present and the side representation averages the ``M`` specific parts and the
common part, ``/ (M + 1)`` (the reference's ``/ 3`` for two). With one modality the common part
is that modality's view and its specific part is zero, so ``side`` is half that view (and the model has
no attention or preference gate). A token modality's content is its
learned mean-pooled token embedding, and its kNN graph is built on its bag of tokens
(multi-hot cosine, ``layers/knn.py``).

**Deliberate differences from the reference.**

* The fuser's softmax runs over the modalities of each node, as the paper and MMRec's copy
  write it; demonph10/MGCN's file has ``nn.Softmax(dim=0)``, a softmax over all nodes.
* Negative cosines among an item's ``knn_k`` nearest are clamped at 0 before normalising (the
  reference keeps them; with ten neighbours on real features they are rare).
* Dense content is standardised per dimension (``standardize_modalities``, the plugin's
  convention; ``False`` gives the reference's raw features, for the projection and the kNN
  graph) and fine-tuned as the reference's ``freeze=False`` does (``finetune_features``). The kNN
  graphs are built once, on the content as loaded (the reference's too).
* MMRec's learning-rate schedule ``learning_rate_scheduler: [0.96, 50]`` (the rate times
  ``0.96^(epoch / 50)``) is not applied: RecBole's trainer has no such schedule; the rate is
  the constant ``learning_rate``, 4 % above the reference's by epoch 50.
"""

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_metammf.layers.content import TunableContent
from recbole_metammf.layers.contrast import bounded_logsumexp
from recbole_metammf.layers.graph import SparseGraph, bipartite_adjacency, knn_graph, lightgcn_propagate, normalise
from recbole_metammf.layers.knn import raw_modalities
from recbole_metammf.model.base import MultimodalRecommender


def info_nce(view1: torch.Tensor, view2: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of ``-log softmax_j(cos(v1_r, v2_j) / t)[r]`` (in-batch negatives)."""
    view1, view2 = F.normalize(view1, dim=1), F.normalize(view2, dim=1)
    pos = (view1 * view2).sum(-1) / temperature  # [n]
    return (bounded_logsumexp(view1, view2, 1.0 / temperature) - pos).mean()


class MGCN(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.n_ui_layers = config["n_ui_layers"]
        self.n_layers = config["n_layers"]
        self.knn_k = config["knn_k"]
        self.cl_loss = config["cl_loss"]
        self.cl_temperature = config["cl_temperature"]
        self.batch_size = config["train_batch_size"]
        d, n_mod = self.embedding_size, len(self.modalities.specs)

        # define layers: ID tables Xavier-uniform, everything else torch's default (as the reference)
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.content = TunableContent(self.modalities, config["finetune_features"])
        self.projections = nn.ModuleList(nn.Linear(spec.dim, d) for spec in self.modalities.specs)
        self.purifier_gates = nn.ModuleList(nn.Linear(d, d) for _ in range(n_mod))
        # the fuser's attention and preference gates (with one modality they would have no effect: none)
        self.preference_gates = nn.ModuleList(nn.Linear(d, d) for _ in range(n_mod if n_mod > 1 else 0))
        self.query = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False)) if n_mod > 1 else None

        # graphs, built once: the user-item graph, its user-item block, each modality's kNN graph
        norm_adj = normalise(bipartite_adjacency(dataset), "sym")
        self.norm_adj = SparseGraph(norm_adj)
        self.user_item = SparseGraph(sp.csr_matrix(norm_adj[: self.n_users, self.n_users :], dtype=np.float32))
        chunk = config["knn_chunk_size"]
        self.item_graphs = nn.ModuleList(
            SparseGraph(normalise(knn_graph(raw, self.knn_k, weighted=True, chunk_size=chunk), "sym"))
            for raw in raw_modalities(self.modalities)
        )

    def views(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(user-item view ``h`` [U+I, d], each modality's item-item view ``e^m`` [U+I, d])."""
        item_ids = self.cold_id_table(self.item_embedding.weight)  # [I, d]; cold items: see cold_item_id
        ego = torch.cat([self.user_embedding.weight, item_ids], dim=0)  # [U+I, d]
        h = lightgcn_propagate(ego, self.norm_adj, self.n_ui_layers)
        modal = []
        for proj, gate, graph, x in zip(self.projections, self.purifier_gates, self.item_graphs,
                                        self.content(self.modalities)):
            e = item_ids * torch.sigmoid(gate(proj(x)))  # [I, d], the purified item embedding
            for _ in range(self.n_layers):
                e = graph(e)
            modal.append(torch.cat([self.user_item(e), e], dim=0))  # [U+I, d]
        return h, modal

    def fuse(self, h: torch.Tensor, modal: list[torch.Tensor]) -> torch.Tensor:
        """The side representation [U+I, d] from the behaviour view and the modality views."""
        if len(modal) == 1:  # the common part is the one view, its specific part zero
            return modal[0] / 2
        weights = torch.softmax(torch.cat([self.query(e) for e in modal], dim=-1), dim=-1)  # [U+I, M]
        common = sum(weights[:, m : m + 1] * e for m, e in enumerate(modal))
        specific = sum(torch.sigmoid(gate(h)) * (e - common) for gate, e in zip(self.preference_gates, modal))
        return (specific + common) / (len(modal) + 1)

    def forward_all(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(final representation ``h + side``, ``side``, ``h``), each [U+I, d]."""
        h, modal = self.views()
        side = self.fuse(h, modal)
        return h + side, side, h

    def compute_all(self):
        final, _, _ = self.forward_all()
        return torch.split(final, [self.n_users, self.n_items])

    def loss_terms(self, interaction) -> dict:
        """Every term of the loss, unweighted: ``bpr``, ``reg``, ``cl_item``, ``cl_user``."""
        self.restore_user_e = self.restore_item_e = None  # training resumes: cache is stale
        users = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        final, side, h = self.forward_all()
        u_e = final.index_select(0, users)
        pos_e, neg_e = final.index_select(0, pos + self.n_users), final.index_select(0, neg + self.n_users)
        bpr = self.bpr_loss((u_e * pos_e).sum(-1), (u_e * neg_e).sum(-1))
        reg = (u_e.square().sum() + pos_e.square().sum() + neg_e.square().sum()) / (2 * self.batch_size)
        item_rows, user_rows = pos + self.n_users, users
        return {
            "bpr": bpr,
            "reg": reg,
            "cl_item": info_nce(side.index_select(0, item_rows), h.index_select(0, item_rows), self.cl_temperature),
            "cl_user": info_nce(side.index_select(0, user_rows), h.index_select(0, user_rows), self.cl_temperature),
        }

    def calculate_loss(self, interaction):
        t = self.loss_terms(interaction)
        return t["bpr"] + self.reg_weight * t["reg"] + self.cl_loss * (t["cl_item"] + t["cl_user"])
