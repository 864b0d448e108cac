"""DRAGON: the user-user co-occurrence graph on hand-computed toys and against the reference script's
definition, the per-epoch neighbour sampling, the forward pass against its formula, the loss terms and
gradients, checkpoints, learning on the planted data, and the errors."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from conftest import (
    REPO,
    assert_learns_what_features_decide,
    assert_predict_agrees_with_full_sort,
    assert_same_full_sort,
    build_model,
    planted_config,
    write_planted_dataset,
)
from recbole_metammf.layers.graph import bipartite_adjacency
from recbole_metammf.layers.user_graph import cooccurrence_topk, sample_padded_neighbours, slots_to_matrix
from recbole_metammf.model.dragon import user_cooccurrence_graph

E = math.e

# users 0..4, items 0..3; user 0 has item 1 twice (counts once); user 3 has no item
TOY = sp.csr_matrix(
    (np.ones(9), ([0, 0, 0, 0, 1, 1, 2, 2, 4], [0, 1, 1, 2, 1, 2, 2, 3, 3])), shape=(5, 4)
)
# shared items, by hand: (0,1) {1,2} = 2; (0,2) {2} = 1; (1,2) {2} = 1; (2,4) {3} = 1; every other pair 0


def test_cooccurrence_hand_computed():
    for chunk in (1, 2, 100):  # chunking changes nothing
        nb, counts, n = cooccurrence_topk(TOY, k=2, chunk_size=chunk)
        assert nb.tolist() == [[1, 2], [0, 2], [0, 1], [-1, -1], [2, -1]]  # user 2: three ties at 1 -> smaller ids
        assert counts.tolist() == [[2, 1], [2, 1], [1, 1], [0, 0], [1, 0]]
        assert n.tolist() == [2, 2, 2, 0, 1]
    nb, counts, n = cooccurrence_topk(TOY, k=1)
    assert nb[:, 0].tolist() == [1, 0, 0, -1, 2] and counts[:, 0].tolist() == [2, 2, 1, 0, 1]
    nb, counts, n = cooccurrence_topk(TOY, k=4)
    assert nb[2].tolist() == [0, 1, 4, -1] and n.tolist() == [2, 2, 3, 0, 1]


def test_cooccurrence_ties_follow_the_seeded_user_order_not_the_ids():
    """User 0 shares one item with each of users 1..1000 (all tied at 1) and two with user 1000: DRAGON's
    graph keeps user 1000, then the tied users first in a fixed permutation of the users, spread over the
    id range (the reference script's torch.topk picks tied users evenly over it; the layer's smaller ids
    first would keep 1..39). The same seed gives the same graph; another seed another choice; no seed is
    the layer's rule."""
    n_users, k = 1001, 40
    rows = [0] * 1001 + list(range(1, 1001)) + [1000]
    cols = list(range(1001)) + list(range(1, 1001)) + [0]
    inter = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_users, 1001))
    nb, counts, n = user_cooccurrence_graph(inter, k, tie_seed=0)
    assert nb[0, 0] == 1000 and counts[0].tolist() == [2.0] + [1.0] * (k - 1) and n[0] == k
    rank = np.argsort(np.random.default_rng(0).permutation(n_users))  # user -> its place in the permutation
    tied = np.arange(1, 1000)
    assert nb[0, 1:].tolist() == tied[np.argsort(rank[tied])][: k - 1].tolist()
    assert 300 < nb[0, 1:].mean() < 700  # by id it would be 20
    by_id = cooccurrence_topk(inter, k)
    assert nb[0, 1:].tolist() != by_id[0][0, 1:].tolist() and by_id[0][0, 1:].tolist() == list(range(1, k))
    again, _, _ = user_cooccurrence_graph(inter, k, tie_seed=0)
    assert np.array_equal(again, nb)
    other, _, _ = user_cooccurrence_graph(inter, k, tie_seed=1)
    assert other[0, 0] == 1000 and set(other[0, 1:].tolist()) != set(nb[0, 1:].tolist())
    for got, want in zip(user_cooccurrence_graph(inter, k, tie_seed=None), by_id):
        assert np.array_equal(got, want)


def test_seeded_ties_change_only_the_order_among_equal_counts():
    """On a random graph the seeded rule keeps every user's counts and list length, keeps the same co-users
    above each list's last count, and lists real co-users only (each with the right count)."""
    rng = np.random.default_rng(5)
    dense = (rng.random((60, 20)) < 0.15).astype(np.float32)
    shared = dense @ dense.T
    nb_id, counts_id, n_id = cooccurrence_topk(sp.csr_matrix(dense), k=6)
    nb, counts, n = user_cooccurrence_graph(sp.csr_matrix(dense), 6, tie_seed=3)
    assert np.array_equal(counts, counts_id) and np.array_equal(n, n_id)
    assert not np.array_equal(nb, nb_id)  # some tie went the other way
    for u in range(60):
        row = nb[u, : n[u]]
        assert u not in row and np.all(nb[u, n[u]:] == -1)
        assert shared[u, row].tolist() == counts[u, : n[u]].tolist()
        last = counts[u, n[u] - 1] if n[u] else 0
        assert set(row[counts[u, : n[u]] > last]) == set(nb_id[u, : n[u]][counts_id[u, : n[u]] > last])


