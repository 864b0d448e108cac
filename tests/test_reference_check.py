"""benchmarks/reference_check.py and its parts (benchmarks/refcheck/): MMRec's data layout, MMRec's log, the settings
map, the runs' bookkeeping, DiffMM's patches, the table."""

from __future__ import annotations

import importlib.util
import json
import os
import types
from pathlib import Path

import numpy as np

import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reference_check", REPO / "benchmarks" / "reference_check.py")
rc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rc)
# its parts (benchmarks/refcheck/); a test patches a name in the module that owns it, where its callers look it up
shared, ours_side, mmrec_side, diffmm_side, page = rc.shared, rc.ours_side, rc.mmrec_side, rc.diffmm_side, rc.page


def _write_tiny(root: Path, name: str = "tiny", item_rows: dict | None = None) -> Path:
    """A converted dataset as the converters write it: fixed split files and an .item file whose rows
    are out of id order and include one item no split uses."""
    src = root / name
    src.mkdir(parents=True)
    header = "user_id:token\titem_id:token\n"
    (src / f"{name}.train.inter").write_text(header + "".join(
        f"{u}\t{i}\n" for u, i in [(3, 10), (3, 2), (0, 7), (0, 10), (12, 2), (12, 7), (0, 2)]))
    (src / f"{name}.valid.inter").write_text(header + "3\t7\n")
    (src / f"{name}.test.inter").write_text(header + "0\t20\n12\t10\n")
    if item_rows is None:
        item_rows = {20: ([4, 4.5], [40, 41]), 7: ([2, 2.5], [20, 21]), 99: ([9, 9], [9, 9]),
                     2: ([1, 1.5], [10, 11]), 10: ([3, 3.5], [30, 31])}
    (src / f"{name}.item").write_text("item_id:token\tvisual:float_seq\tacoustic:float_seq\n" + "".join(
        f"{i}\t{' '.join(map(str, v))}\t{' '.join(map(str, a))}\n" for i, (v, a) in item_rows.items()))
    return src


def test_layout_rows_labels_ids_and_feature_order(tmp_path):
    src = _write_tiny(tmp_path)
    info = mmrec_side.write_mmrec_layout(str(src), "tiny", str(tmp_path / "out"))
    folder = tmp_path / "out" / "tiny"
    lines = (folder / "tiny.inter").read_text().splitlines()
    assert lines[0] == "userID\titemID\tx_label"
    rows = [tuple(map(int, line.split("\t"))) for line in lines[1:]]
    # users 0, 3, 12 -> 0, 1, 2; items 2, 7, 10, 20 -> 0, 1, 2, 3 (numeric order; item 99 has no interaction)
    assert rows == [(1, 2, 0), (1, 0, 0), (0, 1, 0), (0, 2, 0), (2, 0, 0), (2, 1, 0), (0, 0, 0),
                    (1, 1, 1),
                    (0, 3, 2), (2, 2, 2)]
    assert [r[2] for r in rows].count(0) == 7 and [r[2] for r in rows].count(1) == 1 and [r[2] for r in rows].count(2) == 2
    assert info["rows_per_label"] == {0: 7, 1: 1, 2: 2} and info["n_users"] == 3 and info["n_items"] == 4
    image = np.load(folder / "image_feat.npy")
    text = np.load(folder / "text_feat.npy")
    assert image.dtype == np.float32 and image.shape == (4, 2)
    np.testing.assert_array_equal(image, [[1, 1.5], [2, 2.5], [3, 3.5], [4, 4.5]])  # visual, row = item id
    np.testing.assert_array_equal(text, [[10, 11], [20, 21], [30, 31], [40, 41]])  # acoustic in MMRec's text slot
    yaml_text = (folder / "tiny.yaml").read_text()
    assert "inter_file_name: 'tiny.inter'" in yaml_text and "inter_splitting_label: x_label" in yaml_text
    assert not list(folder.glob("*.tmp"))


def test_layout_refuses_an_item_without_features_and_writes_nothing(tmp_path):
    src = _write_tiny(tmp_path, item_rows={2: ([1, 1], [1, 1]), 7: ([2, 2], [2, 2]), 10: ([3, 3], [3, 3])})
    with pytest.raises(ValueError, match=r"tiny\.item: 1 interacted items have no 'visual' row \(first: '20'\)"):
        mmrec_side.write_mmrec_layout(str(src), "tiny", str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


# MMRec's Trainer.fit lines (format of its logger.py / trainer.py), with the driver's timing line; epoch 2's
# training line is the tuple-loss form, which MMRec writes without the time.
MMREC_LOG = """\
02 Dec 03:56    INFO refcheck epoch 0 train_time 5.5203s
02 Dec 03:56    INFO epoch 0 training [time: 5.52s, train loss: 11.9471]
02 Dec 03:56    INFO epoch 0 evaluating [time: 0.71s, valid_score: 0.063700]
02 Dec 03:56    INFO valid result: 
recall@10: 0.0446    recall@20: 0.0637    ndcg@10: 0.0229    ndcg@20: 0.0277    
02 Dec 03:56    INFO test result: 
recall@10: 0.0451    recall@20: 0.0656    ndcg@10: 0.0234    ndcg@20: 0.0286    
02 Dec 03:56    INFO ██ LightGCN--Best validation results updated!!!
02 Dec 03:57    INFO refcheck epoch 1 train_time 3.8968s
02 Dec 03:57    INFO epoch 1 training [time: 3.90s, train loss: 11.7219]
02 Dec 03:57    INFO epoch 1 evaluating [time: 0.70s, valid_score: 0.065100]
02 Dec 03:57    INFO valid result: 
recall@10: 0.0450    recall@20: 0.0651    ndcg@10: 0.0231    ndcg@20: 0.0280    
02 Dec 03:57    INFO test result: 
recall@10: 0.0460    recall@20: 0.0662    ndcg@10: 0.0239    ndcg@20: 0.0290    
02 Dec 03:57    INFO ██ LightGCN--Best validation results updated!!!
02 Dec 03:57    INFO refcheck epoch 2 train_time 4.2500s
02 Dec 03:57    INFO train_loss1: 11.5000, train_loss2: 0.1000]
02 Dec 03:57    INFO epoch 2 evaluating [time: 0.69s, valid_score: 0.064000]
02 Dec 03:57    INFO valid result: 
recall@10: 0.0440    recall@20: 0.0640    ndcg@10: 0.0225    ndcg@20: 0.0275    
02 Dec 03:57    INFO test result: 
recall@10: 0.0470    recall@20: 0.0700    ndcg@10: 0.0241    ndcg@20: 0.0301    
02 Dec 03:57    INFO +++++Finished training, best eval result in epoch 1
02 Dec 03:57    INFO best valid result: recall@10: 0.0450    recall@20: 0.0651    ndcg@10: 0.0231    ndcg@20: 0.0280    
02 Dec 03:57    INFO test result: recall@10: 0.0460    recall@20: 0.0662    ndcg@10: 0.0239    ndcg@20: 0.0290    
"""


def test_log_parser_takes_the_test_of_the_best_validation_epoch():
    out = mmrec_side.parse_mmrec_log(MMREC_LOG)
    assert out["best_epoch"] == 1 and out["epochs_run"] == 3 and out["stopped_early"]
    assert out["test"] == {"recall@10": 0.0460, "recall@20": 0.0662, "ndcg@10": 0.0239, "ndcg@20": 0.0290}
    assert out["best_valid"]["recall@20"] == 0.0651
    assert out["valid_curve"] == [[0, 0.0637], [1, 0.0651], [2, 0.0640]]
    assert out["test_curve"] == [[0, 0.0656], [1, 0.0662], [2, 0.0700]]  # every epoch's test, the diagnostic
    # MMRec's own times where it prints them, the driver's where it does not
    assert out["epoch_train_times_s"] == [5.52, 3.90, 4.25] and out["median_epoch_s"] == 4.25


def test_test_curves_fills_old_records_from_their_own_logs_only(tmp_path):
    log = tmp_path / "run.log"
    log.write_text(MMREC_LOG)
    parsed = mmrec_side.parse_mmrec_log(MMREC_LOG)
    old = {"side": "reference", "model": "LightGCN", "log": str(log), "valid_curve": parsed["valid_curve"]}
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "LightGCN__reference__seed1.json").write_text(json.dumps(old))
    (tmp_path / "r" / "LightGCN__ours__seed1.json").write_text(json.dumps({**old, "side": "ours"}))
    assert mmrec_side.cmd_test_curves(str(tmp_path / "r")) == ["LightGCN__reference__seed1.json"]
    filled = json.loads((tmp_path / "r" / "LightGCN__reference__seed1.json").read_text())
    assert filled == {**old, "test_curve": [[0, 0.0656], [1, 0.0662], [2, 0.0700]]}
    assert "test_curve" not in json.loads((tmp_path / "r" / "LightGCN__ours__seed1.json").read_text())
    assert mmrec_side.cmd_test_curves(str(tmp_path / "r")) == []  # done once
    other = {**old, "valid_curve": [[0, 0.05]]}  # a log of another run
    (tmp_path / "r" / "VBPR__reference__seed1.json").write_text(json.dumps(other))
    (tmp_path / "r" / "BPR__reference__seed1.json").write_text(json.dumps(old))  # would be filled, alone
    with pytest.raises(ValueError, match="VBPR__reference__seed1.json: the validation curve .* not the record's"):
        mmrec_side.cmd_test_curves(str(tmp_path / "r"))
    assert json.loads((tmp_path / "r" / "BPR__reference__seed1.json").read_text()) == old  # nothing half-done


