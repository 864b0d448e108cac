"""FREEDOM's keys that reproduce the reference code (MMRec's freedom.py, issue 22): the modality mix,
raw features for the kNN graph and the projections, fine-tuned features with the graph kept."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import assert_learns_what_features_decide, build_model, write_planted_dataset
from recbole_metammf.layers.graph import knn_graph, normalise


def dense_graph(net) -> np.ndarray:
    return net.mm_adj.adj.to_dense().numpy()


def binary_knn(features, k=10) -> sp.csr_matrix:
    return normalise(knn_graph(features, k, weighted=False), "sym")


@pytest.fixture
def two_modalities(tmp_path):
    """Planted items with visual + audio vectors only: MMRec's two slots (image, text)."""
    write_planted_dataset(tmp_path / "two", with_tokens=False)
    return tmp_path / "two", "planted"


def test_modality_weights_give_the_reference_mix_on_raw_features(two_modalities):
    root, name = two_modalities
    _, net, train, _ = build_model("FREEDOM", root, name, modality_weights=[0.1, 0.9], standardize_modalities=False)
    item_feat = train._dataset.item_feat
    visual, audio = item_feat["visual"].float(), item_feat["audio"].float()  # the .item columns as read
    assert torch.equal(net.modalities.data(0), visual) and torch.equal(net.modalities.data(1), audio)
    expected = (0.1 * binary_knn(visual) + 0.9 * binary_knn(audio)).toarray()
    assert np.allclose(dense_graph(net), expected, atol=1e-7)
    # the modality terms project the same raw rows
    items = torch.tensor([5, 1, 17])
    assert torch.equal(net.content(net.modalities, items)[1], audio[items])
    # standardised (the default): another graph, built on the standardised features
    _, std, _, _ = build_model("FREEDOM", root, name, modality_weights=[0.1, 0.9])
    assert not torch.equal(std.modalities.data(0), visual)
    assert np.allclose(dense_graph(std), (0.1 * binary_knn(std.modalities.data(0))
                                          + 0.9 * binary_knn(std.modalities.data(1))).toarray(), atol=1e-7)
    assert not np.allclose(dense_graph(std), expected, atol=1e-3)


def _one_step(net, batch):
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    optimiser.zero_grad()
    loss = net.calculate_loss(batch)
    loss.backward()
    optimiser.step()
    return loss


@pytest.mark.parametrize("finetune", [False, True])
def test_finetune_features_trains_the_dense_tables_and_keeps_the_graph(planted, finetune):
    root, name = planted
    _, net, train, _ = build_model("FREEDOM", root, name, finetune_features=finetune, modal_loss_weight=0.5)
    stored = [net.modalities.data(i).clone() for i in (0, 1)]  # visual, audio (dense); tags: tokens
    graph = dense_graph(net)
    batch = next(iter(train))
    pos, neg = batch[net.ITEM_ID], batch[net.NEG_ITEM_ID]
    before = {k: t.detach().clone() for k, t in net.content.tables.items()}
    loss = _one_step(net, batch)
    assert np.array_equal(dense_graph(net), graph)  # built once, from the initial features, in both modes
    for i in (0, 1):
        assert torch.equal(net.modalities.data(i), stored[i])  # the encoder's copy is never trained
    if not finetune:
        assert len(net.content.tables) == 0
        assert not any(p.shape == stored[0].shape for p in net.parameters())
        return
    assert sorted(net.content.tables) == ["0", "1"]  # one trainable table per dense modality, none for tags
    for i in (0, 1):
        table = net.content.tables[str(i)]
        assert torch.equal(before[str(i)], stored[i])  # initialised from the features as stored
        touched = (table.grad.abs().sum(dim=1) > 0).nonzero().flatten()
        batch_items = torch.unique(torch.cat([pos, neg]))
        # the modality BPR terms are the only readers: gradient on the batch's items' rows, on them all
        assert torch.equal(touched, batch_items)
        changed = ((table.detach() - before[str(i)]).abs().sum(dim=1) > 0).nonzero().flatten()
        assert torch.equal(changed, batch_items)
    # same initial values: the first step's loss is the frozen model's
    _, frozen, frozen_train, _ = build_model("FREEDOM", root, name, finetune_features=False, modal_loss_weight=0.5)
    assert torch.allclose(frozen.calculate_loss(next(iter(frozen_train))), loss, atol=1e-6)


def test_finetuned_features_get_no_gradient_without_the_modality_terms(planted):
    # the reference's first grid value (reg_weight 0): the features are parameters nothing reads
    root, name = planted
    _, net, train, _ = build_model("FREEDOM", root, name, finetune_features=True, modal_loss_weight=0.0)
    net.calculate_loss(next(iter(train))).backward()
    assert all(t.grad is None for t in net.content.tables.values())


def test_reference_definitions_learn_what_features_decide(cold_planted):
    assert_learns_what_features_decide("FREEDOM", cold_planted, epochs=5, learning_rate=0.005,
                                       finetune_features=True, standardize_modalities=False)
