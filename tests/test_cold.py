"""Cold-start items: the ColdRecall / ColdNDCG metrics (hand computations, and RecBole's own
evaluation pass against a by-hand ranking), and content-only scoring of cold items."""

from __future__ import annotations

import logging
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

from conftest import planted_config, write_cold_split
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
    caplog.set_level(logging.WARNING)  # an earlier test's RecBole logger setup may have raised the root level
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


# --- content-only scoring of cold items (cold_item_id) ---------------------------------------------
# where each model keeps its item-ID rows: (parameter, row offset of item 0)
ID_TABLES = {
    "MetaMMF_MF": [("item_id_embedding.weight", 0)],
    "MetaMMF_GCN": [("item_id_embedding.weight", 0)],
    "VBPR": [("item_id_embedding.weight", 0), ("item_bias.weight", 0)],
    "MMGCN": [("id_embedding.weight", "n_users")],
    "GRCN": [("id_embedding", "n_users")],
    "LATTICE": [("item_embedding.weight", 0)],
    "FREEDOM": [("item_embedding.weight", 0)],
    "BM3": [("item_embedding.weight", 0)],
    "MGCN": [("item_embedding.weight", 0)],
}


@pytest.fixture(scope="module")
def cold_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cold")
    write_cold_split(root, n_users=50, n_items=80, per_user=10)
    return root


def _build(model, root, **extra):
    from conftest import build_model

    return build_model(model, root, benchmark_filename=["train", "valid", "test"], **extra)


@pytest.mark.parametrize("mode", ["zero", "mean"])
@pytest.mark.parametrize("model", list(ID_TABLES))
def test_cold_item_id_is_the_model_with_those_id_rows_replaced(cold_data, model, mode):
    import copy

    config, net, train, _ = _build(model, cold_data, cold_item_id=mode)
    cold = net.cold_items.nonzero().flatten()
    counts = np.bincount(train.dataset.inter_feat[train.dataset.iid_field].numpy(), minlength=net.n_items)
    assert cold.tolist() == [i for i in range(1, net.n_items) if counts[i] == 0] and len(cold) >= 5
    net.eval()
    with torch.no_grad():
        got_u, got_i = net.compute_all()
        # the same model, switch off, with the cold items' ID rows replaced in its weights
        ref = copy.deepcopy(net)
        ref.cold_item_id = "none"
        params = dict(ref.named_parameters())
        for name, offset in ID_TABLES[model]:
            offset = getattr(ref, offset) if isinstance(offset, str) else offset
            table = params[name]
            warm = [offset + i for i in range(1, net.n_items) if counts[i] > 0]
            fill = torch.zeros(table.shape[1]) if mode == "zero" else table[warm].mean(dim=0)
            table[offset + cold] = fill
        want_u, want_i = ref.compute_all()
        assert torch.allclose(got_i, want_i, atol=1e-6) and torch.allclose(got_u, want_u, atol=1e-6)
        # and the switch changes the cold items (it is not a no-op)
        ref_none = copy.deepcopy(net)
        ref_none.cold_item_id = "none"
        assert not torch.allclose(ref_none.compute_all()[1][cold], got_i[cold])
        # training is untouched: in train mode the switch does nothing
        if model not in ("MetaMMF_GCN", "LATTICE", "FREEDOM"):  # (dropout / graph resampling in train mode)
            net.train()
            ref_none.train()
            assert torch.allclose(net.compute_all()[1], ref_none.compute_all()[1])


def test_cold_item_scored_from_content_alone_by_hand(cold_data):
    """MetaMMF_MF with cold_item_id zero: a cold item's score is the user's content half . its fused content."""
    config, net, _, _ = _build("MetaMMF_MF", cold_data, cold_item_id="zero")
    net.eval()
    item = int(net.cold_items.nonzero()[0])
    with torch.no_grad():
        fused = net.fusion(net.modalities.per_modality(torch.tensor([item])))[0]  # [fused]
        user = net.user_embedding.weight[3]
        from recbole.data.interaction import Interaction

        score = net.full_sort_predict(Interaction({"user_id": torch.tensor([3])})).view(-1)[item]
    assert float(score) == pytest.approx(float(user[: fused.shape[0]] @ fused), rel=1e-5)


def test_cold_item_id_rejects_unknown_values(cold_data):
    with pytest.raises(ValueError, match="cold_item_id must be one of"):
        _build("VBPR", cold_data, cold_item_id="average")


