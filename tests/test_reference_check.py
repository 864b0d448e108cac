"""benchmarks/reference_check.py, its pure parts: MMRec's data layout, MMRec's log, the settings map."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reference_check", REPO / "benchmarks" / "reference_check.py")
rc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rc)


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
    info = rc.write_mmrec_layout(str(src), "tiny", str(tmp_path / "out"))
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
        rc.write_mmrec_layout(str(src), "tiny", str(tmp_path / "out"))
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
    out = rc.parse_mmrec_log(MMREC_LOG)
    assert out["best_epoch"] == 1 and out["epochs_run"] == 3 and out["stopped_early"]
    assert out["test"] == {"recall@10": 0.0460, "recall@20": 0.0662, "ndcg@10": 0.0239, "ndcg@20": 0.0290}
    assert out["best_valid"]["recall@20"] == 0.0651
    assert out["valid_curve"] == [[0, 0.0637], [1, 0.0651], [2, 0.0640]]
    # MMRec's own times where it prints them, the driver's where it does not
    assert out["epoch_train_times_s"] == [5.52, 3.90, 4.25] and out["median_epoch_s"] == 4.25


def test_log_parser_refuses_a_log_that_contradicts_itself():
    bad = MMREC_LOG.replace("best eval result in epoch 1", "best eval result in epoch 0")
    with pytest.raises(ValueError, match="epoch 0.*last update was epoch 1"):
        rc.parse_mmrec_log(bad)


def test_recbole_epoch_times_through_colour_codes():
    text = ("\x1b[1;32mepoch 0 training\x1b[0m [\x1b[1;34mtime\x1b[0m: 1.23s, \x1b[1;34mtrain loss\x1b[0m: 9.1]\n"
            "\x1b[1;32mepoch 0 evaluating\x1b[0m [\x1b[1;34mtime\x1b[0m: 0.40s, valid_score: 0.1]\n"
            "epoch 1 training [time: 2.50s, train loss: 8.0]\n")
    assert rc.parse_recbole_epoch_times(text) == [1.23, 2.50]


def test_settings_map_by_meaning():
    ours = {"learning_rate": 0.002, "train_batch_size": 1024, "epochs": 50, "stopping_step": 20,
            "id_embedding_size": 32, "content_embedding_size": 32, "reg_weight": 1e-4, "content_reg_weight": 1.0}
    cfg = rc.mmrec_config("VBPR", ours, 7, "/data")
    assert cfg["embedding_size"] == 32 and cfg["reg_weight"] == 1.0  # MMRec's reg is on the scored vectors
    assert cfg["learning_rate"] == 0.002 and cfg["stopping_step"] == 20 and cfg["epochs"] == 50
    assert cfg["seed"] == [7] and cfg["hyper_parameters"] == ["seed"] and cfg["data_path"] == "/data/"
    freedom = {**ours, "embedding_size": 64, "knn_k": 10, "n_mm_layers": 1, "n_ui_layers": 2, "edge_prune_ratio": 0.8,
               "modal_loss_weight": 1e-4, "modality_weights": [1.0, 3.0], "modality_fields": ["visual", "acoustic"]}
    cfg = rc.mmrec_config("FREEDOM", freedom, 7, "/data")
    assert cfg["mm_image_weight"] == 0.25 and cfg["dropout"] == 0.8 and cfg["reg_weight"] == 1e-4
    assert rc.mmrec_config("FREEDOM", {**freedom, "modality_weights": None}, 7, "/data")["mm_image_weight"] == 0.5
    del ours["content_reg_weight"]
    with pytest.raises(ValueError, match="no 'content_reg_weight' for MMRec's 'reg_weight'"):
        rc.mmrec_config("VBPR", ours, 7, "/data")


def test_lattice_settings_map_and_our_reference_keys(tmp_path):
    ours = {"learning_rate": 0.0005, "train_batch_size": 2048, "epochs": 100, "stopping_step": 10,
            "embedding_size": 64, "feat_embedding_size": 32, "knn_k": 10, "lambda_coeff": 0.9, "n_layers": 1,
            "n_ui_layers": 3, "reg_weight": 0.0}
    cfg = rc.mmrec_config("LATTICE", ours, 7, "/data")
    assert cfg["feat_embed_dim"] == 32 and cfg["lambda_coeff"] == 0.9 and cfg["learning_rate"] == 0.0005
    assert cfg["weight_size"] == [64, 64, 64]  # MMRec's LightGCN layers = len(weight_size)
    assert cfg["reg_weight"] == 0.0  # ours has no L2 on the scored vectors unless content_reg_weight is set
    assert rc.mmrec_config("LATTICE", {**ours, "content_reg_weight": 1e-4}, 7, "/data")["reg_weight"] == 1e-4
    # our side: the model's reference keys over the YAML, --set over both
    given = rc.ours_config("LATTICE", str(tmp_path), {"item_graph_update": "every_step"})
    assert given["data_path"] == str(tmp_path) and given["ui_graph_norm"] == "mean_self_loops"
    assert given["item_graph_mode"] == "mix_first" and given["finetune_features"] is True
    assert given["require_pow"] is True and given["item_graph_update"] == "every_step"
    assert rc.ours_config("FREEDOM", str(tmp_path), {})["finetune_features"] is True
    assert "finetune_features" not in rc.ours_config("VBPR", str(tmp_path), {})


def test_our_reference_keys_are_the_models_own():
    """Every key ``ours_set`` gives is one the model's YAML defines (or the base class reads: require_pow),
    of the YAML value's type, and LATTICE's choices are values the model accepts (no typo runs the default)."""
    import yaml

    base_keys = {"require_pow"}  # MultimodalRecommender reads it when given
    for model, spec in rc.MODELS.items():
        path = REPO / "properties" / "model" / f"{spec['ours']}.yaml"
        defined = yaml.safe_load(path.read_text()) if path.is_file() else {}
        for key, value in spec.get("ours_set", {}).items():
            assert key in defined or key in base_keys, (model, key)
            assert type(value) is type(defined.get(key, value)), (model, key)
    from recbole_metammf.model import lattice

    set_ = rc.MODELS["LATTICE"]["ours_set"]
    assert set_["ui_graph_norm"] in lattice.UI_GRAPH_NORMS and set_["item_graph_mode"] in lattice.ITEM_GRAPH_MODES
    assert set_["item_graph_update"] in lattice.ITEM_GRAPH_UPDATES


def _run(recall, ndcg, best, times):
    return {"test": {"recall@20": recall, "ndcg@20": ndcg}, "best_epoch": best, "epoch_train_times_s": times}


def test_table_means_relative_difference_and_verdict():
    results = {
        "LightGCN": {"ours": {1: _run(0.0930, 0.045, 50, [1.0, 3.0]), 2: _run(0.0890, 0.043, 40, [2.0])},
                     "reference": {1: _run(0.0900, 0.044, 45, [4.0, 4.0]), 2: _run(0.0880, 0.042, 47, [2.0])}},
        "VBPR": {"ours": {1: _run(0.0560, 0.020, 20, [2.0])}, "reference": {1: _run(0.0450, 0.017, 30, [1.0])}},
        "FREEDOM": {"ours": {1: _run(0.0900, 0.040, 60, [1.0])}},
    }
    rows = {r["model"]: r for r in rc.table_rows(results)}
    lg = rows["LightGCN"]
    assert lg["ours_recall@20"] == pytest.approx(0.0910) and lg["reference_recall@20"] == pytest.approx(0.0890)
    assert lg["rel_diff_recall@20"] == pytest.approx(0.0020 / 0.0890)
    assert lg["ours_median_epoch_s"] == 2.0 and lg["reference_median_epoch_s"] == 4.0 and lg["epoch_time_ratio"] == 0.5
    assert lg["verdict"] == "within 5 %" and lg["ours_best_epochs"] == [50, 40]
    assert rows["VBPR"]["verdict"] == "**to explain**" and rows["VBPR"]["explanation"].startswith("open: ")
    assert rows["FREEDOM"]["verdict"] == "incomplete" and rows["FREEDOM"]["rel_diff_recall@20"] is None
