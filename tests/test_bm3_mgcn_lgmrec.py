"""BM3, MGCN and LGMRec (issue 22): each model's forward pass and loss against a computation by hand
(numpy, float64) on a toy of 3 users and 4 interacted items (and a fifth with content only), the loss
terms present and finite, gradients at every parameter, three modalities and one, training above Pop on
the planted data, cold items ranked by content, and the one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from recbole.data.interaction import Interaction

from conftest import (
    REPO,
    assert_learns_what_features_decide,
    assert_predict_agrees_with_full_sort,
    build_model,
    cold_ranking,
    cold_ranking_ndcg,
    cold_ranking_references,
    fit_model,
    planted_config,
    planted_item_clusters,
    write_planted_dataset,
)
from recbole_metammf.errors import ConfigError, DataError

MODELS = ["BM3", "MGCN", "LGMRec"]

# --- the toy: 3 users, 4 items, two dense modalities, a fixed split ------------------------------
TRAIN = [(1, 1), (1, 2), (2, 2), (2, 3), (3, 3), (3, 4)]
VALID = [(1, 3), (2, 4), (3, 1)]
TEST = [(1, 4), (2, 1), (3, 2)]
# item 5 has content and no interaction (a cold item; RecBole needs an item left to sample as a negative)
VISUAL = {1: [1.0, 0.2, 0.0], 2: [0.9, 0.5, 0.1], 3: [0.0, 1.0, 0.3], 4: [0.2, 0.1, 1.0], 5: [0.5, 0.6, 0.4]}
AUDIO = {1: [1.0, -0.5], 2: [0.3, 1.0], 3: [0.8, 0.9], 4: [-0.2, 1.0], 5: [0.1, 0.4]}


@pytest.fixture
def toy(tmp_path):
    path = tmp_path / "toy" / "toy"
    path.mkdir(parents=True)
    for part, pairs in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        rows = "".join(f"{u}\t{i}\n" for u, i in pairs)
        (path / f"toy.{part}.inter").write_text("user_id:token\titem_id:token\n" + rows)
    rows = "".join(f"{i}\t{' '.join(map(str, VISUAL[i]))}\t{' '.join(map(str, AUDIO[i]))}\n" for i in VISUAL)
    (path / "toy.item").write_text("item_id:token\tvisual:float_seq\taudio:float_seq\n" + rows)
    return tmp_path / "toy"


def build_toy(model, root, **extra):
    cfg = dict(benchmark_filename=["train", "valid", "test"], standardize_modalities=False, train_batch_size=6,
               load_col={"inter": ["user_id", "item_id"], "item": ["item_id", "visual", "audio"]})
    cfg.update(extra)
    config, net, train, _ = build_model(model, root, "toy", **cfg)
    ds = train._dataset
    uid = np.array([ds.token2id(ds.uid_field, str(u)) for u in (1, 2, 3)])  # token u -> internal id
    iid = np.array([ds.token2id(ds.iid_field, str(i)) for i in VISUAL])
    feats = []
    for table in (VISUAL, AUDIO):  # [n_items, dim] by internal id, padding row 0
        x = np.zeros((net.n_items, len(table[1])))
        for token, vec in table.items():
            x[iid[token - 1]] = vec
        feats.append(x)
    return net, train, uid, iid, feats


def toy_graph(net, uid, iid):
    """(Â [U+I, U+I] = D^-1/2 A D^-1/2 of the training pairs, R [U, I] 0/1), by hand."""
    n_u, n_i = net.n_users, net.n_items
    r = np.zeros((n_u, n_i))
    for u, i in TRAIN:
        r[uid[u - 1], iid[i - 1]] = 1.0
    a = np.block([[np.zeros((n_u, n_u)), r], [r.T, np.zeros((n_i, n_i))]])
    deg = a.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    return inv[:, None] * a * inv[None, :], r


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().numpy()


def lightgcn(norm_adj, ego, layers):
    out, h = ego.copy(), ego
    for _ in range(layers):
        h = norm_adj @ h
        out = out + h
    return out / (layers + 1)


def cos_rows(a, b):
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def batch_of(train):
    batch = next(iter(train))
    assert len(batch) == len(TRAIN)  # one batch holds every training pair
    return batch


# --- BM3 -------------------------------------------------------------------------------------------
def test_bm3_loss_and_scores_by_hand(toy):
    net, train, uid, iid, feats = build_toy("BM3", toy, dropout=0.0, n_layers=1)
    batch = batch_of(train)
    assert net.NEG_ITEM_ID not in batch  # train_neg_sample_args: ~ (no negative sampling)
    users, items = batch[net.USER_ID].numpy(), batch[net.ITEM_ID].numpy()
    norm_adj, _ = toy_graph(net, uid, iid)
    user_w, item_w = np_(net.user_embedding.weight), np_(net.item_embedding.weight)
    out = lightgcn(norm_adj, np.vstack([user_w, item_w]), 1)
    u, i = out[: net.n_users], out[net.n_users :] + item_w
    w, b = np_(net.predictor.weight), np_(net.predictor.bias)

    def pred(x):
        return x @ w.T + b

    want = {
        "ui": 1 - cos_rows(pred(u[users]), i[items]).mean(),  # dropout 0: the target is the online vector
        "iu": 1 - cos_rows(pred(i[items]), u[users]).mean(),
        "reg": (np.linalg.norm(u) + np.linalg.norm(i)) / net.n_items,
    }
    for m, proj in enumerate(net.projections):
        f = feats[m][items] @ np_(proj.weight).T + np_(proj.bias)
        want[f"cross_{m}"] = 1 - cos_rows(pred(f), i[items]).mean()
        want[f"intra_{m}"] = 1 - cos_rows(pred(f), f).mean()
    got = net.loss_terms(batch)
    assert set(got) == set(want)
    for key in want:
        assert got[key].item() == pytest.approx(want[key], abs=1e-5), key
    content = sum(want[k] for k in want if k.startswith(("cross", "intra")))
    total = want["ui"] + want["iu"] + 0.1 * want["reg"] + 2.0 * content
    assert net.calculate_loss(batch).item() == pytest.approx(total, abs=1e-4)
    net.eval()
    with torch.no_grad():
        scores = net.full_sort_predict(Interaction({"user_id": torch.tensor(uid)})).view(3, -1)
    assert np.allclose(np_(scores), pred(u[uid]) @ pred(i).T, atol=1e-5)


def test_bm3_target_dropout_is_applied_to_the_target_only(toy):
    """With dropout the target changes between two draws, the online branch does not; at rate 1 the
    target is zero, so every target cosine is 0 and the alignment terms are exactly 1."""
    net, train, *_ = build_toy("BM3", toy, dropout=0.3)
    batch = batch_of(train)
    a, b = net.loss_terms(batch), net.loss_terms(batch)
    assert a["ui"].item() != b["ui"].item() and a["reg"].item() == b["reg"].item()
    net.dropout = 1.0
    t = net.loss_terms(batch)
    for key in ("ui", "iu", "cross_0", "cross_1", "intra_0", "intra_1"):
        assert t[key].item() == pytest.approx(1.0, abs=1e-6), key


def test_bm3_ignores_negatives_when_a_config_samples_them(toy):
    """A benchmark config may turn negative sampling on for every model: BM3's loss is unchanged."""
    net, train, *_ = build_toy("BM3", toy, dropout=0.0,
                               train_neg_sample_args={"distribution": "uniform", "sample_num": 1})
    batch = batch_of(train)
    assert net.NEG_ITEM_ID in batch
    positives = Interaction({k: batch[k] for k in (net.USER_ID, net.ITEM_ID)})
    assert net.calculate_loss(batch).item() == net.calculate_loss(positives).item()