def test_log_parser_refuses_a_log_that_contradicts_itself():
    bad = MMREC_LOG.replace("best eval result in epoch 1", "best eval result in epoch 0")
    with pytest.raises(ValueError, match="epoch 0.*last update was epoch 1"):
        mmrec_side.parse_mmrec_log(bad)


def test_recbole_epoch_times_through_colour_codes():
    text = ("\x1b[1;32mepoch 0 training\x1b[0m [\x1b[1;34mtime\x1b[0m: 1.23s, \x1b[1;34mtrain loss\x1b[0m: 9.1]\n"
            "\x1b[1;32mepoch 0 evaluating\x1b[0m [\x1b[1;34mtime\x1b[0m: 0.40s, valid_score: 0.1]\n"
            "epoch 1 training [time: 2.50s, train loss: 8.0]\n")
    assert ours_side.parse_recbole_epoch_times(text) == [1.23, 2.50]


def test_recbole_epoch_times_of_a_resumed_run_are_each_epochs_last_trained():
    """A resumed run's log: the stopped run's lines (it reached epoch 5), the resume line, the replayed
    epochs 0-3 (0.00 s), then epochs 4-6 trained again: epochs 0-3 keep the first run's times."""
    first = "".join(f"epoch {e} training [time: {1 + e / 10:.2f}s, train loss: 1.0]\n" for e in range(6))
    marker = "resuming from /x/state.pt: epochs 0-3 are replayed from its log (their lines below show 0.00 s), " \
             "training goes on at epoch 4\n"
    replay = "".join(f"epoch {e} training [time: 0.00s, train loss: 1.0]\n" for e in range(4))
    second = "".join(f"epoch {e} training [time: {3 + e / 10:.2f}s, train loss: 1.0]\n" for e in range(4, 7))
    assert ours_side.parse_recbole_epoch_times(first + marker + replay + second) == [1.0, 1.1, 1.2, 1.3, 3.4, 3.5, 3.6]
    # a run that started over (epoch 0 trained anew, no resume line) drops the stopped run's epochs
    again = "".join(f"epoch {e} training [time: 5.00s, train loss: 1.0]\n" for e in range(2))
    assert ours_side.parse_recbole_epoch_times(first + again) == [5.0, 5.0]


def test_ours_runs_resume_from_their_snapshots(tmp_path, monkeypatch):
    """run_ours hands the driver a snapshot folder keyed by code and config, appends to the log when that
    folder holds a snapshot, and removes it once the run is recorded; another key's folder goes."""
    monkeypatch.setattr(ours_side, "ours_config", lambda model, data_path, extra: {"data_path": data_path, **(extra or {})})
    monkeypatch.setattr(ours_side, "ours_code_digest", lambda ours_model: "code1")
    args = types.SimpleNamespace(tag=None, extra={"epochs": 3}, data_path="d", scratch=str(tmp_path))
    calls = []

    def fake_run(cmd, cwd, log_path, append=False):
        calls.append((cmd, append))
        out = cmd[cmd.index("--out") + 1]
        trial = {"status": "ok", "epochs_run": 3, "best_epoch": 1, "best_valid_result": {}, "test_result": {},
                 "valid_curve": [], "train_time_s": 3.0, "resumed": {"at_epoch": 2} if append else None}
        with open(out, "w") as f:
            json.dump(trial, f)
        return 0, 1.0, "epoch 0 training [time: 1.00s, train loss: 1]\n"

    monkeypatch.setattr(shared, "run_logged", fake_run)
    folder = ours_side.ours_snapshot_folder(str(tmp_path / "ours-run"), "LightGCN", 2020, "LightGCN", {"data_path": "d", "epochs": 3})
    stale = tmp_path / "ours-run" / ".resume" / "LightGCN__seed2020__0000000000000000"
    stale.mkdir(parents=True)
    other_seed = tmp_path / "ours-run" / ".resume" / "LightGCN__seed2021__0000000000000000"
    other_seed.mkdir()
    os.makedirs(folder)
    (tmp_path / "ours-run" / ".resume" / os.path.basename(folder) / "state.pt").write_text("x")
    record = ours_side.run_ours("LightGCN", 2020, args)
    cmd, append = calls[-1]
    assert cmd[cmd.index("--snapshots") + 1] == folder and append is True
    assert record["resumed"] == {"at_epoch": 2} and record["status"] == "ok"
    assert not os.path.exists(folder) and not stale.exists() and other_seed.exists()
    ours_side.run_ours("LightGCN", 2020, args)  # no snapshot left: a fresh run overwrites the log
    assert calls[-1][1] is False
    monkeypatch.setattr(ours_side, "ours_code_digest", lambda ours_model: "code2")  # other code: another folder
    assert ours_side.ours_snapshot_folder(str(tmp_path / "ours-run"), "LightGCN", 2020, "LightGCN",
                                   {"data_path": "d", "epochs": 3}) != folder


def test_ours_run_with_the_test_diagnostic_records_its_test_curve(tmp_path, monkeypatch):
    """With ``diagnose_best_test_epoch`` our record keeps the test Recall@20 of every epoch as ``test_curve``
    (MMRec's records keep theirs from its log); without it there is none."""
    monkeypatch.setattr(ours_side, "ours_config", lambda model, data_path, extra: {"data_path": data_path, **(extra or {})})
    monkeypatch.setattr(ours_side, "ours_code_digest", lambda ours_model: "code1")

    def fake_run(cmd, cwd, log_path, append=False):
        config = json.loads(cmd[cmd.index("--config") + 1])
        trial = {"status": "ok", "epochs_run": 2, "best_epoch": 0, "best_valid_result": {}, "test_result": {},
                 "valid_curve": [{"epoch": 0, "score": 0.2}, {"epoch": 1, "score": 0.1}], "train_time_s": 2.0}
        if config.get("diagnose_best_test_epoch"):
            trial["diagnostic_best_test_over_epochs"] = {"test_curve": [
                {"epoch": 0, "result": {"recall@20": 0.25, "ndcg@20": 0.1}},
                {"epoch": 1, "result": {"recall@20": 0.3, "ndcg@20": 0.2}}]}
        with open(cmd[cmd.index("--out") + 1], "w") as f:
            json.dump(trial, f)
        return 0, 1.0, ""

    monkeypatch.setattr(shared, "run_logged", fake_run)
    args = types.SimpleNamespace(tag=None, extra={"diagnose_best_test_epoch": True}, data_path="d", scratch=str(tmp_path))
    assert ours_side.run_ours("LightGCN", 2020, args)["test_curve"] == [[0, 0.25], [1, 0.3]]
    args.extra = {}
    assert "test_curve" not in ours_side.run_ours("LightGCN", 2020, args)


def test_settings_map_by_meaning():
    ours = {"learning_rate": 0.002, "train_batch_size": 1024, "epochs": 50, "stopping_step": 20,
            "id_embedding_size": 32, "content_embedding_size": 32, "reg_weight": 1e-4, "content_reg_weight": 1.0}
    cfg = mmrec_side.mmrec_config("VBPR", ours, 7, "/data")
    assert cfg["embedding_size"] == 32 and cfg["reg_weight"] == 1.0  # MMRec's reg is on the scored vectors
    assert cfg["learning_rate"] == 0.002 and cfg["stopping_step"] == 20 and cfg["epochs"] == 50
    assert cfg["seed"] == [7] and cfg["hyper_parameters"] == ["seed"] and cfg["data_path"] == "/data/"
    freedom = {**ours, "embedding_size": 64, "knn_k": 10, "n_mm_layers": 1, "n_ui_layers": 2, "edge_prune_ratio": 0.8,
               "modal_loss_weight": 1e-4, "modality_weights": [1.0, 3.0], "modality_fields": ["visual", "acoustic"]}
    cfg = mmrec_side.mmrec_config("FREEDOM", freedom, 7, "/data")
    assert cfg["mm_image_weight"] == 0.25 and cfg["dropout"] == 0.8 and cfg["reg_weight"] == 1e-4
    assert mmrec_side.mmrec_config("FREEDOM", {**freedom, "modality_weights": None}, 7, "/data")["mm_image_weight"] == 0.5
    del ours["content_reg_weight"]
    with pytest.raises(ValueError, match="no 'content_reg_weight' for MMRec's 'reg_weight'"):
        mmrec_side.mmrec_config("VBPR", ours, 7, "/data")


