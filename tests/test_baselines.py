"""The multimodal baselines (VBPR, MMGCN, GRCN, LATTICE, FREEDOM): graph helpers exactly on small
cases, model internals against their formulas, predict vs full_sort_predict with two and three
modalities, learning on the planted dataset, and the command line."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from recbole.data.interaction import Interaction

from conftest import (REPO, assert_learns_what_features_decide, assert_predict_agrees_with_full_sort, build_model,
                      write_planted_dataset)
from recbole_metammf.layers.graph import (
    bipartite_adjacency,
    bipartite_from_edges,
    degree_sensitive_keep_weights,
    degree_sensitive_prune,
    knn_edges,
    knn_graph,
    normalise,
    sym_normalise_edges,
)
from recbole_metammf.layers.knn import raw_modalities

# Generic COO / scatter references for the fixed-pattern edge ops (EdgePattern) and GRCN.
def edge_spmm(rows: torch.Tensor, cols: torch.Tensor, weight: torch.Tensor, h: torch.Tensor, n_rows: int) -> torch.Tensor:
    """``A @ h`` for ``A[rows, cols] = weight`` (duplicates summed), differentiable in ``weight`` and ``h``."""
    adj = torch.sparse_coo_tensor(
        torch.stack([rows, cols]), weight, (n_rows, h.shape[0]), check_invariants=False
    )
    return torch.sparse.mm(adj, h)  # [n_rows, d]


def segment_softmax(scores: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
    """Softmax of ``scores`` within each group of equal ``index`` (groups ``0..n-1``)."""
    group_max = torch.full((n,), float("-inf"), dtype=scores.dtype, device=scores.device)
    group_max = group_max.scatter_reduce(0, index, scores.detach(), reduce="amax")  # [n]
    e = torch.exp(scores - group_max[index])  # [E], <= 1
    denom = torch.zeros(n, dtype=scores.dtype, device=scores.device).index_add(0, index, e)  # [n]
    return e / denom[index]


BASELINES = ["VBPR", "MMGCN", "GRCN", "LATTICE", "FREEDOM"]


build = build_model


def edge_set(rows, cols):
    return set(zip(rows.tolist(), cols.tolist()))


# --- kNN graphs ----------------------------------------------------------------------------------
POINTS = torch.tensor(
    [
        [0.0, 0.0],  # 0: padding-like zero row
        [1.0, 0.0],  # 1
        [1.0, 0.1],  # 2
        [0.0, 1.0],  # 3
        [0.2, 1.0],  # 4
        [-1.0, 0.05],  # 5: its nearest other row is 3 (cosine 0.05 > -0.99)
    ]
)


def test_knn_edges_exact_neighbours_self_first_zero_rows_excluded():
    rows, cols, sims = knn_edges(POINTS, k=2, chunk_size=4)
    # each non-zero row keeps itself (cosine 1) and its nearest other row; row 0 is nobody's neighbour
    assert edge_set(rows, cols) == {(1, 1), (1, 2), (2, 2), (2, 1), (3, 3), (3, 4), (4, 4), (4, 3), (5, 5), (5, 3)}
    x = torch.nn.functional.normalize(POINTS, dim=1)
    assert torch.allclose(sims, (x[rows] * x[cols]).sum(1), atol=1e-6)
    for chunk in (1, 3, 100):  # chunking changes nothing
        r, c, _ = knn_edges(POINTS, k=2, chunk_size=chunk)
        assert edge_set(r, c) == edge_set(rows, cols)


def test_knn_of_token_bags_is_multi_hot_cosine():
    # bags: item 0 padding (empty), items 1..3
    bags = sp.csr_matrix(np.array([[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1]], dtype=np.float32))
    rows, cols, sims = knn_edges(bags, k=2)
    got = {(r, c): s for r, c, s in zip(rows.tolist(), cols.tolist(), sims.tolist())}
    assert set(got) == {(1, 1), (1, 2), (2, 2), (2, 1), (3, 3), (3, 2)}
    assert got[(1, 2)] == pytest.approx(2 / np.sqrt(2 * 3))  # shared tokens / sqrt(|a| |b|)
    assert got[(3, 2)] == pytest.approx(1 / np.sqrt(2 * 3))
    dense_rows, dense_cols, _ = knn_edges(torch.from_numpy(bags.toarray()), k=2)
    assert edge_set(dense_rows, dense_cols) == set(got)


def test_knn_graph_values_and_sym_normalisation():
    weighted = knn_graph(POINTS, k=2, weighted=True).toarray()
    binary = knn_graph(POINTS, k=2, weighted=False).toarray()
    assert weighted.shape == (6, 6) and np.all(weighted[0] == 0) and np.all(weighted[:, 0] == 0)
    assert np.array_equal(binary, (weighted > 0).astype(np.float32))
    x = torch.nn.functional.normalize(POINTS, dim=1).numpy()
    assert weighted[1, 2] == pytest.approx(float(x[1] @ x[2]))
    # FREEDOM: every row has k ones, so D^-1/2 A D^-1/2 (row sums) has every edge = 1/k
    norm = normalise(sp.csr_matrix(binary), "sym").toarray()
    assert np.allclose(norm[binary > 0], 0.5) and np.all(norm[binary == 0] == 0)
    # the differentiable edge-list normalisation equals the scipy one on a weighted, non-symmetric graph
    coo = sp.coo_matrix(weighted)
    values = sym_normalise_edges(
        torch.from_numpy(coo.row).long(), torch.from_numpy(coo.col).long(), torch.from_numpy(coo.data), 6
    )
    ref = normalise(sp.csr_matrix(weighted), "sym").toarray()[coo.row, coo.col]
    assert np.allclose(values.numpy(), ref, atol=1e-6)


def test_raw_modalities_and_per_modality(planted):
    root, name = planted
    _, net, _, _ = build("FREEDOM", root, name)
    enc = net.modalities
    raws = raw_modalities(enc)
    assert torch.equal(raws[0], enc.data(0)) and torch.equal(raws[1], enc.data(1))
    bag = raws[2]
    assert sp.issparse(bag) and bag.shape == (enc.data(2).shape[0], enc.specs[2].num_tokens)
    tokens = enc.data(2)[7]
    assert set(bag[7].indices.tolist()) == set(tokens[tokens > 0].tolist())
    assert bag[0].nnz == 0  # padding item
    parts = enc.per_modality(torch.tensor([3, 1]))
    assert [p.shape[1] for p in parts] == [16, 8, 32]
    assert torch.equal(torch.cat(parts, dim=1), enc(torch.tensor([3, 1])))


# --- edge operators ------------------------------------------------------------------------------
def test_segment_softmax_and_edge_spmm_match_dense():
    scores = torch.tensor([1.0, 2.0, 3.0, -1.0, 0.5])
    index = torch.tensor([0, 0, 2, 2, 2])
    out = segment_softmax(scores, index, 4)
    assert torch.allclose(out[:2], torch.softmax(scores[:2], 0))
    assert torch.allclose(out[2:], torch.softmax(scores[2:], 0))
    rows, cols = torch.tensor([0, 0, 2, 1, 0]), torch.tensor([1, 2, 0, 1, 1])  # (0, 1) twice: summed
    w = torch.tensor([0.5, 2.0, -1.0, 3.0, 0.25], requires_grad=True)
    h = torch.randn(3, 4, requires_grad=True)
    dense = torch.zeros(3, 3).index_put((rows, cols), w, accumulate=True)
    got, ref = edge_spmm(rows, cols, w, h, 3), dense @ h
    assert torch.allclose(got, ref, atol=1e-6)
    g1 = torch.autograd.grad(got.square().sum(), [w, h])
    g2 = torch.autograd.grad(ref.square().sum(), [w, h])
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(g1, g2))


def test_bipartite_from_edges_equals_dataset_adjacency(planted):
    root, name = planted
    _, _, train, _ = build("FREEDOM", root, name)
    ds = train._dataset
    coo = ds.inter_matrix(form="coo")
    got = bipartite_from_edges(coo.row, coo.col, ds.user_num, ds.item_num)
    assert (got != bipartite_adjacency(ds)).nnz == 0


# --- degree-sensitive pruning --------------------------------------------------------------------
def test_degree_sensitive_weights_exact():
    users = np.array([0, 0, 0, 1])
    items = np.array([0, 1, 2, 0])  # d_u = [3, 1], d_i = [2, 1, 1]
    w = degree_sensitive_keep_weights(users, items)
    assert np.allclose(w, [1 / np.sqrt(6), 1 / np.sqrt(3), 1 / np.sqrt(3), 1 / np.sqrt(2)])


def test_degree_sensitive_prune_counts_and_distribution():
    users = np.array([0, 0, 0, 1])
    items = np.array([0, 1, 2, 0])
    assert np.array_equal(degree_sensitive_prune(users, items, 0.0), np.arange(4))
    kept = degree_sensitive_prune(users, items, 0.5, torch.Generator().manual_seed(0))
    assert len(kept) == 2 and len(set(kept.tolist())) == 2 and kept.max() < 4
    assert len(degree_sensitive_prune(users, items, 0.8)) == int(4 * 0.2)  # 0
    # keep 1 of 4: P(edge e) = w_e / sum(w), sampled without replacement (Gumbel top-k)
    gen = torch.Generator().manual_seed(1)
    counts = np.bincount([degree_sensitive_prune(users, items, 0.75, gen)[0] for _ in range(4000)], minlength=4)
    w = degree_sensitive_keep_weights(users, items)
    assert np.allclose(counts / 4000, w / w.sum(), atol=0.03)


# --- model internals -----------------------------------------------------------------------------
def test_vbpr_score_is_the_paper_formula(planted):
    root, name = planted
    _, net, _, _ = build("VBPR", root, name)
    torch.nn.init.normal_(net.item_bias.weight)
    users, items = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    user_all, item_all = net.compute_all()
    got = (user_all[users] * item_all[items]).sum(-1)
    f = net.modalities(items)
    ref = (
        net.item_bias(items).squeeze(-1)
        + (net.user_id_embedding(users) * net.item_id_embedding(items)).sum(-1)
        + (net.user_content_embedding(users) * (f @ net.projection.weight.t())).sum(-1)
        + f @ net.content_bias.weight.squeeze(0)
    )
    assert torch.allclose(got, ref, atol=1e-5)
    _, (batch_items,) = net.batch_embeddings(users, [items])
    assert torch.allclose(batch_items, item_all[items], atol=1e-6)


def test_vbpr_without_item_biases_is_mmrecs_score(planted):
    # item_biases False: gamma_u . gamma_i + theta_u . (E f_i), no bias parameters, and the content penalty
    # sees the whole scored vectors (no constant column to cut)
    root, name = planted
    _, net, train, _ = build("VBPR", root, name, item_biases=False)
    assert not hasattr(net, "item_bias") and not hasattr(net, "content_bias")
    users, items = torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6])
    user_all, item_all = net.compute_all()
    assert user_all.shape[1] == item_all.shape[1] == net.id_size + net.content_size
    got = (user_all[users] * item_all[items]).sum(-1)
    f = net.modalities(items)
    ref = ((net.user_id_embedding(users) * net.item_id_embedding(items)).sum(-1)
           + (net.user_content_embedding(users) * (f @ net.projection.weight.t())).sum(-1))
    assert torch.allclose(got, ref, atol=1e-5)
    user_e, item_e = net.batch_embeddings(users, [items])
    assert torch.equal(net.content_reg_embeddings(users, [items], user_e, item_e)[0], user_e)
    assert len(net.reg_embeddings(users, [items])) == 3  # gamma_u, theta_u, gamma_i
    assert_predict_agrees_with_full_sort(net)


def test_grcn_refined_weights_are_pruned_and_learn(planted):
    root, name = planted
    _, net, train, _ = build("GRCN", root, name)
    a = torch.tensor([[0.2, 0.5], [0.3, 0.1]])  # two edges, two modalities
    net.edge_weight_mode = "max"
    w_user, w_item = net.refined_weights(a, -a)
    assert torch.allclose(w_user, torch.tensor([0.5, 0.3])) and torch.all(w_item == 0)  # negative -> pruned
    net.edge_weight_mode = "mean"
    assert torch.allclose(net.refined_weights(a, a)[0], torch.tensor([0.35, 0.2]))
    net.edge_weight_mode = "confid"
    user_all, item_all = net.compute_all()
    d, c, m = net.embedding_size, net.content_size, len(net.modalities.specs)
    assert user_all.shape == (net.n_users, d + m * c) and item_all.shape == (net.n_items, d + m * c)
    net.calculate_loss(next(iter(train))).sum().backward()
    assert net.confidence.grad.abs().sum() > 0 and net.projections[0].weight.grad.abs().sum() > 0


def test_lattice_learned_graph_is_sparse_and_trained(planted):
    root, name = planted
    _, net, train, _ = build("LATTICE", root, name, knn_k=5)
    n = net.n_items
    for m in range(len(net.modalities.specs)):
        rows, cols = net.learned_edges(m)
        assert len(rows) == 5 * (n - 1)  # k per real item, none for the padding item
        assert net.raw_adj[m].adj._nnz() == 5 * (n - 1)
    # one item-graph propagation equals the dense combination of the same graphs
    h = torch.randn(n, 3)
    weights = torch.softmax(net.modal_weight, 0)
    ref = torch.zeros(n, 3)
    for m, p in enumerate(net.projected()):
        rows, cols = net.learned_edges(m)
        p = torch.nn.functional.normalize(p, dim=-1)
        sim = (p[rows] * p[cols]).sum(-1).clamp_min(0)
        learned = torch.zeros(n, n).index_put((rows, cols), sim, accumulate=True)
        learned = torch.from_numpy(normalise(sp.csr_matrix(learned.detach().numpy()), "sym").toarray())
        ref = ref + weights[m] * (0.1 * learned @ h + 0.9 * net.raw_adj[m].adj.to_dense() @ h)
    assert torch.allclose(net.item_graph_propagate(h, net.item_graph()), ref.detach(), atol=1e-5)
    net.calculate_loss(next(iter(train))).sum().backward()
    assert net.modal_weight.grad.abs().sum() > 0 and net.projections[0].weight.grad.abs().sum() > 0


def test_freedom_prunes_per_epoch_and_evaluates_on_the_full_graph(planted):
    root, name = planted
    _, net, train, _ = build("FREEDOM", root, name, edge_prune_ratio=0.5)
    n_edges = len(net.edge_users)
    assert net.mm_adj.adj._nnz() <= 3 * 10 * (net.n_items - 1)  # union of the modalities' kNN graphs
    batches = iter(train)
    net.calculate_loss(next(batches)).backward()
    first = net.train_adj
    assert first is not net.full_adj
    assert first.adj._nnz() == 2 * int(n_edges * 0.5)  # kept edges, both directions
    for _ in range(net.steps_per_epoch - 1):
        net.calculate_loss(next(batches))
    assert net.train_adj is first  # same epoch: same graph
    net.calculate_loss(next(iter(train)))
    assert net.train_adj is not first  # next epoch: resampled
    net.eval()
    with torch.no_grad():
        user_all, item_all = net.compute_all()
        ego = torch.cat([net.user_embedding.weight, net.item_embedding.weight])
        full = net.full_adj.adj.to_dense()
        lg = (ego + full @ ego + full @ full @ ego) / 3
        h = net.mm_adj.adj.to_dense() @ net.item_embedding.weight
    assert torch.allclose(user_all, lg[: net.n_users], atol=1e-5)
    assert torch.allclose(item_all, lg[net.n_users :] + h, atol=1e-5)


def test_freedom_modality_weights_must_match(planted):
    root, name = planted
    with pytest.raises(ValueError, match="one weight per modality"):
        build("FREEDOM", root, name, modality_weights=[0.1, 0.9])


# --- RecBole interface, two and three modalities -------------------------------------------------
@pytest.fixture
def two_modalities(tmp_path):
    """A planted dataset with visual + tags only (no audio)."""
    write_planted_dataset(tmp_path / "two", with_audio=False)
    return tmp_path / "two", "planted"


@pytest.mark.parametrize("model", BASELINES)
@pytest.mark.parametrize("modalities", ["three", "two"])
def test_predict_agrees_with_full_sort_predict(request, model, modalities):
    root, name = request.getfixturevalue("planted" if modalities == "three" else "two_modalities")
    _, net, train, _ = build(model, root, name)
    assert len(net.modalities.specs) == (3 if modalities == "three" else 2)
    loss = net.calculate_loss(next(iter(train)))
    assert loss.numel() == 1 and torch.isfinite(loss).all()  # shape [1] when reg_weight > 0 (RecBole's EmbLoss)
    loss.sum().backward()
    net.eval()
    n_items = train._dataset.item_num
    users = torch.tensor([1, 5, 9])
    with torch.no_grad():
        full = net.full_sort_predict(Interaction({"user_id": users})).view(len(users), n_items)
        cached = net.restore_item_e
        pair = Interaction({"user_id": users.repeat_interleave(n_items), "item_id": torch.arange(n_items).repeat(3)})
        single = net.predict(pair).view(len(users), n_items)
    assert net.restore_item_e is cached  # the base's cache served both
    assert torch.isfinite(full).all()
    assert torch.allclose(full, single, atol=1e-5)


# --- learning on the planted dataset -------------------------------------------------------------
@pytest.mark.parametrize("model", BASELINES)
def test_baseline_learns_what_features_decide(cold_planted, model):
    """Where the feature cluster decides taste, every baseline ranks items it never saw in training by
    their content: far above a random order, and far above itself trained on shuffled features."""
    assert_learns_what_features_decide(model, cold_planted, epochs=5, learning_rate=0.005)


# --- the command line ----------------------------------------------------------------------------
@pytest.mark.parametrize("model,with_audio", [("FREEDOM", True), ("GRCN", False)])
def test_run_recbole_cli(tmp_path, model, with_audio):
    path = write_planted_dataset(tmp_path / "data", with_audio=with_audio)
    item_cols = ["item_id", "visual"] + (["audio"] if with_audio else []) + ["tags"]
    (path / "planted.yaml").write_text(
        f"load_col:\n  inter: [user_id, item_id]\n  item: [{', '.join(item_cols)}]\n"
    )
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_recbole.py"), f"--model={model}", "--dataset=planted",
         f"--data_path={tmp_path / 'data'}", "--epochs=1", "--state=ERROR", "--show_progress=False",
         "--train_batch_size=512", f"--checkpoint_dir={tmp_path / 'saved'}"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"Test results of {model} on planted" in proc.stdout
    line = next(l for l in proc.stdout.splitlines() if l.strip().startswith("ndcg@10"))
    assert 0 < float(line.split(":")[1]) <= 1


EDGE_ROWS = torch.tensor([0, 0, 2, 1, 0, 4, 4, 2, 1, 0])  # (0, 1) twice: summed; row 3 and col 6 empty
EDGE_COLS = torch.tensor([1, 2, 0, 1, 1, 5, 0, 3, 4, 1])
SORTED = torch.argsort(EDGE_ROWS * 7 + EDGE_COLS)  # the same edges in CSR order (no permutation stored)


@pytest.mark.parametrize("order", ["unsorted", "csr"])
def test_edge_pattern_ops_match_dense_forward_and_gradients(order):
    """EdgePattern.spmm / spmm_t / dot / softmax == dense references, values and gradients (duplicates summed)."""
    from recbole_metammf.layers.graph import EdgePattern

    torch.manual_seed(0)
    n_rows, n_cols, d = 5, 7, 3
    rows, cols = (EDGE_ROWS, EDGE_COLS) if order == "unsorted" else (EDGE_ROWS[SORTED], EDGE_COLS[SORTED])
    pattern = EdgePattern(rows, cols, n_rows, n_cols)
    assert (pattern.perm is None) == (order == "csr")
    w = torch.randn(len(rows), dtype=torch.float64, requires_grad=True)
    h = torch.randn(n_cols, d, dtype=torch.float64, requires_grad=True)
    g = torch.randn(n_rows, d, dtype=torch.float64, requires_grad=True)

    def dense(w):
        return torch.zeros(n_rows, n_cols, dtype=w.dtype).index_put((rows, cols), w, accumulate=True)

    def dense_softmax(scores, index, n):  # a full softmax per group through a masked [n, E] matrix
        mask = index.unsqueeze(0) == torch.arange(n).unsqueeze(1)  # [n, E]
        probs = torch.softmax(scores.unsqueeze(0).masked_fill(~mask, float("-inf")), dim=1)
        return probs.nan_to_num(0.0).sum(0)  # empty groups give nan rows

    cases = [
        (lambda: pattern.spmm(w, h), lambda: dense(w) @ h, [w, h]),
        (lambda: pattern.spmm_t(w, g), lambda: dense(w).t() @ g, [w, g]),
        (lambda: pattern.dot(g, h), lambda: (g[rows] * h[cols]).sum(-1), [g, h]),
        (lambda: pattern.softmax(w, "rows"), lambda: dense_softmax(w, rows, n_rows), [w]),
        (lambda: pattern.softmax(w, "cols"), lambda: dense_softmax(w, cols, n_cols), [w]),
        (lambda: pattern.softmax(w, "rows", bounded=True), lambda: dense_softmax(w, rows, n_rows), [w]),
        (lambda: pattern.softmax(w, "cols", bounded=True), lambda: dense_softmax(w, cols, n_cols), [w]),
    ]


    for got_fn, ref_fn, inputs in cases:
        got, ref = got_fn(), ref_fn()
        assert got.shape == ref.shape and torch.allclose(got, ref, atol=1e-12)
        weights = torch.randn_like(ref)
        g_got = torch.autograd.grad((got * weights).sum(), inputs)
        g_ref = torch.autograd.grad((ref * weights).sum(), inputs)
        assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(g_got, g_ref))
    # same as the generic edge_spmm, and torch's own gradient check
    assert torch.allclose(pattern.spmm(w, h), edge_spmm(rows, cols, w, h, n_rows), atol=1e-12)
    assert torch.autograd.gradcheck(lambda w, h: pattern.spmm(w, h), (w, h))
    assert torch.autograd.gradcheck(lambda w, g: pattern.spmm_t(w, g), (w, g))
    assert torch.autograd.gradcheck(lambda g, h: pattern.dot(g, h), (g, h))
    assert torch.autograd.gradcheck(lambda w: pattern.softmax(w, "cols"), (w,))
    assert torch.allclose(pattern.softmax(w, "rows"), segment_softmax(w, rows, n_rows), atol=1e-12)
    assert torch.allclose(pattern.softmax(w, "cols"), segment_softmax(w, cols, n_cols), atol=1e-12)
    # the pattern's index tensors are buffers: it deep-copies and moves with a model
    import copy

    clone = copy.deepcopy(pattern)
    assert torch.equal(clone.spmm(w, h), pattern.spmm(w, h))


def test_grcn_fast_ops_equal_the_generic_edge_formulation(planted):
    """GRCN's CSR-pattern ops give what the generic (COO edge_spmm / segment_softmax) formulation gives."""
    import torch.nn.functional as F

    root, name = planted
    _, net, _, _ = build("GRCN", root, name)
    u, i = net.edge_user, net.edge_item

    def reference():
        user_reps, item_reps, a_users, a_items = [], [], [], []
        for m, content in enumerate(net.modalities.per_modality()):
            feat = F.normalize(F.leaky_relu(net.projections[m](content), net.negative_slope), dim=-1)
            pref = F.normalize(net.preferences[m], dim=-1)
            for _ in range(net.n_routing):
                a_user = segment_softmax((pref[u] * feat[i]).sum(-1), u, net.n_users)
                pref = F.normalize(pref + edge_spmm(u, i, a_user, feat, net.n_users), dim=-1)
            score = (pref[u] * feat[i]).sum(-1)
            a_user, a_item = segment_softmax(score, u, net.n_users), segment_softmax(score, i, net.n_items)
            user_reps.append(pref + edge_spmm(u, i, a_user, feat, net.n_users))
            item_reps.append(feat + edge_spmm(i, u, a_item, pref, net.n_items))
            a_users.append(a_user)
            a_items.append(a_item)
        w_user, w_item = net.refined_weights(torch.stack(a_users, -1), torch.stack(a_items, -1))
        n, item_node = net.n_users + net.n_items, net.n_users + i
        rows, cols = torch.cat([u, item_node]), torch.cat([item_node, u])
        weight, x = torch.cat([w_user, w_item]), F.normalize(net.id_embedding, dim=-1)
        h1 = edge_spmm(rows, cols, weight, x, n)
        h2 = edge_spmm(rows, cols, weight, h1, n)
        id_user, id_item = torch.split(x + h1 + h2, [net.n_users, net.n_items])
        return torch.cat([id_user, *user_reps], dim=-1), torch.cat([id_item, *item_reps], dim=-1)

    params = [p for p in net.parameters() if p.requires_grad]
    got, ref = net.compute_all(), reference()
    weights = [torch.randn_like(t) for t in ref]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(got, ref))
    g_got = torch.autograd.grad(sum((t * w).sum() for t, w in zip(got, weights)), params, allow_unused=True)
    g_ref = torch.autograd.grad(sum((t * w).sum() for t, w in zip(ref, weights)), params, allow_unused=True)
    for a, b in zip(g_got, g_ref):
        assert (a is None) == (b is None)
        assert a is None or torch.allclose(a, b, atol=1e-4, rtol=1e-4)
