"""The MetaMMF models: modalities, graph, predict vs full_sort_predict, caching, learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.data.interaction import Interaction
from recbole.utils import get_model

from conftest import REPO, assert_learns_what_features_decide, build_model, planted_config, write_planted_dataset
from recbole_metammf.layers.graph import SAGEConv, SparseGraph, bipartite_adjacency, lightgcn_propagate, normalise

MODELS = ["MetaMMF_MF", "MetaMMF_GCN"]


build = build_model


# --- modalities ----------------------------------------------------------------------------------
def test_modalities_are_aligned_standardised_and_padded(planted):
    root, name = planted
    config, net, train, _ = build("MetaMMF_MF", root, name)
    enc = net.modalities
    assert [(s.field, s.kind, s.dim) for s in enc.specs] == [("visual", "dense", 16), ("audio", "dense", 8), ("tags", "token", 32)]
    assert enc.output_dim == 16 + 8 + 32
    ds = train._dataset
    visual = enc.data(0)  # [n_items, 16]
    assert visual.shape == (ds.item_num, 16)
    assert torch.all(visual[0] == 0)  # padding row
    assert torch.allclose(visual[1:].mean(0), torch.zeros(16), atol=1e-5)
    assert torch.allclose(visual[1:].std(0, unbiased=False), torch.ones(16), atol=1e-4)
    # row i belongs to internal id i: compare with the raw file through RecBole's token mapping
    raw = {}
    for line in (root / name / f"{name}.item").read_text().splitlines()[1:]:
        cols = line.split("\t")
        raw[cols[0]] = np.array(cols[1].split(), dtype=np.float64)
    tokens = ["1", "17", "400"]
    ids = ds.token2id(ds.iid_field, tokens)
    raw_mat = np.stack([raw[t] for t in tokens])
    all_raw = np.stack(list(raw.values()))
    expected = (raw_mat - all_raw.mean(0)) / all_raw.std(0)
    assert np.allclose(visual[ids].numpy(), expected, atol=1e-4)
    # token modality: mean of the item's tag embeddings, padding excluded
    bag = enc.token_encoders["tags"]
    tok = enc.data(2)[ids[0]]
    real = tok[tok > 0]
    assert torch.allclose(enc(torch.tensor([ids[0]]))[0, 24:], bag.weight[real].mean(0), atol=1e-6)


def test_modality_fields_select_and_validate(planted):
    root, name = planted
    _, net, _, _ = build("MetaMMF_MF", root, name, modality_fields=["audio"])
    assert [s.field for s in net.modalities.specs] == ["audio"]
    with pytest.raises(ValueError, match="not float_seq/token_seq"):
        build("MetaMMF_MF", root, name, modality_fields=["colour"])


def test_nan_feature_is_a_clear_error(tmp_path):
    path = write_planted_dataset(tmp_path / "d", with_tokens=False, with_audio=False)
    item = path / "planted.item"
    lines = item.read_text().splitlines()
    cols = lines[5].split("\t")
    cols[1] = "nan " + " ".join(cols[1].split()[1:])
    lines[5] = "\t".join(cols)
    item.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="visual.*NaN"):
        build("MetaMMF_MF", tmp_path / "d")


def test_dataset_without_modalities_is_a_clear_error(tmp_path):
    write_planted_dataset(tmp_path / "d")
    cfg = planted_config(tmp_path / "d")
    cfg["load_col"] = {"inter": ["user_id", "item_id"]}
    config = Config(model="MetaMMF_MF", dataset="planted", config_dict=cfg)
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    with pytest.raises(ValueError, match="no item modality"):
        get_model("MetaMMF_MF")(config, train._dataset)


# --- graph ---------------------------------------------------------------------------------------
def test_graph_mean_and_sym_normalisation_match_dense(planted):
    root, name = planted
    _, net, train, _ = build("MetaMMF_GCN", root, name)
    ds = train._dataset
    adj = bipartite_adjacency(ds).toarray()
    n_u, n_i = ds.user_num, ds.item_num
    assert adj.shape == (n_u + n_i, n_u + n_i)
    assert np.array_equal(adj, adj.T)
    assert adj.sum() == 2 * len(ds.inter_feat)  # no duplicates in the planted data
    assert adj[:n_u, :n_u].sum() == 0 and adj[n_u:, n_u:].sum() == 0  # bipartite
    deg = adj.sum(1)
    mean = normalise(bipartite_adjacency(ds), "mean").toarray()
    expected = np.divide(adj, deg[:, None], out=np.zeros_like(adj), where=deg[:, None] > 0)
    assert np.allclose(mean, expected)
    sym = normalise(bipartite_adjacency(ds), "sym").toarray()
    d = np.power(deg, -0.5, where=deg > 0, out=np.zeros_like(deg))
    assert np.allclose(sym, d[:, None] * adj * d[None, :], atol=1e-6)


def test_sage_and_lightgcn_equal_dense_computation():
    torch.manual_seed(0)
    import scipy.sparse as sp

    a = (np.random.default_rng(0).random((9, 9)) < 0.3).astype(np.float32)
    a = np.triu(a, 1)
    a = a + a.T
    mean = normalise(sp.csr_matrix(a), "mean")
    graph = SparseGraph(mean)
    h = torch.randn(9, 4, requires_grad=True)
    conv = SAGEConv(4, 3)
    out = conv(h, graph)
    dense = torch.from_numpy(mean.toarray())
    ref = conv.lin_neigh(dense @ h) + conv.lin_root(h)
    assert torch.allclose(out, ref, atol=1e-6)
    g1 = torch.autograd.grad(out.square().sum(), [h, *conv.parameters()])
    g2 = torch.autograd.grad(ref.square().sum(), [h, *conv.parameters()])
    for x, y in zip(g1, g2):
        assert torch.allclose(x, y, atol=1e-5)
    sym = normalise(sp.csr_matrix(a), "sym")
    s = torch.from_numpy(sym.toarray())
    lg = lightgcn_propagate(h, SparseGraph(sym), 2)
    assert torch.allclose(lg, (h + s @ h + s @ s @ h) / 3, atol=1e-6)


# --- RecBole interface ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "model,extra",
    [
        ("MetaMMF_MF", {}),
        ("MetaMMF_MF", {"fusion_form": "full"}),
        ("MetaMMF_GCN", {}),
        ("MetaMMF_GCN", {"propagation": "lightgcn", "fusion_form": "collapsed"}),
    ],
)
def test_predict_agrees_with_full_sort_predict(planted, model, extra):
    root, name = planted
    config, net, train, _ = build(model, root, name, **extra)
    batch = next(iter(train))
    loss = net.calculate_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    net.eval()
    n_items = train._dataset.item_num
    users = torch.tensor([1, 5, 9])
    with torch.no_grad():
        full = net.full_sort_predict(Interaction({"user_id": users})).view(len(users), n_items)
        items = torch.arange(n_items)
        pair = Interaction({"user_id": users.repeat_interleave(n_items), "item_id": items.repeat(len(users))})
        single = net.predict(pair).view(len(users), n_items)
    assert torch.allclose(full, single, atol=1e-5)


def test_eval_cache_is_used_and_cleared_by_training(planted):
    root, name = planted
    _, net, train, _ = build("MetaMMF_GCN", root, name)
    net.eval()
    with torch.no_grad():
        first = net.full_sort_predict(Interaction({"user_id": torch.tensor([1])}))
    cached = net.restore_item_e
    assert cached is not None
    with torch.no_grad():
        net.full_sort_predict(Interaction({"user_id": torch.tensor([2])}))
    assert net.restore_item_e is cached  # not recomputed
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    loss = net.calculate_loss(next(iter(train)))
    assert net.restore_user_e is None and net.restore_item_e is None
    loss.backward()
    opt.step()
    net.eval()
    with torch.no_grad():
        second = net.full_sort_predict(Interaction({"user_id": torch.tensor([1])}))
    assert not torch.allclose(first, second)


def test_mf_batch_path_equals_all_items_path(planted):
    root, name = planted
    _, net, train, _ = build("MetaMMF_MF", root, name)
    net.eval()
    items = torch.tensor([3, 1, 7, 3])
    _, (batch_e,) = net.batch_embeddings(torch.tensor([1]), [items])
    _, all_e = net.compute_all()
    assert torch.allclose(batch_e, all_e[items], atol=1e-6)


# --- learning ------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["MetaMMF_MF", "MetaMMF_GCN"])
def test_models_learn_what_features_decide(cold_planted, model):
    """Where the cluster in the features decides taste, MetaMMF ranks items it never saw in training by
    their content: far above a random order, and far above itself trained on shuffled features."""
    assert_learns_what_features_decide(model, cold_planted, epochs=5, learning_rate=0.005)


@pytest.mark.parametrize("model,extra", [
    ("MetaMMF_MF", {}),
    ("MetaMMF_GCN", {}),
    ("MetaMMF_GCN", {"propagation": "lightgcn"}),
    ("VBPR", {"reg_weight": 0.0}),
    ("MetaMMF_MF", {"require_pow": True}),
    ("MetaMMF_GCN", {"require_pow": True}),
])
def test_content_reg_weight_adds_embloss_of_the_scored_vectors(planted, model, extra):
    """loss(w) - loss(0) = w * EmbLoss(user vectors, whole item vectors) of the batch: the
    scored vectors for MF-style models, the vectors before propagation for MetaMMF_GCN; with
    ``require_pow`` the sum of their squares / 2 / batch size instead of the sum of their norms / batch size."""
    from recbole.model.loss import EmbLoss

    root, name = planted
    _, net, train, _ = build_model(model, root, name, content_reg_weight=0.0, **extra)
    assert net.require_pow == extra.get("require_pow", False)
    net.train()
    batch = next(iter(train)).to(net.device)
    users, pos, neg = batch[net.USER_ID], batch[net.ITEM_ID], batch[net.NEG_ITEM_ID]

    def loss(w):
        net.content_reg_weight = w
        torch.manual_seed(0)  # the same dropout masks in both calls
        return net.calculate_loss(batch)

    w = 0.3
    diff = loss(w) - loss(0.0)
    with torch.no_grad():
        torch.manual_seed(0)
        if model == "MetaMMF_GCN":
            ego = torch.cat([net.user_embedding.weight, net.item_representation()], dim=0)
            vecs = [ego[users], ego[net.n_users + pos], ego[net.n_users + neg]]
        else:
            u_e, (p_e, n_e) = net.batch_embeddings(users, [pos, neg])
            vecs = [u_e[:, :-1] if model == "VBPR" else u_e, p_e, n_e]
        if net.require_pow:
            expected = w * sum(float((v**2).sum()) for v in vecs) / 2 / len(users)
            expected = torch.tensor(expected)
        else:
            expected = w * EmbLoss()(*vecs).squeeze()
    assert expected > 0
    assert torch.allclose(diff, expected, rtol=1e-4, atol=1e-6)
    # the penalty reaches the fusion network (MetaMMF) / the content projection (VBPR)
    net.zero_grad()
    net.content_reg_weight = w
    (loss(w) - loss(0.0)).backward()
    content_param = net.projection.weight if model == "VBPR" else net.fusion.layers[-1].M
    assert content_param.grad is not None and content_param.grad.abs().sum() > 0


def test_metammf_gcn_sage_layers_start_as_the_references_pyg_sageconv(planted):
    """The reference's PyG SAGEConv keeps torch's Linear init: weights U(±1/sqrt(in)), the neighbour
    branch's bias U(±1/sqrt(in)) (not zero), no bias on the root branch; ID tables Xavier."""
    root, name = planted
    _, net, _, _ = build_model("MetaMMF_GCN", root, name)
    for conv in net.convs:
        bound = 1 / conv.lin_neigh.in_features ** 0.5
        for w in (conv.lin_neigh.weight, conv.lin_root.weight):
            assert 0.9 * bound < w.abs().max() <= bound
            assert abs(w.std() / (bound / 3**0.5) - 1) < 0.15
        assert conv.lin_root.bias is None
        assert 0 < conv.lin_neigh.bias.abs().max() <= bound
    u = net.user_embedding.weight
    assert abs(u.std() / (2 / sum(u.shape)) ** 0.5 - 1) < 0.1  # Xavier variance 2 / (fan_in + fan_out)