# --- MGCN ------------------------------------------------------------------------------------------
def toy_knn(x, k):
    """``D^-1/2 S D^-1/2`` of each real item's k most cosine-similar items (itself included), similarity-weighted."""
    n = x.shape[0]
    norms = np.linalg.norm(x, axis=1)
    sim = (x @ x.T) / np.maximum(np.outer(norms, norms), 1e-12)
    s = np.zeros((n, n))
    for r in range(1, n):
        order = [c for c in np.argsort(-sim[r], kind="stable") if c != 0][:k]
        s[r, order] = np.maximum(sim[r, order], 0)
    deg = s.sum(1)
    inv = np.where(deg > 0, 1 / np.sqrt(np.maximum(deg, 1e-12)), 0.0)
    return inv[:, None] * s * inv[None, :]


def unit(x):
    """Rows divided by their L2 norm; zero rows stay zero (as F.normalize)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def linear(x, layer):
    return x @ np_(layer.weight).T + (np_(layer.bias) if layer.bias is not None else 0.0)


def test_mgcn_forward_and_loss_by_hand(toy):
    net, train, uid, iid, feats = build_toy("MGCN", toy, knn_k=2)
    for p in net.parameters():  # torch's default init leaves small biases; make every term visible
        if p.dim() == 1:
            torch.nn.init.normal_(p, std=0.5)
    norm_adj, _ = toy_graph(net, uid, iid)
    n_u = net.n_users
    user_w, item_w = np_(net.user_embedding.weight), np_(net.item_embedding.weight)
    h = lightgcn(norm_adj, np.vstack([user_w, item_w]), 2)
    views = []
    for m in range(2):
        e = item_w * sigmoid(linear(linear(feats[m], net.projections[m]), net.purifier_gates[m]))
        e = toy_knn(feats[m], 2) @ e
        views.append(np.vstack([norm_adj[:n_u, n_u:] @ e, e]))
    q1, q2 = net.query[0], net.query[2]
    scores = np.hstack([linear(np.tanh(linear(v, q1)), q2) for v in views])  # [U+I, 2]
    att = np.exp(scores) / np.exp(scores).sum(1, keepdims=True)  # softmax over the modalities, per node
    common = att[:, :1] * views[0] + att[:, 1:] * views[1]
    specific = sum(sigmoid(linear(h, net.preference_gates[m])) * (views[m] - common) for m in range(2))
    side = (specific + common) / 3
    final = h + side
    with torch.no_grad():
        user_all, item_all = net.compute_all()
    assert np.allclose(np_(user_all), final[:n_u], atol=1e-5) and np.allclose(np_(item_all), final[n_u:], atol=1e-5)

    batch = batch_of(train)
    users, pos, neg = (batch[k].numpy() for k in (net.USER_ID, net.ITEM_ID, net.NEG_ITEM_ID))
    u_e, p_e, n_e = final[users], final[n_u + pos], final[n_u + neg]
    diff = (u_e * p_e).sum(1) - (u_e * n_e).sum(1)

    def info_nce(a, b, t=0.2):
        a = a / np.linalg.norm(a, axis=1, keepdims=True)
        b = b / np.linalg.norm(b, axis=1, keepdims=True)
        logits = a @ b.T / t
        return np.mean([-np.log(np.exp(logits[r, r]) / np.exp(logits[r]).sum()) for r in range(len(a))])

    want = {
        "bpr": -np.log(sigmoid(diff)).mean(),
        "reg": ((u_e**2).sum() + (p_e**2).sum() + (n_e**2).sum()) / (2 * 6),
        "cl_item": info_nce(side[n_u + pos], h[n_u + pos]),
        "cl_user": info_nce(side[users], h[users]),
    }
    got = net.loss_terms(batch)
    assert set(got) == set(want)
    for key in want:
        assert got[key].item() == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    total = want["bpr"] + 1e-4 * want["reg"] + 0.001 * (want["cl_item"] + want["cl_user"])
    assert net.calculate_loss(batch).item() == pytest.approx(total, rel=1e-4)


# --- LGMRec ----------------------------------------------------------------------------------------
def test_lgmrec_forward_and_contrast_by_hand(toy, monkeypatch):
    """With the gumbel noise replaced by none (``softmax(logits / tau)``) and every membership kept."""
    monkeypatch.setattr(torch.nn.functional, "gumbel_softmax",
                        lambda logits, tau, dim, hard=False: torch.softmax(logits / tau, dim=dim))
    net, train, uid, iid, feats = build_toy("LGMRec", toy, keep_rate=1.0, hyper_num=3, n_hyper_layer=2)
    tau, alpha, n_u = 0.2, 0.3, net.n_users
    norm_adj, r = toy_graph(net, uid, iid)
    user_w, item_w = np_(net.user_embedding.weight), np_(net.item_embedding.weight)
    cge = lightgcn(norm_adj, np.vstack([user_w, item_w]), 2)

    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    local, ghes = cge.copy(), []
    for m in range(2):
        f = feats[m] @ np_(net.projections[m])
        deg = r.sum(1, keepdims=True)
        mge = np.vstack([np.where(deg > 0, r @ f / np.maximum(deg, 1), 0.0), f])
        mge = norm_adj @ (norm_adj @ mge)  # n_mm_layers 2, the last layer kept
        local = local + unit(mge)
        logits = feats[m] @ np_(net.hyperedges[m])
        logits[0] = 0.0  # the padding item joins no hyperedge
        item_h = softmax(logits / tau)
        item_h[0] = 0.0
        user_h = softmax((r @ logits) / tau)
        g = cge[n_u:]
        for _ in range(2):
            latent = item_h.T @ g
            g = item_h @ latent
        ghes.append(np.vstack([user_h @ latent, g]))
    total_ghe = ghes[0] + ghes[1]
    final = local + alpha * unit(total_ghe)
    with torch.no_grad():
        user_all, item_all = net.compute_all()
    assert np.allclose(np_(user_all), final[:n_u], atol=1e-5) and np.allclose(np_(item_all), final[n_u:], atol=1e-5)

    batch = batch_of(train)
    users, pos, neg = (batch[k].numpy() for k in (net.USER_ID, net.ITEM_ID, net.NEG_ITEM_ID))

    def contrast(anchor, positive, candidates):  # summed over the rows
        anchor, positive, candidates = unit(anchor), unit(positive), unit(candidates)
        return sum(-np.log(np.exp(anchor[j] @ positive[j] / tau) / np.exp(candidates @ anchor[j] / tau).sum())
                   for j in range(len(anchor)))

    (gu0, gi0), (gu1, gi1) = ((g[:n_u], g[n_u:]) for g in ghes)
    u_e, p_e, n_e = final[users], final[n_u + pos], final[n_u + neg]
    diff = (u_e * p_e).sum(1) - (u_e * n_e).sum(1)
    want = {
        "bpr": -np.log(sigmoid(diff)).mean(),
        "reg": (np.linalg.norm(u_e) + np.linalg.norm(p_e) + np.linalg.norm(n_e)) / len(users),
        # all users / items but RecBole's padding row 0 are the candidates
        "contrast": contrast(gu0[users], gu1[users], gu1[1:]) + contrast(gi0[pos], gi1[pos], gi1[1:]),
    }
    got = net.loss_terms(batch)
    assert set(got) == set(want)
    for key in want:
        assert got[key].item() == pytest.approx(want[key], rel=1e-4, abs=1e-6), key
    total = want["bpr"] + 1e-4 * want["contrast"] + 1e-6 * want["reg"]
    assert net.calculate_loss(batch).item() == pytest.approx(total, rel=1e-4)


def test_lgmrec_memberships_are_stochastic_distributions(toy):
    net, _, _, _, feats = build_toy("LGMRec", toy, hyper_num=3)
    net.eval()  # no dropout: every row a distribution over the hyperedges (gumbel noise drawn, as the reference)
    x = torch.tensor(feats[0], dtype=torch.float32)
    user_h, item_h = net.memberships(x, net.hyperedges[0])
    assert torch.allclose(user_h.sum(1), torch.ones(net.n_users), atol=1e-5)
    assert torch.allclose(item_h[1:].sum(1), torch.ones(net.n_items - 1), atol=1e-5) and item_h[0].abs().sum() == 0
    assert not torch.equal(item_h, net.memberships(x, net.hyperedges[0])[1])  # a new draw each call
    net.train()  # dropout keeps each membership with probability keep_rate, scaled by 1 / keep_rate
    net.keep_rate = 0.5
    draws = torch.stack([net.memberships(x, net.hyperedges[0])[1][1:] for _ in range(400)])  # [400, I-1, K]
    assert 0.4 < (draws == 0).float().mean() < 0.6 and draws.max() <= 2.0 + 1e-6
    assert torch.allclose(draws.sum(2).mean(0), torch.ones(net.n_items - 1), atol=0.15)  # unbiased row sums


def test_lgmrec_cf_model_is_checked_before_the_run(toy):
    from recbole_metammf.checks import preflight

    cfg = planted_config(toy, "toy", benchmark_filename=["train", "valid", "test"], cf_model="lightgnc")
    with pytest.raises(ConfigError, match="config key 'cf_model' \\(config dict\\) must be one of lightgcn, mf"):
        preflight("LGMRec", "toy", config_dict=cfg)


def test_bounded_logsumexp_equals_autograd_values_and_gradients():
    from recbole_metammf.layers.contrast import bounded_logsumexp

    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(7, 5, dtype=torch.float64), dim=1).requires_grad_()
    c = torch.nn.functional.normalize(torch.randn(11, 5, dtype=torch.float64), dim=1).requires_grad_()
    got, want = bounded_logsumexp(a, c, 5.0), torch.logsumexp(a @ c.t() * 5.0, dim=1)
    assert torch.allclose(got, want, atol=1e-12)
    w = torch.randn(7, dtype=torch.float64)
    g_got = torch.autograd.grad((got * w).sum(), [a, c])
    g_want = torch.autograd.grad((want * w).sum(), [a, c])
    assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(g_got, g_want))
    assert torch.autograd.gradcheck(lambda a, c: bounded_logsumexp(a, c, 5.0), (a, c))


def test_lgmrec_contrast_over_distinct_rows_equals_the_sum_over_the_batch():
    """LGMRec's contrast takes a batch's distinct rows weighted by their counts: the same sum and gradients as every
    row of the batch, repeats included."""
    from recbole_metammf.model.lgmrec import hyper_contrast

    torch.manual_seed(4)
    x = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(10, 3, dtype=torch.float64, requires_grad=True)
    rows = torch.tensor([4, 4, 9, 1, 4, 9, 6])
    distinct, counts = torch.unique(rows, return_counts=True)
    got = hyper_contrast(x[distinct], y[distinct], y[1:], 0.2, counts)
    want = hyper_contrast(x[rows], y[rows], y[1:], 0.2)
    assert torch.allclose(got, want, atol=1e-12) and counts.tolist() == [1, 3, 1, 2]
    g_got, g_want = torch.autograd.grad(got, [x, y]), torch.autograd.grad(want, [x, y])
    assert all(torch.allclose(a, b, atol=1e-12) for a, b in zip(g_got, g_want))


def test_bounded_logsumexp_in_several_blocks_with_a_ragged_last_one(monkeypatch):
    from recbole_metammf.layers import contrast

    monkeypatch.setattr(contrast, "BLOCK_BYTES", 4 * 13 * 16)  # 16 rows a block for 13 candidates: 37 = 16 + 16 + 5
    assert contrast.block_rows(13) == 16
    torch.manual_seed(1)
    a = torch.nn.functional.normalize(torch.randn(37, 6, dtype=torch.float64), dim=1).requires_grad_()
    c = torch.nn.functional.normalize(torch.randn(13, 6, dtype=torch.float64), dim=1).requires_grad_()
    got, want = contrast.bounded_logsumexp(a, c, 1 / 0.2), torch.logsumexp(a @ c.t() / 0.2, dim=1)
    assert torch.allclose(got, want, atol=1e-12)
    w = torch.randn(37, dtype=torch.float64)
    for inputs in ([a, c], [a], [c]):  # each gradient alone too (the other input frozen)
        g_got = torch.autograd.grad((contrast.bounded_logsumexp(a, c, 1 / 0.2) * w).sum(), inputs)
        g_want = torch.autograd.grad((want * w).sum(), inputs, retain_graph=True)
        assert all(torch.allclose(x, y, atol=1e-12) for x, y in zip(g_got, g_want))
    assert torch.autograd.gradcheck(lambda a, c: contrast.bounded_logsumexp(a, c, 3.0), (a, c))


# --- every model: terms, gradients, modalities ------------------------------------------------------
TERMS = {
    "BM3": lambda m: {"ui", "iu", "reg", *(f"cross_{i}" for i in range(m)), *(f"intra_{i}" for i in range(m))},
    "MGCN": lambda m: {"bpr", "reg", "cl_item", "cl_user"},
    "LGMRec": lambda m: {"bpr", "reg", "contrast"},
}


@pytest.fixture(scope="module")
def planted_roots(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted_abc")
    write_planted_dataset(root / "three")
    write_planted_dataset(root / "one", with_audio=False, with_tokens=False)
    return {3: root / "three", 1: root / "one"}


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("n_modalities", [3, 1])
def test_loss_terms_finite_and_gradients_reach_every_parameter(planted_roots, model, n_modalities):
    _, net, train, _ = build_model(model, planted_roots[n_modalities], "planted")
    assert len(net.modalities.specs) == n_modalities
    batch = next(iter(train))
    terms = net.loss_terms(batch)
    assert set(terms) == TERMS[model](n_modalities)
    assert all(t.dim() == 0 and torch.isfinite(t) for t in terms.values()), terms
    assert all(t.item() > 0 for k, t in terms.items() if k != "contrast"), terms
    if model == "LGMRec":  # the contrast runs between modalities: none with one
        assert (terms["contrast"].item() > 0) == (n_modalities > 1)
    net.zero_grad()
    net.calculate_loss(batch).backward()
    missing = [n for n, p in net.named_parameters()
               if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
    assert not missing, missing
    # the dense content is a parameter exactly when the model fine-tunes it (BM3, MGCN: the reference's freeze=False)
    tuned = {n for n, _ in net.named_parameters() if n.startswith("content.tables.")}
    assert tuned == ({"content.tables.0", "content.tables.1"} if model != "LGMRec" and n_modalities == 3 else
                     {"content.tables.0"} if model != "LGMRec" else set())
    # predict and full_sort_predict agree, from one cached pair of tables
    assert_predict_agrees_with_full_sort(net)


@pytest.mark.parametrize("model", MODELS)
def test_dataset_without_modalities_is_one_data_error(planted_roots, model):
    with pytest.raises(DataError, match="dataset 'planted' has no item modality"):
        build_model(model, planted_roots[3], "planted", load_col={"inter": ["user_id", "item_id"]})


# --- learning: above Pop on the planted data --------------------------------------------------------
def fit_and_test(model, root, **extra):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    config = Config(model=model, dataset="planted", config_dict=planted_config(root, **extra))
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    net = get_model(model)(config, train._dataset)
    trainer = get_trainer(config["MODEL_TYPE"], model)(config, net)
    trainer.fit(train, valid, saved=False, show_progress=False)
    return trainer.evaluate(test, load_best_model=False, show_progress=False)


@pytest.fixture(scope="module")
def pop_ndcg(planted_roots):
    return fit_and_test("Pop", planted_roots[3], epochs=1)["ndcg@10"]


@pytest.mark.parametrize("model,lr", [("BM3", 0.005), ("MGCN", 0.005), ("LGMRec", 0.005)])
def test_trains_far_above_pop_on_the_planted_data(planted_roots, pop_ndcg, model, lr):
    """Popularity is flat within a planted cluster: Pop cannot know a user's taste, a model that learns does."""
    result = fit_and_test(model, planted_roots[3], epochs=8, learning_rate=lr)
    assert result["ndcg@10"] > 4 * pop_ndcg, (result, pop_ndcg)  # measured: 7x to 9x


