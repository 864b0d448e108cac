"""MultimodalRecommender: what every multimodal model of the plugin shares.

* the item modalities (:class:`~recbole_metammf.modalities.ModalityEncoder`),
  built once from the dataset and moved to the model's device with the model;
* BPR training on RecBole's pairwise (user, positive, negative) batches;
* ``predict`` and ``full_sort_predict`` from one pair of final user / item
  tensors, cached for evaluation and cleared as soon as training resumes.

A subclass implements :meth:`compute_all` (all users' and all items'
final representations) and may override :meth:`batch_embeddings` when it can
score a batch without computing every item (MetaMMF_MF does).

**Cold items** (no interaction in the training split the model is built on) are trained
only as sampled negatives, so their ID vectors are pushed down, not learned.
``cold_item_id`` (model YAML) says what a model that has item content uses for them
*when evaluating or serving* (training is unchanged): ``none`` their trained ID vectors
(as an ID-only model), ``zero`` no ID vector (the item is scored from its content),
``mean`` the mean ID vector of the warm items. A model applies it through
:meth:`cold_id_table` wherever it reads an item-ID table (ID embeddings, item biases).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch

from recbole.model.abstract_recommender import GeneralRecommender
from recbole.model.loss import BPRLoss, EmbLoss
from recbole.utils import InputType

from recbole_metammf.modalities import ModalityEncoder


COLD_ITEM_ID = ("none", "zero", "mean")
CONTENT_REG_SCOPES = ("whole", "content")


class MultimodalRecommender(GeneralRecommender):
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load dataset info: item modalities aligned with RecBole's internal item ids
        self.modalities = ModalityEncoder(config, dataset)
        # items without a training interaction (the dataset a RecBole model is built on is the training split)
        counts = np.bincount(dataset.inter_feat[self.ITEM_ID].numpy(), minlength=self.n_items)  # [n_items]
        cold = torch.from_numpy(counts == 0)
        cold[0] = False  # padding
        self.register_buffer("cold_items", cold, persistent=False)

        # load parameters info
        self.reg_weight = config["reg_weight"] if "reg_weight" in config else 0.0
        self.cold_item_id = str(config["cold_item_id"] if "cold_item_id" in config else "none").lower()
        if self.cold_item_id not in COLD_ITEM_ID:
            raise ValueError(f"cold_item_id must be one of {COLD_ITEM_ID}, got '{config['cold_item_id']}'")
        self.content_reg_weight = config["content_reg_weight"] if "content_reg_weight" in config else 0.0
        # what content_reg_weight penalises: the whole vectors, or only their content columns (content_reg_columns)
        self.content_reg_scope = str((config["content_reg_scope"] if "content_reg_scope" in config else None)
                                     or "whole").lower()
        if self.content_reg_scope not in CONTENT_REG_SCOPES:
            raise ValueError(f"content_reg_scope must be one of {CONTENT_REG_SCOPES}, got '{self.content_reg_scope}'")
        # RecBole's key (LightGCN's): EmbLoss as the squared L2 norm / 2 per row when True, the plain norm when False
        self.require_pow = bool(config["require_pow"]) if "require_pow" in config else False

        # define loss
        self.bpr_loss = BPRLoss()
        self.reg_loss = EmbLoss()

        # storage for full-sort acceleration
        self.restore_user_e = None
        self.restore_item_e = None
        self.other_parameter_name = ["restore_user_e", "restore_item_e"]

    # --- to implement -------------------------------------------------------
    def compute_all(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Final representations: users [n_users, d], items [n_items, d]."""
        raise NotImplementedError

    def batch_embeddings(self, users, items_list):
        """(user_e, [item_e ...]) for a training batch; default: index compute_all()."""
        user_all, item_all = self.compute_all()
        # index_select, not user_all[users]: its backward is an index_add_ instead of an accumulating
        # index_put_ (on CPU 2.3x faster for 4,096 rows of a [20,001, 256] table, the same sums); the
        # item lists in one gather: one zero-filled gradient table instead of one per list
        items = torch.cat(items_list) if len(items_list) > 1 else items_list[0]
        item_e = item_all.index_select(0, items).split([len(i) for i in items_list])
        return user_all.index_select(0, users), list(item_e)

    def cold_id_table(self, table: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """``table`` (rows ``offset .. offset + n_items`` are the items' ID rows) with the cold items'
        rows replaced as ``cold_item_id`` says, when evaluating; unchanged while training."""
        if self.training or self.cold_item_id == "none" or not bool(self.cold_items.any()):
            return table
        rows = torch.zeros(table.shape[0], dtype=torch.bool, device=table.device)
        rows[offset : offset + self.n_items] = self.cold_items
        if self.cold_item_id == "zero":
            fill = torch.zeros_like(table[0])
        else:  # mean of the warm items' rows (padding excluded)
            warm = torch.zeros_like(rows)
            warm[offset + 1 : offset + self.n_items] = ~self.cold_items[1:]
            fill = table[warm].mean(dim=0)
        return torch.where(rows.unsqueeze(1), fill.unsqueeze(0), table)  # [rows, d]

    def reg_embeddings(self, users, items_list) -> list[torch.Tensor]:
        """Ego embeddings that ``reg_weight`` penalises; override in a subclass."""
        return []

    def content_reg_embeddings(self, users, items_list, user_e, item_e_list) -> list[torch.Tensor]:
        """What ``content_reg_weight`` penalises: the representations that carry the item content.

        ``user_e`` / ``item_e_list`` are the batch's scored vectors. Default: those vectors
        themselves (the user and the whole item vector, content included, as MMRec's BPR-family
        models regularise); a graph model returns its vectors before propagation instead.
        """
        return [user_e, *item_e_list]

    def content_reg_columns(self) -> slice | None:
        """The columns of the :meth:`content_reg_embeddings` vectors that carry the item content or meet
        it in the score (``content_reg_scope: content`` penalises only these); None: the model has none."""
        return None

    def _content_reg_terms(self, users, items_list, user_e, item_e_list) -> list[torch.Tensor]:
        reg = self.content_reg_embeddings(users, items_list, user_e, item_e_list)
        if self.content_reg_scope == "content":
            columns = self.content_reg_columns()
            if columns is None:
                raise ValueError(f"content_reg_scope: content needs a model with content columns; "
                                 f"{type(self).__name__} has none (use whole)")
            reg = [e[:, columns] for e in reg]
        return reg

    # --- RecBole interface --------------------------------------------------
    def forward(self):
        return self.compute_all()

    def calculate_loss(self, interaction):
        self.restore_user_e = self.restore_item_e = None  # training resumes: cache is stale
        users = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        u_e, (pos_e, neg_e) = self.batch_embeddings(users, [pos, neg])
        pos_score = (u_e * pos_e).sum(dim=-1)
        neg_score = (u_e * neg_e).sum(dim=-1)
        loss = self.bpr_loss(pos_score, neg_score)
        if self.reg_weight > 0:
            reg = self.reg_embeddings(users, [pos, neg])
            if reg:
                loss = loss + self.reg_weight * self.reg_loss(*reg, require_pow=self.require_pow).squeeze()  # EmbLoss returns shape [1]
        if self.content_reg_weight > 0:
            reg = self._content_reg_terms(users, [pos, neg], u_e, [pos_e, neg_e])
            loss = loss + self.content_reg_weight * self.reg_loss(*reg, require_pow=self.require_pow).squeeze()
        return loss

    def _eval_tensors(self):
        if self.restore_user_e is None or self.restore_item_e is None:
            # view_as: an nn.Parameter (MetaMMF_MF's user table) assigned to a module attribute would be
            # registered as a parameter and saved in checkpoints under the cache's name
            self.restore_user_e, self.restore_item_e = (t.view_as(t) for t in self.compute_all())
        return self.restore_user_e, self.restore_item_e

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        # checkpoints saved before the fix above may hold the cache as a parameter: not model state
        kept = OrderedDict((k, v) for k, v in state_dict.items() if k not in self.other_parameter_name)
        if hasattr(state_dict, "_metadata"):
            kept._metadata = state_dict._metadata
        return super().load_state_dict(kept, strict=strict, assign=assign)

    def predict(self, interaction):
        user_all, item_all = self._eval_tensors()
        u_e = user_all[interaction[self.USER_ID]]
        i_e = item_all[interaction[self.ITEM_ID]]
        return (u_e * i_e).sum(dim=-1)

    def full_sort_predict(self, interaction):
        user_all, item_all = self._eval_tensors()
        u_e = user_all[interaction[self.USER_ID]]  # [batch, d]
        return (u_e @ item_all.t()).view(-1)  # [batch * n_items]