def test_reference_yaml_switches_off_what_the_reference_code_does_not_have(planted):
    """properties/reference/ gives the released code's settings: its collapsed CP fusion 4 layers deep,
    no standardisation, and no penalty but Adam's weight decay (the plugin's content_reg_weight off)."""
    import yaml

    root, name = planted
    ref = yaml.safe_load((Path(REPO) / "properties" / "reference" / "MetaMMF-ref-movielens.yaml").read_text())
    keys = {k: ref[k] for k in ("fusion_form", "fusion_hidden_sizes", "standardize_modalities", "content_reg_weight",
                                "reg_weight", "dropout", "weight_decay", "meta_hidden_size")}
    _, net, _, _ = build_model("MetaMMF_GCN", root, name, **keys)
    assert net.content_reg_weight == 0.0 and net.reg_weight == 0.0
    d_in = net.modalities.output_dim  # the released code's meta extractor: d_in -> d_in -> d_s
    assert [lin.out_features for lin in net.fusion.extractor.net[::2]] == [d_in, ref["meta_size"]]
    _, default, _, _ = build_model("MetaMMF_GCN", root, name)  # the plugin's default: d_in -> 64 -> d_s
    assert default.fusion.extractor.net[0].in_features == d_in and default.fusion.extractor.net[0].out_features == 64
    assert [layer.form for layer in net.fusion.layers] == ["collapsed"] * 4
    assert [layer.out_dim for layer in net.fusion.layers] == [1024, 512, 256, 32]
