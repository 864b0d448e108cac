"""MetaMMF's item-specific multimodal fusion (SPEC section 3).

A meta information extractor reads an item's concatenated modality vector
``x_i`` and produces a small meta vector ``s_i``; every layer of the fusion
network then uses an item-specific weight

    W_i = M + T x3 s_i                       (full)
    W_i = M + A · diag(C s_i) · B            (cp: the paper's CP form, rank R)
    W_i = M + (s_i · sum_r C_r) · (A · B)    (collapsed: what the released CPDLayer computes)

No per-item (in x out) weight is ever built: each form is evaluated as a few
matmuls whose memory grows with n·d_s·min(in, out) (full) or n·R (cp), not
n·in·out. ``item_weights`` builds the explicit per-item weights; it exists for
tests and the benchmark's comparison with the released code, never for training.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMS = ("full", "cp", "collapsed")
CONTENT_SCALES = ("rms", "gate", "none")


def project(h, weight: torch.Tensor) -> torch.Tensor:
    """``h @ weight`` where ``h`` is a tensor [n, in] or a list of column blocks of it.

    With blocks, each block meets its own rows of ``weight``: the product is the same,
    but autograd computes no input gradient for a block that needs none (the constant
    dense features beside a learned token embedding), which saves the largest matmul
    of the backward pass.
    """
    if torch.is_tensor(h):
        return h @ weight
    out, start = None, 0
    for part in h:
        end = start + part.shape[1]
        y = part @ weight[start:end]
        out = y if out is None else out + y
        start = end
    return out


def group_blocks(parts, concat=None) -> torch.Tensor | list[torch.Tensor]:
    """Column blocks of the input, adjacent blocks of equal ``requires_grad`` concatenated (by
    ``concat``, default ``torch.cat`` on the last dim); a single tensor when one block remains
    (or when given a tensor)."""
    if torch.is_tensor(parts):
        return parts
    groups: list[list[torch.Tensor]] = []
    for part in parts:
        if groups and groups[-1][0].requires_grad == part.requires_grad:
            groups[-1].append(part)
        else:
            groups.append([part])
    concat = concat or (lambda group: torch.cat(group, dim=-1))
    blocks = [g[0] if len(g) == 1 else concat(g) for g in groups]
    return blocks[0] if len(blocks) == 1 else blocks


def side_by_side(blocks: list[torch.Tensor]) -> torch.Tensor | None:
    """``torch.cat(blocks, -1)`` as a view, without copying, when the 2-D blocks are adjacent column
    slices of one buffer in order (as ModalityEncoder's dense modalities are); None otherwise."""
    first = blocks[0]
    if first.dim() != 2 or first.stride(1) != 1:
        return None
    storage, cols = first.untyped_storage().data_ptr(), 0
    for block in blocks:
        if (block.dim() != 2 or block.dtype != first.dtype or block.device != first.device
                or block.untyped_storage().data_ptr() != storage or block.stride() != first.stride()
                or block.shape[0] != first.shape[0] or block.storage_offset() != first.storage_offset() + cols):
            return None
        cols += block.shape[1]
    if cols > first.stride(0) and first.shape[0] > 1:  # the columns would run into the next row
        return None
    return first.as_strided((first.shape[0], cols), first.stride(), first.storage_offset())


def as_tensor(h) -> torch.Tensor:
    return h if torch.is_tensor(h) else torch.cat(list(h), dim=-1)


class MetaInfoExtractor(nn.Module):
    """``s_i = W2 · relu(W1 · x_i + b1) + b2`` (no activation on ``s_i``)."""

    def __init__(self, in_dim: int, meta_dim: int, hidden_dim: int | None = None):
        super().__init__()
        hidden_dim = hidden_dim or in_dim  # the released code uses hidden = d_in
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, meta_dim))

    def forward(self, x) -> torch.Tensor:
        """x: [n, in], or a list of its column blocks (see :func:`project`)."""
        if torch.is_tensor(x):
            return self.net(x)  # [n, d_s]
        first, act, last = self.net
        return last(act(project(x, first.weight.t()) + first.bias))  # [n, d_s]


