"""Gaussian diffusion over item-length user vectors (DiffRec's form, as DiffMM uses it): the noise
schedule, the forward noising, the denoising MLP and the reverse pass.

A user's training row ``x_0`` (0/1 over the items) is noised to ``x_t = sqrt(ᾱ_t) x_0 +
sqrt(1 - ᾱ_t) ε`` for ``t`` in ``0 .. steps-1``; the denoiser predicts ``x_0`` from ``(x_t, t)``.
The schedule: ``1 - ᾱ_t`` evenly spaced from ``noise_scale * noise_min`` to ``noise_scale *
noise_max``, ``β_t = 1 - ᾱ_t / ᾱ_{t-1}`` (capped at 0.999), then ``β_0`` fixed to 1e-4 and ``ᾱ``
recomputed from the ``β`` (the reference's ``beta_fixed``). All schedule arithmetic in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


class DiffusionSchedule(nn.Module):
    """The constants of a ``steps``-step schedule, as non-persistent float64 buffers [steps]."""

    def __init__(self, steps: int, noise_scale: float, noise_min: float, noise_max: float):
        super().__init__()
        if steps < 1:
            raise ValueError(f"diffusion steps must be at least 1, got {steps}")
        if noise_scale <= 0:
            raise ValueError(f"noise_scale must be positive, got {noise_scale}")
        self.steps = steps
        variance = np.linspace(noise_scale * noise_min, noise_scale * noise_max, steps, dtype=np.float64)
        alpha_bar = 1.0 - variance
        betas = np.empty(steps)
        betas[0] = 1.0 - alpha_bar[0]
        betas[1:] = np.minimum(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.999)
        betas[0] = 1e-4  # beta_fixed
        betas = torch.from_numpy(betas)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod[:-1]])
        for name, value in {
            "betas": betas,
            "alphas_cumprod": alphas_cumprod,
            "sqrt_alphas_cumprod": alphas_cumprod.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - alphas_cumprod).sqrt(),
            # q(x_{t-1} | x_t, x_0): mean = coef1 x_0 + coef2 x_t
            "posterior_variance": betas * (1.0 - prev) / (1.0 - alphas_cumprod),
            "posterior_mean_coef1": betas * prev.sqrt() / (1.0 - alphas_cumprod),
            "posterior_mean_coef2": (1.0 - prev) * (1.0 - betas).sqrt() / (1.0 - alphas_cumprod),
        }.items():
            self.register_buffer(name, value, persistent=False)
        var = self.posterior_variance
        self.register_buffer("posterior_log_variance", torch.log(torch.cat([var[1:2], var[1:]])), persistent=False)

    def at(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """``name``'s values at steps ``t`` [B] as float32 [B, 1], to broadcast over a [B, n] batch."""
        return getattr(self, name)[t].float().unsqueeze(1)

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        a = self.alphas_cumprod[t]
        return a / (1.0 - a)

    def loss_weight(self, t: torch.Tensor) -> torch.Tensor:
        """The reference's per-sample weight of the reconstruction error: SNR(t-1) - SNR(t), and 1 at t = 0. [B]"""
        w = self.snr((t - 1).clamp_min(0)) - self.snr(t)
        return torch.where(t == 0, torch.ones_like(w), w).float()

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        noise = torch.randn_like(x0) if noise is None else noise
        return self.at("sqrt_alphas_cumprod", t) * x0 + self.at("sqrt_one_minus_alphas_cumprod", t) * noise

    @torch.no_grad()
    def p_sample(self, denoiser: nn.Module, x0: torch.Tensor, sampling_steps: int = 0,
                 sampling_noise: bool = False) -> torch.Tensor:
        """The reverse pass from ``x_{sampling_steps-1}`` (``x0`` itself when 0) down through every step
        ``steps-1 .. 0``, each ``x <- coef1 · denoiser(x, t) + coef2 · x`` (+ noise when asked, not at 0)."""
        if sampling_steps > 0:
            x = self.q_sample(x0, torch.full((x0.shape[0],), sampling_steps - 1, dtype=torch.long, device=x0.device))
        else:
            x = x0
        for i in reversed(range(self.steps)):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=x.device)
            mean = self.at("posterior_mean_coef1", t) * denoiser(x, t, dropout=False) + self.at("posterior_mean_coef2", t) * x
            if sampling_noise and i > 0:
                mean = mean + torch.exp(0.5 * self.at("posterior_log_variance", t)) * torch.randn_like(x)
            x = mean
        return x


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of steps ``t`` [B]: ``[cos(t f) | sin(t f)]`` with ``f_j = 10000^(-j / (dim//2))``,
    a zero column appended when ``dim`` is odd. [B, dim]"""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half, 1))
    angle = t.float().unsqueeze(1) * freqs.unsqueeze(0)
    emb = torch.cat([torch.cos(angle), torch.sin(angle)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


LANES = 16  # float32 lanes of an AVX-512 register: the item-width output layer is computed at a multiple of this


class _FirstLayer(torch.autograd.Function):
    """``linear([x | emb], W, b)``, the denoiser's first layer, with a backward that never forms the gradient
    of ``x`` unless asked: the noised rows are no parameter's, and autograd's ``Linear`` over the concatenated
    input computes the whole [B, n_items + time] input gradient to keep its last ``time`` columns, a product as
    large as the layer's. The forward is ``Linear``'s own ``addmm``."""

    @staticmethod
    def forward(ctx, x, emb, weight, bias):
        inp = torch.cat([x, emb], dim=1)
        ctx.save_for_backward(inp, weight)
        ctx.n = x.shape[1]
        return torch.addmm(bias, inp, weight.t())

    @staticmethod
    def backward(ctx, grad):
        inp, weight = ctx.saved_tensors
        n = ctx.n
        grad_x = grad @ weight[:, :n] if ctx.needs_input_grad[0] else None
        grad_emb = grad @ weight[:, n:] if ctx.needs_input_grad[1] else None
        grad_w = grad.t() @ inp if ctx.needs_input_grad[2] else None
        grad_b = grad.sum(0) if ctx.needs_input_grad[3] else None
        return grad_x, grad_emb, grad_w, grad_b


def _wide_linear(h: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """``layer(h)`` for the item-width output layer, its weight padded with zero rows to a multiple of
    :data:`LANES` and the extra columns cut off: the same values (each output is the same dot product), and
    MKL's one-thread product ran about 1.5x faster at TikTok's 6,720 columns than at its 6,710
    (``benchmarks/diffmm_denoiser.md``)."""
    pad = -layer.out_features % LANES
    if not pad:
        return layer(h)
    weight = F.pad(layer.weight, (0, 0, 0, pad))
    return F.linear(h, weight, F.pad(layer.bias, (0, pad)))[:, : layer.out_features]


class Denoiser(nn.Module):
    """``x_t, t -> x̂_0``: ``[dropout(x_t) | Linear(emb(t))]`` through tanh layers ``n + time -> dims[-1] -> ...
    -> dims[0]`` and on ``dims[0] -> ... -> dims[-1] -> n`` (tanh between, none on the output), as the
    reference's ``in_dims = (dims + [n])[::-1]``, ``out_dims = dims + [n]``.

    Weights ``N(0, 2 / (fan_in + fan_out))``, biases ``N(0, 1e-3)`` (the reference's init).

    The forward computes that definition in a faster form at item-length widths, of the same values and
    random draws (``tests/test_diffmm.py`` checks it against the plain form, gradients included): the first
    layer by :class:`_FirstLayer` (no gradient of the noised rows unless asked), the item-width output layer
    by :func:`_wide_linear` (padded to a multiple of :data:`LANES` columns).
    """

    def __init__(self, n: int, dims: list[int], time_emb_size: int, dropout: float = 0.5, norm: bool = False):
        super().__init__()
        self.time_emb_size = time_emb_size
        self.norm = norm
        self.time_layer = nn.Linear(time_emb_size, time_emb_size)
        ins = [n + time_emb_size, *dims[::-1]]
        outs = [*dims, n]
        self.in_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(ins[:-1], ins[1:]))
        self.out_layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(outs[:-1], outs[1:]))
        self.drop = nn.Dropout(dropout)
        for layer in [self.time_layer, *self.in_layers, *self.out_layers]:
            out_f, in_f = layer.weight.shape
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0 / (in_f + out_f)))
            nn.init.normal_(layer.bias, 0.0, 0.001)

    def forward(self, x: torch.Tensor, t: torch.Tensor, dropout: bool = True) -> torch.Tensor:
        emb = self.time_layer(timestep_embedding(t, self.time_emb_size))
        if self.norm:
            x = F.normalize(x, dim=-1)
        if dropout:
            x = self.drop(x)
        first, *rest = self.in_layers
        h = torch.tanh(_FirstLayer.apply(x, emb, first.weight, first.bias))
        for layer in rest:
            h = torch.tanh(layer(h))
        last = len(self.out_layers) - 1
        for j, layer in enumerate(self.out_layers):
            h = _wide_linear(h, layer) if j == last else layer(h)
            if j < last:
                h = torch.tanh(h)
        return h
