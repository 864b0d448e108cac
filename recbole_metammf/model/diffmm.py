r"""DiffMM
################################################

Reference:
    Yangqin Jiang, Lianghao Xia, Wei Wei, Da Luo, Kangyi Lin, Chao Huang. "DiffMM: Multi-Modal
    Diffusion Model for Recommendation." ACM MM 2024.

Reference code:
    https://github.com/HKUDS/DiffMM ``Main.py`` (training loop, graph rebuilding), ``Model.py``
    (recommender, denoiser, diffusion), ``Params.py`` (defaults), ``README.md`` (per-dataset
    commands; the TikTok one is this YAML's default).

Every training epoch has two parts, in this order (the reference's ``trainEpoch``):

1. **Diffusion step.** Per modality ``m`` a denoiser (``layers/diffusion.py``: an MLP
   ``n_items + time -> denoise_dims -> n_items``) learns to recover a user's 0/1 training row
   ``x_0`` from its noised version ``x_t`` (``t`` uniform over ``steps``): loss
   ``(SNR(t-1) - SNR(t)) · mean((x_0 - x̂_0)²)`` plus ``e_loss`` times the modality-guided term
   ``mean((x̂_0 F_m - x_0 E_item)²)`` (``F_m`` the modality's projected item content, ``E_item``
   the item ID table, both fixed during this step). One pass over all users in batches of
   ``diffusion_batch_size``, its own Adam (``diffusion_learning_rate``, default the model's).
2. **Graph rebuild, then the recommender step.** Each user's row is denoised (the reverse
   pass from ``x_0``, ``sampling_steps`` 0, no noise) and its ``rebuild_k`` top items become
   the user's edges in modality ``m``'s graph ``G_m`` (with self-loops, ``D^-1/2 (A+I) D^-1/2``,
   then each entry kept with probability ``keep_rate`` and scaled by ``1 / keep_rate``). The
   recommender then trains on RecBole's (user, positive, negative) batches with ``G_m`` fixed for
   the epoch and for the evaluation after it.

Recommender (``forward_MM``): with ``Â`` the training graph with self-loops (symmetric
normalisation), ``E = [E_user; E_item]`` and ``f_m`` the L2-normalised projection of modality
``m`` (``feat_transform``: ``linear`` = the reference's ``trans 1``, ``leaky_relu`` = ``trans 0``),
per modality ``e_m = Â[E_user; f_m] + Â[(Â[E_user; f_m])_users; E_item] + ris_adj_lambda · G_m E``,
mixed ``e = Σ softmax(w)_m e_m`` (``w`` learned, starts equal), propagated
``h = Σ_{l=0..n_layers} Â^l e``, output ``h + ris_lambda · normalize(e)``. Loss: BPR +
``reg_weight`` (``||E_user||² + ||E_item||²``, the whole tables) + ``ssl_reg`` times InfoNCE
(``temperature``) between modality views ``v_m = Σ_l Â^l G_m [E_user; f_m]`` for the batch users
and positive items: each view against the main output (``cl_method: main``, the reference's
``cl_method 1``, its TikTok setting) or each pair of views (``pairwise``, ``cl_method 0``).

**Any number of modalities.** The reference has image + text (+ audio on TikTok), one denoiser,
one rebuilt graph and one view per modality; here one of each per modality present, dense or
token (a token modality's projection reads its mean-pooled token embedding, trained with the
recommender). ``pairwise`` needs two modalities (one modality: the plugin's one-line error);
``main`` works with one.

**Memory.** The user rows are item-length vectors: they are built per batch from the sparse
training matrix (the reference keeps the dense [users, items] matrix), so memory follows
``diffusion_batch_size x n_items`` and the denoisers' ``2 x n_items x denoise_dims`` weights (with
Adam's two moments) per modality.

**Speed.** Most of an epoch is the denoisers' dense products, which ``layers/diffusion.py``'s
``Denoiser`` computes in a faster form of the same values: the first layer's backward never forms the
gradient of the noised rows, and the item-width output layer runs at a multiple of 16 columns
(``benchmarks/diffmm_denoiser.md``: the diffusion step and the rebuild each about 0.8x the time, the same
rebuilt graphs).

**Running under RecBole's trainer.** RecBole picks ``recbole.trainer.<Model>Trainer`` when it
exists, but the plugin's own paths (tests, ``benchmark/select.py``) build ``Trainer`` directly, so
both parts live in the model: the first ``calculate_loss`` of every epoch (the batch count is
``ceil(#train interactions / train_batch_size)``, as FREEDOM's) runs the diffusion step and the
rebuild before its own batch. The denoisers' gradients are cleared after their step, so RecBole's
optimiser, which holds every parameter, never moves them (Adam skips parameters without a
gradient). The rebuilt graphs are persistent buffers (the top items and the kept-entry mask), so a
checkpoint evaluates with the graphs it was trained with. Before the first epoch (an untrained
model) each ``G_m`` is the identity (self-loops only).

**Deliberate differences from the reference:**

* the content is the plugin's (dense modalities standardised per dimension,
  ``standardize_modalities``; the reference reads raw ``.npy`` features);
* RecBole's protocol: early stopping on validation and the best validation epoch tested (the
  reference runs 50 epochs and reports the best *test* epoch); negatives from RecBole's sampler;
  BPR is the batch mean (the reference divides the sum by the nominal batch size);
* RecBole's padding user and item (id 0) are left out of the diffusion batches, the rebuilt
  edges and the InfoNCE denominators;
* the reference's three Adam optimisers over the three denoisers are one Adam over all of them
  (the same updates: Adam is per parameter);
* ``trans 2`` (image through a weight matrix with LeakyReLU, text through a Linear: the
  reference's Allrecipes setting) is not offered: ``feat_transform`` applies one form to all
  modalities.
"""

