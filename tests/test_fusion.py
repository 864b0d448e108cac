"""The fusion module: each form's fast computation equals the explicit per-item-weight one."""

import pytest
import torch

from recbole_metammf.layers.fusion import FORMS, MetaFusionLayer, MetaFusionNetwork, MetaInfoExtractor


def _randomise(module):
    # defaults start the item-specific part near zero; test with it at full scale
    torch.manual_seed(1)
    for p in module.parameters():
        torch.nn.init.normal_(p, std=0.5)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("in_dim,out_dim", [(7, 5), (4, 9)])
def test_layer_fast_equals_explicit(form, in_dim, out_dim):
    torch.manual_seed(0)
    n, d_s = 11, 3
    layer = MetaFusionLayer(in_dim, out_dim, d_s, form=form, rank=4).double()
    _randomise(layer)
    h = torch.randn(n, in_dim, dtype=torch.double, requires_grad=True)
    s = torch.randn(n, d_s, dtype=torch.double, requires_grad=True)
    target = torch.randn(n, out_dim, dtype=torch.double)

    fast = layer(h, s)
    explicit = torch.bmm(h.unsqueeze(1), layer.item_weights(s)).squeeze(1)
    assert fast.shape == (n, out_dim)
    assert torch.allclose(fast, explicit, atol=1e-10)

    params = [h, s, *layer.parameters()]
    g_fast = torch.autograd.grad((fast * target).sum(), params)
    g_expl = torch.autograd.grad((explicit * target).sum(), params)
    for a, b in zip(g_fast, g_expl):
        assert torch.allclose(a, b, atol=1e-10)


def test_forms_differ_and_collapsed_is_one_matrix_scaled():
    """cp and collapsed share parameter shapes but not their maps; collapsed's delta is rank-R for every item."""
    torch.manual_seed(0)
    cp = MetaFusionLayer(6, 5, 3, form="cp", rank=2).double()
    _randomise(cp)
    col = MetaFusionLayer(6, 5, 3, form="collapsed", rank=2).double()
    col.load_state_dict(cp.state_dict())
    s = torch.randn(4, 3, dtype=torch.double)
    w_cp, w_col = cp.item_weights(s), col.item_weights(s)
    assert not torch.allclose(w_cp, w_col)
    delta = w_col - col.M
    base = col.A @ col.B
    ratio = delta[:, 0, 0] / base[0, 0]
    assert torch.allclose(delta, ratio.view(-1, 1, 1) * base)


@pytest.mark.parametrize("form,expected", [("full", 6 * 4 + 3 * 6 * 4), ("cp", 6 * 4 + 5 * (6 + 4 + 3)), ("collapsed", 6 * 4 + 5 * (6 + 4 + 3))])
def test_parameter_counts_match_formulas(form, expected):
    layer = MetaFusionLayer(6, 4, 3, form=form, rank=5)
    assert layer.num_parameters_formula() == expected
    assert sum(p.numel() for p in layer.parameters()) == expected


@pytest.mark.parametrize("form", FORMS)
def test_network_fast_equals_bmm_reference(form):
    torch.manual_seed(0)
    net = MetaFusionNetwork(10, [8, 6], 4, meta_dim=5, meta_hidden=7, form=form, rank=3).double()
    _randomise(net)
    x = torch.randn(13, 10, dtype=torch.double)
    fast, ref = net(x), net.forward_explicit(x)
    assert fast.shape == (13, 4)
    assert torch.allclose(fast, ref, atol=1e-9)
    g1 = torch.autograd.grad(fast.square().sum(), list(net.parameters()))
    g2 = torch.autograd.grad(ref.square().sum(), list(net.parameters()))
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-9)


def test_meta_extractor_default_hidden_is_input_width():
    ext = MetaInfoExtractor(12, 5)
    assert ext.net[0].out_features == 12 and ext.net[2].out_features == 5
    # s_i = W2 relu(W1 x + b1) + b2, no activation on s: written out from the weights
    x = torch.randn(3, 12)
    (w1, b1), (w2, b2) = (ext.net[0].weight, ext.net[0].bias), (ext.net[2].weight, ext.net[2].bias)
    expected = torch.clamp(x @ w1.t() + b1, min=0) @ w2.t() + b2
    assert torch.allclose(ext(x), expected, atol=1e-6)


