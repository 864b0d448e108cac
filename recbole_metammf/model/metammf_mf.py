r"""MetaMMF_MF
################################################

Reference:
    Han Liu, Yinwei Wei, Fan Liu, Wenjie Wang, Liqiang Nie, Tat-Seng Chua.
    "Dynamic Multimodal Fusion via Meta-Learning Towards Micro-Video Recommendation."
    ACM Transactions on Information Systems (TOIS), 2024. arXiv:2501.07110.

Reference code:
    https://github.com/hanliu95/MetaMMF (releases no MF script; this follows the paper's Fig. 2)

Each item's modalities are fused by an item-specific network whose weights a
meta learner derives from the item itself (``layers/fusion.py``); the item is
``e_i = [e_i^m ; e_i^c]``, the fused content beside a free ID embedding. A user
is a free embedding of the same size; the score is the inner product, trained
with BPR.
"""

import torch
import torch.nn as nn
from recbole.model.init import xavier_normal_initialization

from recbole_metammf.layers.fusion import MetaFusionNetwork
from recbole_metammf.model.base import MultimodalRecommender


class MetaMMF_MF(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["fused_size"] + config["id_embedding_size"]

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_id_embedding = nn.Embedding(self.n_items, config["id_embedding_size"])
        self.apply(xavier_normal_initialization)  # embeddings; the fusion layers keep their own init
        self.fusion = MetaFusionNetwork.from_config(  # content at the ID part's scale (content_scale)
            config, self.modalities.output_dim, self.item_id_embedding.weight, self.modalities.per_modality)

    # Fast path (default): with dense modalities only, a batch's content is ONE gather of rows from the
    # concatenation of all items' modalities (built once, see MetaFusionNetwork.grouped) instead of a
    # gather per modality and a concatenation every batch: the same input rows (tests/test_perf_fusion.py).
    gather_from_table = True

    def content_input(self, items=None):
        """The fusion's input for ``items`` (all when None): a tensor or its column blocks."""
        if (
            items is not None
            and self.gather_from_table
            and all(spec.kind == "dense" for spec in self.modalities.specs)
        ):
            table = self.fusion.grouped(self.modalities.per_modality())  # [n_items, d_in], cached
            if torch.is_tensor(table):
                return table.index_select(0, items)
        return self.modalities.per_modality(items)

    def item_representation(self, items=None) -> torch.Tensor:
        """``[e^m ; e^c]`` of ``items`` (all when None): [n, fused + id]."""
        content = self.fusion(self.content_input(items))  # [n, fused]; blocks: see MetaFusionNetwork.forward
        ids = self.cold_id_table(self.item_id_embedding.weight) if items is None else self.item_id_embedding(items)
        return torch.cat([content, ids], dim=-1)

    def compute_all(self):
        return self.user_embedding.weight, self.item_representation()

    # Fast path (default): an item that occurs several times in a batch (popular positives, negatives
    # drawn twice) is fused once and its vector gathered for every occurrence: the fusion of an item
    # depends on the item alone, so the vectors and their gradients are the same (tests/test_perf_fusion.py).
    dedup_items = True

    def batch_embeddings(self, users, items_list):
        # fuse only the batch's items, all lists in one pass
        items = torch.cat(items_list)
        if self.dedup_items:
            unique, inverse = torch.unique(items, return_inverse=True)
            item_e = self.item_representation(unique).index_select(0, inverse)
        else:
            item_e = self.item_representation(items)
        return self.user_embedding(users), list(item_e.split([len(i) for i in items_list]))

    def content_reg_columns(self):
        return slice(0, self.fusion.layers[-1].out_dim)  # e^m and the user columns that meet it

    def reg_embeddings(self, users, items_list):
        return [self.user_embedding(users)] + [self.item_id_embedding(i) for i in items_list]
