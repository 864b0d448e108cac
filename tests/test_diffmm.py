"""DiffMM: the diffusion schedule, noising and reverse pass against hand computations, the denoiser's
shape, the rebuilt modality graphs, the recommender's forward pass and loss against their formulas,
the two-part epoch under RecBole's trainer, checkpoints, learning on the planted data, and the errors."""

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
    write_planted_dataset,
)
from recbole_metammf.layers.diffusion import Denoiser, DiffusionSchedule, timestep_embedding
from recbole_metammf.layers.graph import bipartite_adjacency
from recbole_metammf.model.diffmm import info_nce, with_self_loops_sym
from test_dragon import assert_above_pop, dense_sym


# --- the diffusion layer -------------------------------------------------------------------------
def reference_schedule(steps=5, scale=0.1, lo=1e-4, hi=0.02):
    """The reference's get_betas + calculate_for_diffusion, written out in numpy."""
    var = [scale * lo + (scale * hi - scale * lo) * i / (steps - 1) for i in range(steps)]
    ab = [1 - v for v in var]
    betas = [1 - ab[0]] + [min(1 - ab[i] / ab[i - 1], 0.999) for i in range(1, steps)]
    betas[0] = 1e-4
    cum = np.cumprod([1 - b for b in betas])
    prev = np.concatenate([[1.0], cum[:-1]])
    return np.array(betas), cum, prev


def test_schedule_is_the_reference_arithmetic():
    s = DiffusionSchedule(5, 0.1, 1e-4, 0.02)
    betas, cum, prev = reference_schedule()
    # by hand: beta_1 = 1 - (1 - 5.075e-4) / (1 - 1e-5)
    assert betas[1] == pytest.approx(1 - (1 - 5.075e-4) / (1 - 1e-5), rel=1e-12)
    assert np.allclose(s.betas.numpy(), betas, rtol=1e-12) and s.betas[0] == 1e-4
    assert np.allclose(s.alphas_cumprod.numpy(), cum, rtol=1e-12)
    assert np.allclose(s.posterior_mean_coef1.numpy(), betas * np.sqrt(prev) / (1 - cum), rtol=1e-10)
    assert np.allclose(s.posterior_mean_coef2.numpy(), (1 - prev) * np.sqrt(1 - betas) / (1 - cum), rtol=1e-10)
    snr = cum / (1 - cum)
    w = s.loss_weight(torch.arange(5)).double().numpy()
    assert w[0] == 1.0 and np.allclose(w[1:], snr[:-1] - snr[1:], rtol=1e-6)
    x0, noise = torch.rand(3, 7), torch.randn(3, 7)
    t = torch.tensor([0, 2, 4])
    xt = s.q_sample(x0, t, noise)
    ref = np.sqrt(cum[[0, 2, 4]])[:, None] * x0.numpy() + np.sqrt(1 - cum[[0, 2, 4]])[:, None] * noise.numpy()
    assert np.allclose(xt.numpy(), ref, atol=1e-6)


def test_reverse_pass_by_hand():
    """With a denoiser that always answers v, x <- c1_t v + c2_t x for t = 4..0, from x_0 (no noise)."""
    s = DiffusionSchedule(5, 0.1, 1e-4, 0.02)
    betas, cum, prev = reference_schedule()
    c1, c2 = betas * np.sqrt(prev) / (1 - cum), (1 - prev) * np.sqrt(1 - betas) / (1 - cum)
    v = torch.tensor([[0.3, -1.0, 2.0]])
    x0 = torch.tensor([[1.0, 0.0, 1.0]])
    x = x0.numpy().astype(np.float64)
    for t in range(4, -1, -1):
        x = c1[t] * v.numpy() + c2[t] * x
    calls = []

    def denoiser(x, t, dropout=True):
        calls.append((t.tolist(), dropout))
        return v.expand_as(x)

    got = s.p_sample(denoiser, x0)
    assert np.allclose(got.numpy(), x, atol=1e-6)
    assert calls == [([t], False) for t in range(4, -1, -1)]  # every step, no dropout
    assert c2[0] == 0.0  # the last step returns the denoiser's answer alone
    assert torch.allclose(got, v, atol=1e-6)


