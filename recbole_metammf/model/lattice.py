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
time and stored as sparse edge lists; an epoch is ``ceil(#train interactions / train_batch_size)``
steps.

Against the reference code (MMRec's ``src/models/lattice.py`` and ``configs/model/LATTICE.yaml``),
the definitions differ where a key says so; the second value of each key below is the reference's:

* **User-item graph** (``ui_graph_norm``). ``sym`` (ours): ``D^-1/2 A D^-1/2``, no self-loops.
  ``mean_self_loops``: ``D~^-1 (A + I)`` with ``D~`` the row sums of ``A + I`` (degree + 1), the
  reference's ``get_adj_mat`` (``normalized_adj_single(adj_mat + sp.eye(...))``, ``d_inv = rowsum^-1``,
  ``d_mat_inv.dot(adj)``): each node averages itself and its neighbours; not symmetric.
* **Mixing and signs** (``item_graph_mode``). ``per_modality`` (ours): cosines clamped at 0 in
  both kNN graphs; each modality's learned graph normalised on its own, then
  ``A = sum_m w_m ((1 - lambda) norm(S^m) + lambda norm(R^m))``. ``mix_first``: the top-k
  cosines are kept with their sign in both graphs (the reference's ``build_knn_neighbourhood``
  scatters the top-k values as they are), the learned kNN graphs are mixed *before* one
  normalisation and the frozen ones after theirs:
  ``A = (1 - lambda) norm(sum_m w_m S^m) + lambda sum_m w_m norm(R^m)`` (the reference's
  ``compute_normalized_laplacian(weight[0] * image_adj + weight[1] * text_adj)``; its original
  graphs are normalised at construction). ``norm`` is ``D^-1/2 A D^-1/2``, ``D`` the row sums;
  an item whose signed degree is not positive drops out of that graph (the reference: NaN).
* **When the learned graph is built** (``item_graph_update``). ``every_step`` (ours): the
  neighbour sets are re-found at the first step of every epoch (after the first); the edge
  weights (cosines of the current projections) and ``alpha`` are recomputed and differentiable at
  every step, and evaluation uses the current weights on the last neighbour sets.
  ``first_batch``: the reference's schedule: ``pre_epoch_processing`` sets ``build_item_graph``,
  so the first batch of an epoch rebuilds the graph (neighbours and weights) from the current
  projections *with* gradient, the one step in which the projections, the features and
  ``alpha`` are trained; the other batches use that graph detached (``self.item_adj.detach()``),
  so only the ID embeddings learn; ``full_sort_predict`` rebuilds it from the current
  parameters (``build_item_graph=True``) at every evaluation.
* **Fine-tuned content** (``finetune_features``): the reference loads the features with
  ``nn.Embedding.from_pretrained(..., freeze=False)``, so the learned graph's input is trained
  (``True``); ours keeps it fixed (``False``). The frozen graphs are built once from the initial
  features in both (the reference from ``.weight.detach()``, cached to a file).
* **Not keys.** The reference's ``reg_weight`` (first grid value 0) is ``1/2`` the squared norms
  of the batch's *final* user / item vectors over the batch size: our ``content_reg_weight`` with
  ``require_pow: True``; our ``reg_weight`` (ID embeddings) has no counterpart. It decays the
  learning rate by ``0.96^(epoch / 50)``; ours does not. Both read raw features by default
  (``standardize_modalities: False``, chosen on validation: ``benchmarks/definitions.md``; ``True``
  standardises the dense ones, for both graphs).
"""

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn as nn
import torch.nn.functional as F
from recbole.model.init import xavier_uniform_initialization

from recbole_metammf.layers.content import TunableContent
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

UI_GRAPH_NORMS = ("sym", "mean_self_loops")
ITEM_GRAPH_MODES = ("per_modality", "mix_first")
ITEM_GRAPH_UPDATES = ("every_step", "first_batch")


def _choice(config, key: str, choices: tuple) -> str:
    """``config[key]`` (the first choice when unset), checked against ``choices``."""
    value = str(config[key] or choices[0]).lower()
    if value not in choices:
        raise ValueError(f"{key} must be one of {choices}, got '{config[key]}'")
    return value


def user_item_graph(dataset, norm: str) -> sp.csr_matrix:
    """The LightGCN operator: ``D^-1/2 A D^-1/2`` (``sym``) or ``D~^-1 (A + I)`` (``mean_self_loops``)."""
    adj = bipartite_adjacency(dataset)
    if norm == "sym":
        return normalise(adj, "sym")
    return normalise(adj + sp.identity(adj.shape[0], dtype=np.float32, format="csr"), "mean")


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
        self.ui_graph_norm = _choice(config, "ui_graph_norm", UI_GRAPH_NORMS)
        self.item_graph_mode = _choice(config, "item_graph_mode", ITEM_GRAPH_MODES)
        self.item_graph_update = _choice(config, "item_graph_update", ITEM_GRAPH_UPDATES)
        self.steps_per_epoch = steps_per_epoch(config, dataset)
        self.train_steps = 0

        # define layers
        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.apply(xavier_uniform_initialization)
        self.content = TunableContent(self.modalities, config["finetune_features"])  # the projections' input
        self.projections = nn.ModuleList(
            nn.Linear(spec.dim, self.feat_embedding_size) for spec in self.modalities.specs
        )
        self.modal_weight = nn.Parameter(torch.zeros(len(self.modalities.specs)))  # softmax -> uniform at start

        # graphs, built once: user-item (LightGCN) and each modality's frozen kNN graph of the initial content
        self.ui_adj = SparseGraph(user_item_graph(dataset, self.ui_graph_norm))
        signed = self.item_graph_mode == "mix_first"
        self.raw_adj = nn.ModuleList(
            SparseGraph(normalise(knn_graph(raw, self.knn_k, weighted=True, chunk_size=self.chunk_size, signed=signed), "sym"))
            for raw in raw_modalities(self.modalities)
        )
        # neighbour sets of the learned graphs (buffers: they move with the model), refreshed once per epoch
        self.refresh_learned_neighbours()
        self._epoch_graph = None  # item_graph_update first_batch: the epoch's first-batch graph, detached

    def projected(self) -> list[torch.Tensor]:
        return [proj(x) for proj, x in zip(self.projections, self.content(self.modalities))]  # [I, f] each

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

    def item_graph(self) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The combined item-item graph ``A = (1 - lambda) L + lambda sum_m w_m R^m`` from the current
        parameters: (``L``'s edge values on each modality's learned edges [E_m], ``w`` [M])."""
        weights = torch.softmax(self.modal_weight, dim=0)  # [M]
        edges, sims = [], []
        for m, p in enumerate(self.projected()):
            p = F.normalize(p, dim=-1)
            edges.append(self.learned_edges(m))
            sims.append(getattr(self, f"learned_pattern_{m}").dot(p, p))  # [E_m], cosine of the current projections
        if self.item_graph_mode == "per_modality":  # clamped, each modality normalised, then mixed
            values = [w * sym_normalise_edges(rows, cols, sim.clamp_min(0), self.n_items)
                      for w, (rows, cols), sim in zip(weights, edges, sims)]
        else:  # signed, mixed, then normalised once (a pair in several modalities' graphs: its terms add up)
            rows, cols = (torch.cat(part) for part in zip(*edges))
            mixed = torch.cat([w * sim for w, sim in zip(weights, sims)])
            values = list(sym_normalise_edges(rows, cols, mixed, self.n_items).split([len(s) for s in sims]))
        return values, weights

    def item_graph_propagate(self, h: torch.Tensor, graph) -> torch.Tensor:
        """``A h`` for the combined item-item graph ``graph`` (:meth:`item_graph`)."""
        values, weights = graph
        out = 0
        for m, (value, raw) in enumerate(zip(values, self.raw_adj)):
            learned = getattr(self, f"learned_pattern_{m}").spmm(value, h)
            out = out + (1 - self.lambda_coeff) * learned + self.lambda_coeff * weights[m] * raw(h)
        return out  # [I, d]

    def current_item_graph(self):
        """The item-item graph this call uses, rebuilt when ``item_graph_update`` says so."""
        if not self.training:
            if self.item_graph_update == "first_batch":  # rebuilt from the current parameters to evaluate
                self.refresh_learned_neighbours()
            return self.item_graph()
        first = self.train_steps % self.steps_per_epoch == 0
        self.train_steps += 1
        if self.item_graph_update == "every_step":
            if first and self.train_steps > 1:
                self.refresh_learned_neighbours()
            return self.item_graph()
        if first:  # built with gradient for this step, then frozen for the rest of the epoch
            self.refresh_learned_neighbours()
            values, weights = graph = self.item_graph()
            self._epoch_graph = ([v.detach() for v in values], weights.detach())
            return graph
        return self._epoch_graph

    def compute_all(self):
        graph = self.current_item_graph()
        h = item_ids = self.cold_id_table(self.item_embedding.weight)  # [I, d]; cold items: see cold_item_id
        for _ in range(self.n_layers):
            h = self.item_graph_propagate(h, graph)  # [I, d]
        ego = torch.cat([self.user_embedding.weight, item_ids], dim=0)  # [U+I, d]
        user_g, item_g = torch.split(lightgcn_propagate(ego, self.ui_adj, self.n_ui_layers), [self.n_users, self.n_items])
        return user_g, item_g + F.normalize(h, dim=-1)

    def reg_embeddings(self, users, items_list):
        return [self.user_embedding(users)] + [self.item_embedding(items) for items in items_list]
