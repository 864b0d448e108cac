r"""VBPR
################################################

Reference:
    Ruining He, Julian McAuley. "VBPR: Visual Bayesian Personalized Ranking from Implicit
    Feedback." AAAI 2016.

Reference code:
    https://github.com/arogers1/VBPR (the authors released none; MMRec's ``vbpr.py`` is the
    usual multimodal-benchmark version)

The score is ``x_ui = beta_i + gamma_u . gamma_i + theta_u . (E f_i) + beta' . f_i``: latent ID
factors, a user's preference ``theta_u`` for a learned projection ``E`` of the item content
``f_i``, an item bias and a content bias (the user bias cancels in BPR). The paper has one
visual feature; here ``f_i`` is every modality present, concatenated (dense modalities as
given, token modalities through their mean-pooled embedding), and one ``E`` projects them all.

The score is written as one inner product so that the shared full-sort path applies:
``user = [gamma_u ; theta_u ; 1]``, ``item = [gamma_i ; E f_i ; beta_i + beta' . f_i]``.
``item_biases: False`` drops ``beta_i`` and ``beta'`` (and the constant column), as MMRec's
``vbpr.py``, whose score is ``gamma_u . gamma_i + theta_u . (W f_i + b)`` (its projection's bias ``b``
adds ``theta_u . b``, the same for every item of a user, so it changes no ranking).
"""

import torch
import torch.nn as nn
from recbole.model.init import xavier_normal_initialization

from recbole_metammf.model.base import MultimodalRecommender


class VBPR(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.id_size = config["id_embedding_size"]
        self.content_size = config["content_embedding_size"]
        self.item_biases = bool(config["item_biases"]) if "item_biases" in config else True

        # define layers
        self.user_id_embedding = nn.Embedding(self.n_users, self.id_size)  # gamma_u
        self.user_content_embedding = nn.Embedding(self.n_users, self.content_size)  # theta_u
        self.item_id_embedding = nn.Embedding(self.n_items, self.id_size)  # gamma_i
        # registration order kept as before the key (the initialisation's draws follow it)
        if self.item_biases:
            self.item_bias = nn.Embedding(self.n_items, 1)  # beta_i
        self.projection = nn.Linear(self.modalities.output_dim, self.content_size, bias=False)  # E
        if self.item_biases:
            self.content_bias = nn.Linear(self.modalities.output_dim, 1, bias=False)  # beta'

        # parameter init
        self.apply(xavier_normal_initialization)
        if self.item_biases:
            nn.init.zeros_(self.item_bias.weight)

    def user_representation(self, users=None) -> torch.Tensor:
        gamma = self.user_id_embedding.weight if users is None else self.user_id_embedding(users)
        theta = self.user_content_embedding.weight if users is None else self.user_content_embedding(users)
        if not self.item_biases:
            return torch.cat([gamma, theta], dim=-1)  # [n, id + content]
        ones = torch.ones(gamma.shape[0], 1, device=gamma.device)
        return torch.cat([gamma, theta, ones], dim=-1)  # [n, id + content + 1]

    def item_representation(self, items=None) -> torch.Tensor:
        content = self.modalities(items)  # [n, d_in]
        # cold items (cold_item_id): the ID factor and the ID bias are the item's ID part
        gamma = self.cold_id_table(self.item_id_embedding.weight) if items is None else self.item_id_embedding(items)
        if not self.item_biases:
            return torch.cat([gamma, self.projection(content)], dim=-1)  # [n, id + content]
        bias = self.cold_id_table(self.item_bias.weight) if items is None else self.item_bias(items)  # [n, 1]
        bias = bias + self.content_bias(content)
        return torch.cat([gamma, self.projection(content), bias], dim=-1)  # [n, id + content + 1]

    def compute_all(self):
        return self.user_representation(), self.item_representation()

    def batch_embeddings(self, users, items_list):
        # only the batch's items: no need to project every item's content per step
        return self.user_representation(users), [self.item_representation(items) for items in items_list]

    def content_reg_embeddings(self, users, items_list, user_e, item_e_list):
        # [gamma_u ; theta_u] and [gamma_i ; E f_i ; beta_i + beta'.f_i]: the scored vectors without
        # the user's constant 1
        return [user_e[:, :-1] if self.item_biases else user_e, *item_e_list]

    def content_reg_columns(self):
        return slice(self.id_size, self.id_size + self.content_size)  # theta_u and E f_i

    def reg_embeddings(self, users, items_list):
        reg = [self.user_id_embedding(users), self.user_content_embedding(users)]
        for items in items_list:
            reg += [self.item_id_embedding(items)] + ([self.item_bias(items)] if self.item_biases else [])
        return reg