def test_timestep_embedding_and_denoiser_shapes():
    emb = timestep_embedding(torch.tensor([0, 3]), 10)
    assert torch.equal(emb[0], torch.tensor([1.0] * 5 + [0.0] * 5))
    freqs = torch.exp(-math.log(10000) * torch.arange(5) / 5)
    assert torch.allclose(emb[1], torch.cat([torch.cos(3 * freqs), torch.sin(3 * freqs)]))
    assert timestep_embedding(torch.tensor([2]), 7).shape == (1, 7) and timestep_embedding(torch.tensor([2]), 7)[0, 6] == 0
    net = Denoiser(50, [40, 30], 10)  # the reference: in 50+10 -> 30 -> 40, out 40 -> 30 -> 50
    assert [tuple(l.weight.shape) for l in net.in_layers] == [(30, 60), (40, 30)]
    assert [tuple(l.weight.shape) for l in net.out_layers] == [(30, 40), (50, 30)]
    out = net(torch.rand(4, 50), torch.tensor([0, 1, 2, 3]))
    assert out.shape == (4, 50)
    net.eval()  # no dropout when asked not to, whatever the mode
    x, t = torch.rand(2, 50), torch.tensor([1, 1])
    net.train()
    assert torch.equal(net(x, t, dropout=False), net(x, t, dropout=False))


def _plain_denoiser(net, x, t, dropout=True):
    """The denoiser's definition as its docstring writes it, with autograd's own layers throughout."""
    emb = net.time_layer(timestep_embedding(t, net.time_emb_size))
    x = torch.nn.functional.normalize(x, dim=-1) if net.norm else x
    h = torch.cat([net.drop(x) if dropout else x, emb], dim=-1)
    for layer in net.in_layers:
        h = torch.tanh(layer(h))
    for j, layer in enumerate(net.out_layers):
        h = layer(h) if j == len(net.out_layers) - 1 else torch.tanh(layer(h))
    return h


@pytest.mark.parametrize("n, norm", [(50, False), (50, True), (64, False)])
def test_the_denoisers_fast_form_computes_its_plain_definition(n, norm):
    """``Denoiser.forward`` (the first layer without the rows' gradient, the item-width layer padded to 16
    columns: 50 -> 64; 64 needs none) gives the plain form's output and every gradient, with the same dropout
    draws."""
    torch.manual_seed(0)
    net = Denoiser(n, [40, 30], 10, norm=norm).train()
    x, t = torch.rand(6, n), torch.tensor([0, 1, 2, 3, 4, 1])
    outs, grads = [], []
    for forward in (lambda x: _plain_denoiser(net, x, t), lambda x: net(x, t)):
        torch.manual_seed(1)  # the same dropout mask
        net.zero_grad()
        rows = x.clone().requires_grad_(True)  # the gradient of the rows too, when asked
        out = forward(rows)
        out.square().sum().backward()
        outs.append(out.detach())
        grads.append([rows.grad] + [p.grad.clone() for p in net.parameters()])
    assert outs[0].shape == outs[1].shape == (6, n)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-6, atol=1e-7)
    assert len(grads[0]) == 1 + len(list(net.parameters()))
    for got, want in zip(grads[1], grads[0]):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert (grads[1][1 + [n for n, _ in net.named_parameters()].index("time_layer.weight")] != 0).any()
    with torch.no_grad():  # the reverse pass's call: no dropout, nothing saved
        torch.testing.assert_close(net(x, t, dropout=False), _plain_denoiser(net, x, t, dropout=False),
                                   rtol=1e-6, atol=1e-7)


# --- graphs --------------------------------------------------------------------------------------
def test_self_loop_normalisation_by_hand():
    a = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0], [1, 0, 0]], dtype=np.float32))  # degrees with loops: 3, 2, 2
    got = with_self_loops_sym(a).toarray()
    ref = np.array([[1 / 3, 1 / np.sqrt(6), 1 / np.sqrt(6)], [1 / np.sqrt(6), 1 / 2, 0], [1 / np.sqrt(6), 0, 1 / 2]])
    assert np.allclose(got, ref, atol=1e-7)


