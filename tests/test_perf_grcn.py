"""Issue 12: GRCN's block-diagonal routing of all modalities at once equals routing them one by one."""

from __future__ import annotations

import pytest
import torch

from conftest import build_model
from recbole_metammf.model.grcn import GRCN


@pytest.mark.parametrize("mode", ["confid", "max", "mean"])
def test_stacked_routing_equals_per_modality_routing(planted, monkeypatch, mode):
    root, name = planted
    _, net, train, _ = build_model("GRCN", root, name, edge_weight_mode=mode)
    assert len(net.modalities.specs) == 3  # visual, audio, tags (a learned token embedding)
    net.train()
    batch = next(iter(train))

    def run(stacked):
        monkeypatch.setattr(GRCN, "stack_modalities", stacked)
        net.zero_grad(set_to_none=True)
        user, item = net.compute_all()
        loss = net.calculate_loss(batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
        return user.detach(), item.detach(), loss.detach(), grads

    u1, i1, l1, g1 = run(True)
    u0, i0, l0, g0 = run(False)
    assert torch.allclose(u1, u0, atol=1e-5) and torch.allclose(i1, i0, atol=1e-5)
    assert torch.allclose(l1, l0, rtol=1e-5, atol=1e-6)
    assert g1.keys() == g0.keys() and any("token" in k for k in g1)
    for k in g0:
        assert torch.allclose(g1[k], g0[k], rtol=1e-4, atol=1e-6), k