# --- the command line --------------------------------------------------------------------------------
def _cli(tmp_path, model, *args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("RECBOLE_METAMMF_DEBUG", None)
    return subprocess.run(
        [sys.executable, str(REPO / "run_recbole.py"), f"--model={model}", "--dataset=planted",
         f"--data_path={tmp_path / 'data'}", "--epochs=1", "--state=ERROR", "--show_progress=False",
         f"--checkpoint_dir={tmp_path / 'saved'}", *args],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )


def test_bm3_runs_by_name_without_negatives_and_evaluates_by_full_ranking(tmp_path):
    write_planted_dataset(tmp_path / "data")
    proc = _cli(tmp_path, "BM3", "--load_col={'inter': ['user_id', 'item_id'], 'item': ['item_id', 'visual', 'tags']}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Test results of BM3 on planted" in proc.stdout
    line = next(l for l in proc.stdout.splitlines() if l.strip().startswith("recall@20"))
    assert 0 < float(line.split(":")[1]) <= 1


def test_cli_no_modality_is_one_line(tmp_path):
    write_planted_dataset(tmp_path / "data")
    proc = _cli(tmp_path, "MGCN", "--load_col={'inter': ['user_id', 'item_id']}")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error: ")]
    assert errors == [errors[-1]] and "has no item modality" in errors[-1]


def test_mgcn_ranks_items_never_seen_in_training_by_their_content(cold_planted):
    """A cold item's MGCN representation reads its kNN neighbours' purified embeddings: it closes half the
    gap between chance and the cluster oracle (BM3 cannot: its score has no content path, see its docstring)."""
    assert_learns_what_features_decide("MGCN", cold_planted, epochs=5, learning_rate=0.005)


def test_lgmrec_ranks_items_never_seen_in_training_by_their_content(cold_planted):
    """LGMRec reaches a cold item only through its hyperedge memberships (its graph embeddings of an item
    without edges are zero): weaker than MGCN's path, so a weaker bar than half the gap (measured: cold
    NDCG@10 .205, chance .076, cluster oracle .623, the same model on shuffled features .048; with 64
    hyperedges .191), but twice chance and twice the shuffled control."""
    ndcg = {}
    for content, root in cold_planted.items():
        net, dataset, train, valid, test = fit_model("LGMRec", root, cold_item_id="zero", epochs=5,
                                                     learning_rate=0.005)
        ranking = cold_ranking(dataset, train, valid, test)
        ndcg[content] = cold_ranking_ndcg(net, ranking)
        if content == "planted":
            chance, _ = cold_ranking_references(dataset, train, ranking, planted_item_clusters())
    assert ndcg["planted"] >= 2 * chance and ndcg["planted"] >= 2 * ndcg["shuffled"], (ndcg, chance)