class MetaFusionLayer(nn.Module):
    """One item-specific linear map ``h -> h · W_i`` (no bias)."""

    def __init__(self, in_dim: int, out_dim: int, meta_dim: int, form: str = "cp", rank: int = 16):
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"fusion_form must be one of {FORMS}, got '{form}'")
        self.in_dim, self.out_dim, self.meta_dim, self.form, self.rank = in_dim, out_dim, meta_dim, form, rank
        self.M = nn.Parameter(torch.empty(in_dim, out_dim))  # shared by all items
        if form == "full":
            self.T = nn.Parameter(torch.empty(meta_dim, in_dim, out_dim))  # T_k, k = 1..d_s
        else:
            self.A = nn.Parameter(torch.empty(in_dim, rank))
            self.B = nn.Parameter(torch.empty(rank, out_dim))
            self.C = nn.Parameter(torch.empty(rank, meta_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # As the reference code (SPEC section 3, Initialisation): Xavier-uniform on M.
        # full: Xavier on T viewed as (d_s, in*out), whose huge fan starts the item-specific
        # part near zero, so training starts from one shared fusion.
        # cp / collapsed: each factor A, B, C Xavier-uniform at its own shape, no extra
        # down-scaling of C (the product of three factors already starts small).
        nn.init.xavier_uniform_(self.M)
        if self.form == "full":
            bound = math.sqrt(6.0 / (self.meta_dim + self.in_dim * self.out_dim))
            nn.init.uniform_(self.T, -bound, bound)
        else:
            nn.init.xavier_uniform_(self.A)
            nn.init.xavier_uniform_(self.B)
            nn.init.xavier_uniform_(self.C)

    def num_parameters_formula(self) -> int:
        """Parameter count by the paper's formulas."""
        shared = self.in_dim * self.out_dim
        if self.form == "full":
            return shared + self.meta_dim * self.in_dim * self.out_dim
        return shared + self.rank * (self.in_dim + self.out_dim + self.meta_dim)

    def input_weights(self) -> list[torch.Tensor]:
        """The matrices this layer multiplies its input by (before anything item-specific):
        ``[M, A]`` (cp, collapsed), ``[M, [T_1 .. T_ds]]`` (full, in > out) or ``[M]`` (full,
        in <= out, whose Khatri-Rao product needs the input itself). A caller may compute
        these products together with others that share the input (see
        :meth:`MetaFusionNetwork.forward`) and hand them to :meth:`combine`."""
        if self.form == "full":
            if self.in_dim <= self.out_dim:
                return [self.M]
            return [self.M, self.T.permute(1, 0, 2).reshape(self.in_dim, self.meta_dim * self.out_dim)]  # [in, d_s*out]
        return [self.M, self.A]

    def combine(self, projections: list[torch.Tensor], s: torch.Tensor, h) -> torch.Tensor:
        """The layer's output from ``[h @ w for w in input_weights()]``, ``s`` and (full, in <= out) ``h``."""
        y = projections[0]  # h · M, [n, out]
        n = s.shape[0]
        if self.form == "full":
            if self.in_dim <= self.out_dim:
                h = as_tensor(h)
                # (s ⊗ h) · T, one matmul over the d_s·in Khatri-Rao features
                z = (s.unsqueeze(2) * h.unsqueeze(1)).reshape(n, self.meta_dim * self.in_dim)  # [n, d_s*in]
                return y + z @ self.T.reshape(self.meta_dim * self.in_dim, self.out_dim)
            # h · [T_1 .. T_ds], then weight the d_s outputs by s
            hz = projections[1].reshape(n, self.meta_dim, self.out_dim)  # [n, d_s, out]
            return y + torch.einsum("nko,nk->no", hz, s)
        if self.form == "cp":
            return y + (projections[1] * (s @ self.C.t())) @ self.B  # [n, R] * [n, R] -> [n, out]
        # collapsed: the released code's CPDLayer
        scale = s @ self.C.sum(dim=0)  # [n]
        return y + scale.unsqueeze(1) * (projections[1] @ self.B)

    def forward(self, h, s: torch.Tensor) -> torch.Tensor:
        """h: [n, in] (or a list of its column blocks, see :func:`project`), s: [n, d_s] -> [n, out]."""
        return self.combine([project(h, w) for w in self.input_weights()], s, h)

    def item_weights(self, s: torch.Tensor) -> torch.Tensor:
        """Explicit per-item weights W_i: [n, in, out]. For tests and benchmarks only."""
        if self.form == "full":
            delta = torch.einsum("nk,kio->nio", s, self.T)
        elif self.form == "cp":
            delta = torch.einsum("ir,nr,ro->nio", self.A, s @ self.C.t(), self.B)
        else:
            delta = (s @ self.C.sum(dim=0)).view(-1, 1, 1) * (self.A @ self.B).unsqueeze(0)
        return self.M.unsqueeze(0) + delta

    def extra_repr(self) -> str:
        rank = "" if self.form == "full" else f", rank={self.rank}"
        return f"{self.in_dim} -> {self.out_dim}, form={self.form}{rank}, d_s={self.meta_dim}"


class ContentScale(nn.Module):
    """The scale of the fused content ``e^m``, made independent of the modalities' widths and count.

    Without it (``none``, the paper) ``e^m`` leaves the last fusion layer at a scale set by the
    input: on standardised features ``x · M`` alone has a per-column variance of about
    ``2 · d_in / (d_in + out)`` (Xavier), and the item-specific part and the hidden layers add to it,
    so with a few hundred input columns an item's ``e^m`` starts tens of times longer than its
    RecBole-initialised ID part ``e^c`` and the first scores are the content's random projection.

    * ``rms``: each item's ``e^m`` divided by its root mean square over the ``out`` columns, times a
      learned per-column gain ``g`` (RMSNorm), ``g`` initialised at ``scale``: every item's content
      starts with RMS ``scale`` whatever the input, and keeps the scale ``g`` learns.
    * ``gate``: ``e^m`` times one learned scalar, initialised by :meth:`calibrate` to ``scale`` over
      the RMS of the content at initialisation (the items' directions and relative lengths kept).
    * ``none``: unchanged.

    ``scale`` is the item ID table's RMS at initialisation (the model passes it), so the content
    starts comparable to the ID part.
    """

    def __init__(self, mode: str, out_dim: int, scale: float = 1.0, eps: float = 1e-8):
        super().__init__()
        if mode not in CONTENT_SCALES:
            raise ValueError(f"content_scale must be one of {CONTENT_SCALES}, got '{mode}'")
        self.mode, self.eps = mode, eps
        if mode == "rms":
            self.gain = nn.Parameter(torch.full((out_dim,), float(scale)))
        elif mode == "gate":
            self.gain = nn.Parameter(torch.tensor(float(scale)))
        self.scale = float(scale)

    @torch.no_grad()
    def calibrate(self, content: torch.Tensor) -> None:
        """``gate``: set the gain so that ``content`` (the unscaled e^m of the items) gets RMS ``scale``."""
        if self.mode == "gate":
            rms = content.float().pow(2).mean().sqrt().clamp_min(self.eps)
            self.gain.fill_(self.scale / float(rms))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.mode == "rms":
            return F.rms_norm(h, (h.shape[-1],), self.gain, self.eps)
        if self.mode == "gate":
            return h * self.gain
        return h

    def extra_repr(self) -> str:
        return f"mode={self.mode}, init scale={self.scale:.4g}"


class MetaFusionNetwork(nn.Module):
    """Meta extractor + N meta fusion layers, LeakyReLU between layers, then the content scale
    (:class:`ContentScale`): x [n, d_in] -> e^m [n, out]."""

    def __init__(
        self,
        in_dim: int,
        hidden_sizes: list[int],
        out_dim: int,
        meta_dim: int = 5,
        meta_hidden: int | None = None,
        form: str = "cp",
        rank: int = 16,
        negative_slope: float = 0.01,
        content_scale: str = "none",
        scale: float = 1.0,
    ):
        super().__init__()
        self.extractor = MetaInfoExtractor(in_dim, meta_dim, meta_hidden)
        widths = [in_dim, *hidden_sizes, out_dim]
        self.layers = nn.ModuleList(
            MetaFusionLayer(a, b, meta_dim, form, rank) for a, b in zip(widths[:-1], widths[1:])
        )
        self.negative_slope = negative_slope
        self.output_scale = ContentScale(content_scale, out_dim, scale)

    @classmethod
    def from_config(cls, config, in_dim: int, id_table: torch.Tensor | None = None,
                    content=None) -> "MetaFusionNetwork":
        """The fusion network a MetaMMF model's config describes (its YAML keys).

        ``id_table``: the model's initialised item ID table, whose RMS (real items, padding row 0
        excluded) the content starts at under ``content_scale``, so the two halves of ``[e^m ; e^c]``
        start comparable. ``content``: a callable giving the fusion's input for all items, called
        only when ``content_scale: gate`` needs it to calibrate its factor.
        """
        # a checkpoint saved before the key existed has none in its config: it was trained unscaled
        content_scale = (config["content_scale"] if "content_scale" in config else None) or "none"
        scale = 1.0 if id_table is None else float(id_table.detach()[1:].pow(2).mean().sqrt())
        net = cls(
            content_scale=str(content_scale).lower(),
            scale=scale,
            in_dim=in_dim,
            hidden_sizes=list(config["fusion_hidden_sizes"] or []),
            out_dim=config["fused_size"],
            meta_dim=config["meta_size"],
            meta_hidden=config["meta_hidden_size"],
            form=config["fusion_form"],
            rank=config["cp_rank"],
            negative_slope=config["negative_slope"],
        )
        if content is not None and net.output_scale.mode == "gate":
            net.calibrate(content())
        return net

    # Fast path (default): the meta extractor's first linear layer and the first fusion layer's
    # input products (x·M, x·A) read the same input, so they run as ONE matmul with the weights
    # side by side, x · [W1^T | M | A], whose backward is one matmul too. Same maths as the
    # separate products (tests/test_perf_fusion.py compares them); False runs them apart.
    fuse_input_products = True

    def grouped(self, x):
        """:func:`group_blocks` of ``x``, with runs of constant blocks concatenated once and reused.

        The dense modality blocks of all items are the same buffers every step: their
        concatenation (a copy of [n_items, d]) is cached, keyed by the blocks' storage,
        version counter, shape and stride, and holding the blocks themselves (so their memory
        cannot be reused by another tensor while cached). An in-place change of a block
        (which bumps its version) or a new block (``.to(device)``) recomputes it.
        """
        return group_blocks(x, self._concat_cached)

    def _concat_cached(self, run: list[torch.Tensor]) -> torch.Tensor:
        """``torch.cat(run, -1)``; for constant blocks, a view when they already lie side by side in one
        buffer (:func:`side_by_side`), else from the cache described in :meth:`grouped`."""
        if run[0].requires_grad:
            return torch.cat(run, dim=-1)
        view = side_by_side(run)
        if view is not None:
            return view
        key = tuple((p.data_ptr(), p._version, tuple(p.shape), p.stride(), str(p.device), p.dtype) for p in run)
        hit = self._concat_cache.get(key)
        if hit is None:
            hit = (list(run), torch.cat(run, dim=-1))
            if len(self._concat_cache) >= 4:
                self._concat_cache.pop(next(iter(self._concat_cache)))
            self._concat_cache[key] = hit
        return hit[1]

    @property
    def _concat_cache(self) -> dict:
        cache = self.__dict__.get("_concat_cache_dict")
        if cache is None:
            cache = self.__dict__["_concat_cache_dict"] = {}
        return cache

    def __getstate__(self):  # pickling / deep copies leave the cache behind
        state = self.__dict__.copy()
        state.pop("_concat_cache_dict", None)
        return state

    def forward(self, x) -> torch.Tensor:
        """x: [n, d_in], or the list of per-modality blocks whose concatenation it is.

        Blocks give the same result; the constant (dense-feature) blocks then cost no input
        gradient in the backward pass of the first layer and the meta extractor.
        """
        return self.output_scale(self.fuse(x))

    @torch.no_grad()
    def calibrate(self, x) -> None:
        """Initialise the content scale's gain from the items' unscaled content (``gate``; a no-op otherwise)."""
        if self.output_scale.mode == "gate":
            self.output_scale.calibrate(self.fuse(x))

    def fuse(self, x) -> torch.Tensor:
        """The fusion layers' output before the content scale."""
        x = self.grouped(x)
        first = self.layers[0]
        if self.fuse_input_products:
            lin1, act, lin2 = self.extractor.net
            weights = first.input_weights()
            y = project(x, torch.cat([lin1.weight.t(), *weights], dim=1))  # [n, hidden + out + R]
            pre, *projections = y.split([lin1.out_features, *(w.shape[1] for w in weights)], dim=1)
            s = lin2(act(pre + lin1.bias))  # [n, d_s]
            h = first.combine(projections, s, x)
        else:
            s = self.extractor(x)  # [n, d_s]
            h = first(x, s)
        for layer in self.layers[1:]:
            h = F.leaky_relu(h, self.negative_slope)
            h = layer(h, s)
        return h

    def forward_explicit(self, x: torch.Tensor) -> torch.Tensor:
        """The same network through explicit per-item weights and ``bmm`` (the released code's way)."""
        x = as_tensor(x)
        s = self.extractor(x)
        h = x
        for i, layer in enumerate(self.layers):
            h = torch.bmm(h.unsqueeze(1), layer.item_weights(s)).squeeze(1)
            if i < len(self.layers) - 1:
                h = F.leaky_relu(h, self.negative_slope)
        return self.output_scale(h)
