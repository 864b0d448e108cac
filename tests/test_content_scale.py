"""The fused content's scale at initialisation does not depend on the modalities' widths or count
(issue 25: with the paper's unscaled output an item's e^m started 44x longer than its ID part e^c
on three dense modalities, and the first epochs went backwards while the penalty shrank it)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import build_model

# the largest (and smallest) initial ratio of the mean row norms ||e^m|| / ||e^c|| allowed: under
# content_scale rms / gate the content starts at the ID part's RMS per column, so the ratio is
# sqrt(fused_size / id_embedding_size) (0.71 for MetaMMF_MF's 32 / 64, 1 for MetaMMF_GCN's 32 / 32),
# whatever the input
MAX_RATIO, MIN_RATIO = 1.5, 0.25


def write_dense(root, name: str, widths: tuple[int, ...], n_users: int = 120, n_items: int = 150, seed: int = 0):
    """Atomic files with one float_seq modality per width (raw scale ~N(3, 5)), ~8 interactions per user."""
    rng = np.random.default_rng(seed)
    path = root / name
    path.mkdir(parents=True)
    rows = {(u, int(i)) for u in range(1, n_users + 1) for i in rng.choice(n_items, 8, replace=False) + 1}
    with open(path / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\n")
        f.writelines(f"{u}\t{i}\n" for u, i in sorted(rows))
    feats = [3 + 5 * rng.normal(size=(n_items, w)) for w in widths]
    with open(path / f"{name}.item", "w") as f:
        f.write("\t".join(["item_id:token"] + [f"m{k}:float_seq" for k in range(len(widths))]) + "\n")
        for i in range(n_items):
            f.write("\t".join([str(i + 1)] + [" ".join(f"{x:.3f}" for x in m[i]) for m in feats]) + "\n")
    return [f"m{k}" for k in range(len(widths))]


def initial_ratio(model: str, root, name: str, fields, **extra) -> float:
    _, net, _, _ = build_model(model, root, name, load_col={"inter": ["user_id", "item_id"],
                                                            "item": ["item_id", *fields]}, **extra)
    net.eval()
    with torch.no_grad():
        content = net.fusion(net.modalities.per_modality())[1:]  # real items
        ids = net.item_id_embedding.weight[1:]
    return float(content.norm(dim=1).mean() / ids.norm(dim=1).mean())


WIDTHS = [(8,), (128,), (4096,), (8, 128, 4096)]


@pytest.mark.parametrize("model", ["MetaMMF_MF", "MetaMMF_GCN"])
def test_initial_content_starts_at_the_id_scale_whatever_the_widths(tmp_path, model):
    ratios = {}
    for k, widths in enumerate(WIDTHS):
        name = f"w{k}"
        fields = write_dense(tmp_path, name, widths)
        for scale in ("rms", "gate", "none"):
            for standardize in (True, False):
                ratios[widths, scale, standardize] = initial_ratio(
                    model, tmp_path, name, fields, content_scale=scale, standardize_modalities=standardize)
    for (widths, scale, standardize), ratio in ratios.items():
        if scale != "none":
            assert MIN_RATIO < ratio < MAX_RATIO, (widths, scale, standardize, ratio)
    # the paper's unscaled output is what the bound catches: above it at every width here, and grows with the width (8 columns: 2.8x; 4,096: 24x and more)
    unscaled = [r for (w, s, _), r in ratios.items() if s == "none"]
    assert min(unscaled) > MAX_RATIO, unscaled
    # rms: exactly the ID part's RMS per column, so the ratio is sqrt(fused / id) on every input
    _, net, _, _ = build_model(model, tmp_path, "w0", load_col={"inter": ["user_id", "item_id"],
                                                                "item": ["item_id", "m0"]})
    expected = (net.fusion.layers[-1].out_dim / net.item_id_embedding.embedding_dim) ** 0.5
    for (widths, scale, _), ratio in ratios.items():
        if scale == "rms":
            assert ratio == pytest.approx(expected, rel=0.1), (widths, ratio)


def test_content_scale_is_learned_and_applied_in_both_fusion_paths(planted):
    """rms: the gain is a parameter that gets a gradient; the matmul path and the explicit per-item path
    agree; gate: the calibrated factor gives the content exactly the ID part's RMS."""
    root, name = planted
    _, net, train, _ = build_model("MetaMMF_MF", root, name, content_scale="rms")
    x = net.modalities.per_modality()
    torch.testing.assert_close(net.fusion(x), net.fusion.forward_explicit(x), rtol=1e-4, atol=1e-6)
    gain = net.fusion.output_scale.gain
    assert gain.shape == (net.fusion.layers[-1].out_dim,)
    net.train()
    loss = net.calculate_loss(next(iter(train)))
    loss.backward()
    assert gain.grad is not None and bool(gain.grad.abs().sum() > 0)

    _, gated, _, _ = build_model("MetaMMF_GCN", root, name, content_scale="gate")
    with torch.no_grad():
        content = gated.fusion(gated.modalities.per_modality())
        target = gated.item_id_embedding.weight[1:].pow(2).mean().sqrt()
        torch.testing.assert_close(content.pow(2).mean().sqrt(), target, rtol=1e-4, atol=0.0)


@pytest.mark.parametrize("model", ["MetaMMF_MF", "MetaMMF_GCN", "VBPR"])
def test_content_reg_scope_content_penalises_only_the_content_columns(planted, model):
    """content_reg_scope: content gives EmbLoss of the content columns alone: the same loss as the
    whole-vector penalty computed on vectors whose other columns are cut off by hand."""
    from recbole.model.loss import EmbLoss

    root, name = planted
    extra = {"content_reg_weight": 0.5, "reg_weight": 0.0}
    if model == "MetaMMF_GCN":
        extra["dropout"] = [0.0, 0.0]
    _, whole, train, _ = build_model(model, root, name, content_reg_scope="whole", **extra)
    _, part, _, _ = build_model(model, root, name, content_reg_scope="content", **extra)
    part.load_state_dict(whole.state_dict())
    batch = next(iter(train))
    whole.train(), part.train()
    torch.manual_seed(0)
    loss_whole = whole.calculate_loss(batch)
    torch.manual_seed(0)
    loss_part = part.calculate_loss(batch)
    # rebuild both penalties by hand from the regularised vectors
    users, pos, neg = batch[whole.USER_ID], batch[whole.ITEM_ID], batch[whole.NEG_ITEM_ID]
    torch.manual_seed(0)
    u_e, items = whole.batch_embeddings(users, [pos, neg])
    vectors = whole.content_reg_embeddings(users, [pos, neg], u_e, items)
    columns = whole.content_reg_columns()
    width = vectors[0].shape[1]
    assert 0 < len(range(width)[columns]) < width
    full = EmbLoss()(*vectors).squeeze()
    cut = EmbLoss()(*(v[:, columns] for v in vectors)).squeeze()
    assert float(cut) < float(full)
    torch.testing.assert_close(loss_whole - loss_part, 0.5 * (full - cut), rtol=1e-4, atol=1e-6)