def test_cooccurrence_matches_the_reference_scripts_definition():
    """generate-u-u-matrix.py: weight = |items(u) & items(v)| over distinct training items, u != v, the
    heaviest first (ties here by smaller id), users sharing nothing are not neighbours."""
    rng = np.random.default_rng(3)
    dense = (rng.random((40, 25)) < 0.12).astype(np.float32)
    items = [set(np.flatnonzero(row)) for row in dense]
    for k in (3, 7, 50):
        nb, counts, n = cooccurrence_topk(sp.csr_matrix(dense), k=k, chunk_size=7)
        for u in range(40):
            pairs = sorted(((-len(items[u] & items[v]), v) for v in range(40) if v != u and items[u] & items[v]))[:k]
            assert n[u] == len(pairs)
            assert nb[u, : n[u]].tolist() == [v for _, v in pairs]
            assert counts[u, : n[u]].tolist() == [-c for c, _ in pairs]


def test_padded_sampling_and_softmax_weights_by_hand():
    nb, counts, n = cooccurrence_topk(TOY, k=2)
    index, weight = sample_padded_neighbours(nb, counts, n, np.random.default_rng(0))
    assert index[0].tolist() == [1, 2] and np.allclose(weight[0], [E / (E + 1), 1 / (E + 1)])
    assert index[4].tolist() == [2, 2] and np.allclose(weight[4], [0.5, 0.5])  # one co-user fills both slots
    assert np.all(weight[3] == 0)  # no co-user: no message
    m = slots_to_matrix(index, weight, 5).toarray()
    assert m[4, 2] == pytest.approx(1.0) and m[3].sum() == 0 and m[0, 1] == pytest.approx(E / (E + 1))
    # k = 3: user 0 has 2 co-users, its third slot repeats one of them, uniformly: two outcomes
    nb, counts, n = cooccurrence_topk(TOY, k=3)
    drew_1 = {1: 2 * E / (2 * E + 1), 2: 1 / (2 * E + 1)}  # slot counts [2, 1, 2]
    drew_2 = {1: E / (E + 2), 2: 2 / (E + 2)}  # slot counts [2, 1, 1]
    rng = np.random.default_rng(1)
    seen = []
    for _ in range(2000):
        row = slots_to_matrix(*sample_padded_neighbours(nb, counts, n, rng), 5).toarray()[0]
        got = {j: row[j] for j in (1, 2)}
        outcome = [o for o, ref in ((1, drew_1), (2, drew_2)) if all(abs(got[j] - ref[j]) < 1e-6 for j in ref)]
        assert len(outcome) == 1, got
        seen.append(outcome[0])
    assert abs(np.mean(np.array(seen) == 1) - 0.5) < 0.04


# --- the model -----------------------------------------------------------------------------------
def dense_sym(adj: np.ndarray) -> np.ndarray:
    deg = adj.sum(1)
    inv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    return inv[:, None] * adj * inv[None, :]


def dragon_by_hand(net, ds):
    """DRAGON's representations from its formula, with dense matrices."""
    a_hat = torch.from_numpy(dense_sym(bipartite_adjacency(ds).toarray())).float()
    outs = []
    for pref, mlp, content in zip(net.preferences, net.content_mlps, net.modalities.per_modality()):
        z = F.normalize(torch.cat([pref, mlp[2](F.leaky_relu(mlp[0](content), 0.01))]), dim=1)
        outs.append(z + a_hat @ z + a_hat @ (a_hat @ z))
    n_u = net.n_users
    user = torch.cat([out[:n_u] * net.user_modality_weight[:, m : m + 1] for m, out in enumerate(outs)], dim=1)
    item = torch.cat([out[n_u:] for out in outs], dim=1)
    g = torch.zeros(n_u, n_u).index_put(
        (torch.arange(n_u).repeat_interleave(net.user_knn_k), net.user_slots.flatten()),
        net.user_slot_weights.flatten(), accumulate=True)
    return user + g @ user, item + net.mm_adj.adj.to_dense() @ item


def test_forward_is_the_formula(planted):
    root, name = planted
    _, net, train, _ = build_model("DRAGON", root, name, user_knn_k=50)
    ds = train._dataset
    net.eval()
    with torch.no_grad():
        user, item = net.compute_all()
        ref_user, ref_item = dragon_by_hand(net, ds)
    d, m = net.embedding_size, len(net.modalities.specs)
    assert user.shape == (net.n_users, m * d) and item.shape == (net.n_items, m * d)
    assert torch.allclose(user, ref_user, atol=1e-4) and torch.allclose(item, ref_item, atol=1e-4)
    # the co-occurrence graph is the training interactions' own
    nb, counts, n = user_cooccurrence_graph(ds.inter_matrix(form="csr"), 50, tie_seed=0)
    assert np.array_equal(net.co_neighbours, nb) and np.array_equal(net.co_n, n)
    assert n[1:].min() > 0 and n[0] == 0  # every real user shares items here; the padding user none