def test_list_of_blocks_equals_the_concatenated_input():
    """The extractor, a fusion layer and the network take the input as column blocks of unequal widths
    (a constant dense block beside a learned one, as ModalityEncoder gives them): the same outputs and
    the same parameter gradients as for the concatenated tensor, and each learned block's gradient is
    its columns of the concatenated input's gradient."""
    torch.manual_seed(0)
    widths = [5, 3, 4]  # blocks of the 12 input columns
    ext = MetaInfoExtractor(12, 5, hidden_dim=7).double()
    layer = MetaFusionLayer(12, 6, 5, form="cp", rank=3).double()
    net = MetaFusionNetwork(12, [8], 4, meta_dim=5, meta_hidden=7, form="cp", rank=3).double()
    for module in (ext, layer, net):
        _randomise(module)
    x = torch.randn(9, 12, dtype=torch.double)
    s = torch.randn(9, 5, dtype=torch.double)
    target_s, target_h = torch.randn(9, 5, dtype=torch.double), torch.randn(9, 6, dtype=torch.double)
    target_e = torch.randn(9, 4, dtype=torch.double)

    def run(inputs):
        out = (ext(inputs), layer(inputs, s), net(inputs))
        loss = (out[0] * target_s).sum() + (out[1] * target_h).sum() + (out[2] * target_e).sum()
        params = [*ext.parameters(), *layer.parameters(), *net.parameters()]
        learned = [t for t in (inputs if isinstance(inputs, list) else [inputs]) if t.requires_grad]
        return out, torch.autograd.grad(loss, params + learned)

    whole = x.clone().requires_grad_(True)
    out_whole, grads_whole = run(whole)
    blocks = [b.clone() for b in x.split(widths, dim=1)]
    blocks[1].requires_grad_(True)  # a learned block between two constant ones
    out_blocks, grads_blocks = run(blocks)
    for a, b in zip(out_blocks, out_whole):
        assert torch.allclose(a, b, atol=1e-10)
    n_params = len(grads_whole) - 1
    for a, b in zip(grads_blocks[:n_params], grads_whole[:n_params]):
        assert torch.allclose(a, b, atol=1e-10)
    assert torch.allclose(grads_blocks[n_params], grads_whole[n_params][:, 5:8], atol=1e-10)


def _xavier_bound(fan_in, fan_out):
    return (6 / (fan_in + fan_out)) ** 0.5


def _is_uniform_with_bound(t, bound):
    # U(-b, b): max |x| just under b, std b / sqrt(3)
    return 0.9 * bound < t.abs().max() <= bound and abs(t.std() / (bound / 3**0.5) - 1) < 0.1


@pytest.mark.parametrize("form", FORMS)
def test_initial_scale_follows_the_reference_rule(form):
    """SPEC section 3: Xavier-uniform on M; full: on T viewed as (d_s, in*out); cp and collapsed:
    every factor A, B, C at its own shape, with no extra down-scaling of C."""
    torch.manual_seed(0)
    n_in, n_out, d_s, rank = 256, 128, 5, 16
    layer = MetaFusionLayer(n_in, n_out, d_s, form=form, rank=rank)
    assert _is_uniform_with_bound(layer.M, _xavier_bound(n_in, n_out))
    if form == "full":
        assert _is_uniform_with_bound(layer.T, _xavier_bound(d_s, n_in * n_out))
    else:
        assert _is_uniform_with_bound(layer.A, _xavier_bound(rank, n_in))  # [in, R]: fan_in R, fan_out in
        assert _is_uniform_with_bound(layer.B, _xavier_bound(n_out, rank))
        assert _is_uniform_with_bound(layer.C, _xavier_bound(d_s, rank))


def test_item_specific_part_starts_below_the_shared_fusion():
    torch.manual_seed(0)
    s = torch.randn(50, 5)
    m_std = {}
    for form in FORMS:
        lay = MetaFusionLayer(256, 128, 5, form=form, rank=16)
        delta = lay.item_weights(s) - lay.M
        m_std[form] = delta.std() / lay.M.std()
    # full: T's huge fan starts it near zero; cp / collapsed: a product of three factors,
    # smaller than M but not by orders of magnitude (the ~170x extra scaling is gone)
    # (with s ~ N(0, 1); the extractor's s starts smaller). The former extra scaling of C put cp at ~0.01.
    assert m_std["full"] < 0.3
    assert 0.1 < m_std["cp"] < 1.0 and 0.3 < m_std["collapsed"] < 3.0


def test_unknown_form_is_a_clear_error():
    with pytest.raises(ValueError, match="fusion_form"):
        MetaFusionLayer(3, 3, 2, form="tucker")