# --- converters: --cold-items -----------------------------------------------------------------------
def test_split_with_cold_items_holds_items_out_and_keeps_the_warm_split():
    from dataset_converters.splits import random_parts, split_with_cold_items

    rng = np.random.default_rng(5)
    users = np.repeat(np.arange(40), 15)
    items = rng.integers(0, 60, size=len(users))
    which, held = split_with_cold_items(users, items, lambda warm: random_parts(users[warm], 7), 0.1, 7)
    assert len(held) == round(0.1 * len(np.unique(items)))
    is_cold = np.isin(items, held)
    assert not np.any(which[is_cold] == 0)  # never in training
    assert {1, 2} <= set(which[is_cold].tolist())  # in valid and in test
    assert np.array_equal(which[~is_cold], random_parts(users[~is_cold], 7))  # the others: the usual split
    # deterministic in the seed, another seed holds out other items
    again, held2 = split_with_cold_items(users, items, lambda warm: random_parts(users[warm], 7), 0.1, 7)
    assert np.array_equal(again, which) and np.array_equal(held2, held)
    _, held3 = split_with_cold_items(users, items, lambda warm: random_parts(users[warm], 8), 0.1, 8)
    assert not np.array_equal(held3, held)


def _parts(out, name):
    return {
        p: [line.split("\t")[:2] for line in (out / f"{name}.{p}.inter").read_text().splitlines()[1:]]
        for p in ("train", "valid", "test")
    }


def test_converter_cold_items_on_the_tiktok_sample(tmp_path):
    from dataset_converters.cli import main as convert_main

    src = Path(__file__).resolve().parents[2] / "shared" / "data" / "tiktok-sample"
    if not src.is_dir():
        pytest.skip(f"real data {src} not available (expected beside the repository)")
    assert convert_main(["tiktok", "--src", str(src), "--out", str(tmp_path), "--name", "tt",
                         "--split", "random", "--cold-items", "0.1"]) == 0
    out = tmp_path / "tt"
    parts = _parts(out, "tt")
    all_pairs = [line.split("\t")[:2] for line in (out / "tt.inter").read_text().splitlines()[1:]]
    assert sorted(map(tuple, all_pairs)) == sorted(tuple(r) for p in parts.values() for r in p)
    from dataset_converters.splits import held_out_items

    # the drawn items (the converter's seed, 2020): none in training, all their interactions in valid/test
    held = {str(i) for i in held_out_items(np.array([int(i) for _, i in all_pairs]), 0.1, 2020)}
    distinct = {i for _, i in all_pairs}
    assert len(held) == round(0.1 * len(distinct))
    assert not held & {i for _, i in parts["train"]}
    in_eval = [i for _, i in parts["valid"] + parts["test"] if i in held]
    assert len(in_eval) == sum(i in held for _, i in all_pairs)
    assert f"{len(held)} items held out of training" in (out / "tt.yaml").read_text()
    # and RecBole sees them as cold: the cold metrics are reported
    from recbole.quick_start import run_recbole

    cfg = {"data_path": str(tmp_path), "epochs": 1, "state": "ERROR", "show_progress": False,
           "checkpoint_dir": str(tmp_path / "saved")}
    result = run_recbole(model="BPR", dataset="tt", config_dict=cfg, saved=False)
    assert "coldrecall@20" in result["test_result"] and "coldndcg@20" in result["test_result"]


def test_microlens_chrono_with_cold_items(tmp_path):
    from dataset_converters.microlens import convert_microlens

    rng = np.random.default_rng(0)
    src = tmp_path / "raw"
    src.mkdir()
    lines = []
    for u in range(30):
        lines.append(f"{u}\t" + " ".join(str(i) for i in rng.choice(40, 12, replace=False)))
    (src / "MicroLens-50k_pairs.tsv").write_text("\n".join(lines) + "\n")
    (src / "MicroLens-50k_titles.csv").write_text("item,title\n" + "".join(f"{i},title {i} #tag{i % 3}\n" for i in range(40)))
    ds = convert_microlens(src, split="chrono", text="tfidf", text_dim=4, cold_items=0.2)
    held = set(ds.splits["valid"].item.tolist() + ds.splits["test"].item.tolist()) - set(ds.splits["train"].item.tolist())
    assert len(held) == 8 and "8 items held out" in ds.split_note
    # the warm interactions still split chronologically: a user's warm test items come after their training
    order = {}
    for pos, (u, i) in enumerate(zip(ds.inter.user.tolist(), ds.inter.item.tolist())):
        order[(u, i)] = pos
    last_train = {}
    for u, i in zip(ds.splits["train"].user.tolist(), ds.splits["train"].item.tolist()):
        last_train[u] = max(last_train.get(u, -1), order[(u, i)])
    for u, i in zip(ds.splits["test"].user.tolist(), ds.splits["test"].item.tolist()):
        if i not in held:
            assert order[(u, i)] > last_train[u]


