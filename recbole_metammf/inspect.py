"""A look inside MetaMMF's item-specific fusion, from a saved checkpoint.

    python -m recbole_metammf.inspect --checkpoint saved/MetaMMF_GCN-TIME-PID.pth --out DIR

Reads a ``MetaMMF_MF`` or ``MetaMMF_GCN`` checkpoint (with the dataset it was trained on,
rebuilt by RecBole's ``load_data_and_model``) and writes, for every item of the dataset:

``DIR/fusion.csv``, one row per item (padding excluded), columns

* ``item_id``: the dataset's own item id; ``train_interactions``: its training interactions
  (0 = a cold item);
* ``s_1 .. s_{d_s}``: its meta signal ``s_i`` (SPEC section 3);
* ``deviation``: how far its fusion network is from the shared one, the Frobenius norm of the
  item-specific part ``W_i - M`` summed over the fusion layers (computed from the factors,
  no per-item weight is built: ``full`` ``s^T G s`` with ``G`` the Gram matrix of the slices
  ``T_k``; ``cp`` ``c^T ((A^T A) * (B B^T)) c`` with ``c = C s``; ``collapsed``
  ``|s . sum_r C_r| ||A B||_F``);
* ``share_<modality>``, one column per modality: that modality's share of the fused vector
  ``e^m_i``, by ablation. The modality's input block is set to zero (for a standardised dense
  modality: the average item's features; for a token modality: an empty bag), the whole fusion
  runs again (``s_i`` recomputed from the ablated input), and ``d_m = ||e_i - e_i^(-m)||``.
  ``share_m = d_m / sum_m' d_m'``: the shares of an item sum to 1 (an item that no ablation
  moves gets equal shares). They are relative effects, not an additive decomposition: the
  fusion is non-linear;
* ``dominant``: the modality with the largest share.

``DIR/meta_signal.png``: every item's ``s_i`` projected to 2-D (PCA; ``s_1`` against the
deviation when ``d_s`` = 1), coloured by its dominant modality. ``DIR/modality_shares.png``:
the distribution of each modality's share over the items, and how many items each dominates.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

from recbole_metammf.checkpoint import CheckpointError, load_checkpoint
from recbole_metammf.entry import run_cli

METAMMF_MODELS = ("MetaMMF_MF", "MetaMMF_GCN")


# --- per-item quantities --------------------------------------------------------------------------
def layer_deviation_norms(layer, s: torch.Tensor) -> torch.Tensor:
    """``||W_i - M||_F`` of one :class:`MetaFusionLayer` for every row of ``s`` [n, d_s]: [n]."""
    if layer.form == "full":
        t = layer.T.reshape(layer.meta_dim, -1)  # [d_s, in*out]
        gram = t @ t.t()  # [d_s, d_s]
        sq = ((s @ gram) * s).sum(dim=1)  # s^T G s
    elif layer.form == "cp":
        c = s @ layer.C.t()  # [n, R]
        gram = (layer.A.t() @ layer.A) * (layer.B @ layer.B.t())  # [R, R]
        sq = ((c @ gram) * c).sum(dim=1)
    else:  # collapsed: (s . sum_r C_r) A B
        scale = s @ layer.C.sum(dim=0)  # [n]
        return scale.abs() * torch.linalg.matrix_norm(layer.A @ layer.B)
    return sq.clamp_min(0).sqrt()


@torch.no_grad()
def fusion_signals(fusion, blocks: list[torch.Tensor]) -> dict:
    """s [n, d_s], deviation [n], shares [n, M] (rows sum to 1) of the items whose modality blocks are given.

    ``fusion``: a :class:`~recbole_metammf.layers.fusion.MetaFusionNetwork`; ``blocks``: one
    tensor per modality, the column blocks of the fusion's input ``x`` (``ModalityEncoder.per_modality``).
    """
    from recbole_metammf.layers.fusion import group_blocks

    s = fusion.extractor(group_blocks(list(blocks)))  # [n, d_s]
    deviation = sum(layer_deviation_norms(layer, s) for layer in fusion.layers)  # [n]
    fused = fusion(list(blocks))  # [n, out]
    moved = []
    for m in range(len(blocks)):
        ablated = [torch.zeros_like(b) if j == m else b for j, b in enumerate(blocks)]
        moved.append(torch.linalg.vector_norm(fused - fusion(ablated), dim=1))  # [n]
    moved = torch.stack(moved, dim=1)  # [n, M]
    total = moved.sum(dim=1, keepdim=True)
    equal = torch.full_like(moved, 1.0 / moved.shape[1])
    shares = torch.where(total > 0, moved / total.clamp_min(torch.finfo(moved.dtype).tiny), equal)
    return {"s": s, "deviation": deviation, "shares": shares, "fused": fused}


@torch.no_grad()
def shared_norm(fusion) -> float:
    """``sum_n ||M^n||_F``: the scale against which ``deviation`` reads."""
    return float(sum(torch.linalg.matrix_norm(layer.M) for layer in fusion.layers))


def project_2d(s: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """PCA of ``s`` [n, d_s] to 2-D: (coordinates [n, 2], explained variance ratio of each axis)."""
    centred = s - s.mean(axis=0, keepdims=True)
    _, sing, vt = np.linalg.svd(centred, full_matrices=False)
    coords = centred @ vt[:2].T
    var = sing**2
    ratio = (var[:2] / var.sum()).tolist() if var.sum() > 0 else [0.0, 0.0]
    return coords, ratio


# --- figures --------------------------------------------------------------------------------------
def _plot(s: np.ndarray, deviation: np.ndarray, shares: np.ndarray, names: list[str], out: str, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dominant = shares.argmax(axis=1)
    colours = plt.get_cmap("tab10")
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    if s.shape[1] >= 2:
        coords, ratio = project_2d(s)
        xlabel, ylabel = f"PC 1 of s_i ({ratio[0]:.0%})", f"PC 2 of s_i ({ratio[1]:.0%})"
    else:
        coords = np.stack([s[:, 0], deviation], axis=1)
        xlabel, ylabel = "s_i", "deviation ||W_i - M||_F"
    size = float(np.clip(4000 / max(len(s), 1), 2, 12))  # points: visible for few items, no blot for many
    for m, name in enumerate(names):
        sel = dominant == m
        ax.scatter(coords[sel, 0], coords[sel, 1], s=size, alpha=0.5, color=colours(m % 10),
                   label=f"{name} ({sel.sum()})", rasterized=True)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"{title}: meta signal of {len(s)} items, by dominant modality", fontsize=9)
    ax.legend(markerscale=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "meta_signal.png"), dpi=120)
    plt.close(fig)

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [2, 1]})
    bins = np.linspace(0, 1, 41)
    for m, name in enumerate(names):
        left.hist(shares[:, m], bins=bins, histtype="step", linewidth=1.5, color=colours(m % 10),
                  label=f"{name} (mean {shares[:, m].mean():.2f})")
    left.set_xlabel("share of the fused vector (ablation)")
    left.set_ylabel("items")
    left.legend(fontsize=8)
    counts = np.bincount(dominant, minlength=len(names))
    right.bar(range(len(names)), counts, color=[colours(m % 10) for m in range(len(names))])
    right.set_xticks(range(len(names)), names)
    right.set_ylabel("items dominated")
    fig.suptitle(f"{title}: modality shares of {len(shares)} items", fontsize=9)
    fig.tight_layout()
    fig.savefig(os.path.join(out, "modality_shares.png"), dpi=120)
    plt.close(fig)


# --- the command ----------------------------------------------------------------------------------
def inspect_checkpoint(checkpoint: str, out: str, figures: bool = True) -> dict:
    """Write ``fusion.csv`` (and the figures) for a MetaMMF checkpoint; returns a summary."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise CheckpointError(f"{out}: exists and is not a directory")
    loaded = load_checkpoint(checkpoint, models=METAMMF_MODELS, purpose="inspect")
    model, dataset = loaded.model, loaded.dataset
    signals = fusion_signals(model.fusion, model.modalities.per_modality())
    s = signals["s"][1:].cpu().numpy()  # row 0 is RecBole's padding item
    deviation = signals["deviation"][1:].cpu().numpy()
    shares = signals["shares"][1:].cpu().numpy()
    names = [spec.field for spec in model.modalities.specs]
    item_ids = dataset.id2token(dataset.iid_field, np.arange(1, dataset.item_num))
    counts = np.bincount(
        loaded.train_data.dataset.inter_feat[dataset.iid_field].numpy(), minlength=dataset.item_num
    )[1:]

    os.makedirs(out, exist_ok=True)
    import pandas as pd

    table = pd.DataFrame({"item_id": item_ids, "train_interactions": counts})
    for k in range(s.shape[1]):
        table[f"s_{k + 1}"] = s[:, k]
    table["deviation"] = deviation
    for m, name in enumerate(names):
        table[f"share_{name}"] = shares[:, m]
    table["dominant"] = np.asarray(names, dtype=object)[shares.argmax(axis=1)]
    table.to_csv(os.path.join(out, "fusion.csv"), index=False, float_format="%.6g")
    if figures:
        _plot(s, deviation, shares, names, out, f"{loaded.config['model']} on {loaded.config['dataset']}")
    return {
        "model": loaded.config["model"],
        "dataset": loaded.config["dataset"],
        "items": len(item_ids),
        "meta_size": s.shape[1],
        "modalities": names,
        "mean_share": dict(zip(names, shares.mean(axis=0).round(4).tolist())),
        "dominant": dict(zip(names, np.bincount(shares.argmax(axis=1), minlength=len(names)).tolist())),
        "deviation": {q: float(np.quantile(deviation, p)) for q, p in (("p10", 0.1), ("median", 0.5), ("p90", 0.9))},
        "shared_norm": shared_norm(model.fusion),
        "most_specific": item_ids[np.argsort(-deviation)[:5]].tolist(),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m recbole_metammf.inspect",
        description="Per-item meta signal, fusion deviation and modality shares of a MetaMMF checkpoint.",
    )
    p.add_argument("--checkpoint", required=True, help="a MetaMMF_MF / MetaMMF_GCN checkpoint (saved/MODEL-TIME-PID.pth)")
    p.add_argument("--out", required=True, help="output directory (fusion.csv, meta_signal.png, modality_shares.png)")
    p.add_argument("--no-figures", dest="figures", action="store_false", help="write the CSV only")
    return p


def _main(argv) -> None:
    args = build_parser().parse_args(argv)
    summary = inspect_checkpoint(args.checkpoint, args.out, figures=args.figures)
    dev = summary["deviation"]
    print(f"{args.out}/fusion.csv: {summary['items']} items of {summary['dataset']} ({summary['model']}), "
          f"s_i in {summary['meta_size']} dimensions")
    print("mean modality share: " + ", ".join(f"{k} {v:.3f}" for k, v in summary["mean_share"].items()))
    print("items dominated by: " + ", ".join(f"{k} {v}" for k, v in summary["dominant"].items()))
    print(f"deviation ||W_i - M||_F (sum over layers): p10 {dev['p10']:.4g}, median {dev['median']:.4g}, "
          f"p90 {dev['p90']:.4g}; shared sum ||M||_F = {summary['shared_norm']:.4g}")
    print("most item-specific fusion: " + ", ".join(summary["most_specific"]))
    if args.figures:
        print(f"figures: {args.out}/meta_signal.png, {args.out}/modality_shares.png")


def main(argv=None) -> int:
    """Exit status: 0, or 2 with one line on stderr for a bad checkpoint (``--debug``: traceback)."""
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
