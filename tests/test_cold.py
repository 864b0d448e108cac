"""Cold-start items: the ColdRecall / ColdNDCG metrics (hand computations, and RecBole's own
evaluation pass against a by-hand ranking), and content-only scoring of cold items."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.evaluator.collector import DataStruct
from recbole.trainer import Trainer
from recbole.utils import get_model, init_seed

from conftest import planted_config, write_planted_dataset
from recbole_metammf.metrics import ColdNDCG, ColdRecall, cold_items_mask, cold_topk


# --- the pieces, by hand --------------------------------------------------------------------------
def test_cold_items_mask():
    mask = cold_items_mask(Counter({1: 3, 2: 1, 5: 2, 4: 0}), 7)
    assert mask.tolist() == [False, False, False, True, True, False, True]  # 0 = padding, never cold


def test_cold_topk_by_hand():
    # 2 users x 6 items; items 4 and 5 are cold
    scores = torch.tensor([
        [-np.inf, 0.9, 0.1, 0.5, 0.8, 0.3],  # ranking: 1, 4, 3, 5, 2
        [-np.inf, 0.2, 0.7, 0.6, 0.1, 0.4],  # ranking: 2, 3, 5, 1, 4
    ])
    cold = torch.tensor([False, False, False, False, True, True])
    # user 0's relevant: 4 (cold), 2; user 1's: 4 (cold), 5 (cold), 3
    pos_u = torch.tensor([0, 0, 1, 1, 1])
    pos_i = torch.tensor([4, 2, 4, 5, 3])
    out = cold_topk(scores, pos_u, pos_i, cold, k=3)
    assert out.tolist() == [[0, 1, 0, 1], [0, 0, 1, 2]]


def _struct(rows):
    data = DataStruct()
    data.set("rec.cold_topk", torch.tensor(rows))
    return data


def test_cold_recall_and_ndcg_by_hand():
    # top-3 hit indicators among cold items, then |C(u)|; the user with |C(u)| = 0 is left out
    data = _struct([[0, 1, 0, 1], [0, 0, 1, 2], [1, 0, 0, 0], [1, 1, 0, 3]])
    config = {"topk": [1, 3], "metric_decimal_place": 6}
    recall = ColdRecall(config).calculate_metric(data)
    # users 0, 1, 3: @1 = (0 + 0 + 1/3) / 3; @3 = (1 + 1/2 + 2/3) / 3
    assert recall == {"coldrecall@1": pytest.approx(1 / 9, abs=1e-6), "coldrecall@3": pytest.approx(13 / 18, abs=1e-6)}
    ndcg = ColdNDCG(config).calculate_metric(data)
    g = [1.0, 1 / np.log2(3), 1 / np.log2(4)]
    u0, u1, u3 = g[1] / g[0], g[2] / (g[0] + g[1]), (g[0] + g[1]) / (g[0] + g[1] + g[2])
    assert ndcg["coldndcg@3"] == pytest.approx((u0 + u1 + u3) / 3, abs=1e-6)
    assert ndcg["coldndcg@1"] == pytest.approx((0 + 0 + 1) / 3, abs=1e-6)


def test_no_user_with_a_cold_item_reports_nothing():
    data = _struct([[1, 0, 0], [0, 0, 0]])
    assert ColdRecall({"topk": [2], "metric_decimal_place": 4}).calculate_metric(data) == {}
    assert ColdNDCG({"topk": [2], "metric_decimal_place": 4}).calculate_metric(data) == {}


# --- inside RecBole's evaluation ------------------------------------------------------------------
def write_cold_split(root: Path, name: str = "planted", cold_share: float = 0.1, seed: int = 0, **kw) -> set:
    """A planted dataset with a fixed split: ``cold_share`` of the items only in valid/test. Returns their tokens."""
    write_planted_dataset(root, name, **kw)
    path = root / name
    lines = (path / f"{name}.inter").read_text().splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:]]
    rng = np.random.default_rng(seed)
    items = sorted({i for _, i in rows}, key=int)
    cold = set(rng.choice(items, int(round(cold_share * len(items))), replace=False).tolist())
    parts = {"train": [], "valid": [], "test": []}
    by_user = {}
    for u, i in rows:
        by_user.setdefault(u, []).append(i)
    for u, its in by_user.items():
        its = [its[j] for j in rng.permutation(len(its))]
        warm = [i for i in its if i not in cold]
        n_train = int(round(0.8 * len(warm)))
        n_valid = int(round(0.1 * len(warm)))
        parts["train"] += [(u, i) for i in warm[:n_train]]
        parts["valid"] += [(u, i) for i in warm[n_train : n_train + n_valid]]
        parts["test"] += [(u, i) for i in warm[n_train + n_valid :]]
        for j, i in enumerate(i for i in its if i in cold):  # cold: alternately valid and test
            parts["valid" if j % 2 else "test"].append((u, i))
    for part, pairs in parts.items():
        (path / f"{name}.{part}.inter").write_text(header + "\n" + "".join(f"{u}\t{i}\n" for u, i in pairs))
    return cold


def _fit(root, model, **extra):
    cfg = planted_config(root, benchmark_filename=["train", "valid", "test"], metric_decimal_place=6,
                         epochs=1, **extra)
    config = Config(model=model, dataset="planted", config_dict=cfg)
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    net = get_model(model)(config, train._dataset).to(config["device"])
    trainer = Trainer(config, net)
    trainer.fit(train, valid, saved=False, show_progress=False)
    return config, dataset, net, trainer, train, valid, test


@pytest.mark.parametrize("model", ["BPR", "MetaMMF_MF"])
def test_recbole_evaluation_reports_cold_metrics_as_computed_by_hand(tmp_path, model):
    cold_tokens = write_cold_split(tmp_path / "d", n_users=60, n_items=90, per_user=12)
    config, dataset, net, trainer, train, valid, test = _fit(tmp_path / "d", model)
    result = trainer.evaluate(test, load_best_model=False, show_progress=False)

    # by hand: every item scored, the user's training and validation items removed, ranked
    net.eval()
    n_items = dataset.item_num
    uid, iid = dataset.uid_field, dataset.iid_field
    cold = {dataset.token2id(iid, t) for t in cold_tokens}
    assert cold == set(np.flatnonzero(cold_items_mask(train.dataset.item_counter, n_items).numpy()))
    known = train.dataset.inter_matrix(form="csr") + valid.dataset.inter_matrix(form="csr")
    test_pairs = test.dataset.inter_feat
    relevant = {}
    for u, i in zip(test_pairs[uid].tolist(), test_pairs[iid].tolist()):
        if i in cold:
            relevant.setdefault(u, set()).add(i)
    assert len(relevant) > 5  # the split does hold cold test items
    recalls, ndcgs = [], []
    for u, rel in relevant.items():
        with torch.no_grad():
            from recbole.data.interaction import Interaction

            s = net.full_sort_predict(Interaction({uid: torch.tensor([u])}).to(config["device"])).view(-1).cpu().numpy()
        s = s.astype(np.float64)
        s[0] = -np.inf
        s[known[u].indices] = -np.inf
        top = np.argsort(-s, kind="stable")[:20]
        hits = [i in rel for i in top]
        recalls.append(sum(hits) / len(rel))
        dcg = sum(1 / np.log2(r + 2) for r, h in enumerate(hits) if h)
        idcg = sum(1 / np.log2(r + 2) for r in range(min(len(rel), 20)))
        ndcgs.append(dcg / idcg)
    assert result["coldrecall@20"] == pytest.approx(np.mean(recalls), abs=2e-6)
    assert result["coldndcg@20"] == pytest.approx(np.mean(ndcgs), abs=2e-6)
    # the usual metrics are there too, and the cold ones count fewer hits than all items
    assert {"recall@20", "ndcg@20", "hr@20"} <= set(result)


def test_cold_metrics_need_the_training_split(tmp_path, caplog):
    write_cold_split(tmp_path / "d", n_users=40, n_items=60, per_user=10)
    cfg = planted_config(tmp_path / "d", benchmark_filename=["train", "valid", "test"], epochs=1)
    config = Config(model="BPR", dataset="planted", config_dict=cfg)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    trainer = Trainer(config, get_model("BPR")(config, train._dataset))
    # evaluate() without fit(): the usual metrics, no cold ones (the collector never saw training), a warning
    result = trainer.evaluate(test, load_best_model=False)
    assert "recall@20" in result and not any(k.startswith("cold") for k in result)
    assert "ColdRecall / ColdNDCG left out" in caplog.text
    # once the collector has the training split, they are there
    trainer.eval_collector.data_collect(train)
    assert "coldrecall@20" in trainer.evaluate(test, load_best_model=False)