def test_loss_terms_and_gradients_reach_every_parameter(planted):
    root, name = planted
    _, net, train, _ = build_model("DRAGON", root, name, reg_weight=0.1)
    batch = next(iter(train))
    loss = net.calculate_loss(batch)
    users, pos, neg = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    user, item = net.compute_all()
    diff = (user[users] * item[pos]).sum(-1) - (user[users] * item[neg]).sum(-1)
    bpr = -torch.log2(torch.sigmoid(diff)).mean()
    reg = sum(p[users].square().mean() for p in net.preferences) + net.user_modality_weight.square().mean()
    assert torch.isfinite(loss) and bpr > 0 and reg > 0
    assert torch.allclose(loss, bpr + 0.1 * reg, atol=1e-5)
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname


def test_user_graph_resampled_each_epoch_and_kept_in_checkpoints(planted):
    root, name = planted
    _, net, train, _ = build_model("DRAGON", root, name, user_knn_k=400)  # more slots than co-users: padding
    first = net.user_slots.clone()
    batches = list(train)
    assert len(batches) == net.steps_per_epoch
    for b in batches:
        net.calculate_loss(b)
    assert torch.equal(net.user_slots, first)  # one epoch: one sample
    net.calculate_loss(batches[0])  # the next epoch's first step
    assert not torch.equal(net.user_slots, first)
    real = net.co_n > 0
    assert torch.equal(net.user_slots[:, :5][real], torch.from_numpy(net.co_neighbours[:, :5])[real])  # own co-users first
    # a checkpoint evaluates with its graph
    _, other, _, _ = build_model("DRAGON", root, name, user_knn_k=400)
    other.resample_user_graph()
    assert not torch.equal(other.user_slots, net.user_slots)
    other.load_state_dict(net.state_dict())
    assert torch.equal(other.user_slots, net.user_slots)
    assert_same_full_sort(net, other)


@pytest.mark.parametrize("with_audio", [True, False])
def test_predict_agrees_with_full_sort_predict(tmp_path, with_audio):
    write_planted_dataset(tmp_path / "d", with_audio=with_audio)
    _, net, train, _ = build_model("DRAGON", tmp_path / "d")
    assert len(net.modalities.specs) == (3 if with_audio else 2)
    net.calculate_loss(next(iter(train))).backward()
    assert_predict_agrees_with_full_sort(net)


def test_one_modality_works(tmp_path):
    write_planted_dataset(tmp_path / "d", with_audio=False, with_tokens=False)
    _, net, train, _ = build_model("DRAGON", tmp_path / "d")
    assert len(net.modalities.specs) == 1
    assert torch.isfinite(net.calculate_loss(next(iter(train))))


def test_modality_weights_must_match(planted):
    root, name = planted
    with pytest.raises(ValueError, match="one weight per modality"):
        build_model("DRAGON", root, name, modality_weights=[0.1, 0.9])


# --- learning ------------------------------------------------------------------------------------
def fit_and_test_ndcg(model, root, **extra) -> float:
    """Test NDCG@10 after RecBole's trainer (the one RecBole picks for the model) on a fixed split."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config = Config(model=model, dataset="planted",
                    config_dict=planted_config(root, "planted", benchmark_filename=["train", "valid", "test"], **extra))
    init_seed(config["seed"], True)
    train, valid, test = data_preparation(config, create_dataset(config))
    net = get_model(model)(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, net)
    trainer.fit(train, valid, saved=False, show_progress=False)
    return trainer.evaluate(test, load_best_model=False, show_progress=False)["ndcg@10"]


def assert_above_pop(model, root, **extra):
    pop = fit_and_test_ndcg("Pop", root)
    got = fit_and_test_ndcg(model, root, **extra)
    assert got > 2 * pop, (model, got, pop)


def test_dragon_trains_above_pop(cold_planted):
    assert_above_pop("DRAGON", cold_planted["planted"], epochs=5, learning_rate=0.005)


def test_dragon_learns_what_features_decide(cold_planted):
    assert_learns_what_features_decide("DRAGON", cold_planted, epochs=5, learning_rate=0.005)


# --- errors --------------------------------------------------------------------------------------
def test_no_modality_is_one_line(tmp_path):
    path = write_planted_dataset(tmp_path / "data")
    (path / "planted.yaml").write_text("load_col:\n  inter: [user_id, item_id]\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_recbole.py"), "--model=DRAGON", "--dataset=planted",
         f"--data_path={tmp_path / 'data'}", "--epochs=1", "--state=ERROR", "--show_progress=False"],
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: dataset 'planted' has no item modality: add float_seq/token_seq columns to its .item file and "
        "list them in load_col (and optionally modality_fields)"
    ]