@pytest.mark.parametrize("argv,phrase", [
    (["ml100k"], "ml100k: --cold-items needs a split the converter writes; ml100k writes no split"),
    (["diffmm", "--src", "RAW"], "RAW: --cold-items needs a split the converter writes; diffmm keeps the data's own split"),
    (["tiktok", "--src", "FULL"], "FULL: --cold-items needs a split the converter writes; the authors' original split is the data's own"),
])
def test_cold_items_refused_where_the_split_is_the_datas_own(tmp_path, argv, phrase, capsys):
    from dataset_converters.cli import main as convert_main
    from test_converters import write_full_layout

    full = write_full_layout(tmp_path / "full")
    argv = [str(full) if a == "FULL" else str(tmp_path / "raw") if a == "RAW" else a for a in argv]
    phrase = phrase.replace("FULL", str(full)).replace("RAW", str(tmp_path / "raw"))
    assert convert_main([*argv, "--out", str(tmp_path / "out"), "--cold-items", "0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {phrase}")
    assert not (tmp_path / "out").exists()


def test_cold_items_share_must_be_a_share(tmp_path, capsys):
    from dataset_converters.cli import main as convert_main

    with pytest.raises(SystemExit) as exit_info:
        convert_main(["tiktok", "--src", str(tmp_path), "--out", str(tmp_path / "o"), "--cold-items", "1.5"])
    assert exit_info.value.code == 2
    assert "--cold-items: must be a share between 0 and 1" in capsys.readouterr().err


# --- the leaderboard ------------------------------------------------------------------------------
def test_leaderboard_shows_cold_columns_when_the_trials_have_them(tmp_path):
    import csv

    from recbole_metammf.benchmark import store
    from recbole_metammf.benchmark.report import write_report
    from test_benchmark import _fake_record

    values = {
        "A": [{"ndcg@10": .30, "coldrecall@20": .05, "coldndcg@20": .02}, {"ndcg@10": .32, "coldrecall@20": .07, "coldndcg@20": .04}],
        "B": [{"ndcg@10": .20, "coldrecall@20": .15, "coldndcg@20": .09}, {"ndcg@10": .22, "coldrecall@20": .17, "coldndcg@20": .11}],
    }
    for m, per_seed in values.items():
        for seed, v in enumerate(per_seed):
            rec = _fake_record(m, seed, v)
            rec["protocol"].update(metrics=["NDCG", "ColdRecall", "ColdNDCG"], topk=[10, 20])
            store.save_trial(str(tmp_path), rec)
    write_report(str(tmp_path))
    with open(tmp_path / "toy" / "leaderboard.csv") as f:
        rows = {r["model"]: r for r in csv.DictReader(f)}
    # only the keys every trial has: NDCG@10 and the cold @20 columns
    assert float(rows["B"]["cold R@20"]) == pytest.approx(0.16) and float(rows["A"]["cold NDCG@20"]) == pytest.approx(0.03)
    assert "NDCG@20" not in rows["A"] and "cold R@10" not in rows["A"]
    md = (tmp_path / "toy" / "leaderboard.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| Model |"))
    assert header == "| Model | seeds | NDCG@10 | cold R@20 | cold NDCG@20 |"
    assert "only the user's test items with no training interaction count as relevant" in md
    # trials without cold metrics: no cold columns, no cold sentence
    other = tmp_path / "other"
    for m in ("A", "B"):
        store.save_trial(str(other), _fake_record(m, 0, {"ndcg@10": .3}))
    write_report(str(other))
    md = (other / "toy" / "leaderboard.md").read_text()
    assert "cold" not in md


def test_cold_metrics_left_out_of_a_multi_process_evaluation(tmp_path, caplog):
    caplog.set_level(logging.WARNING)  # as above
    """RecBole all-gathers every key and averages ranks by their user counts: no cold keys there."""
    from recbole.evaluator.collector import Collector

    write_cold_split(tmp_path / "d", n_users=40, n_items=60, per_user=10)
    cfg = planted_config(tmp_path / "d", benchmark_filename=["train", "valid", "test"], epochs=1)
    config = Config(model="BPR", dataset="planted", config_dict=cfg)
    dataset = create_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    scores = torch.rand(3, dataset.item_num)
    pos_u, pos_i = torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3])
    single = Collector(config)
    single.data_collect(train)
    single.eval_batch_collect(scores, None, pos_u, pos_i)
    assert "rec.cold_topk" in single.get_data_struct()
    assert "rec.cold_topk" not in single.get_data_struct()  # per evaluation: dropped once handed over
    config["single_spec"] = False
    multi = Collector(config)
    multi.data_collect(train)
    multi.eval_batch_collect(scores, None, pos_u, pos_i)
    assert "rec.cold_topk" not in multi.get_data_struct()
    assert "multi-process" in caplog.text
