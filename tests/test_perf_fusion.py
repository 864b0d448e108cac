"""Issue 12's fast paths equal the computations they replace (values and gradients).

* MetaFusionNetwork: the meta extractor's first layer and the first fusion layer's input
  products as one matmul (``fuse_input_products``) vs apart vs the explicit per-item weights;
  the cached concatenation of constant blocks (``grouped``), a view instead when the blocks already
  lie side by side in ModalityEncoder's one dense buffer (``side_by_side``);
* MetaMMF_MF: a batch's content gathered from the cached all-items table (``gather_from_table``),
  each distinct item fused once (``dedup_items``);
* MetaMMF_GCN: one gather of the batch's rows (``batched_gather``) vs a gather per list; SAGE
  dropout with ``rand`` masks, the last layer's only on the batch's distinct rows (``fast_dropout``);
  SAGEConv's neighbour mean taken after its linear map;
* every sparse CSR product (``csr_mm``: ``addmm_`` with ``beta=0`` into an uninitialised output).
"""

from __future__ import annotations

import pytest
import torch

from conftest import build_model
from recbole_metammf.layers.fusion import FORMS, MetaFusionNetwork, as_tensor, group_blocks, side_by_side
from recbole_metammf.layers.graph import SAGEConv, SparseGraph, csr_mm, mask_dropout
from recbole_metammf.model.metammf_gcn import MetaMMF_GCN
from recbole_metammf.model.metammf_mf import MetaMMF_MF


def _randomise(module):
    torch.manual_seed(1)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.5)


def _grads(out, params):
    target = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)
    return torch.autograd.grad((out * target).sum(), params, allow_unused=True)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("widths", [(10, [8, 6], 4, 7), (6, [9], 4, None), (5, [], 8, 3)])  # full: in > out and in <= out
@pytest.mark.parametrize("blocks", [False, True])
def test_fused_input_products_equal_separate_and_explicit(form, widths, blocks, monkeypatch):
    d_in, hidden, out, meta_hidden = widths
    torch.manual_seed(0)
    net = MetaFusionNetwork(d_in, hidden, out, meta_dim=3, meta_hidden=meta_hidden, form=form, rank=3).double()
    _randomise(net)
    n = 13
    if blocks:  # a constant block, a learned one (as a token embedding), a constant one
        k = d_in // 3
        x = [torch.randn(n, k, dtype=torch.double), torch.randn(n, k, dtype=torch.double, requires_grad=True),
             torch.randn(n, d_in - 2 * k, dtype=torch.double)]
        learned = [x[1]]
    else:
        x = torch.randn(n, d_in, dtype=torch.double)
        learned = []
    params = [*net.parameters(), *learned]

    monkeypatch.setattr(MetaFusionNetwork, "fuse_input_products", True)
    fused = net(x)
    g_fused = _grads(fused, params)
    monkeypatch.setattr(MetaFusionNetwork, "fuse_input_products", False)
    apart = net(x)
    g_apart = _grads(apart, params)
    explicit = net.forward_explicit(as_tensor(x))
    g_expl = _grads(explicit, params)

    assert fused.shape == (n, out)
    assert torch.allclose(fused, apart, atol=1e-10)
    assert torch.allclose(fused, explicit, atol=1e-9)
    for a, b, c in zip(g_fused, g_apart, g_expl):
        assert (a is None) == (b is None) == (c is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-9)
            assert torch.allclose(a, c, atol=1e-8)


def test_grouped_caches_constant_runs_and_notices_changes():
    net = MetaFusionNetwork(9, [4], 2, meta_dim=2)
    a, b, c = torch.randn(5, 3), torch.randn(5, 4), torch.randn(5, 2)
    learned = torch.randn(5, 2, requires_grad=True)

    first = net.grouped([a, b, learned, c])
    expected = group_blocks([a, b, learned, c])
    assert len(first) == 3 and all(torch.equal(x, y) for x, y in zip(first, expected))
    assert first[1] is learned and first[2] is c  # single blocks pass through
    again = net.grouped([a, b, learned, c])
    assert again[0] is first[0]  # the constant run's concatenation is reused

    b.add_(1.0)  # in place: the version counter changes, so does the concatenation
    changed = net.grouped([a, b, learned, c])
    assert changed[0] is not first[0] and torch.equal(changed[0], torch.cat([a, b], dim=1))
    other = net.grouped([a.clone(), b, learned, c])  # a new tensor: a new entry
    assert other[0] is not changed[0] and torch.equal(other[0], changed[0])

    t = torch.randn(5, 9)
    assert net.grouped(t) is t
    lr = [torch.randn(5, 4, requires_grad=True), torch.randn(5, 5, requires_grad=True)]
    out = net.grouped(lr)  # learned runs are concatenated every call (their values change)
    assert out.requires_grad and torch.equal(out, torch.cat(lr, dim=1))
    assert len(net._concat_cache) <= 4


