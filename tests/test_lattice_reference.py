"""LATTICE's keys that reproduce the reference code (MMRec's lattice.py, issue 22): the user-item graph's
normalisation, the item graph's signs and mixing order, when the learned graph is built, fine-tuned
features. Hand-computed graphs on toys; the schedule counted over two epochs of the planted dataset."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from conftest import assert_learns_what_features_decide, assert_predict_agrees_with_full_sort, build_model
from recbole_metammf.layers.graph import EdgePattern, SparseGraph, knn_edges, knn_graph, normalise
from recbole_metammf.model.lattice import LATTICE, user_item_graph


# --- the user-item graph -------------------------------------------------------------------------
class _Interactions:
    """What ``bipartite_adjacency`` reads of a dataset: users u0, u1; items i0, i1, i2 (i2 isolated)."""

    def inter_matrix(self, form="coo"):
        return sp.coo_matrix((np.ones(3, dtype=np.float32), ([0, 0, 1], [0, 1, 1])), shape=(2, 3))


def test_user_item_graph_normalisations_by_hand():
    # nodes u0 u1 i0 i1 i2; edges u0-i0, u0-i1, u1-i1; degrees 2 1 1 2 0
    r2, h = 1 / math.sqrt(2), 0.5
    sym = np.array([[0, 0, r2, h, 0],
                    [0, 0, 0, r2, 0],
                    [r2, 0, 0, 0, 0],
                    [h, r2, 0, 0, 0],
                    [0, 0, 0, 0, 0]])
    t = 1 / 3  # D~^-1 (A + I): each node averages itself and its neighbours; i2 keeps itself
    mean_self_loops = np.array([[t, 0, t, t, 0],
                                [0, h, 0, h, 0],
                                [h, 0, h, 0, 0],
                                [t, t, 0, t, 0],
                                [0, 0, 0, 0, 1]])
    assert np.allclose(user_item_graph(_Interactions(), "sym").toarray(), sym)
    assert np.allclose(user_item_graph(_Interactions(), "mean_self_loops").toarray(), mean_self_loops)


def test_lattice_propagates_over_the_chosen_user_item_graph(planted):
    root, name = planted
    _, net, train, _ = build_model("LATTICE", root, name, ui_graph_norm="mean_self_loops")
    adj = net.ui_adj.adj.to_dense()
    inter = train._dataset.inter_matrix(form="csr")
    inter.data[:] = 1.0
    degree = torch.from_numpy(np.concatenate([np.asarray(inter.sum(1)).ravel(), np.asarray(inter.sum(0)).ravel()]))
    assert torch.allclose(adj.diagonal(), (1 / (degree + 1)).float())
    assert torch.allclose(adj.sum(1), torch.ones(len(degree)))  # row-stochastic
    # not symmetric: the backward product must use the true transpose
    assert not torch.allclose(adj, adj.t())
    h = torch.randn(len(degree), 4, requires_grad=True)
    g = torch.randn(len(degree), 4)
    (net.ui_adj(h) * g).sum().backward()
    assert torch.allclose(h.grad, adj.t() @ g, atol=1e-5)
    with pytest.raises(ValueError, match="ui_graph_norm must be one of"):
        build_model("LATTICE", root, name, ui_graph_norm="symmetric")


# --- the item graph: signs and mixing order on a 3-item toy ----------------------------------------
# two modalities' projections; with k = 2 each item keeps itself and its most similar other item
P0 = torch.tensor([[1.0, 0.0], [0.6, 0.8], [-0.6, -0.8]])  # cos(0,1) .6, cos(0,2) -.6, cos(1,2) -1
P1 = torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]])  # cos(0,1) 0, cos(0,2) .8, cos(1,2) .6
# their kNN graphs by hand, signed: item 2's best other item in modality 0 is item 0, at cosine -0.6
S0 = np.array([[1, 0.6, 0], [0.6, 1, 0], [-0.6, 0, 1]])
S1 = np.array([[1, 0, 0.8], [0, 1, 0.6], [0.8, 0, 1]])
W = np.array([0.25, 0.75])  # softmax([0, ln 3])
LAMBDA = 0.9


def sym(a: np.ndarray) -> np.ndarray:
    d = a.sum(1)
    return a / np.sqrt(np.outer(d, d))


def toy_lattice(mode: str):
    """The attributes LATTICE.item_graph / item_graph_propagate read, on the toy."""
    net = SimpleNamespace(item_graph_mode=mode, n_items=3, lambda_coeff=LAMBDA,
                          modal_weight=torch.tensor([0.0, math.log(3.0)]))
    edges = []
    for m, p in enumerate((P0, P1)):
        rows, cols, _ = knn_edges(p, 2)
        edges.append((rows, cols))
        setattr(net, f"learned_pattern_{m}", EdgePattern(rows, cols, 3, 3))
    net.learned_edges = lambda m: edges[m]
    net.projected = lambda: [P0 * 3.0, P1 * 0.5]  # any length: cosines
    signed = mode == "mix_first"
    net.raw_adj = [SparseGraph(normalise(knn_graph(p, 2, signed=signed), "sym")) for p in (P0, P1)]
    return net


def test_knn_graph_keeps_the_negative_cosine_only_when_signed():
    assert np.allclose(knn_graph(P0, 2, signed=True).toarray(), S0)
    assert np.allclose(knn_graph(P0, 2).toarray(), np.clip(S0, 0, None))
    assert np.allclose(knn_graph(P1, 2, signed=True).toarray(), S1)


@pytest.mark.parametrize("mode", ["per_modality", "mix_first"])
def test_item_graph_signs_and_mixing_order_by_hand(mode):
    net = toy_lattice(mode)
    if mode == "per_modality":  # clamp, normalise each modality, mix
        learned = W[0] * sym(np.clip(S0, 0, None)) + W[1] * sym(S1)
        raw = W[0] * sym(np.clip(S0, 0, None)) + W[1] * sym(S1)
    else:  # signed; the learned graphs mixed, then normalised; the frozen ones normalised, then mixed
        learned = sym(W[0] * S0 + W[1] * S1)
        raw = W[0] * sym(S0) + W[1] * sym(S1)
    expected = (1 - LAMBDA) * learned + LAMBDA * raw
    graph = LATTICE.item_graph(net)
    h = torch.eye(3)
    got = LATTICE.item_graph_propagate(net, h, graph)  # A @ I = A
    assert np.allclose(got.numpy(), expected, atol=1e-6)
    # item 2 -> item 0: dropped by the clamp, or the signed mix 0.25 * -0.6 + 0.75 * 0.8 over sqrt(1.45 * 1.75)
    learned_20 = 0.75 * 0.8 / 1.8 if mode == "per_modality" else 0.45 / math.sqrt(1.45 * 1.75)
    assert learned[2, 0] == pytest.approx(learned_20)


def test_item_graph_mode_values_are_checked(planted):
    root, name = planted
    with pytest.raises(ValueError, match="item_graph_mode must be one of"):
        build_model("LATTICE", root, name, item_graph_mode="reference")


# --- when the learned graph is built --------------------------------------------------------------
@pytest.mark.parametrize("update", ["every_step", "first_batch"])
def test_item_graph_update_schedule(planted, monkeypatch, update):
    root, name = planted
    _, net, train, _ = build_model("LATTICE", root, name, item_graph_update=update, finetune_features=True,
                                   train_batch_size=2048)
    steps = net.steps_per_epoch
    assert steps >= 3 and len(list(train)) == steps
    refreshes = []
    refresh = net.refresh_learned_neighbours
    monkeypatch.setattr(net, "refresh_learned_neighbours", lambda: (refreshes.append(net.train_steps), refresh()))
    optimiser = torch.optim.Adam(net.parameters(), lr=0.01)
    graph_trained, ids_trained = [], []
    for _ in range(2):
        for batch in train:
            optimiser.zero_grad(set_to_none=True)
            net.calculate_loss(batch).backward()
            trained = [net.projections[0].weight, net.modal_weight, net.content.tables["0"]]
            graph_trained.append([p.grad is not None and bool(p.grad.abs().sum() > 0) for p in trained])
            ids_trained.append(bool(net.item_embedding.weight.grad.abs().sum() > 0))
            optimiser.step()
    assert all(ids_trained)  # the ID embeddings learn at every step in both schedules
    if update == "every_step":
        # neighbours re-found at the second epoch's first step only; the graph's inputs train at every step
        assert refreshes == [steps + 1]
        assert graph_trained == [[True, True, True]] * (2 * steps)
    else:
        # rebuilt at each epoch's first step (counted after it), with gradient then and only then
        assert refreshes == [1, steps + 1]
        first = [[True, True, True]] + [[False, False, False]] * (steps - 1)
        assert graph_trained == first + first
    net.eval()
    with torch.no_grad():
        net.compute_all()
    assert len(refreshes) == (1 if update == "every_step" else 3)  # first_batch: rebuilt to evaluate
    if update == "first_batch":  # from the current parameters
        with torch.no_grad():
            p = net.projected()[0]
            p[0] = 0.0
            rows, cols, _ = knn_edges(p, net.knn_k)
        assert torch.equal(net.learned_edges(0)[0], rows) and torch.equal(net.learned_edges(0)[1], cols)


def test_first_batch_graph_is_the_detached_first_step_graph(planted):
    root, name = planted
    _, net, train, _ = build_model("LATTICE", root, name, item_graph_update="first_batch", train_batch_size=2048)
    batches = iter(train)
    net.calculate_loss(next(batches))
    frozen_values, frozen_weights = net._epoch_graph
    with torch.no_grad():
        values, weights = net.item_graph()  # the same parameters: the same graph
    assert all(torch.equal(a, b) for a, b in zip(frozen_values, values)) and torch.equal(frozen_weights, weights)
    assert not any(v.requires_grad for v in frozen_values) and not frozen_weights.requires_grad
    with torch.no_grad():
        net.projections[0].weight.add_(1.0)  # the rest of the epoch does not see the change
    net.calculate_loss(next(batches))
    assert net._epoch_graph[0][0] is frozen_values[0]


# --- the reference's definitions together ----------------------------------------------------------
REFERENCE_KEYS = {"ui_graph_norm": "mean_self_loops", "item_graph_mode": "mix_first",
                  "item_graph_update": "first_batch", "finetune_features": True}


def test_reference_definitions_predict_as_they_rank(planted):
    root, name = planted
    _, net, train, _ = build_model("LATTICE", root, name, **REFERENCE_KEYS)
    net.calculate_loss(next(iter(train))).backward()
    assert_predict_agrees_with_full_sort(net)


def test_reference_definitions_learn_what_features_decide(cold_planted):
    assert_learns_what_features_decide("LATTICE", cold_planted, epochs=5, learning_rate=0.005, **REFERENCE_KEYS)
