r"""BM3
################################################

Reference:
    Xin Zhou, Hongyu Zhou, Yong Liu, Zhiwei Zeng, Chunyan Miao, Pengwei Wang, Yuan You,
    Feijun Jiang. "Bootstrap Latent Representations for Multi-modal Recommendation." WWW 2023.

Reference code:
    https://github.com/enoche/BM3, ``src/models/bm3.py`` (the same file in enoche/MMRec,
    ``src/models/bm3.py``; its settings in MMRec's ``src/configs/model/BM3.yaml``)

Self-supervised, no negative sampling (BYOL-style: an online network, a predictor, and a
target that is the online output under dropout with no gradient):

* **Online representations.** LightGCN over the user-item graph (``D^-1/2 A D^-1/2``,
  ``n_layers``, mean of layers): ``u``, ``i``; the item's is ``i + e_i`` (its ID embedding
  added back, as the reference). Each modality ``m``'s content ``x^m`` is projected:
  ``f^m = W_m x^m + b_m``.
* **Targets.** ``dropout(u)``, ``dropout(i)``, ``dropout(f^m)`` (rate ``dropout``), no gradient.
* **Loss** on a batch of observed (user, item) pairs, with the shared predictor ``p`` (a
  linear map) and ``c(a, b) = 1 - mean cos(a, b)``::

      c(p(u), i_target) + c(p(i), u_target)
      + cl_weight * sum_m [ c(p(f^m), i_target) + c(p(f^m), f^m_target) ]
      + reg_weight * (||U||_F + ||I||_F) / n_items

  the last term over the *whole* online tables ``U`` [n_users, d] and ``I`` [n_items, d] (as
  the reference calls MMRec's ``EmbLoss`` on them: the Frobenius norms, not squared, divided
  by the number of rows of the last argument).
* **Score** ``p(u) . p(i)``; the content enters only through the loss (it shapes the ID
  representations), so BM3 cannot score an item that had no training interaction from its
  content (``cold_item_id: zero`` gives such items the predictor's bias alone).

**Any number of modalities.** The paper has visual and text; each modality present gets its
projection and its two terms (``c(p(f^m), i_target)``, the cross-modal alignment, and
``c(p(f^m), f^m_target)``, the intra-modal one), summed as the reference sums its four. A
token modality's content is its learned mean-pooled token embedding.

**Training with RecBole.** ``train_neg_sample_args: ~`` (model YAML, as RecBole's MultiVAE):
batches are the observed pairs. If a config turns negative sampling on, the negatives are
ignored. Evaluation is RecBole's full ranking, as for every model.

**Deliberate differences from the reference.**

* Dense content is standardised per dimension (``standardize_modalities``, the plugin's
  convention for every model; ``False`` feeds the raw features as the reference does). It is
  fine-tuned as the reference's ``freeze=False`` does (``finetune_features``, default True).
* The target's dropout masks come from ``mask_dropout`` (``torch.rand``) instead of
  ``F.dropout``'s ``bernoulli_``, and are drawn for the batch's rows (the reference drops on the
  whole table, then indexes it): the same law per row, another random stream, and a user twice in
  a batch gets two masks. Likewise the content is projected for the batch's items only.
* The reference recomputes the whole forward pass for every batch of users at evaluation;
  here once per evaluation (the base class's cache): the same scores.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.utils import InputType

from recbole_metammf.layers.content import TunableContent
from recbole_metammf.layers.graph import SparseGraph, bipartite_adjacency, lightgcn_propagate, mask_dropout, normalise
from recbole_metammf.model.base import MultimodalRecommender


def cosine_loss(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - mean_rows cos(online, target)`` with the target detached (BYOL's regression term)."""
    return 1.0 - F.cosine_similarity(online, target.detach(), dim=-1).mean()


class BM3(MultimodalRecommender):
    input_type = InputType.PAIRWISE  # as RecBole's MultiVAE: without negative sampling, batches of observed pairs

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.dropout = config["dropout"]
        self.cl_weight = config["cl_weight"]

        # define layers: ID tables Xavier-uniform, predictor and projections Xavier-normal (as the reference)
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        self.predictor = nn.Linear(self.embedding_size, self.embedding_size)
        nn.init.xavier_normal_(self.predictor.weight)
        self.content = TunableContent(self.modalities, config["finetune_features"])
        self.projections = nn.ModuleList(nn.Linear(spec.dim, self.embedding_size) for spec in self.modalities.specs)
        for proj in self.projections:
            nn.init.xavier_normal_(proj.weight)

        # the user-item graph, built once
        self.norm_adj = SparseGraph(normalise(bipartite_adjacency(dataset), "sym"))

    def online(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The online representations before the predictor: users [U, d], items [I, d]."""
        item_ids = self.cold_id_table(self.item_embedding.weight)  # [I, d]; cold items: see cold_item_id
        ego = torch.cat([self.user_embedding.weight, item_ids], dim=0)  # [U+I, d]
        out = lightgcn_propagate(ego, self.norm_adj, self.n_layers)  # [U+I, d]
        user_g, item_g = torch.split(out, [self.n_users, self.n_items])
        return user_g, item_g + item_ids

    def compute_all(self):
        user_g, item_g = self.online()
        return self.predictor(user_g), self.predictor(item_g)

    def loss_terms(self, interaction) -> dict:
        """Every term of the loss, unweighted: ``ui``, ``iu``, ``reg``, and per modality ``m``
        ``cross_m`` (content to the item's target) and ``intra_m`` (content to its own target)."""
        self.restore_user_e = self.restore_item_e = None  # training resumes: cache is stale
        users, items = interaction[self.USER_ID], interaction[self.ITEM_ID]
        user_g, item_g = self.online()
        with torch.no_grad():
            u_target = mask_dropout(user_g.index_select(0, users), self.dropout)
            i_target = mask_dropout(item_g.index_select(0, items), self.dropout)
        terms = {
            "ui": cosine_loss(self.predictor(user_g.index_select(0, users)), i_target),
            "iu": cosine_loss(self.predictor(item_g.index_select(0, items)), u_target),
            "reg": self.reg_loss(user_g, item_g).squeeze(),  # RecBole's EmbLoss: (||U|| + ||I||) / n_items
        }
        for m, (proj, x) in enumerate(zip(self.projections, self.content(self.modalities))):
            f = proj(x.index_select(0, items))  # [batch, d]
            with torch.no_grad():
                f_target = mask_dropout(f, self.dropout)
            online = self.predictor(f)
            terms[f"cross_{m}"] = cosine_loss(online, i_target)
            terms[f"intra_{m}"] = cosine_loss(online, f_target)
        return terms

    def calculate_loss(self, interaction):
        terms = self.loss_terms(interaction)
        content = sum(v for k, v in terms.items() if k.startswith(("cross_", "intra_")))
        return terms["ui"] + terms["iu"] + self.reg_weight * terms["reg"] + self.cl_weight * content