def test_grouped_cache_is_dropped_by_deepcopy():
    import copy

    net = MetaFusionNetwork(6, [4], 2, meta_dim=2)
    net.grouped([torch.randn(3, 3), torch.randn(3, 3)])
    assert len(net._concat_cache) == 1
    assert len(copy.deepcopy(net)._concat_cache) == 0


def _loss_and_grads(net, batch):
    net.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # the same dropout masks on both paths
    loss = net.calculate_loss(batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def _assert_same_loss_and_grads(loss_fast, g_fast, loss_ref, g_ref):
    """The fast path's loss and every parameter's gradient equal the reference computation's."""
    assert torch.allclose(loss_fast, loss_ref, rtol=1e-5, atol=1e-6)
    assert g_fast.keys() == g_ref.keys()
    for k in g_ref:
        assert torch.allclose(g_fast[k], g_ref[k], rtol=1e-4, atol=1e-6), k


@pytest.mark.parametrize("audio_tags", [(True, False), (True, True)])  # dense only; dense + tokens (no table)
def test_mf_gather_from_table_equals_per_modality_gathers(tmp_path, monkeypatch, audio_tags):
    from conftest import write_planted_dataset

    with_audio, with_tokens = audio_tags
    write_planted_dataset(tmp_path / "data", with_audio=with_audio, with_tokens=with_tokens)
    _, net, train, _ = build_model("MetaMMF_MF", tmp_path / "data", "planted", content_reg_weight=0.1)
    net.train()
    batch = next(iter(train))
    items = torch.cat([batch[net.ITEM_ID], batch[net.NEG_ITEM_ID]])
    expected = torch.cat(net.modalities.per_modality(items), dim=1)
    got = as_tensor(net.content_input(items))
    assert torch.equal(got, expected)

    assert len(torch.unique(items)) < len(items)  # the batch repeats items: dedup_items has work to do
    monkeypatch.setattr(MetaMMF_MF, "gather_from_table", True)
    monkeypatch.setattr(MetaMMF_MF, "dedup_items", True)
    loss_fast, g_fast = _loss_and_grads(net, batch)
    monkeypatch.setattr(MetaMMF_MF, "gather_from_table", False)
    monkeypatch.setattr(MetaMMF_MF, "dedup_items", False)
    monkeypatch.setattr(MetaFusionNetwork, "fuse_input_products", False)
    loss_ref, g_ref = _loss_and_grads(net, batch)
    _assert_same_loss_and_grads(loss_fast, g_fast, loss_ref, g_ref)


@pytest.mark.parametrize("on_rows", [True, False])
@pytest.mark.parametrize("extra", [{}, {"propagation": "lightgcn"}, {"require_pow": True, "reg_weight": 0.01}])
def test_gcn_batched_gather_equals_per_list_gathers(planted, monkeypatch, extra, on_rows):
    """One gather (and, ``on_rows``, the last SAGE layer computed on the batch's rows only) equals the
    whole-graph computation gathered per list. The last layer's dropout is 0 here (its masks are drawn
    per row on the fast path; their law is tested below); layer 1's dropout masks are the same draws."""
    root, name = planted
    _, net, train, _ = build_model("MetaMMF_GCN", root, name, content_reg_weight=0.1, dropout=[0.1, 0.0], **extra)
    net.train()
    batch = next(iter(train))
    monkeypatch.setattr(MetaMMF_GCN, "fast_dropout", False)  # its masks differ in draw; tested below
    monkeypatch.setattr(MetaMMF_GCN, "last_layer_on_rows", on_rows)
    monkeypatch.setattr(MetaMMF_GCN, "batched_gather", True)
    loss_fast, g_fast = _loss_and_grads(net, batch)
    monkeypatch.setattr(MetaMMF_GCN, "batched_gather", False)
    monkeypatch.setattr(MetaFusionNetwork, "fuse_input_products", False)
    loss_ref, g_ref = _loss_and_grads(net, batch)
    _assert_same_loss_and_grads(loss_fast, g_fast, loss_ref, g_ref)
    # evaluation is unchanged: compute_all splits the same propagated vectors
    net.eval()
    with torch.no_grad():
        u, i = net.compute_all()
    assert u.shape[0] == net.n_users and i.shape[0] == net.n_items


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_mask_dropout_has_dropouts_law_and_gradient(p):
    torch.manual_seed(0)
    h = torch.rand(400, 500, dtype=torch.double) + 0.5  # no zeros of its own
    h.requires_grad_(True)
    out = mask_dropout(h, p)
    ratio = (out / h).detach()
    kept = ratio != 0
    assert torch.allclose(ratio[kept], torch.full_like(ratio[kept], 1 / (1 - p)))  # kept ones scaled by 1/(1-p)
    n = h.numel()
    sd = (p * (1 - p) / n) ** 0.5
    assert abs((~kept).double().mean().item() - p) < 5 * sd  # each dropped with probability p
    w = torch.randn_like(h)
    (grad,) = torch.autograd.grad((out * w).sum(), h)
    assert torch.allclose(grad, w * ratio)  # backward: grad * mask * scale, as F.dropout
    assert mask_dropout(h, p, training=False) is h and mask_dropout(h, 0.0) is h
    assert torch.equal(mask_dropout(h, 1.0), torch.zeros_like(h))


def test_gcn_last_dropout_on_batch_rows_masks_each_node_once(planted, monkeypatch):
    """The fast path masks the last SAGE layer's output on the batch's distinct rows: a gathered row is
    the undropped row, scaled by 0 or 1/(1-p) per element, a node repeated in the batch gets the same
    mask each time (as with the whole matrix masked, then gathered), and about p of it is dropped."""
    root, name = planted
    p = 0.5
    _, net, train, _ = build_model("MetaMMF_GCN", root, name, dropout=[0.1, p])
    net.train()
    batch = next(iter(train))
    users, pos, neg = batch[net.USER_ID], batch[net.ITEM_ID], batch[net.NEG_ITEM_ID]
    rows, _ = net._batch_rows(users, [pos, neg])
    assert len(torch.unique(rows)) < len(rows)  # repeats to check
    with torch.no_grad():
        torch.manual_seed(3)
        fast = net.propagate(rows)
        net.dropouts[-1] = 0.0  # the same layer-1 mask (same seed, drawn first), no last dropout
        torch.manual_seed(3)
        plain = net.propagate()[rows]
    # every element dropped (0) or kept and scaled by 1/(1-p); the rows path takes the neighbour mean
    # before the linear map and the whole-graph path after it, so kept values agree up to rounding
    kept = fast != 0
    assert torch.allclose(fast[kept], plain[kept] / (1 - p), rtol=1e-4, atol=1e-6)
    first, repeat = {}, 0
    for j, r in enumerate(rows.tolist()):
        if r in first:
            assert torch.equal(fast[j], fast[first[r]])
            repeat += 1
        else:
            first[r] = j
    assert repeat > 0
    distinct = torch.tensor(sorted(first.values()))
    dropped = (fast[distinct] == 0) & (plain[distinct] != 0)
    n = int((plain[distinct] != 0).sum())
    assert abs(dropped.sum().item() / n - p) < 5 * (p * (1 - p) / n) ** 0.5


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_csr_mm_ignores_the_uninitialised_output(monkeypatch, index_dtype):
    torch.manual_seed(0)
    dense = torch.rand(60, 30) * (torch.rand(60, 30) < 0.1)
    dense[::4] = 0.0  # rows without non-zeros: their output rows must be written as zeros
    csr = dense.to_sparse_csr()
    adj = torch.sparse_csr_tensor(csr.crow_indices().to(index_dtype), csr.col_indices().to(index_dtype),
                                  csr.values(), csr.shape)
    empty = torch.sparse_csr_tensor(torch.zeros(61, dtype=index_dtype), torch.zeros(0, dtype=index_dtype),
                                    torch.zeros(0), (60, 30))
    # every fresh output full of NaN: a product that read it (beta != 0, or rows left unwritten) shows
    monkeypatch.setattr(torch, "empty", lambda *a, **k: torch.full(a, float("nan"), **k))
    for h in (torch.randn(30, 8), torch.randn(8, 30).t(), torch.randn(30, 16)[:, ::2]):  # row-, column-major, strided
        out = csr_mm(adj, h)
        assert not out.isnan().any()
        assert torch.allclose(out, dense @ h, atol=1e-6)
        assert torch.equal(csr_mm(empty, h), torch.zeros(60, h.shape[1]))
    # outside an autograd Function, an operand that records a gradient still gets one
    h = torch.randn(30, 8, requires_grad=True)
    (grad,) = torch.autograd.grad(csr_mm(adj, h).sum(), h)
    assert torch.allclose(grad, dense.t() @ torch.ones(60, 8), atol=1e-6)


def test_sage_conv_equals_its_definition():
    import scipy.sparse as sp

    torch.manual_seed(0)
    adj = sp.random(40, 40, density=0.1, format="csr", dtype="float32", random_state=0)
    adj[3] = 0.0  # a node without neighbours: its output is b + W_r h
    adj.eliminate_zeros()
    graph = SparseGraph(adj)
    conv = SAGEConv(8, 6)
    h = torch.randn(40, 8, requires_grad=True)
    dense = torch.from_numpy(adj.toarray())
    expected = conv.lin_neigh(dense @ h) + conv.lin_root(h)
    for rows in (None, torch.tensor([3, 0, 7, 3])):
        out = conv(h, graph, rows=rows)
        want = expected if rows is None else expected[rows]
        assert torch.allclose(out, want, atol=1e-5)
        g = torch.randn_like(out)
        ours = torch.autograd.grad(out, [h, conv.lin_neigh.weight, conv.lin_neigh.bias], g, retain_graph=True)
        ref = torch.autograd.grad(want, [h, conv.lin_neigh.weight, conv.lin_neigh.bias], g, retain_graph=True)
        for a, b in zip(ours, ref):
            assert torch.allclose(a, b, atol=1e-5)


def test_side_by_side_is_a_view_equal_to_cat_only_for_adjacent_columns():
    buffer = torch.randn(50, 12)
    a, b, c = buffer[:, 0:5], buffer[:, 5:9], buffer[:, 9:12]
    for run in ([a, b], [a, b, c], [b, c], [a]):
        view = side_by_side(run)
        assert torch.equal(view, torch.cat(run, dim=-1))
        assert view.data_ptr() == run[0].data_ptr()  # no copy
    assert side_by_side([a, b, c]).is_contiguous()
    assert side_by_side([a, c]) is None  # a gap
    assert side_by_side([b, a]) is None  # out of order
    assert side_by_side([a, torch.randn(50, 4)]) is None  # another buffer
    assert side_by_side([buffer[:10, 0:5], buffer[:10, 5:9]]) is not None
    assert side_by_side([buffer[:10, 0:5], buffer[10:20, 5:9]]) is None  # other rows


def test_encoder_keeps_dense_modalities_in_one_buffer_and_fusion_reads_it_without_copy(planted):
    root, name = planted
    _, net, _, _ = build_model("MetaMMF_GCN", root, name)
    enc = net.modalities
    dense = [i for i, spec in enumerate(enc.specs) if spec.kind == "dense"]
    assert len(dense) == 2 and enc.dense.shape[1] == sum(enc.specs[i].dim for i in dense)
    assert all(enc.data(i).data_ptr() >= enc.dense.data_ptr() for i in dense)
    assert torch.equal(torch.cat([enc.data(i) for i in dense], dim=-1), enc.dense)
    blocks = net.fusion.grouped(enc.per_modality())  # [dense run (constant), token bag (learned)]
    assert blocks[0].data_ptr() == enc.dense.data_ptr() and torch.equal(blocks[0], enc.dense)
    assert len(net.fusion._concat_cache) == 0  # nothing copied, nothing cached