import math

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F

from recbole_metammf.errors import DataError
from recbole_metammf.layers.contrast import bounded_logsumexp
from recbole_metammf.layers.diffusion import Denoiser, DiffusionSchedule
from recbole_metammf.layers.graph import SparseGraph, bipartite_adjacency, bipartite_from_edges, normalise
from recbole_metammf.layers.knn import steps_per_epoch
from recbole_metammf.model.base import MultimodalRecommender

FEAT_TRANSFORMS = ("linear", "leaky_relu")
CL_METHODS = ("main", "pairwise")


def with_self_loops_sym(adj: sp.spmatrix) -> sp.csr_matrix:
    """``D^-1/2 (A + I) D^-1/2``, ``D`` the row sums of ``A + I``, indices sorted."""
    out = normalise(sp.csr_matrix(adj + sp.identity(adj.shape[0], dtype=np.float32, format="csr")), "sym").tocsr()
    out.sort_indices()
    return out


def info_nce(a: torch.Tensor, b: torch.Tensor, nodes: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over ``nodes`` of ``-log softmax_j(cos(a_n, b_j) / τ)`` at ``j = n``, ``j`` over all rows but 0
    (RecBole's padding). The reference's ``contrastLoss`` (there without a padding row).

    A batch repeats nodes (on TikTok a batch of 1,024 interactions holds about 400 distinct users and
    800 distinct items): each distinct node's term is computed once and weighted by its count, the same
    mean and gradients with fewer rows through the [rows, n] denominator."""
    nodes, counts = torch.unique(nodes, return_counts=True)
    a_n = F.normalize(a.index_select(0, nodes), dim=1)  # [distinct, d]
    b = F.normalize(b, dim=1)
    pos = (a_n * b.index_select(0, nodes)).sum(-1) / temperature
    terms = bounded_logsumexp(a_n, b[1:], 1.0 / temperature) - pos  # [distinct, n - 1] never kept by autograd
    return (terms * counts).sum() / counts.sum()


class DiffMM(MultimodalRecommender):
    def __init__(self, config, dataset):
        super().__init__(config, dataset)

        # load parameters info
        self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = config["reg_weight"]
        self.ssl_reg = config["ssl_reg"]
        self.temperature = config["temperature"]
        self.cl_method = str(config["cl_method"]).lower()
        self.feat_transform = str(config["feat_transform"]).lower()
        self.keep_rate = config["keep_rate"]
        self.ris_lambda = config["ris_lambda"]
        self.ris_adj_lambda = config["ris_adj_lambda"]
        self.e_loss = config["e_loss"]
        self.rebuild_k = config["rebuild_k"]
        self.sampling_steps = config["sampling_steps"]
        self.sampling_noise = bool(config["sampling_noise"])
        self.diffusion_batch_size = config["diffusion_batch_size"]
        lr = config["diffusion_learning_rate"]
        self.diffusion_learning_rate = config["learning_rate"] if lr is None else lr
        if self.cl_method not in CL_METHODS:
            raise ValueError(f"cl_method must be one of {CL_METHODS}, got '{config['cl_method']}'")
        if self.feat_transform not in FEAT_TRANSFORMS:
            raise ValueError(f"feat_transform must be one of {FEAT_TRANSFORMS}, got '{config['feat_transform']}'")
        if not 0 < self.keep_rate <= 1:
            raise ValueError(f"keep_rate must be in (0, 1], got {self.keep_rate}")
        self.n_modalities = len(self.modalities.specs)
        if self.cl_method == "pairwise" and self.n_modalities < 2:
            raise DataError(
                f"DiffMM with cl_method: pairwise contrasts pairs of modalities, and dataset '{config['dataset']}' has "
                f"one ({self.modalities.specs[0].field}): add a second float_seq/token_seq column, or set cl_method: main"
            )
        if not 1 <= self.rebuild_k < self.n_items - 1:
            raise ValueError(f"rebuild_k must be from 1 to the number of items - 1, got {self.rebuild_k}")
        self.steps_per_epoch = steps_per_epoch(config, dataset)
        self.train_steps = 0

        # define layers: the recommender
        d = self.embedding_size
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_embedding.weight)
        if self.feat_transform == "linear":
            self.transforms = nn.ModuleList(nn.Linear(spec.dim, d) for spec in self.modalities.specs)
        else:
            self.transforms = nn.ModuleList(nn.Linear(spec.dim, d, bias=False) for spec in self.modalities.specs)
            for t in self.transforms:
                nn.init.xavier_uniform_(t.weight)
        self.modal_weight = nn.Parameter(torch.full((self.n_modalities,), 1.0 / self.n_modalities))

        # the diffusion part: one denoiser per modality over item-length vectors
        self.schedule = DiffusionSchedule(config["steps"], config["noise_scale"], config["noise_min"], config["noise_max"])
        dims = list(config["denoise_dims"])
        self.denoisers = nn.ModuleList(
            Denoiser(self.n_items, dims, config["time_emb_size"], dropout=config["denoise_dropout"],
                     norm=bool(config["denoise_norm"]))
            for _ in self.modalities.specs
        )
        self._diffusion_optimizer = None
        self.last_diffusion_loss = None

        # graphs: the training graph with self-loops, the users' rows, the rebuilt modality graphs
        self.ui_adj = SparseGraph(with_self_loops_sym(bipartite_adjacency(dataset)))
        inter = dataset.inter_matrix(form="csr").astype(np.float32)
        inter.sum_duplicates()
        inter.data[:] = 1.0
        self.inter = inter  # [n_users, n_items] 0/1
        n_real_users = self.n_users - 1
        n_nodes = self.n_users + self.n_items
        self.graph_nnz = 2 * n_real_users * self.rebuild_k + n_nodes
        # persistent: a checkpoint evaluates with the graphs it was trained with
        self.register_buffer("diffusion_built", torch.zeros((), dtype=torch.bool))
        self.register_buffer("diffusion_items", torch.zeros(self.n_modalities, n_real_users, self.rebuild_k, dtype=torch.long))
        self.register_buffer("diffusion_keep", torch.zeros(self.n_modalities, self.graph_nnz, dtype=torch.bool))
        self.modal_adj = None  # nn.ModuleList of SparseGraph once built (never inside a forward pass: get_flops)

    # --- content ------------------------------------------------------------------------------
    def modality_features(self) -> list[torch.Tensor]:
        """Each modality's projected item content [n_items, d] (before normalisation)."""
        out = []
        for t, content in zip(self.transforms, self.modalities.per_modality()):
            out.append(t(content) if self.feat_transform == "linear" else F.leaky_relu(t(content), 0.2))
        return out

    # --- part 1: the diffusion step -----------------------------------------------------------
    def user_rows(self, users: np.ndarray) -> torch.Tensor:
        """The users' 0/1 training rows as a dense [len(users), n_items] tensor."""
        return torch.from_numpy(self.inter[users].toarray()).to(self.item_embedding.weight.device)

    def diffusion_loss(self, m: int, x0: torch.Tensor, feature: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Modality ``m``'s ``mean(weight · mse) + e_loss · mean(gc)`` for the batch ``x0`` [B, n_items];
        ``target`` is ``x0 @ E_item`` [B, d]."""
        t = torch.randint(0, self.schedule.steps, (x0.shape[0],), device=x0.device)
        x_hat = self.denoisers[m](self.schedule.q_sample(x0, t), t)
        mse = (x0 - x_hat).square().mean(dim=1)
        gc = (x_hat @ feature - target).square().mean(dim=1)
        return (self.schedule.loss_weight(t) * mse).mean() + self.e_loss * gc.mean()

    def diffusion_epoch(self) -> float:
        """One pass of the denoisers over all users (shuffled, padding user left out); the mean batch loss."""
        if self._diffusion_optimizer is None:
            self._diffusion_optimizer = torch.optim.Adam(self.denoisers.parameters(), lr=self.diffusion_learning_rate)
        with torch.no_grad():
            item_e = self.item_embedding.weight.clone()
            item_e[0] = 0.0
            features = [f.clone() for f in self.modality_features()]
            for f in features:
                f[0] = 0.0  # the padding item
        users = np.random.permutation(np.arange(1, self.n_users))
        total, batches = 0.0, 0
        for start in range(0, len(users), self.diffusion_batch_size):
            x0 = self.user_rows(users[start : start + self.diffusion_batch_size])
            target = x0 @ item_e  # [B, d]
            self._diffusion_optimizer.zero_grad(set_to_none=True)
            for m, feature in enumerate(features):  # the summed loss's gradient, one modality's graph alive at a time
                loss = self.diffusion_loss(m, x0, feature, target)
                loss.backward()
                total += loss.item()
            self._diffusion_optimizer.step()
            batches += 1
        self._diffusion_optimizer.zero_grad(set_to_none=True)  # RecBole's optimiser must not move them
        self.last_diffusion_loss = total / max(batches, 1)
        return self.last_diffusion_loss

    # --- part 2: the rebuilt modality graphs --------------------------------------------------
    @torch.no_grad()
    def rebuild_graphs(self):
        """Each user's ``rebuild_k`` top denoised items per modality, and a fresh kept-entry mask."""
        users = np.arange(1, self.n_users)
        for start in range(0, len(users), self.diffusion_batch_size):
            batch = users[start : start + self.diffusion_batch_size]
            x0 = self.user_rows(batch)
            for m, denoiser in enumerate(self.denoisers):
                x = self.schedule.p_sample(denoiser, x0, self.sampling_steps, self.sampling_noise)
                x[:, 0] = float("-inf")  # never the padding item
                self.diffusion_items[m, start : start + len(batch)] = torch.topk(x, self.rebuild_k, dim=1).indices
        self.diffusion_keep.copy_(torch.rand(self.diffusion_keep.shape, device=self.diffusion_keep.device) < self.keep_rate)
        self.diffusion_built.fill_(True)
        self.build_modal_graphs()

    def modal_graph_matrix(self, m: int) -> sp.csr_matrix:
        """Modality ``m``'s rebuilt graph from the stored top items and kept-entry mask."""
        items = self.diffusion_items[m].cpu().numpy()  # [n_users - 1, k]
        users = np.repeat(np.arange(1, self.n_users), items.shape[1])
        adj = with_self_loops_sym(bipartite_from_edges(users, items.ravel(), self.n_users, self.n_items))
        if adj.nnz != self.graph_nnz:  # the top items of a user are distinct: the entry count is fixed
            raise RuntimeError(f"modality graph has {adj.nnz} entries, expected {self.graph_nnz}")
        keep = self.diffusion_keep[m].cpu().numpy()
        adj.data = np.where(keep, adj.data / self.keep_rate, 0.0).astype(np.float32)
        adj.eliminate_zeros()
        return adj

    def build_modal_graphs(self):
        if bool(self.diffusion_built):
            device = self.item_embedding.weight.device
            self.modal_adj = nn.ModuleList(SparseGraph(self.modal_graph_matrix(m)) for m in range(self.n_modalities)).to(device)
        else:
            self.modal_adj = None

    def modal_graphs(self):
        """One SparseGraph per modality, or None per modality (identity) before the first rebuild."""
        return [None] * self.n_modalities if self.modal_adj is None else list(self.modal_adj)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=strict, assign=assign)
        self.build_modal_graphs()  # from the loaded top items and mask
        return result

    # --- the recommender ----------------------------------------------------------------------
    def propagate(self, h: torch.Tensor) -> torch.Tensor:
        out = h
        for _ in range(self.n_layers):
            h = self.ui_adj(h)
            out = out + h
        return out

    def compute_all(self):
        """The main output (``forward_MM``): users [U, d], items [I, d]."""
        return self._forward()[:2]

    def _forward(self):
        d, n_u = self.embedding_size, self.n_users
        user_e = self.user_embedding.weight
        item_e = self.cold_id_table(self.item_embedding.weight)  # cold items when evaluating: see cold_item_id
        ego = torch.cat([user_e, item_e], dim=0)  # [N, d]
        content = [torch.cat([user_e, F.normalize(f, dim=1)], dim=0) for f in self.modality_features()]  # [N, d] each
        first = self.ui_adj(torch.cat(content, dim=1))  # [N, M d]: all modalities in one product
        second = self.ui_adj(torch.cat([torch.cat([first[:n_u, m * d : (m + 1) * d], item_e], dim=0)
                                        for m in range(self.n_modalities)], dim=1))
        weights = torch.softmax(self.modal_weight, dim=0)
        graphs = self.modal_graphs()
        modal, views = 0, []
        for m, graph in enumerate(graphs):
            cols = slice(m * d, (m + 1) * d)
            on_graph = ego if graph is None else graph(ego)
            modal = modal + weights[m] * (first[:, cols] + second[:, cols] + self.ris_adj_lambda * on_graph)
            views.append(content[m] if graph is None else graph(content[m]))
        out = self.propagate(modal) + self.ris_lambda * F.normalize(modal, dim=1)
        return out[:n_u], out[n_u:], views

    def cl_views(self, views: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The modality views ``Σ_l Â^l G_m [E_user; f_m]`` (``forward_cl_MM``), as (users, items)."""
        d = self.embedding_size
        out = self.propagate(torch.cat(views, dim=1))  # one product per layer for all views
        return [torch.split(out[:, m * d : (m + 1) * d], [self.n_users, self.n_items]) for m in range(len(views))]

    def calculate_loss(self, interaction):
        self.restore_user_e = self.restore_item_e = None  # training resumes: cache is stale
        if self.train_steps % self.steps_per_epoch == 0:
            self.diffusion_epoch()
            self.rebuild_graphs()
        self.train_steps += 1
        users = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        user_all, item_all, views = self._forward()
        u_e = user_all.index_select(0, users)
        diff = (u_e * item_all.index_select(0, pos)).sum(-1) - (u_e * item_all.index_select(0, neg)).sum(-1)
        loss = -F.logsigmoid(diff).mean()
        if self.reg_weight > 0:
            loss = loss + self.reg_weight * (self.user_embedding.weight.square().sum() + self.item_embedding.weight.square().sum())
        if self.ssl_reg > 0:
            loss = loss + self.ssl_reg * self.contrastive_loss(user_all, item_all, self.cl_views(views), users, pos)
        return loss

    def contrastive_loss(self, user_all, item_all, views, users, pos) -> torch.Tensor:
        if self.cl_method == "main":
            pairs = [((user_all, item_all), v) for v in views]
        else:
            pairs = [(views[a], views[b]) for a in range(len(views)) for b in range(a + 1, len(views))]
        cl = 0
        for (u1, i1), (u2, i2) in pairs:
            cl = cl + info_nce(u1, u2, users, self.temperature) + info_nce(i1, i2, pos, self.temperature)
        return cl
