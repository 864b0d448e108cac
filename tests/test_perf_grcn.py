"""Issue 12: GRCN's fast paths equal their plain forms: the block-diagonal routing of all modalities at
once equals routing them one by one, and a batch gathered from each block of the representation equals
the batch's rows of the concatenated tables; the fused L2 normalisation equals F.normalize."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import build_model
from recbole_metammf.layers.graph import EdgePattern, l2_normalize
from recbole_metammf.model.grcn import GRCN, _Routing


@pytest.mark.parametrize("mode", ["confid", "max", "mean"])
@pytest.mark.parametrize("stacked, blocks, fused", [(True, False, False), (False, True, False), (True, True, False),
                                                    (True, False, True), (True, True, True)])
def test_fast_paths_equal_plain_forms(planted, monkeypatch, mode, stacked, blocks, fused):
    root, name = planted
    _, net, train, _ = build_model("GRCN", root, name, edge_weight_mode=mode)
    assert len(net.modalities.specs) == 3  # visual, audio, tags (a learned token embedding)
    net.train()
    batch = next(iter(train))

    def run(stacked, blocks, fused=False):
        monkeypatch.setattr(GRCN, "stack_modalities", stacked)
        monkeypatch.setattr(GRCN, "gather_blocks", blocks)
        monkeypatch.setattr(GRCN, "fused_routing", fused)
        net.zero_grad(set_to_none=True)
        user, item = net.compute_all()
        loss = net.calculate_loss(batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        return user.detach(), item.detach(), loss.detach(), grads

    u1, i1, l1, g1 = run(stacked, blocks, fused)
    u0, i0, l0, g0 = run(False, False)
    assert torch.allclose(u1, u0, atol=1e-5) and torch.allclose(i1, i0, atol=1e-5)
    assert torch.allclose(l1, l0, rtol=1e-5, atol=1e-6)
    assert g1.keys() == g0.keys() and any("token" in k for k in g1)
    for k in g0:
        assert torch.allclose(g1[k], g0[k], rtol=1e-4, atol=1e-6), k


def test_l2_normalize_equals_f_normalize():
    torch.manual_seed(0)
    x = torch.randn(40, 6, dtype=torch.float64)
    x[3] = 0.0  # a zero row: F.normalize divides by eps, its gradient is grad / eps
    x[7] = 1e-14  # below eps: the clamp's branch
    x[9] *= 1e3
    grad = torch.randn_like(x)
    ours, ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_ours, y_ref = l2_normalize(ours), F.normalize(ref, dim=-1)
    (y_ours * grad).sum().backward()
    (y_ref * grad).sum().backward()
    assert torch.allclose(y_ours, y_ref, rtol=1e-12, atol=0)
    assert torch.allclose(ours.grad, ref.grad, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(l2_normalize, (torch.randn(5, 4, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("n_routing", [3, 0])  # 0: no routing, what MMRec's GRCN computes (hyper/GRCN.hyper)
@pytest.mark.parametrize("sorted_edges", [True, False])
def test_fused_routing_equals_the_operator_chain_and_its_gradients_check(sorted_edges, n_routing):
    """_Routing against the EdgePattern chain it replaces (values and every gradient, all four outputs
    used), and torch's numerical gradient check; edges in CSR order (GRCN's) and shuffled (a pattern
    whose row side needs its permutation too), with a user without items."""
    torch.manual_seed(0)
    n_users, n_items, c = 7, 9, 4
    rows, cols = torch.nonzero(torch.rand(n_users, n_items) < 0.4, as_tuple=True)
    rows, cols = rows[rows != 3], cols[rows != 3]  # user 3 has no item
    if not sorted_edges:
        order = torch.randperm(len(rows))
        rows, cols = rows[order], cols[order]
    pattern = EdgePattern(rows, cols, n_users, n_items).double()
    pref0 = F.normalize(torch.randn(n_users, c, dtype=torch.float64), dim=-1).requires_grad_()
    feat0 = F.normalize(torch.randn(n_items, c, dtype=torch.float64), dim=-1).requires_grad_()
    weights = [torch.randn(n_users, c, dtype=torch.float64), torch.randn(n_items, c, dtype=torch.float64),
               torch.randn(len(rows), dtype=torch.float64), torch.randn(len(rows), dtype=torch.float64)]

    def chain(pref, feat):  # GRCN.route_stacked's unfused loop
        for _ in range(n_routing):
            a = pattern.softmax(pattern.dot(pref, feat), over="rows", bounded=True)
            pref = l2_normalize(pref + pattern.spmm(a, feat))
        score = pattern.dot(pref, feat)
        a_user = pattern.softmax(score, over="rows", bounded=True)
        a_item = pattern.softmax(score, over="cols", bounded=True)
        return pref + pattern.spmm(a_user, feat), feat + pattern.spmm_t(a_item, pref), a_user, a_item

    def loss(outputs):
        return sum((o * w).sum() for o, w in zip(outputs, weights))

    fused = _Routing.apply(pref0, feat0, pattern, n_routing)
    plain = chain(pref0, feat0)
    for f, p in zip(fused, plain):
        assert torch.allclose(f, p, rtol=1e-12, atol=1e-14)
    g_fused = torch.autograd.grad(loss(fused), (pref0, feat0))
    g_plain = torch.autograd.grad(loss(plain), (pref0, feat0))
    for f, p in zip(g_fused, g_plain):
        assert torch.allclose(f, p, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda p, f: _Routing.apply(p, f, pattern, n_routing), (pref0, feat0))