def test_rebuilt_graphs_from_the_denoised_top_items(planted):
    root, name = planted
    _, net, train, _ = build_model("DiffMM", root, name, keep_rate=1.0, rebuild_k=2)
    assert net.modal_adj is None and not bool(net.diffusion_built)
    net.rebuild_graphs()
    n_u, n_i = net.n_users, net.n_items
    users = torch.arange(1, n_u)
    with torch.no_grad():
        rows = torch.from_numpy(net.inter[1:].toarray())
        for m, denoiser in enumerate(net.denoisers):
            x = net.schedule.p_sample(denoiser, rows)
            x[:, 0] = -float("inf")
            top = torch.topk(x, 2, dim=1).indices
            assert torch.equal(net.diffusion_items[m], top)
            adj = np.zeros((n_u + n_i, n_u + n_i), dtype=np.float32)
            adj[users.repeat_interleave(2), n_u + top.flatten()] = 1
            adj = adj + adj.T + np.eye(n_u + n_i)
            assert np.allclose(net.modal_adj[m].adj.to_dense().numpy(), dense_sym(adj), atol=1e-6)
    # keep_rate: each entry kept with that probability, kept ones scaled by 1 / keep_rate
    _, net, _, _ = build_model("DiffMM", root, name, keep_rate=0.5)
    net.rebuild_graphs()
    keep = net.diffusion_keep[0]
    assert keep.numel() == net.graph_nnz == 2 * (n_u - 1) + n_u + n_i
    assert abs(keep.float().mean().item() - 0.5) < 0.05
    g = net.modal_adj[0].adj.to_dense()
    items = net.diffusion_items[0].flatten()
    ref = np.zeros((n_u + n_i, n_u + n_i), dtype=np.float32)
    ref[np.arange(1, n_u), n_u + items.numpy()] = 1
    ref = dense_sym(ref + ref.T + np.eye(n_u + n_i))
    csr = sp.csr_matrix(ref)
    csr.sort_indices()
    kept = np.where(keep.numpy(), csr.data / 0.5, 0.0)
    assert np.allclose(g.numpy(), sp.csr_matrix((kept, csr.indices, csr.indptr), shape=csr.shape).toarray(), atol=1e-6)


# --- the recommender -----------------------------------------------------------------------------
def diffmm_by_hand(net, ds):
    """forward_MM and forward_cl_MM of the reference, with dense matrices."""
    n_u = net.n_users
    a = torch.from_numpy(dense_sym(bipartite_adjacency(ds).toarray() + np.eye(n_u + net.n_items))).float()
    u, i = net.user_embedding.weight, net.item_embedding.weight
    ego = torch.cat([u, i])
    w = torch.softmax(net.modal_weight, 0)
    modal, views = 0, []
    for m, (t, content) in enumerate(zip(net.transforms, net.modalities.per_modality())):
        g = net.modal_adj[m].adj.to_dense()
        x = torch.cat([u, F.normalize(t(content), dim=1)])
        e = a @ x
        e = e + a @ torch.cat([e[:n_u], i]) + net.ris_adj_lambda * (g @ ego)
        modal = modal + w[m] * e
        v = g @ x
        views.append(v + a @ v)  # one layer
    out = modal + a @ modal + net.ris_lambda * F.normalize(modal, dim=1)
    return out[:n_u], out[n_u:], [(v[:n_u], v[n_u:]) for v in views]


