r"""GRCN
################################################

Reference:
    Yinwei Wei, Xiang Wang, Liqiang Nie, Xiangnan He, Tat-Seng Chua. "Graph-Refined
    Convolutional Network for Multimedia Recommendation with Implicit Feedback." ACM MM 2020.

Reference code:
    https://github.com/weiyinwei/GRCN

Three steps, every training step, on the user-item graph of the training interactions:

1. **Prototypical routing per modality.** Items start from their content projected to ``d``
   (linear + LeakyReLU, L2-normalised), users from a free modality-specific preference
   ``p_u`` (L2-normalised). ``n_routing`` times: ``a_ui = softmax_{i in N(u)} (p_u . f_i)`` and
   ``p_u <- normalise(p_u + sum_i a_ui f_i)``.
2. **Graph refining.** The affinity of an edge for a message into node ``v`` is the softmax of
   ``p_u . f_i`` over ``v``'s neighbours, scaled by the sender's learned confidence in that
   modality; the modalities are fused by their maximum (``edge_weight_mode: confid``, the
   paper's best; ``max`` and ``mean`` drop the confidence) and pruned: ``w = ReLU(...)``, so an
   edge that no modality supports carries nothing.
3. **Propagation.** The L2-normalised ID embeddings go through two weighted sum-aggregation
   layers on the refined graph: ``id = x + A_w x + A_w^2 x``. A modality's content
   representation is its routed node plus one attention-weighted aggregation of its
   neighbours (users: ``p_u + sum a_ui f_i``; items: ``f_i + sum a_iu p_u``).

The final representation is ``[id ; content_1 ; ... ; content_M]`` (the paper's concatenation),
with one content block per modality present (the paper's visual/acoustic/textual, generalised
to any number of dense or token modalities).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_metammf.layers.graph import (
    EdgePattern,
    csr_addmm_,
    csr_mm,
    l2_normalize,
    l2_normalize_backward,
    l2_normalize_forward,
)
from recbole_metammf.model.base import MultimodalRecommender

EDGE_WEIGHT_MODES = ("confid", "max", "mean")


class GRCN(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.content_size = config["content_embedding_size"]
        self.n_routing = config["n_routing"]
        self.negative_slope = config["negative_slope"]
        self.edge_weight_mode = config["edge_weight_mode"]
        if self.edge_weight_mode not in EDGE_WEIGHT_MODES:
            raise ValueError(f"edge_weight_mode must be one of {EDGE_WEIGHT_MODES}, got '{self.edge_weight_mode}'")
        n_modalities = len(self.modalities.specs)

        # define layers
        self.id_embedding = nn.Parameter(torch.empty(self.n_users + self.n_items, self.embedding_size))
        self.preferences = nn.ParameterList(
            nn.Parameter(torch.empty(self.n_users, self.content_size)) for _ in range(n_modalities)
        )
        self.projections = nn.ModuleList(nn.Linear(spec.dim, self.content_size) for spec in self.modalities.specs)
        self.confidence = nn.Parameter(torch.empty(self.n_users + self.n_items, n_modalities))  # per node, modality

        # the graph, built once: one (user, item) pair per training edge
        inter = dataset.inter_matrix(form="coo").tocsr()
        inter.sum_duplicates()
        inter = inter.tocoo()
        self.register_buffer("edge_user", torch.from_numpy(inter.row.astype("int64")), persistent=False)
        self.register_buffer("edge_item", torch.from_numpy(inter.col.astype("int64")), persistent=False)
        # fixed sparsity patterns (CSR, built once; edge values change every step): user-item, and the
        # symmetric graph over all nodes with the messages into users first, then those into items
        self.ui_pattern = EdgePattern(self.edge_user, self.edge_item, self.n_users, self.n_items)
        item_node = self.n_users + self.edge_item
        n = self.n_users + self.n_items
        self.graph_pattern = EdgePattern(
            torch.cat([self.edge_user, item_node]), torch.cat([item_node, self.edge_user]), n, n
        )  # receiver, sender
        # all modalities at once: M copies of the user-item graph side by side (block diagonal), modality m's
        # users at rows m*U.., its items at columns m*I..; edges modality-major, each copy in edge_user order
        m_ids = torch.arange(n_modalities).repeat_interleave(len(self.edge_user))  # [M*E]
        self.stacked_pattern = EdgePattern(
            self.edge_user.repeat(n_modalities) + m_ids * self.n_users,
            self.edge_item.repeat(n_modalities) + m_ids * self.n_items,
            n_modalities * self.n_users,
            n_modalities * self.n_items,
        )

        # parameter init
        for p in [self.id_embedding, self.confidence, *self.preferences]:
            nn.init.xavier_normal_(p)
        for lin in self.projections:
            nn.init.xavier_normal_(lin.weight)

    def route(self, m: int, content: torch.Tensor):
        """Modality ``m``: (user content rep, item content rep, affinity into users, affinity into items)."""
        ui = self.ui_pattern  # rows: edge_user, cols: edge_item
        feat = F.normalize(F.leaky_relu(self.projections[m](content), self.negative_slope), dim=-1)  # [I, c]
        pref = F.normalize(self.preferences[m], dim=-1)  # [U, c]
        for _ in range(self.n_routing):
            # [E], within each user's items; scores are cosines (both sides L2-normalised): bounded
            a_user = ui.softmax(ui.dot(pref, feat), over="rows", bounded=True)
            pref = F.normalize(pref + ui.spmm(a_user, feat), dim=-1)  # [U, c]
        score = ui.dot(pref, feat)  # [E], p_u . f_i per edge
        a_user = ui.softmax(score, over="rows", bounded=True)  # messages item -> user
        a_item = ui.softmax(score, over="cols", bounded=True)  # messages user -> item
        user_rep = pref + ui.spmm(a_user, feat)  # [U, c]
        item_rep = feat + ui.spmm_t(a_item, pref)  # [I, c]
        return user_rep, item_rep, a_user, a_item

    def route_stacked(self, contents: list[torch.Tensor]):
        """:meth:`route` of every modality in one pass over the block-diagonal ``stacked_pattern``: the
        same numbers (the blocks never meet: each row's softmax, normalisation and sum stays within its
        modality), one sampled product / softmax / sparse product per round instead of one per modality.

        Returns the user reps [M*U, c] and item reps [M*I, c], modality-major (modality ``m``'s block is
        rows ``m*U ..``), and the affinities into users and into items [E, M]."""
        ui, n_mod = self.stacked_pattern, len(contents)
        proj = torch.cat([self.projections[m](content) for m, content in enumerate(contents)])  # [M*I, c]
        feat = l2_normalize(F.leaky_relu(proj, self.negative_slope))  # row-wise: per item and modality
        pref = l2_normalize(torch.cat(list(self.preferences)))  # [M*U, c]
        if self.fused_routing:
            user_rep, item_rep, a_user, a_item = _Routing.apply(pref, feat, ui, self.n_routing)
            return user_rep, item_rep, a_user.view(n_mod, -1).t(), a_item.view(n_mod, -1).t()
        for _ in range(self.n_routing):
            a_user = ui.softmax(ui.dot(pref, feat), over="rows", bounded=True)
            pref = l2_normalize(pref + ui.spmm(a_user, feat))
        score = ui.dot(pref, feat)  # [M*E]
        a_user = ui.softmax(score, over="rows", bounded=True)
        a_item = ui.softmax(score, over="cols", bounded=True)
        user_rep = pref + ui.spmm(a_user, feat)  # [M*U, c]
        item_rep = feat + ui.spmm_t(a_item, pref)  # [M*I, c]
        return user_rep, item_rep, a_user.view(n_mod, -1).t(), a_item.view(n_mod, -1).t()

    def refined_weights(self, a_user: torch.Tensor, a_item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pruned edge weights of messages into users and into items from per-modality affinities [E, M]."""
        if self.edge_weight_mode == "confid":
            # scaled by the sender's confidence: an item's into users, a user's into items
            a_user = a_user * self.confidence.index_select(0, self.n_users + self.edge_item)
            a_item = a_item * self.confidence.index_select(0, self.edge_user)
        if self.edge_weight_mode == "mean":
            w_user, w_item = a_user.mean(-1), a_item.mean(-1)
        else:
            w_user, w_item = a_user.max(-1).values, a_item.max(-1).values
        return F.relu(w_user), F.relu(w_item)  # pruning: negative support removes the edge

    # Fast paths (default), the same numbers (tests/test_perf_grcn.py compares each with its plain form):
    # stack_modalities routes all modalities in one block-diagonal pass (route_stacked; False: route one
    # at a time), fused_routing does that pass with a hand-written backward (_Routing); gather_blocks
    # scores a training batch from its rows of each block (ID, each modality's content), never
    # concatenating the whole [U+I, d + M*c] tables the batch then indexes.
    stack_modalities = True
    gather_blocks = True
    fused_routing = True  # route_stacked's rounds as one Function (_Routing): gradients summed in place

    def representation_blocks(self):
        """(user IDs [U, d], item IDs [I, d], user contents [M*U, c], item contents [M*I, c]): the blocks
        of the final representation ``[id ; content_1 ; ... ; content_M]``, contents modality-major."""
        contents = self.modalities.per_modality()
        if self.stack_modalities and len(contents) > 1:
            user_c, item_c, a_user, a_item = self.route_stacked(contents)  # affinities [E, M]
        else:
            routed = [self.route(m, content) for m, content in enumerate(contents)]
            user_c, item_c = torch.cat([r[0] for r in routed]), torch.cat([r[1] for r in routed])
            a_user, a_item = torch.stack([r[2] for r in routed], -1), torch.stack([r[3] for r in routed], -1)
        w_user, w_item = self.refined_weights(a_user, a_item)  # [E] each

        # weighted propagation of the ID embeddings on the refined graph (both directions)
        weight = torch.cat([w_user, w_item])  # edges of graph_pattern: into users, then into items
        x = l2_normalize(self.cold_id_table(self.id_embedding, offset=self.n_users))  # [U+I, d]
        h1 = self.graph_pattern.spmm(weight, x)
        h2 = self.graph_pattern.spmm(weight, h1)
        id_user, id_item = torch.split(x + h1 + h2, [self.n_users, self.n_items])
        return id_user, id_item, user_c, item_c

    def compute_all(self):
        id_user, id_item, user_c, item_c = self.representation_blocks()
        return (torch.cat([id_user, *user_c.split(self.n_users)], dim=-1),
                torch.cat([id_item, *item_c.split(self.n_items)], dim=-1))

    def batch_embeddings(self, users, items_list):
        if not self.gather_blocks:
            return super().batch_embeddings(users, items_list)
        id_user, id_item, user_c, item_c = self.representation_blocks()
        items = torch.cat(items_list)

        def gather(ids, id_table, content, n):  # [len(ids), d + M*c]: the ids' rows of each block, side by side
            offsets = torch.arange(content.shape[0] // n, device=ids.device).unsqueeze(1) * n  # [M, 1]
            blocks = content.index_select(0, (ids.unsqueeze(0) + offsets).reshape(-1)).split(len(ids))
            return torch.cat([id_table.index_select(0, ids), *blocks], dim=-1)

        item_e = gather(items, id_item, item_c, self.n_items).split([len(i) for i in items_list])
        return gather(users, id_user, user_c, self.n_users), list(item_e)

    def reg_embeddings(self, users, items_list):
        ids = self.id_embedding
        reg = [ids.index_select(0, users)] + [ids.index_select(0, items + self.n_users) for items in items_list]
        return reg + [p.index_select(0, users) for p in self.preferences]


class _Routing(torch.autograd.Function):
    """:meth:`GRCN.route_stacked`'s routing rounds and final aggregation (bounded softmaxes: the scores are
    cosines) as one Function, from the normalised preferences ``pref`` [M*U, c] and item content ``feat``
    [M*I, c] to (user reps, item reps, affinities into users, affinities into items), the affinities in
    the pattern's edge order. The same numbers as the chain of EdgePattern operators, with a backward
    that sums the gradients of ``feat`` (used by every round's score and aggregation: 9 times with 3
    rounds) and of each round's preferences in place, by accumulating sparse products (``csr_addmm_``),
    instead of autograd's separate product outputs and additions; and the item side's affinity gradient
    taken from the rows (``sddmm(pref, g_item)``), with no permutation."""

    @staticmethod
    def forward(ctx, pref, feat, pattern, n_routing):
        prefs, norms, alphas = [pref], [], []  # alphas: (caller order, CSR order), one tensor when they agree
        for _ in range(n_routing):
            a, a_csr = pattern.softmax_values(pattern.sddmm(pref, feat), False, True)  # within each user's items
            pref, inv, above = l2_normalize_forward(csr_mm(pattern.csr(a), feat).add_(pref))
            prefs.append(pref)
            norms += [inv, above]
            alphas += [a, a_csr]
        score = pattern.sddmm(pref, feat)
        a_user, a_user_csr = pattern.softmax_values(score, False, True)  # messages item -> user
        a_item, a_item_csr = pattern.softmax_values(score, True, True)  # messages user -> item
        user_rep = csr_mm(pattern.csr(a_user), feat).add_(pref)
        item_rep = csr_mm(pattern.csr_t(a_item), pref).add_(feat)
        ctx.pattern, ctx.n_routing = pattern, n_routing
        ctx.save_for_backward(feat, a_user, a_user_csr, a_item, a_item_csr, *prefs, *norms, *alphas)
        return user_rep, item_rep, a_user, a_item

    @staticmethod
    def backward(ctx, g_user, g_item, g_a_user, g_a_item):
        pattern, n = ctx.pattern, ctx.n_routing
        feat, a_user, a_user_csr, a_item, a_item_csr, *rest = ctx.saved_tensors
        prefs, norms, alphas = rest[: n + 1], rest[n + 1: 3 * n + 1], rest[3 * n + 1:]
        pref = prefs[-1]
        g_user = torch.zeros_like(pref) if g_user is None else g_user.contiguous()  # None: an unused output
        g_item = torch.zeros_like(feat) if g_item is None else g_item.contiguous()
        g_feat = g_item.clone()  # item_rep = feat + A^T(a_item) pref
        g_pref = g_user.clone()  # user_rep = pref + A(a_user) feat
        # user_rep's product: d a_user[e] = g_user[row] . feat[col]; d feat += A(a_user)^T g_user
        g_au = pattern.sddmm(g_user, feat)
        csr_addmm_(g_feat, pattern.csr_t(a_user), g_user)
        # item_rep's product: d a_item[e] = pref[row] . g_item[col]; d pref += A(a_item) g_item
        g_ai = pattern.sddmm(pref, g_item)
        csr_addmm_(g_pref, pattern.csr(a_item), g_item)
        if g_a_user is not None:
            g_au += g_a_user
        if g_a_item is not None:
            g_ai += g_a_item
        # the two softmaxes of score = sddmm(pref, feat)
        g_s = pattern.softmax_grad(a_user_csr, g_au, False)
        g_s += pattern.softmax_grad(a_item_csr, g_ai, True)
        csr_addmm_(g_pref, pattern.csr(g_s), feat)
        csr_addmm_(g_feat, pattern.csr_t(g_s), pref)
        for r in reversed(range(n)):  # pref_{r+1} = normalise(pref_r + A(a_r) feat), a_r = softmax(sddmm(pref_r, feat))
            a, a_csr, prev = alphas[2 * r], alphas[2 * r + 1], prefs[r]
            g_q = l2_normalize_backward(g_pref, prefs[r + 1], norms[2 * r], norms[2 * r + 1])
            g_s = pattern.softmax_grad(a_csr, pattern.sddmm(g_q, feat), False)
            csr_addmm_(g_feat, pattern.csr_t(a), g_q)
            csr_addmm_(g_feat, pattern.csr_t(g_s), prev)
            g_pref = csr_addmm_(g_q, pattern.csr(g_s), feat)  # d pref_r: through q and through the scores
        return g_pref, g_feat, None, None
