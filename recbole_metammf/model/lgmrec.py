r"""LGMRec
################################################

Reference:
    Zhiqiang Guo, Jianjun Li, Guohui Li, Chaoyang Wang, Si Shi, Bin Ruan. "LGMRec: Local and
    Global Graph Learning for Multimodal Recommendation." AAAI 2024.

Reference code:
    https://github.com/georgeguo-cn/LGMRec, ``models/lgmrec.py``; the copy in enoche/MMRec,
    ``src/models/lgmrec.py``, with its settings in ``src/configs/model/LGMRec.yaml`` (Baby's)

Local graph embeddings plus a global hypergraph embedding:

* **Collaborative graph embedding (CGE).** LightGCN over ``Â = D^-1/2 A D^-1/2``
  (``n_ui_layers``, mean of layers) of the ID embeddings (``cf_model: mf``: the ID embeddings
  themselves).
* **Modality graph embedding (MGE)**, per modality ``m``: the items' content projected
  without bias, ``f^m = x^m W_m``; a user's is the mean of its items' ``f^m``; both propagate
  ``n_mm_layers`` times over ``Â`` (the last layer kept, no mean).
* **Global hypergraph embedding (GHE)**, per modality: ``hyper_num`` hyperedges; an item's
  memberships ``H^m_i = gumbel_softmax(x^m_i V_m, tau)``, a user's
  ``gumbel_softmax(sum_{i in N(u)} x^m_i V_m, tau)`` (the sum of its items' logits);
  both under dropout (kept with ``keep_rate``). ``n_hyper_layer`` times:
  ``L = H_item^T g``, ``g = H_item L``, user ``H_user L``, starting from the CGE items ``g``.
* **Representation** ``CGE + sum_m normalise(MGE_m) + alpha * normalise(sum_m GHE_m)``, the
  score an inner product. Loss: BPR + ``cl_weight`` * hypergraph contrast +
  ``reg_weight * (|U_b| + |I+_b| + |I-_b|) / batch`` (the Frobenius norms, not squared, of the
  batch's final user, positive and negative vectors).
  The contrast between two modalities ``a`` and ``b`` is, summed over the batch's users,
  ``-log softmax_j(cos(GHE_a(u), GHE_b(j)) / tau)[u]`` over all users ``j``, plus the same
  over the batch's positive items against all items.

**Any number of modalities.** The paper has visual and text. Each modality present gets its
MGE, its hyperedges and its GHE, summed as the paper sums the two. The contrast is the mean,
over the pairs ``a < b`` of modalities, of the term above with ``b`` as the side whose rows are
the negatives (the reference's ``(v, t)`` for two; with three modalities three pairs, their
mean, so ``cl_weight`` keeps its scale); with one modality there is no contrast term and the
model is CGE + MGE + GHE of that modality. A token modality's content is its learned mean-pooled
token embedding.

**Where the reference is odd, followed.** The gumbel noise of the hyperedge memberships is
drawn at evaluation too (the reference calls ``F.gumbel_softmax`` in every forward pass, and
its ``full_sort_predict`` reruns it for every batch of users); here one draw serves a whole
evaluation (the base class's cache). The features are not fine-tuned (the reference's
``freeze=True``; ``finetune_features``). The contrast *sums* over the batch where the other
terms average.

**Deliberate differences.**

* georgeguo-cn/LGMRec's ``forward`` assigns the text users' memberships to ``uv_hyper`` (a
  typo that leaves the text users' logits without softmax and replaces the visual ones);
  MMRec's copy fixes it and so do we.
* The modality projections have ``embedding_size`` columns (the reference's separate
  ``feat_embed_dim`` must equal it for the sum CGE + MGE to exist).
* The padding user and item of RecBole (id 0) are left out of the contrast's negatives, and the
  padding item belongs to no hyperedge; the reference has no padding rows.
* Dense content is standardised per dimension (``standardize_modalities``, the plugin's
  convention; ``False`` gives the reference's raw features).
"""

from itertools import combinations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_metammf.layers.content import TunableContent
from recbole_metammf.layers.contrast import bounded_logsumexp
from recbole_metammf.layers.graph import SparseGraph, bipartite_adjacency, lightgcn_propagate, mask_dropout, normalise
from recbole_metammf.model.base import MultimodalRecommender

CF_MODELS = ("lightgcn", "mf")