def test_lattice_settings_map_and_our_reference_keys(tmp_path):
    ours = {"learning_rate": 0.0005, "train_batch_size": 2048, "epochs": 100, "stopping_step": 10,
            "embedding_size": 64, "feat_embedding_size": 32, "knn_k": 10, "lambda_coeff": 0.9, "n_layers": 1,
            "n_ui_layers": 3, "reg_weight": 0.0}
    cfg = mmrec_side.mmrec_config("LATTICE", ours, 7, "/data")
    assert cfg["feat_embed_dim"] == 32 and cfg["lambda_coeff"] == 0.9 and cfg["learning_rate"] == 0.0005
    assert cfg["weight_size"] == [64, 64, 64]  # MMRec's LightGCN layers = len(weight_size)
    assert cfg["reg_weight"] == 0.0  # ours has no L2 on the scored vectors unless content_reg_weight is set
    assert mmrec_side.mmrec_config("LATTICE", {**ours, "content_reg_weight": 1e-4}, 7, "/data")["reg_weight"] == 1e-4
    # our side: the model's reference keys over the YAML, --set over both
    given = ours_side.ours_config("LATTICE", str(tmp_path), {"item_graph_update": "every_step"})
    assert given["data_path"] == str(tmp_path) and given["ui_graph_norm"] == "mean_self_loops"
    assert given["item_graph_mode"] == "mix_first" and given["finetune_features"] is True
    assert given["require_pow"] is True and given["item_graph_update"] == "every_step"
    assert ours_side.ours_config("FREEDOM", str(tmp_path), {})["finetune_features"] is True
    assert "finetune_features" not in ours_side.ours_config("VBPR", str(tmp_path), {})


def test_our_reference_keys_are_the_models_own():
    """Every key ``ours_set`` gives is one the model's YAML defines (or the base class reads: require_pow),
    of the YAML value's type, and LATTICE's choices are values the model accepts (no typo runs the default)."""
    import yaml

    base_keys = {"require_pow"}  # MultimodalRecommender reads it when given
    for model, spec in shared.MODELS.items():
        path = REPO / "properties" / "model" / f"{spec['ours']}.yaml"
        defined = yaml.safe_load(path.read_text()) if path.is_file() else {}
        for key, value in spec.get("ours_set", {}).items():
            assert key in defined or key in base_keys, (model, key)
            assert type(value) is type(defined.get(key, value)), (model, key)
    from recbole_metammf.model import lattice

    set_ = shared.MODELS["LATTICE"]["ours_set"]
    assert set_["ui_graph_norm"] in lattice.UI_GRAPH_NORMS and set_["item_graph_mode"] in lattice.ITEM_GRAPH_MODES
    assert set_["item_graph_update"] in lattice.ITEM_GRAPH_UPDATES


def _run(recall, ndcg, best, times):
    return {"test": {"recall@20": recall, "ndcg@20": ndcg}, "best_epoch": best, "epoch_train_times_s": times}


def test_table_means_relative_difference_and_verdict(monkeypatch):
    # a difference beyond the bar is "to explain" (with its open hypothesis) until a run explains it
    monkeypatch.setattr(page, "EXPLANATIONS", {"BM3": "shown by a run"})
    monkeypatch.setattr(page, "HYPOTHESES", {"VBPR": "a guess"})
    results = {
        "BM3": {"ours": {1: _run(0.0800, 0.030, 40, [1.0])}, "reference": {1: _run(0.0600, 0.025, 1, [1.0])}},
        "LightGCN": {"ours": {1: _run(0.0930, 0.045, 50, [1.0, 3.0]), 2: _run(0.0890, 0.043, 40, [2.0])},
                     "reference": {1: _run(0.0900, 0.044, 45, [4.0, 4.0]), 2: _run(0.0880, 0.042, 47, [2.0])}},
        "VBPR": {"ours": {1: _run(0.0560, 0.020, 20, [2.0])}, "reference": {1: _run(0.0450, 0.017, 30, [1.0])}},
        "FREEDOM": {"ours": {1: _run(0.0900, 0.040, 60, [1.0])}},
    }
    rows = {r["model"]: r for r in page.table_rows(results)}
    lg = rows["LightGCN"]
    assert lg["ours_recall@20"] == pytest.approx(0.0910) and lg["reference_recall@20"] == pytest.approx(0.0890)
    assert lg["rel_diff_recall@20"] == pytest.approx(0.0020 / 0.0890)
    assert lg["ours_median_epoch_s"] == 2.0 and lg["reference_median_epoch_s"] == 4.0 and lg["epoch_time_ratio"] == 0.5
    assert lg["verdict"] == "within 5 %" and lg["ours_best_epochs"] == [50, 40]
    assert rows["VBPR"]["verdict"] == "**to explain**" and rows["VBPR"]["explanation"] == "open: a guess"
    assert rows["BM3"]["verdict"] == "explained" and rows["BM3"]["explanation"] == "shown by a run"
    assert rows["FREEDOM"]["verdict"] == "incomplete" and rows["FREEDOM"]["rel_diff_recall@20"] is None
    # unequal seed sets: each side's mean over its own seeds, the difference over the seeds both ran
    results["BM3"]["reference"][2] = _run(0.0300, 0.010, 3, [1.0])
    bm3 = {r["model"]: r for r in page.table_rows(results)}["BM3"]
    assert bm3["reference_recall@20"] == pytest.approx(0.0450) and bm3["paired_seeds"] == [1]
    assert bm3["rel_diff_recall@20"] == pytest.approx(0.0200 / 0.0600)
    # a tagged row beyond the bar is a diagnostic of its model's hypothesis, not a row to explain
    results["VBPR@raw"] = results["VBPR"]
    assert {r["model"]: r for r in page.table_rows(results)}["VBPR@raw"]["verdict"] == "diagnostic (for VBPR)"


def test_welch_p_by_hand_and_in_the_table():
    # means 2 and 5, variances 1 and 1: t = -3 / sqrt(2/3) = -3.674, Welch's df = 4, two-sided p = 0.0213
    assert page.welch_p([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]) == pytest.approx(0.02131, abs=1e-4)
    from scipy import stats

    a, b = [0.0618, 0.0799, 0.0799], [0.0725, 0.0663, 0.0661, 0.0700]
    assert page.welch_p(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert page.welch_p([0.1], [0.2, 0.3]) is None and page.welch_p([0.1, 0.1], [0.2, 0.2]) is None
    results = {"LightGCN": {"ours": {1: _run(0.0930, 0.045, 50, [1.0]), 2: _run(0.0890, 0.043, 40, [2.0])},
                            "reference": {1: _run(0.0900, 0.044, 45, [4.0]), 2: _run(0.0880, 0.042, 47, [2.0])}}}
    row = page.table_rows(results)[0]
    assert row["welch_p_recall@20"] == pytest.approx(page.welch_p([0.0930, 0.0890], [0.0900, 0.0880]))


def test_each_run_records_its_cpu_and_the_page_names_it(monkeypatch):
    """``machine()`` reads this machine's CPU (the model name and flags of /proc/cpuinfo where it exists,
    torch's chosen kernel level); a stamped record carries it and the per-seed table shows it; a record
    from before the field shows a dash."""
    import hashlib

    from recbole_metammf.benchmark.trial import machine

    m = machine()
    assert m["cpu_capability"] == torch_capability() and m["cores"] == os.cpu_count()
    if os.path.exists("/proc/cpuinfo"):
        text = open("/proc/cpuinfo").read()
        flags = next((line.split(":", 1)[1] for line in text.splitlines()
                      if line.split(":")[0].strip() in ("flags", "Features")), None)
        if flags is not None:
            assert m["cpu_flags_sha256"] == hashlib.sha256(" ".join(sorted(flags.split())).encode()).hexdigest()[:12]
        name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.split(":")[0].strip() == "model name"), None)
        if name:
            assert m["cpu"] == name
        family = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                       if line.split(":")[0].strip() == "cpu family"), None)
        if family:
            assert m["cpu_id"].startswith(f"cpu family {family} ")
    cache = "/sys/devices/system/cpu/cpu0/cache/index0"
    if os.path.isdir(cache):
        level, size = (open(os.path.join(cache, f)).read().strip() for f in ("level", "size"))
        assert m["caches"].startswith(f"L{level}") and size in m["caches"].split(",")[0]
    assert shared.stamp_record({})["machine"] == m
    assert page.machine_label(m).startswith(f"{m['cpu']}, ")
    assert page.machine_label({"cpu": "X", "cpu_capability": "AVX2", "cpu_flags_sha256": "abc"}) == "X, AVX2, flags abc"
    assert page.machine_label(None) == "—"