def test_forward_and_loss_are_the_formulas(planted):
    root, name = planted
    _, net, train, _ = build_model("DiffMM", root, name, reg_weight=1e-3, ssl_reg=0.1)
    batch = next(iter(train))
    loss = net.calculate_loss(batch)  # the first step: diffusion step and rebuild first
    assert bool(net.diffusion_built) and net.last_diffusion_loss > 0
    user, item, views = net._forward()
    ref_user, ref_item, ref_views = diffmm_by_hand(net, train._dataset)
    assert torch.allclose(user, ref_user, atol=1e-5) and torch.allclose(item, ref_item, atol=1e-5)
    got_views = net.cl_views(views)
    for (gu, gi), (ru, ri) in zip(got_views, ref_views):
        assert torch.allclose(gu, ru, atol=1e-5) and torch.allclose(gi, ri, atol=1e-5)
    users, pos, neg = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    bpr = -torch.log(torch.sigmoid((user[users] * item[pos]).sum(-1) - (user[users] * item[neg]).sum(-1))).mean()
    reg = net.user_embedding.weight.square().sum() + net.item_embedding.weight.square().sum()

    def nce(a, b, nodes):  # the reference's contrastLoss, without the padding row in the denominator
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        num = torch.exp((a[nodes] * b[nodes]).sum(-1) / 0.5)
        return -torch.log(num / torch.exp(a[nodes] @ b[1:].T / 0.5).sum(-1)).mean()

    cl = sum(nce(user, vu, users) + nce(item, vi, pos) for vu, vi in ref_views)  # cl_method main
    assert torch.isfinite(loss) and bpr > 0 and reg > 0 and cl > 0
    assert torch.allclose(loss, bpr + 1e-3 * reg + 0.1 * cl, atol=1e-4)
    assert torch.allclose(info_nce(user, ref_views[0][0], users, 0.5), nce(user, ref_views[0][0], users), atol=1e-5)
    # pairwise: each pair of views
    net.cl_method = "pairwise"
    pairwise = net.contrastive_loss(user, item, ref_views, users, pos)
    ref_pw = sum(nce(ref_views[a][0], ref_views[b][0], users) + nce(ref_views[a][1], ref_views[b][1], pos)
                 for a in range(3) for b in range(a + 1, 3))
    assert torch.allclose(pairwise, ref_pw, atol=1e-4)


def test_two_part_epoch_under_recbole_trainer(planted):
    """The first step of each epoch trains the denoisers (their own optimiser) and rebuilds the graphs; the
    recommender's loss reaches every other parameter; RecBole's optimiser never moves the denoisers."""
    root, name = planted
    _, net, train, _ = build_model("DiffMM", root, name)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)  # what RecBole's trainer builds
    denoise = {n: p.detach().clone() for n, p in net.named_parameters() if n.startswith("denoisers.")}
    batches = list(train)
    assert len(batches) == net.steps_per_epoch
    optimizer.zero_grad()
    net.calculate_loss(batches[0]).backward()
    moved = {n for n, p in net.named_parameters() if n in denoise and not torch.equal(p, denoise[n])}
    assert moved == set(denoise)  # the diffusion step trained every denoiser parameter
    for pname, p in net.named_parameters():
        if pname.startswith("denoisers."):
            assert p.grad is None, pname
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, pname
    optimizer.step()
    after_first = {n: p.detach().clone() for n, p in net.named_parameters() if n in denoise}
    graphs = net.diffusion_items.clone(), net.diffusion_keep.clone()
    for b in batches[1:]:
        optimizer.zero_grad()
        net.calculate_loss(b).backward()
        optimizer.step()
    assert all(torch.equal(p, after_first[n]) for n, p in net.named_parameters() if n in denoise)
    assert torch.equal(net.diffusion_keep, graphs[1])  # same epoch: same graphs
    first_loss = net.last_diffusion_loss
    net.calculate_loss(batches[0])  # the next epoch's first step
    assert not torch.equal(net.diffusion_keep, graphs[1]) and net.last_diffusion_loss != first_loss


def test_checkpoint_evaluates_with_its_graphs(planted):
    root, name = planted
    _, net, train, _ = build_model("DiffMM", root, name)
    net.calculate_loss(next(iter(train)))
    _, other, _, _ = build_model("DiffMM", root, name)
    assert other.modal_adj is None
    other.load_state_dict(net.state_dict())
    assert torch.equal(other.diffusion_keep, net.diffusion_keep)
    assert_same_full_sort(net, other)


@pytest.mark.parametrize("with_audio", [True, False])
def test_predict_agrees_with_full_sort_predict(tmp_path, with_audio):
    write_planted_dataset(tmp_path / "d", with_audio=with_audio)
    _, net, train, _ = build_model("DiffMM", tmp_path / "d", cl_method="pairwise", feat_transform="leaky_relu")
    assert len(net.modalities.specs) == (3 if with_audio else 2)
    net.calculate_loss(next(iter(train))).backward()
    assert_predict_agrees_with_full_sort(net)