def hyper_contrast(anchor: torch.Tensor, positive: torch.Tensor, candidates: torch.Tensor, tau: float,
                   counts: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_r counts_r · -log softmax_j(cos(anchor_r, candidates_j) / tau)`` at ``cos(anchor_r, positive_r)``
    (``counts`` all 1 when None): a batch's distinct rows, each weighted by how often the batch holds it, give
    the sum over the batch's rows with fewer rows through the [rows, candidates] denominator."""
    anchor, positive, candidates = (F.normalize(t, dim=1) for t in (anchor, positive, candidates))
    pos = (anchor * positive).sum(-1) / tau  # [n]
    terms = bounded_logsumexp(anchor, candidates, 1.0 / tau) - pos
    return terms.sum() if counts is None else (terms * counts).sum()


class LGMRec(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.cf_model = str(config["cf_model"]).lower()
        if self.cf_model not in CF_MODELS:
            raise ValueError(f"cf_model must be one of {CF_MODELS}, got '{config['cf_model']}'")
        self.n_ui_layers = config["n_ui_layers"]
        self.n_mm_layers = config["n_mm_layers"]
        self.n_hyper_layer = config["n_hyper_layer"]
        if self.n_hyper_layer < 1:
            raise ValueError(f"n_hyper_layer must be at least 1, got {self.n_hyper_layer}")
        self.hyper_num = config["hyper_num"]
        self.keep_rate = config["keep_rate"]
        self.alpha = config["alpha"]
        self.cl_weight = config["cl_weight"]
        self.tau = config["tau"]
        d, k = self.embedding_size, self.hyper_num

        # define layers, all Xavier-uniform (as the reference)
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.content = TunableContent(self.modalities, config["finetune_features"])
        self.projections = nn.ParameterList(
            nn.Parameter(nn.init.xavier_uniform_(torch.empty(spec.dim, d))) for spec in self.modalities.specs
        )
        self.hyperedges = nn.ParameterList(
            nn.Parameter(nn.init.xavier_uniform_(torch.empty(spec.dim, k))) for spec in self.modalities.specs
        )

        # graphs, built once: Â, the 0/1 user-item matrix R, and D_u^-1 R (a user's mean over its items)
        self.norm_adj = SparseGraph(normalise(bipartite_adjacency(dataset), "sym"))
        inter = dataset.inter_matrix(form="coo").astype(np.float32).tocsr()
        inter.sum_duplicates()
        inter.data[:] = 1.0
        self.user_item = SparseGraph(inter)
        self.user_mean = SparseGraph(normalise(sp.csr_matrix(inter), "mean"))
        real = torch.ones(self.n_items, 1)
        real[0] = 0.0
        self.register_buffer("real_items", real, persistent=False)  # the padding item joins no hyperedge

    def cge(self) -> torch.Tensor:
        """Collaborative graph embedding [U+I, d]."""
        item_ids = self.cold_id_table(self.item_embedding.weight)  # [I, d]; cold items: see cold_item_id
        ego = torch.cat([self.user_embedding.weight, item_ids], dim=0)
        return ego if self.cf_model == "mf" else lightgcn_propagate(ego, self.norm_adj, self.n_ui_layers)

    def mge(self, x: torch.Tensor, projection: torch.Tensor) -> torch.Tensor:
        """Modality graph embedding [U+I, d] of one modality's content ``x`` [I, dim]."""
        item_feats = x @ projection  # [I, d]
        h = torch.cat([self.user_mean(item_feats), item_feats], dim=0)
        for _ in range(self.n_mm_layers):
            h = self.norm_adj(h)
        return h

    def memberships(self, x: torch.Tensor, hyperedges: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(users [U, K], items [I, K]): gumbel-softmax hyperedge memberships, dropout while training."""
        item_logits = (x @ hyperedges) * self.real_items  # [I, K]
        user_logits = self.user_item(item_logits)  # [U, K], the sum over the user's items
        p = 1.0 - self.keep_rate
        item_h = mask_dropout(F.gumbel_softmax(item_logits, tau=self.tau, dim=1) * self.real_items, p, self.training)
        user_h = mask_dropout(F.gumbel_softmax(user_logits, tau=self.tau, dim=1), p, self.training)
        return user_h, item_h

    def ghe(self, user_h: torch.Tensor, item_h: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Global hypergraph embedding [U+I, d] from the memberships and the CGE items [I, d]."""
        for _ in range(self.n_hyper_layer):
            latent = item_h.t() @ items  # [K, d]
            items = item_h @ latent
        return torch.cat([user_h @ latent, items], dim=0)

    def forward_all(self) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(final representation [U+I, d], each modality's GHE [U+I, d])."""
        cge = self.cge()
        local, ghes = cge, []
        for x, projection, hyperedges in zip(self.content(self.modalities), self.projections, self.hyperedges):
            local = local + F.normalize(self.mge(x, projection), dim=1)
            ghes.append(self.ghe(*self.memberships(x, hyperedges), cge[self.n_users :]))
        return local + self.alpha * F.normalize(sum(ghes), dim=1), ghes

    def compute_all(self):
        final, _ = self.forward_all()
        return torch.split(final, [self.n_users, self.n_items])

    def loss_terms(self, interaction) -> dict:
        """Every term of the loss, unweighted: ``bpr``, ``reg`` and ``contrast`` (0 with one modality)."""
        self.restore_user_e = self.restore_item_e = None  # training resumes: cache is stale
        users = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        final, ghes = self.forward_all()
        u_e = final.index_select(0, users)
        pos_e, neg_e = final.index_select(0, pos + self.n_users), final.index_select(0, neg + self.n_users)
        pairs = list(combinations(range(len(ghes)), 2))
        contrast = final.new_zeros(())
        if pairs:  # the batch's distinct users and items, each counted as often as the batch holds it
            (c_users, u_counts), (c_items, i_counts) = (torch.unique(x, return_counts=True) for x in (users, pos))
        for a, b in pairs:
            ua, ia = torch.split(ghes[a], [self.n_users, self.n_items])
            ub, ib = torch.split(ghes[b], [self.n_users, self.n_items])
            contrast = contrast + hyper_contrast(ua.index_select(0, c_users), ub.index_select(0, c_users), ub[1:],
                                                 self.tau, u_counts)
            contrast = contrast + hyper_contrast(ia.index_select(0, c_items), ib.index_select(0, c_items), ib[1:],
                                                 self.tau, i_counts)
        return {
            "bpr": self.bpr_loss((u_e * pos_e).sum(-1), (u_e * neg_e).sum(-1)),
            "reg": self.reg_loss(u_e, pos_e, neg_e).squeeze(),  # RecBole's EmbLoss: Frobenius norms summed / batch
            "contrast": contrast / max(len(pairs), 1),
        }

    def calculate_loss(self, interaction):
        t = self.loss_terms(interaction)
        return t["bpr"] + self.cl_weight * t["contrast"] + self.reg_weight * t["reg"]
