"""``python -m recbole_metammf.inspect``: per-item meta signal, deviation of the item's fusion
from the shared one, modality shares by ablation; one row per item; clear errors."""

from __future__ import annotations

import csv
import glob
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from recbole.quick_start import run_recbole

from conftest import REPO, planted_config, write_planted_dataset
from recbole_metammf.checkpoint import load_checkpoint
from recbole_metammf.inspect import fusion_signals, layer_deviation_norms, main
from recbole_metammf.layers.fusion import MetaFusionLayer, MetaFusionNetwork


# --- the per-item quantities ----------------------------------------------------------------------
@pytest.mark.parametrize("form", ["full", "cp", "collapsed"])
@pytest.mark.parametrize("shape", [(7, 5), (4, 9)])
def test_deviation_norm_equals_the_explicit_per_item_weights(form, shape):
    torch.manual_seed(0)
    layer = MetaFusionLayer(*shape, meta_dim=3, form=form, rank=4)
    with torch.no_grad():  # item-specific parts at the scale of M, so the check is not trivially ~0
        for p in layer.parameters():
            p.normal_()
    s = torch.randn(11, 3)
    explicit = torch.linalg.matrix_norm(layer.item_weights(s) - layer.M.unsqueeze(0))  # [11]
    assert torch.allclose(layer_deviation_norms(layer, s), explicit, rtol=1e-5, atol=1e-5)


def test_network_deviation_is_the_sum_over_layers():
    torch.manual_seed(1)
    net = MetaFusionNetwork(6, [5], 4, meta_dim=2, form="cp", rank=3)
    blocks = [torch.randn(9, 4), torch.randn(9, 2)]
    out = fusion_signals(net, blocks)
    s = net.extractor(torch.cat(blocks, dim=1))
    expected = sum(torch.linalg.matrix_norm(layer.item_weights(s) - layer.M) for layer in net.layers)
    assert torch.allclose(out["deviation"], expected, rtol=1e-5, atol=1e-6)
    assert torch.allclose(out["s"], s)


def test_shares_are_normalised_ablation_effects():
    torch.manual_seed(2)
    net = MetaFusionNetwork(6, [5], 4, meta_dim=2, form="full")
    blocks = [torch.randn(8, 4), torch.randn(8, 2)]
    out = fusion_signals(net, blocks)
    assert torch.allclose(out["shares"].sum(dim=1), torch.ones(8))
    # by hand, through the explicit per-item weights (the released code's way), s recomputed
    full = net.forward_explicit(torch.cat(blocks, dim=1))
    d = torch.stack([
        torch.linalg.vector_norm(full - net.forward_explicit(torch.cat([torch.zeros(8, 4), blocks[1]], 1)), dim=1),
        torch.linalg.vector_norm(full - net.forward_explicit(torch.cat([blocks[0], torch.zeros(8, 2)], 1)), dim=1),
    ], dim=1)
    assert torch.allclose(out["shares"], d / d.sum(dim=1, keepdim=True), rtol=1e-4, atol=1e-5)


def test_a_modality_the_fusion_ignores_has_share_zero():
    torch.manual_seed(3)
    net = MetaFusionNetwork(6, [], 4, meta_dim=2, form="cp", rank=3)
    with torch.no_grad():  # nothing reads the last two input columns (the second modality)
        net.extractor.net[0].weight[:, 4:] = 0
        net.layers[0].M[4:] = 0
        net.layers[0].A[4:] = 0
    out = fusion_signals(net, [torch.randn(5, 4), torch.randn(5, 2)])
    assert torch.equal(out["shares"][:, 1], torch.zeros(5))
    assert torch.allclose(out["shares"][:, 0], torch.ones(5))


# --- the command on a trained checkpoint ----------------------------------------------------------
@pytest.fixture
def small(tmp_path):
    root = tmp_path / "data"
    write_planted_dataset(root, n_users=80, n_items=120, per_user=12)
    return root


def _train(root, model, **extra):
    run_recbole(model=model, dataset="planted", config_dict=planted_config(root, epochs=2, **extra), saved=True)
    (path,) = glob.glob(str(root / "saved" / f"{model}-*.pth"))
    return path


@pytest.mark.parametrize("model", ["MetaMMF_MF", "MetaMMF_GCN"])
def test_csv_has_one_row_per_item_with_documented_columns(small, tmp_path, model):
    checkpoint = _train(small, model, fusion_form="full" if model == "MetaMMF_GCN" else "cp")
    out = tmp_path / "inspect"
    result = subprocess.run(
        [sys.executable, "-m", "recbole_metammf.inspect", "--checkpoint", checkpoint, "--out", str(out)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    with open(out / "fusion.csv") as f:
        rows = list(csv.DictReader(f))
    loaded = load_checkpoint(checkpoint)
    ds, net = loaded.dataset, loaded.model
    meta = loaded.config["meta_size"]
    names = ["visual", "audio", "tags"]
    assert list(rows[0]) == ["item_id", "train_interactions", *[f"s_{k}" for k in range(1, meta + 1)],
                             "deviation", *[f"share_{n}" for n in names], "dominant"]
    # one row per item of the dataset, with the dataset's own ids
    raw_ids = [line.split("\t")[0] for line in (small / "planted" / "planted.item").read_text().splitlines()[1:]]
    assert sorted(r["item_id"] for r in rows) == sorted(raw_ids) and len(rows) == ds.item_num - 1
    shares = np.array([[float(r[f"share_{n}"]) for n in names] for r in rows])
    assert np.allclose(shares.sum(axis=1), 1.0, atol=1e-5)  # as documented
    assert [r["dominant"] for r in rows] == [names[i] for i in shares.argmax(axis=1)]
    assert sum(int(r["train_interactions"]) for r in rows) == len(loaded.train_data.dataset.inter_feat)
    # an item's s_i and deviation are the trained model's, through the explicit per-item weights
    row = rows[17]
    iid = ds.token2id(ds.iid_field, row["item_id"])
    with torch.no_grad():
        x = torch.cat([b[iid : iid + 1] for b in net.modalities.per_modality()], dim=1)
        s = net.fusion.extractor(x)
        dev = sum(torch.linalg.matrix_norm(layer.item_weights(s) - layer.M) for layer in net.fusion.layers)
    assert np.allclose([float(row[f"s_{k + 1}"]) for k in range(meta)], s[0].numpy(), rtol=1e-4, atol=1e-5)
    assert float(row["deviation"]) == pytest.approx(float(dev), rel=1e-4)
    for png in ("meta_signal.png", "modality_shares.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mean modality share" in result.stdout


def test_non_metammf_checkpoint_is_refused_in_one_line(small, tmp_path, capsys):
    checkpoint = _train(small, "BPR")
    assert main(["--checkpoint", checkpoint, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {checkpoint}: holds a BPR model; inspect reads MetaMMF_MF / MetaMMF_GCN checkpoints"]
    assert not (tmp_path / "o").exists()


def test_missing_checkpoint_exits_2_without_traceback(tmp_path):
    missing = tmp_path / "none.pth"
    result = subprocess.run(
        [sys.executable, "-m", "recbole_metammf.inspect", "--checkpoint", str(missing), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {missing}: no such checkpoint file"]