# --- learning ------------------------------------------------------------------------------------
def test_diffmm_trains_above_pop(cold_planted):
    assert_above_pop("DiffMM", cold_planted["planted"], epochs=5, learning_rate=0.005)


def test_diffmm_learns_what_features_decide(cold_planted):
    assert_learns_what_features_decide("DiffMM", cold_planted, epochs=5, learning_rate=0.005)


# --- errors --------------------------------------------------------------------------------------
def run_cli(tmp_path, item_cols, *args):
    path = write_planted_dataset(tmp_path / "data", with_audio=False)
    cols = "" if not item_cols else f"  item: [{', '.join(item_cols)}]\n"
    (path / "planted.yaml").write_text(f"load_col:\n  inter: [user_id, item_id]\n{cols}")
    return subprocess.run(
        [sys.executable, str(REPO / "run_recbole.py"), "--model=DiffMM", "--dataset=planted",
         f"--data_path={tmp_path / 'data'}", "--epochs=1", "--state=ERROR", "--show_progress=False", *args],
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300,
    )


def test_pairwise_with_one_modality_is_one_line(tmp_path):
    proc = run_cli(tmp_path, ["item_id", "visual"], "--cl_method=pairwise")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: DiffMM with cl_method: pairwise contrasts pairs of modalities, and dataset 'planted' has one "
        "(visual): add a second float_seq/token_seq column, or set cl_method: main"
    ]


def test_no_modality_is_one_line(tmp_path):
    proc = run_cli(tmp_path, None)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-2000:]
    assert "has no item modality" in proc.stderr


def test_bad_choice_is_one_line_before_any_work(tmp_path):
    proc = run_cli(tmp_path, ["item_id", "visual", "tags"], "--cl_method=both")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["error: config key 'cl_method' (command line) must be one of main, pairwise, got 'both'"]


def test_one_modality_with_main_trains(tmp_path):
    write_planted_dataset(tmp_path / "d", with_audio=False, with_tokens=False)
    _, net, train, _ = build_model("DiffMM", tmp_path / "d")
    assert len(net.modalities.specs) == 1 and torch.isfinite(net.calculate_loss(next(iter(train))))


@pytest.mark.parametrize("model", ["DiffMM", "DRAGON"])
def test_run_recbole_by_name(tmp_path, model):
    """Both train and evaluate by name through run_recbole.py (RecBole's get_trainer, get_flops included)."""
    path = write_planted_dataset(tmp_path / "data")
    (path / "planted.yaml").write_text("load_col:\n  inter: [user_id, item_id]\n  item: [item_id, visual, audio, tags]\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_recbole.py"), f"--model={model}", "--dataset=planted",
         f"--data_path={tmp_path / 'data'}", "--epochs=2", "--state=ERROR", "--show_progress=False",
         f"--checkpoint_dir={tmp_path / 'saved'}"],
        cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.strip().startswith("ndcg@10"))
    assert 0 < float(line.split(":")[1]) <= 1


def test_info_nce_over_distinct_nodes_equals_the_batch_mean_with_repeats():
    """A batch repeats nodes; info_nce computes each distinct one once, weighted by its count: the same loss and
    gradients as the reference's mean over every row of the batch."""
    torch.manual_seed(3)
    a = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, 4, dtype=torch.float64, requires_grad=True)
    nodes = torch.tensor([5, 2, 5, 5, 8, 2, 1, 7, 5])  # 5 four times, 2 twice

    def by_rows(a, b):  # every row of the batch, repeats included, as the reference computes it
        an, bn = F.normalize(a, dim=1), F.normalize(b, dim=1)
        pos = (an[nodes] * bn[nodes]).sum(-1) / 0.5
        return (torch.logsumexp(an[nodes] @ bn[1:].T / 0.5, dim=1) - pos).mean()

    got, want = info_nce(a, b, nodes, 0.5), by_rows(a, b)
    assert torch.allclose(got, want, atol=1e-12)
    g_got, g_want = torch.autograd.grad(got, [a, b]), torch.autograd.grad(want, [a, b])
    assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(g_got, g_want))
    assert g_got[0][5].abs().sum() > 0 and g_got[0][3].abs().sum() == 0  # a's rows outside the batch get nothing