def test_a_run_of_the_script_stamps_its_record_without_the_package_installed(tmp_path):
    """Run as ``python benchmarks/reference_check.py`` (the checkout not installed, not on the path), stamping
    a finished run's record imports ``trial.machine`` from the checkout itself: it once failed there after a
    finished training, losing the run."""
    import subprocess
    import sys

    code = ("import runpy, json; g = runpy.run_path(%r); print(json.dumps(g['shared'].stamp_record({})['machine']))"
            % str(REPO / "benchmarks" / "reference_check.py"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["cores"] == os.cpu_count()


def torch_capability():
    import torch

    return torch.backends.cpu.get_cpu_capability()


def test_dragon_cpu_patch_applies_once_and_refuses_a_changed_file(tmp_path):
    models = tmp_path / "src" / "models"
    models.mkdir(parents=True)
    old, new = mmrec_side.DRAGON_CPU_PATCH
    (models / "dragon.py").write_text(f"a = 1\n        self.result_embed = nn.Parameter(\n            {old}\nb = 2\n")
    mmrec_side.patch_dragon_for_cpu(str(tmp_path))
    mmrec_side.patch_dragon_for_cpu(str(tmp_path))  # idempotent
    text = (models / "dragon.py").read_text()
    assert text.count(new) == 1 and text.count(".data.to(self.device)") == 1 and text.startswith("a = 1\n")
    (models / "dragon.py").write_text("self.result_embed = something_else\n")
    with pytest.raises(RuntimeError, match="dragon.py: DRAGON's CPU patch expects its anchor once, found 0"):
        mmrec_side.patch_dragon_for_cpu(str(tmp_path))
    assert (models / "dragon.py").read_text() == "self.result_embed = something_else\n"


def test_torch_scatter_stand_in_sums_by_index_as_the_extension_does():
    import torch

    src = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    index = torch.tensor([2, 0, 2, 4, 0])
    # MMRec's call: scatter_add(edge_weight, row, dim=0, dim_size=num_nodes); node 1, 3 and 5 get nothing
    assert mmrec_side._scatter_add(src, index, dim=0, dim_size=6).tolist() == [7.0, 0.0, 4.0, 0.0, 4.0, 0.0]
    assert mmrec_side._scatter_add(src, index).tolist() == [7.0, 0.0, 4.0, 0.0, 4.0]  # size from the largest index
    rows = torch.arange(6.0).view(3, 2)  # a 1-d index broadcast along dim 0 of a matrix
    assert mmrec_side._scatter_add(rows, torch.tensor([1, 0, 1]), dim=0).tolist() == [[2.0, 3.0], [4.0, 6.0]]
    assert mmrec_side._torch_scatter_shim().scatter_add is mmrec_side._scatter_add


def test_mmrec_keys_it_searches_and_we_do_not_map_get_its_first_grid_value():
    # MMRec's DRAGON.yaml: aggr_mode ['add'] and two mapped keys in its grid; embedding_size is no grid key
    dragon_yaml = {"aggr_mode": ["add"], "learning_rate": [0.1, 0.01], "reg_weight": [0.1, 0.01],
                   "mlp": [64, 32], "hyper_parameters": ["aggr_mode", "reg_weight", "learning_rate"]}
    assert mmrec_side.mmrec_grid_firsts(dragon_yaml) == {"aggr_mode": "add", "learning_rate": 0.1, "reg_weight": 0.1}
    ours = {"learning_rate": 1e-4, "train_batch_size": 2048, "epochs": 100, "stopping_step": 10,
            "embedding_size": 64, "n_mm_layers": 1, "knn_k": 10, "reg_weight": 1e-3,
            "modality_weights": [0.1, 0.9]}
    cfg = mmrec_side.mmrec_config("DRAGON", ours, 7, "/data", dragon_yaml)
    assert cfg["aggr_mode"] == "add"  # a string, as MMRec's grid gives it, not the list
    assert (cfg["learning_rate"], cfg["reg_weight"]) == (1e-4, 1e-3)  # our mapped values win
    assert "mlp" not in cfg and cfg["hyper_parameters"] == ["seed"]


def test_mmrec_graph_caches_are_cleared_before_a_reference_run(tmp_path):
    for name in ("mm_adj_10.pt", "image_adj_10_True.pt", "image_feat.npy", "tiktok-diffmm.inter"):
        (tmp_path / name).write_text("x")
    assert mmrec_side.clear_mmrec_graph_caches(str(tmp_path)) == ["image_adj_10_True.pt", "mm_adj_10.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image_feat.npy", "tiktok-diffmm.inter"]


def test_a_tagged_run_reuses_the_reference_run_only_when_mmrec_is_given_the_same(tmp_path, monkeypatch):
    ours = {"learning_rate": 1e-3, "train_batch_size": 2048, "epochs": 100, "stopping_step": 10,
            "embedding_size": 64, "n_layers": 2, "reg_weight": 1e-4, "standardize_modalities": False}
    monkeypatch.setattr(shared, "RESULTS", str(tmp_path))
    monkeypatch.setattr(ours_side, "resolve_ours", lambda model, data_path, extra: {**ours, **(extra or {})})
    monkeypatch.setattr(mmrec_side, "read_mmrec_model_yaml", lambda checkout, model: {})
    config = mmrec_side.mmrec_config("LightGCN", ours, 2020, str(tmp_path / "data"))
    base = {"status": "ok", "side": "reference", "model": "LightGCN", "seed": 2020, "config": config,
            "test": {"recall@20": 0.09}, "finished_at": "then"}
    (tmp_path / "LightGCN__reference__seed2020.json").write_text(json.dumps(base))
    raw = types.SimpleNamespace(tag="raw", extra={"standardize_modalities": False}, data_path="d", scratch=str(tmp_path))
    reused = rc.reusable_run("LightGCN", 2020, "reference", raw)  # a key MMRec has no counterpart of: the same run
    assert reused["reused_from"] == "LightGCN__reference__seed2020.json" and reused["finished_at"] == "then"
    assert reused["test"] == base["test"]
    deeper = types.SimpleNamespace(tag="l3", extra={"n_layers": 3}, data_path="d", scratch=str(tmp_path))
    assert rc.reusable_run("LightGCN", 2020, "reference", deeper) is None  # MMRec would get n_layers 3: run it
    assert rc.reusable_run("LightGCN", 2021, "reference", raw) is None  # no run of that seed
    # a tagged row's unpatched run of the same MMRec config serves too; a patched one never
    seed2021 = {**base, "seed": 2021, "config": mmrec_side.mmrec_config("LightGCN", ours, 2021, str(tmp_path / "data"))}
    (tmp_path / "LightGCN@other__reference__seed2021.json").write_text(json.dumps({**seed2021, "reference_patch": "x"}))
    assert rc.reusable_run("LightGCN", 2021, "reference", raw) is None
    (tmp_path / "LightGCN@p50__reference__seed2021.json").write_text(json.dumps(seed2021))
    assert rc.reusable_run("LightGCN", 2021, "reference", raw)["reused_from"] == "LightGCN@p50__reference__seed2021.json"
    assert rc.reusable_run("LightGCN", 2020, "reference", types.SimpleNamespace(tag=None, extra=None)) is None
    patched = types.SimpleNamespace(tag="p", extra={}, data_path="d", scratch=str(tmp_path), reference_patch="x")
    assert rc.reusable_run("LightGCN", 2020, "reference", patched) is None  # a patched reference always runs
    # ours: reused when its overrides are the untagged run's (a reference-only change such as a patch)
    monkeypatch.setattr(ours_side, "ours_config", lambda model, data_path, extra: {"data_path": data_path, **(extra or {})})
    (tmp_path / "LightGCN__ours__seed2020.json").write_text(json.dumps(
        {"status": "ok", "config": {"data_path": "d"}, "test": {"recall@20": 0.1}}))
    assert rc.reusable_run("LightGCN", 2020, "ours", patched)["test"] == {"recall@20": 0.1}
    assert rc.reusable_run("LightGCN", 2020, "ours", deeper) is None


def test_ours_reuses_another_rows_run_only_on_the_same_config_and_code(tmp_path, monkeypatch):
    """A row that changes only the reference (a patch) needs no second run of ours: ours reuses any tagged
    row's run of the model with the same overrides and the same code digest, never one of other code."""
    monkeypatch.setattr(shared, "RESULTS", str(tmp_path))
    monkeypatch.setattr(ours_side, "ours_config", lambda model, data_path, extra: {"data_path": data_path, **(extra or {})})
    monkeypatch.setattr(ours_side, "ours_code_digest", lambda ours_model: "new")
    setting = {"n_routing": 0, "stopping_step": 50}
    config = {"data_path": "d", **setting}

    def write(name, **fields):
        record = {"status": "ok", "config": config, "test": {"recall@20": 0.07}, **fields}
        (tmp_path / name).write_text(json.dumps(record))

    args = types.SimpleNamespace(tag="p50-allneg", extra=setting, data_path="d", scratch=str(tmp_path),
                                 reference_patch="all-item-negatives")
    write("GRCN@p50__ours__seed2020.json", code_digest="old")  # the same config, other code
    write("GRCN@raw__ours__seed2020.json", code_digest="new", config={"data_path": "d"})  # other config
    write("GRCN@nodigest__ours__seed2020.json")  # from before the digest was recorded
    write("GRCN@failed__ours__seed2020.json", code_digest="new", status="failed")
    write("GRCNX@p50__ours__seed2020.json", code_digest="new")  # another model's row
    assert rc.reusable_run("GRCN", 2020, "ours", args) is None
    write("GRCN@p50__ours__seed2020.json", code_digest="new", reused_from="GRCN@first__ours__seed2020.json")
    reused = rc.reusable_run("GRCN", 2020, "ours", args)
    assert reused["reused_from"] == "GRCN@first__ours__seed2020.json"  # the run itself, not the row that reused it
    assert reused["test"] == {"recall@20": 0.07}
    assert rc.reusable_run("GRCN", 2021, "ours", args) is None  # another seed
    assert rc.reusable_run("GRCN", 2020, "reference", args) is None  # a patched reference always runs
    write("GRCN@p50-allneg__ours__seed2020.json", code_digest="new")  # the row's own file is never its source
    (tmp_path / "GRCN@p50__ours__seed2020.json").unlink()
    assert rc.reusable_run("GRCN", 2020, "ours", args) is None


def test_the_trained_item_negatives_patch_draws_only_items_with_a_training_row(monkeypatch):
    """`--ours-patch trained-item-negatives`: RecBole's sampler, patched in the driver's process, draws training
    negatives from the train phase's items only (MMRec's loader), every one of them, and still never a user's own."""
    import torch
    from recbole.sampler import Sampler

    monkeypatch.setattr(Sampler, "_uni_sampling", Sampler._uni_sampling)  # restored after the test

    def phase(users, items):
        return types.SimpleNamespace(uid_field="u", iid_field="i", user_num=4, item_num=10,
                                     inter_feat={"u": torch.tensor(users), "i": torch.tensor(items)})

    train = phase([1, 1, 2, 3, 3], [2, 5, 5, 7, 9])  # items 1, 3, 4, 6, 8 have no training row
    sampler = Sampler(["train", "valid", "test"], [train, phase([1], [3]), phase([2], [4])])
    np.random.seed(0)
    assert set(sampler._uni_sampling(2000)) == set(range(1, 10))  # RecBole: every item
    ours_side.apply_ours_patch("trained-item-negatives")
    assert set(sampler._uni_sampling(2000)) == {2, 5, 7, 9}
    negatives = sampler.set_phase("train").sample_by_user_ids(torch.tensor([1] * 500), torch.tensor([2] * 500), 1).numpy()
    assert set(negatives) == {7, 9}  # user 1 trained on 2 and 5
    with pytest.raises(ValueError, match="unknown ours patch"):
        ours_side.apply_ours_patch("no-such-patch")


def test_a_patched_ours_row_neither_reuses_nor_lends_unpatched_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(shared, "RESULTS", str(tmp_path))
    monkeypatch.setattr(ours_side, "ours_config", lambda model, data_path, extra: {"data_path": data_path, **(extra or {})})
    monkeypatch.setattr(ours_side, "ours_code_digest", lambda ours_model: "new")
    config = {"data_path": "d", "epochs": 300}
    record = {"status": "ok", "config": config, "code_digest": "new", "test": {"recall@20": 0.07}}
    (tmp_path / "LGMRec@cap300__ours__seed2020.json").write_text(json.dumps(record))
    patched = types.SimpleNamespace(tag="cap300-trainedneg", extra={"epochs": 300}, data_path="d",
                                    scratch=str(tmp_path), ours_patch="trained-item-negatives")
    assert rc.reusable_run("LGMRec", 2020, "ours", patched) is None
    (tmp_path / "LGMRec@cap300-trainedneg__ours__seed2020.json").write_text(
        json.dumps({**record, "ours_patch": "trained-item-negatives", "test": {"recall@20": 0.05}}))
    plain = types.SimpleNamespace(tag="cap300-again", extra={"epochs": 300}, data_path="d", scratch=str(tmp_path))
    assert rc.reusable_run("LGMRec", 2020, "ours", plain)["test"] == {"recall@20": 0.07}
    (tmp_path / "LGMRec@cap300__ours__seed2020.json").unlink()
    assert rc.reusable_run("LGMRec", 2020, "ours", plain) is None  # never the patched run
    patched.tag = "cap300-trainedneg-again"
    assert rc.reusable_run("LGMRec", 2020, "ours", patched)["test"] == {"recall@20": 0.05}
    folders = {ours_side.ours_snapshot_folder(str(tmp_path / "w"), "L", 2020, "LGMRec", config, p)
               for p in (None, "trained-item-negatives")}
    assert len(folders) == 2  # a patched run never resumes an unpatched snapshot


def test_reuse_on_a_fresh_scratch_extracts_mmrec_first(tmp_path, monkeypatch):
    """The reference's config holds MMRec's model-YAML grid values (DRAGON's ``aggr_mode``): on a scratch
    folder with no MMRec checkout yet, reuse extracts it from the mirror before comparing, instead of
    comparing against a config without them and running the same reference again (as it once did: three
    DRAGON reference runs, about 18 minutes each)."""
    ours = {"learning_rate": 1e-3, "train_batch_size": 2048, "epochs": 100, "stopping_step": 10,
            "embedding_size": 64, "n_layers": 2, "reg_weight": 1e-4}
    results, scratch = tmp_path / "results", tmp_path / "scratch"
    results.mkdir()
    monkeypatch.setattr(shared, "RESULTS", str(results))
    monkeypatch.setattr(ours_side, "resolve_ours", lambda model, data_path, extra: {**ours, **(extra or {})})
    extracted = []

    def fake_checkout(mirror, dest):
        yaml_dir = Path(dest) / "src" / "configs" / "model"
        yaml_dir.mkdir(parents=True, exist_ok=True)
        (yaml_dir / "LightGCN.yaml").write_text("aggr_mode: ['add']\nhyper_parameters: [aggr_mode]\n")
        extracted.append((mirror, dest))
        return "abc"

    monkeypatch.setattr(mmrec_side, "mmrec_checkout", fake_checkout)
    config = mmrec_side.mmrec_config("LightGCN", ours, 2020, str(scratch / "data"),
                             {"aggr_mode": ["add"], "hyper_parameters": ["aggr_mode"]})
    assert config["aggr_mode"] == "add"
    (results / "LightGCN__reference__seed2020.json").write_text(json.dumps({"status": "ok", "config": config}))
    no_mirror = types.SimpleNamespace(tag="t", extra={"tie": None}, data_path="d", scratch=str(scratch))
    assert rc.reusable_run("LightGCN", 2020, "reference", no_mirror) is None  # no checkout: the YAML's keys missing
    args = types.SimpleNamespace(tag="t", extra={"tie": None}, data_path="d", scratch=str(scratch), mirror="/m")
    assert rc.reusable_run("LightGCN", 2020, "reference", args)["reused_from"] == "LightGCN__reference__seed2020.json"
    assert extracted == [("/m", str(scratch / "mmrec"))]


def test_reference_patch_applies_once_in_its_own_copy_and_refuses_a_changed_file(tmp_path):
    rel, pairs, _ = mmrec_side.REFERENCE_PATCHES["mmgcn-trained"]
    path = tmp_path / "src" / rel
    path.parent.mkdir(parents=True)
    original = "class MMGCN:\n" + "".join(f"    {old}\n" for old, _ in pairs)
    path.write_text(original)
    mmrec_side.apply_reference_patch(str(tmp_path), "mmgcn-trained")
    mmrec_side.apply_reference_patch(str(tmp_path), "mmgcn-trained")  # idempotent
    text = path.read_text()
    assert text.count("nn.Parameter(") == 3 and "requires_grad=True" not in text
    path.write_text("class MMGCN:\n    pass\n")
    with pytest.raises(RuntimeError, match="mmgcn.py: reference patch mmgcn-trained expects its anchor once, found 0"):
        mmrec_side.apply_reference_patch(str(tmp_path), "mmgcn-trained")
    assert path.read_text() == "class MMGCN:\n    pass\n"


@pytest.mark.skipif(not Path(mmrec_side.DEFAULT_MIRROR).is_dir(), reason="no git snapshot of enoche/MMRec here")
@pytest.mark.parametrize("name", sorted(mmrec_side.REFERENCE_PATCHES))
def test_each_reference_patch_applies_to_mmrecs_code(tmp_path, name):
    mmrec_side.mmrec_checkout(mmrec_side.DEFAULT_MIRROR, str(tmp_path))
    rel, pairs, _ = mmrec_side.REFERENCE_PATCHES[name]
    path = tmp_path / "src" / rel
    before = path.read_text()
    mmrec_side.apply_reference_patch(str(tmp_path), name)
    after = path.read_text()
    for old, new in pairs:
        assert before.count(old) == 1 and new not in before and new in after
    assert len(after) - len(before) == sum(len(new) - len(old) for old, new in pairs)  # nothing else changed
    compile(after, str(path), "exec")


def _mmrec_utils_function(tmp_path, patch: str, name: str):
    """``src/utils/utils.py``'s function ``name`` from a plain MMRec checkout and from one with ``patch``."""
    def load(folder):
        spec = importlib.util.spec_from_file_location(f"mmrec_utils_{folder.name}", folder / "src" / "utils" / "utils.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return getattr(module, name)

    plain, patched = tmp_path / "plain", tmp_path / "patched"
    for folder in (plain, patched):
        mmrec_side.mmrec_checkout(mmrec_side.DEFAULT_MIRROR, str(folder))
    mmrec_side.apply_reference_patch(str(patched), patch)
    return load(plain), load(patched)


@pytest.mark.skipif(not Path(mmrec_side.DEFAULT_MIRROR).is_dir(), reason="no git snapshot of enoche/MMRec here")
def test_the_ties_patch_makes_mmrecs_early_stopping_count_a_tie_as_recbole_does(tmp_path):
    from recbole.utils import early_stopping as recbole_rule

    plain, patched = _mmrec_utils_function(tmp_path, "ties-reset-patience", "early_stopping")
    # a tie with the best (.0515 again, 27 evaluations after it): MMRec counts it as no progress, RecBole resets
    assert plain(0.0515, 0.0515, 27, 50)[:2] == (0.0515, 28)
    assert patched(0.0515, 0.0515, 27, 50)[:2] == (0.0515, 0) == recbole_rule(0.0515, 0.0515, 27, 50)[:2]
    assert patched(0.05, 0.0515, 27, 50)[:2] == (0.0515, 28)  # a worse score still counts


@pytest.mark.skipif(not Path(mmrec_side.DEFAULT_MIRROR).is_dir() or importlib.util.find_spec("torch_geometric") is None,
                    reason="needs the git snapshot of enoche/MMRec and torch_geometric (MMRec's GRCN is built on it)")
def test_mmrecs_grcn_routing_leaves_the_user_preferences_unchanged(tmp_path, monkeypatch):
    """The claim behind the GRCN row's explanation: MMRec's routing messages reach items only (edges
    (user, item + n_users), PyG's source-to-target flow), so three rounds compute what none do; its
    reference patch grcn-routing makes the users receive them."""
    import sys

    import torch

    mmrec_side.mmrec_checkout(mmrec_side.DEFAULT_MIRROR, str(tmp_path))
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    for name in [m for m in sys.modules if m == "models" or m.startswith(("models.", "common."))]:
        monkeypatch.delitem(sys.modules, name)
    grcn = importlib.import_module("models.grcn")
    n_users, n_items = 4, 6
    features = torch.randn(n_items, 5, generator=torch.Generator().manual_seed(0))
    edges = torch.tensor([[0, 0, 1, 2, 3, 3], [4, 5, 6, 7, 8, 9]])  # (user, item + n_users), as MMRec packs them

    def run(routing):
        torch.manual_seed(1)
        cgcn = grcn.CGCN(features, n_users, n_items, 3, "add", routing, False, True)
        rep, alpha = cgcn(edges)
        return cgcn, rep.detach(), alpha.detach()

    cgcn, rep3, alpha3 = run(3)
    _, rep0, alpha0 = run(0)
    torch.testing.assert_close(rep3, rep0)
    torch.testing.assert_close(alpha3, alpha0)
    x = torch.cat((torch.nn.functional.normalize(cgcn.preference), torch.rand(n_items, 3)))
    assert cgcn.conv_embed_1(x, edges)[:n_users].abs().max() == 0  # the users' rows of a routing message
    assert cgcn.conv_embed_1(x, edges[[1, 0]])[:n_users].abs().min() > 0  # the patch's direction reaches them


@pytest.mark.skipif(not Path(mmrec_side.DEFAULT_MIRROR).is_dir(), reason="no git snapshot of enoche/MMRec here")
def test_the_lattice_laplacian_patch_gives_mmrecs_entries_and_gradients(tmp_path):
    """Reference patch lattice-laplacian is a speed patch: MMRec's own compute_normalized_laplacian before and
    after it, on a kNN graph as LATTICE builds it (one row with no neighbour, whose inf degree MMRec zeroes),
    gives the same entries to the bit and the same gradients up to summation order (gradients on a graph whose
    rows all have neighbours: at a zero degree MMRec's own gradient is NaN)."""
    import torch

    before, after = _mmrec_utils_function(tmp_path, "lattice-laplacian", "compute_normalized_laplacian")
    patched = tmp_path / "patched"
    assert "diagflat" not in (patched / "src" / "utils" / "utils.py").read_text().split("def get_sparse_laplacian")[0]

    g = torch.Generator().manual_seed(0)
    sim = torch.rand(40, 40, generator=g)
    vals, idx = torch.topk(sim, 5, dim=-1)
    adj = torch.zeros_like(sim).scatter_(-1, idx, vals)
    lonely = adj.clone()
    lonely[7] = 0.0  # an item without neighbours: degree 0
    with torch.no_grad():
        out0, out1 = before(lonely), after(lonely)
    assert torch.equal(out0, out1) and torch.isfinite(out0).all() and out0[7].abs().sum() == 0
    assert out0.abs().sum() > 0
    weight = torch.rand(40, 40, generator=g)
    grads = []
    for fn in (before, after):
        a = adj.clone().requires_grad_(True)
        (fn(a) * weight).sum().backward()
        grads.append(a.grad)
    assert torch.isfinite(grads[0]).all() and grads[0].abs().sum() > 0
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-7)


def test_a_tagged_run_has_its_own_files_and_row(tmp_path, monkeypatch):
    # --tag: another setting of the same pair lands in MODEL@TAG files and its own table row, after the plain one
    args = types.SimpleNamespace(tag="patience50")
    assert shared.row_label("BM3", args) == "BM3@patience50" and shared.row_label("BM3", types.SimpleNamespace(tag=None)) == "BM3"
    monkeypatch.setattr(shared, "RESULTS", str(tmp_path))
    assert shared.result_path(shared.row_label("BM3", args), "ours", 2020) == str(tmp_path / "BM3@patience50__ours__seed2020.json")
    for model, side, recall in [("BM3", "ours", 0.08), ("BM3", "reference", 0.064),
                                ("BM3@patience50", "ours", 0.081), ("BM3@patience50", "reference", 0.078)]:
        record = {**_run(recall, 0.03, 10, [1.0]), "status": "ok", "model": model, "side": side, "seed": 2020}
        (tmp_path / f"{model}__{side}__seed2020.json").write_text(json.dumps(record))
    rows = page.table_rows(page.load_results())
    assert [r["model"] for r in rows] == ["BM3", "BM3@patience50"]
    assert rows[1]["rel_diff_recall@20"] == pytest.approx(0.003 / 0.078)


def test_sides_runs_only_the_sides_asked_for(tmp_path, monkeypatch):
    # `run --sides ours`: the reference side is neither run nor written; without --sides both run, reference first
    monkeypatch.setattr(shared, "RESULTS", str(tmp_path))
    monkeypatch.setattr(mmrec_side, "write_mmrec_layout", lambda *a, **k: {"folder": "f", "n_users": 1, "n_items": 1,
                                                                   "rows_per_label": {}})
    monkeypatch.setattr(page, "write_table", lambda: None)
    monkeypatch.setattr(rc, "reusable_run", lambda *a: None)
    monkeypatch.setattr(ours_side, "resolve_ours", lambda model, data_path, extra: {})
    ran = []
    monkeypatch.setattr(ours_side, "run_ours", lambda model, seed, args: ran.append(("ours", seed)) or
                        {"status": "ok", **_run(0.08, 0.03, 5, [1.0])})
    monkeypatch.setattr(mmrec_side, "run_reference", lambda model, seed, ours, args: ran.append(("reference", seed)) or
                        {"status": "ok", **_run(0.07, 0.03, 5, [2.0])})
    args = rc.argparse.Namespace(data_path=str(tmp_path), scratch=str(tmp_path), budget_minutes=None, tag=None,
                                 reference_patch=None, extra={}, models=["LightGCN"], seeds=[2020, 2021],
                                 sides=["ours"])
    rc.cmd_run(args)
    assert ran == [("ours", 2020), ("ours", 2021)]
    assert sorted(os.listdir(tmp_path)) == ["LightGCN__ours__seed2020.json", "LightGCN__ours__seed2021.json"]
    args.sides, ran[:] = ["reference", "ours"], []
    rc.cmd_run(args)  # ours' records exist: only the reference runs now
    assert ran == [("reference", 2020), ("reference", 2021)]


# --- DiffMM: the authors' code (HKUDS/DiffMM), patched at run time -----------------------------------------------

def _fake_tree(root: Path, patches, crlf=("Params.py",)):
    """Files holding exactly each patch's text its expected number of times, between filler lines; returns the
    text each file must hold once every patch is applied."""
    pieces: dict[str, list] = {}
    for n, (name, old, new, count, _) in enumerate(patches):
        for k in range(count):
            pieces.setdefault(name, []).append((f"# filler {n}.{k}\n", old, new))
    expected = {}
    for name, parts in pieces.items():
        before = "".join(f + o for f, o, _ in parts) + "# end\n"
        after = "".join(f + w for f, _, w in parts) + "# end\n"
        if name in crlf:
            before, after = before.replace("\n", "\r\n"), after.replace("\n", "\r\n")
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(before.encode())
        expected[name] = after
    return expected


def test_diffmm_patcher_applies_every_replacement_in_order_keeping_line_endings(tmp_path):
    expected = _fake_tree(tmp_path, diffmm_side.DIFFMM_PATCHES)
    assert sorted(expected) == ["DataHandler.py", "Main.py", "Model.py", "Params.py", "Utils/Utils.py"]
    described = diffmm_side.diffmm_patch(str(tmp_path))
    for name, text in expected.items():
        assert (tmp_path / name).read_bytes().decode() == text, name
    assert b"\r\n\tparser.add_argument('--data_dir'" in (tmp_path / "Params.py").read_bytes()  # CRLF kept
    assert described == [p[4] for p in diffmm_side.DIFFMM_PATCHES if p[4]] and len(described) == len(diffmm_side.DIFFMM_PATCHES) - 3
    assert not list(tmp_path.rglob("*.tmp"))


def test_diffmm_patcher_refuses_a_missing_anchor_and_writes_nothing(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    (tmp_path / "b.py").write_text("y\nw\n")
    patches = (("a.py", "x = 1\n", "x = 2\n", 1, "a"), ("b.py", "y\n", "z\n", 2, "b"))
    with pytest.raises(ValueError, match=r"b\.py: the DiffMM patch expects 'y\\n' 2 time\(s\), found 1"):
        diffmm_side.diffmm_patch(str(tmp_path), patches)
    assert (tmp_path / "a.py").read_text() == "x = 1\n" and (tmp_path / "b.py").read_text() == "y\nw\n"
    with pytest.raises(ValueError, match=r"c\.py: missing"):
        diffmm_side.diffmm_patch(str(tmp_path), (("c.py", "q", "r", 1, None),))
    # a later patch sees the earlier ones' result: its text must occur after them
    with pytest.raises(ValueError, match=r"a\.py: the DiffMM patch expects 'x = 1\\n' 1 time\(s\), found 0"):
        diffmm_side.diffmm_patch(str(tmp_path), (("a.py", "x = 1\n", "x = 2\n", 1, None), ("a.py", "x = 1\n", "", 1, None)))


@pytest.mark.skipif(not Path(diffmm_side.DEFAULT_DIFFMM_MIRROR).is_dir(), reason="no git snapshot of HKUDS/DiffMM here")
def test_diffmm_patches_match_the_authors_code(tmp_path):
    import py_compile

    dest = tmp_path / "diffmm"
    src, commit = diffmm_side.diffmm_checkout(diffmm_side.DEFAULT_DIFFMM_MIRROR, str(dest))
    assert len(commit) == 40 and (dest / "REFCHECK_COMMIT").read_text().startswith(commit + " patches ")
    assert sorted(p.name for p in dest.iterdir() if p.suffix == ".py") == [
        "DataHandler.py", "Main.py", "Model.py", "Params.py"] and not (dest / "Datasets").exists()
    for name in ("Main.py", "Model.py", "DataHandler.py", "Params.py", "Utils/Utils.py"):
        py_compile.compile(str(dest / name), cfile=str(tmp_path / "c.pyc"), doraise=True)
        assert ".cuda()" not in (dest / name).read_text()
    main = (dest / "Main.py").read_text()
    assert "reses = self.testEpoch(self.handler.valLoader)" in main and "print('Best epoch : '" in main
    assert diffmm_side.diffmm_checkout(diffmm_side.DEFAULT_DIFFMM_MIRROR, str(dest)) == (src, commit)  # reused, not patched twice


# Their output (Utils/TimeLogger.log lines, the \r progress lines, makePrint's format, their best-test line) with the
# patch's lines: epochs 1 and 3 tie on validation Recall (the later one is selected, as RecBole's early stopping).
DIFFMM_LOG = (
    "2024-12-02 06:00:00.000001: Start\nUSER 9308 ITEM 6710\nNUM OF INTERACTIONS 59541\n"
    "2024-12-02 06:00:01.000001: Diffusion Step 0/9\r2024-12-02 06:00:01.500001: Diffusion Step 9/9\r"
    "2024-12-02 06:00:02.000001: \n2024-12-02 06:00:02.000002: UI matrix built!\n"
    "2024-12-02 06:00:03.000001: Step 58/58: bpr : 0.693 ; reg : 0.001 ; cl : 0.120 \r"
    "refcheck epoch 0 train_time 20.5000s\n"
    "2024-12-02 06:00:04.000001: Epoch 0/50, Train: Loss = 0.7000, BPR Loss = 0.6900, CL loss = 0.1200  \n"
    "2024-12-02 06:00:05.000001: Steps 24/23: recall = 3.00, ndcg = 1.20 , precision = 0.15   \r"
    "2024-12-02 06:00:05.000002: Epoch 0/50, Test: Recall = 0.0500, NDCG = 0.0200, Precision = 0.0025  \n"
    "2024-12-02 06:00:06.000001: Epoch 0/50, Valid: Recall = 0.0400, NDCG = 0.0150, Precision = 0.0020  \n"
    "refcheck epoch 0 valid recall@20 0.04 ndcg@20 0.015 test recall@20 0.05 ndcg@20 0.02\n\n"
    "refcheck epoch 1 train_time 19.2500s\n"
    "refcheck epoch 1 valid recall@20 0.0612345678 ndcg@20 0.0251 test recall@20 0.0701 ndcg@20 0.0302\n\n"
    "refcheck epoch 2 train_time 21.0000s\n"
    "refcheck epoch 2 valid recall@20 0.06 ndcg@20 0.0249 test recall@20 0.0805 ndcg@20 0.0355\n\n"
    "refcheck epoch 3 train_time 19.7500s\n"
    "refcheck epoch 3 valid recall@20 0.0612345678 ndcg@20 0.0250 test recall@20 0.0699 ndcg@20 0.0301\n\n"
    "refcheck epoch 4 train_time 20.0000s\n"
    "refcheck epoch 4 valid recall@20 0.0590 ndcg@20 0.0240 test recall@20 0.0790 ndcg@20 0.0350\n"
    "Best epoch :  2  , Recall :  0.0805  , NDCG :  0.0355  , Precision 0.004025\n"
    "refcheck selected epoch 3 stopped_early 1 valid recall@20 0.0612345678 ndcg@20 0.0250 test recall@20 0.0699 "
    "ndcg@20 0.0301\n")


def test_diffmm_log_parser_takes_the_validation_selected_epoch():
    out = diffmm_side.parse_diffmm_log(DIFFMM_LOG)
    assert out["epochs_run"] == 5 and out["best_epoch"] == 3 and out["stopped_early"] is True
    assert out["test"] == {"recall@20": 0.0699, "ndcg@20": 0.0301}
    assert out["best_valid"] == {"recall@20": 0.0612345678, "ndcg@20": 0.0250}
    assert out["valid_curve"] == [[0, 0.04], [1, 0.0612345678], [2, 0.06], [3, 0.0612345678], [4, 0.059]]
    assert out["epoch_train_times_s"] == [20.5, 19.25, 21.0, 19.75, 20.0] and out["median_epoch_s"] == 20.0
    # their own line: the best *test* epoch (the literature's number), a diagnostic beside the selection
    assert out["reference_best_test"] == {"epoch": 2, "recall@20": 0.0805, "ndcg@20": 0.0355, "precision@20": 0.004025}
    # a run that died before its last line has no test result (the record becomes "failed")
    cut = diffmm_side.parse_diffmm_log(DIFFMM_LOG.split("Best epoch")[0])
    assert "test" not in cut and cut["best_epoch"] is None and cut["epochs_run"] == 5


def test_diffmm_log_parser_refuses_a_selection_its_curve_contradicts():
    with pytest.raises(ValueError, match=r"selected epoch 1, but the last epoch with the highest validation recall@20 "
                                         r"\(0.0612345678\) is 3"):
        diffmm_side.parse_diffmm_log(DIFFMM_LOG.replace("refcheck selected epoch 3", "refcheck selected epoch 1"))
    with pytest.raises(ValueError, match="selected epoch 3's figures differ"):
        # the first such line is epoch 3's: the selected line now disagrees with it
        diffmm_side.parse_diffmm_log(DIFFMM_LOG.replace("test recall@20 0.0699 ndcg@20 0.0301\n", "test recall@20 0.07 "
                                               "ndcg@20 0.0301\n", 1))


# Params.py's defaults (HKUDS/DiffMM fae20e6) with the README's TikTok command on top:
# python Main.py --data tiktok --reg 1e-4 --ssl_reg 1e-2 --epoch 50 --trans 1 --e_loss 0.1 --cl_method 1
DIFFMM_TIKTOK_ARGS = {"lr": 1e-3, "batch": 1024, "epoch": 50, "latdim": 64, "gnn_layer": 1, "trans": 1, "reg": 1e-4,
                      "ssl_reg": 1e-2, "temp": 0.5, "cl_method": 1, "keepRate": 0.5, "ris_lambda": 0.5,
                      "ris_adj_lambda": 0.2, "dims": "[1000]", "d_emb_size": 10, "norm": False, "steps": 5,
                      "noise_scale": 0.1, "noise_min": 1e-4, "noise_max": 0.02, "sampling_noise": False,
                      "sampling_steps": 0, "rebuild_k": 1, "e_loss": 0.1}


def _our_diffmm_config():
    import yaml

    cfg = yaml.safe_load((REPO / "properties" / "model" / "DiffMM.yaml").read_text())
    return {**cfg, "stopping_step": 10, "modality_fields": ["visual", "acoustic"]}


def test_diffmm_settings_map_gives_the_readme_tiktok_command():
    args = diffmm_side.diffmm_reference_args(_our_diffmm_config(), 2021, "/scratch/d")
    assert args == {**DIFFMM_TIKTOK_ARGS, "stopping_step": 10, "data": "tiktok-diffmm", "data_dir": "/scratch/d",
                    "seed": 2021, "topk": 20, "tstEpoch": 1}
    assert list(args)[:4] == ["lr", "batch", "epoch", "stopping_step"]
    argv = diffmm_side.diffmm_argv(args)
    assert argv[argv.index("--dims") + 1] == "[1000]" and argv[argv.index("--reg") + 1] == "0.0001"
    # their booleans are argparse type=bool: only the empty string parses as False
    assert argv[argv.index("--norm") + 1] == "" and bool(argv[argv.index("--norm") + 1]) is False
    assert diffmm_side.diffmm_argv({"norm": True, "sampling_noise": False}) == ["--norm", "1", "--sampling_noise", ""]
    other = diffmm_side.diffmm_reference_args({**_our_diffmm_config(), "feat_transform": "leaky_relu", "cl_method": "pairwise",
                                      "denoise_dims": [200, 600]}, 1, "/d")
    assert other["trans"] == 0 and other["cl_method"] == 0 and other["dims"] == "[200, 600]"


def test_diffmm_settings_without_a_reference_argument_must_match_it():
    with pytest.raises(ValueError, match=r"diffusion_batch_size 2048 != train_batch_size 1024 .*denoise_dropout 0.3 "
                                         r"!= their fixed 0.5"):
        diffmm_side.diffmm_reference_args({**_our_diffmm_config(), "diffusion_batch_size": 2048, "denoise_dropout": 0.3},
                                 1, "/d")
    with pytest.raises(ValueError, match=r"diffusion_learning_rate 0.01 != learning_rate 0.001"):
        diffmm_side.diffmm_reference_args({**_our_diffmm_config(), "diffusion_learning_rate": 0.01}, 1, "/d")
    with pytest.raises(ValueError, match=r"modality_fields \['visual', 'acoustic', 'textual'\]"):
        diffmm_side.diffmm_reference_args({**_our_diffmm_config(), "modality_fields": ["visual", "acoustic", "textual"]},
                                 1, "/d")
    with pytest.raises(ValueError, match="feat_transform 'gelu' has no --trans"):
        diffmm_side.diffmm_reference_args({**_our_diffmm_config(), "feat_transform": "gelu"}, 1, "/d")
    cfg = _our_diffmm_config()
    del cfg["e_loss"]
    with pytest.raises(ValueError, match="no 'e_loss' for the reference's --e_loss"):
        diffmm_side.diffmm_reference_args(cfg, 1, "/d")


def _write_split(root: Path, pairs: dict, shape=(4, 5)):
    import pickle

    import scipy.sparse as sp

    (root / "shared").mkdir()
    (root / "ours").mkdir()
    for part, file_name in diffmm_side.DIFFMM_SPLIT_FILES.items():
        rows, cols = zip(*pairs[part])
        with open(root / "shared" / file_name, "wb") as f:
            pickle.dump(sp.coo_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=shape), f)
        (root / "ours" / f"t.{part}.inter").write_text("user_id:token\titem_id:token\n" + "".join(
            f"{u}\t{i}\n" for u, i in pairs[part]))


def test_diffmm_same_split_pairs_and_a_difference(tmp_path):
    pairs = {"train": [(0, 1), (0, 2), (1, 0), (3, 4)], "valid": [(2, 3)], "test": [(1, 4), (3, 0)]}
    _write_split(tmp_path, pairs)
    out = diffmm_side.diffmm_same_split(str(tmp_path / "shared"), str(tmp_path / "ours"), "t")
    assert out == {"pairs": {"train": 4, "valid": 1, "test": 2}, "shape": [4, 5]}
    (tmp_path / "ours" / "t.test.inter").write_text("user_id:token\titem_id:token\n1\t4\n3\t1\n")
    with pytest.raises(ValueError, match=r"tstMat\.pkl and .*t\.test\.inter differ: 1 .* only in the pickle "
                                         r"\(first \[\(3, 0\)\]\), 1 only in ours \(first \[\(3, 1\)\]\)"):
        diffmm_side.diffmm_same_split(str(tmp_path / "shared"), str(tmp_path / "ours"), "t")


def test_reference_line_names_each_repository_and_commit():
    ref = lambda repo, commit: {"reference": repo, "reference_commit": commit}  # noqa: E731
    results = {"LightGCN": {"reference": {1: ref("github enoche/MMRec", "aaa"), 2: ref("github enoche/MMRec", "aaa")}},
               "DiffMM": {"reference": {1: ref("github HKUDS/DiffMM", "ccc")}, "ours": {1: {}}},
               "VBPR": {"ours": {1: {}}}}
    assert page.reference_line(results) == "github enoche/MMRec at `aaa`; github HKUDS/DiffMM at `ccc`"
    assert page.reference_line({}) == "—"


def test_the_script_run_by_path_parses_its_command_line(tmp_path):
    """``python benchmarks/reference_check.py`` is the command line of the parts in ``benchmarks/refcheck/``: run by
    path from elsewhere, it reaches ``main`` (every subcommand, the drivers its runs start among them)."""
    import subprocess
    import sys

    script = str(REPO / "benchmarks" / "reference_check.py")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, script, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    for cmd in ("run", "table", "test-curves", "diffmm-reference", "mmrec-driver", "ours-driver"):
        assert cmd in out.stdout
    bad = subprocess.run([sys.executable, script, "run", "--reference-patch", "no-such"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'no-such'" in bad.stderr
