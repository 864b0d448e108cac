"""The literature's way of testing, beside RecBole's (recbole_metammf/evaluation.py, compat.py section 7).

* ``test_mask: train`` masks only the training items at test (MMRec's and DiffMM's code); on a
  hand-built split where a validation user is also a test user, Pop's test scores differ from
  RecBole's ``train+valid`` by exactly what a hand computation gives; validation is unchanged and
  nothing leaks into the next run of the process.
* ``diagnose_best_test_epoch`` reports the best test epoch beside the validation-selected result,
  which stays what it is without the diagnostic, through ``run_recbole.py``'s path and a benchmark trial.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, planted_config, printed_results

# --- a split computed by hand -------------------------------------------------------------------
# Training popularity (Pop's score): i1 8, i2 5, i3 4, i4 3, i5 2, i6 1 (all distinct: no ties).
# Filler users f1..f6 (training only): f_k has items i1 .. i_(7-k).
# u1: train {i1}, valid {i2}, test {i3}   (a validation user who is also a test user)
# u2: train {i1},             test {i2}   (a test user without validation items)
# u3:             valid {i7}  (validation only; i7, never trained, keeps f1 from having every item)
# At test, Pop ranks the unmasked items by popularity:
#   u1, train+valid: i1, i2 masked -> i3 first                   Recall@1 1, NDCG@2 1
#   u1, train:       i1 masked     -> i2, then i3                 Recall@1 0, Recall@2 1, NDCG@2 1/log2(3)
#   u2, either:      i1 masked     -> i2 first                    Recall@1 1, NDCG@2 1
# Averages over the test users u1, u2: Recall@1 1.0 vs 0.5; Recall@2 1.0 both; NDCG@2 1.0 vs (1/log2(3) + 1) / 2.
HAND_SPLIT = {
    "train": [(f"f{k}", f"i{i}") for k in range(1, 7) for i in range(1, 8 - k)] + [("u1", "i1"), ("u2", "i1")],
    "valid": [("u1", "i2"), ("u3", "i7")],
    "test": [("u1", "i3"), ("u2", "i2")],
}
EXPECTED = {
    "train+valid": {"recall@1": 1.0, "recall@2": 1.0, "ndcg@2": 1.0},
    "train": {"recall@1": 0.5, "recall@2": 1.0, "ndcg@2": (1 / math.log2(3) + 1) / 2},
}


def write_hand_split(root: Path, name: str = "hand") -> Path:
    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    for part, pairs in HAND_SPLIT.items():
        (path / f"{name}.{part}.inter").write_text(
            "user_id:token\titem_id:token\n" + "".join(f"{u}\t{i}\n" for u, i in pairs))
    return root


def hand_config(root: Path, **extra) -> dict:
    cfg = {"data_path": str(root), "benchmark_filename": ["train", "valid", "test"],
           "load_col": {"inter": ["user_id", "item_id"]}, "metrics": ["Recall", "NDCG"], "topk": [1, 2],
           "valid_metric": "Recall@1", "epochs": 1, "state": "ERROR",
           # Pop counts an item once per batch it occurs in: one positive a batch makes the counts the popularity
           "train_batch_size": 1, "train_neg_sample_args": None, "show_progress": False, "seed": 2020,
           "reproducibility": True, "checkpoint_dir": str(root / "saved")}
    cfg.update(extra)
    return cfg


def run_pop(root: Path, **extra) -> dict:
    from recbole_metammf.quick_start import run

    return run("Pop", "hand", config_dict=hand_config(root, **extra), saved=True)


@pytest.fixture
def hand(tmp_path):
    return write_hand_split(tmp_path / "data")


def test_test_mask_train_gives_the_hand_computed_scores(hand):
    default = run_pop(hand)
    recbole_named = run_pop(hand, test_mask="train+valid")
    train_only = run_pop(hand, test_mask="train")
    for result, mask in ((default, "train+valid"), (recbole_named, "train+valid"), (train_only, "train")):
        got = {k: result["test_result"][k] for k in EXPECTED[mask]}
        assert got == pytest.approx(EXPECTED[mask], abs=1e-4), (mask, got)
    # validation masks the training items whatever test_mask says: u1 ranks i2 first (i1 masked), u3 i1 first
    assert train_only["best_valid_result"] == default["best_valid_result"]
    assert default["best_valid_result"]["recall@1"] == pytest.approx(0.5)


def test_a_train_only_run_leaves_the_next_run_as_recbole_has_it(hand):
    first = run_pop(hand, test_mask="train")["test_result"]["recall@1"]
    second = run_pop(hand)["test_result"]["recall@1"]
    assert (first, second) == (pytest.approx(0.5), pytest.approx(1.0))


def test_the_loaders_masks(hand):
    """The tables RecBole's evaluation reads: the test loader masks {i1} for u1 under train, {i1, i2} under
    RecBole's; the validation loader is RecBole's in both; update_config switches a built loader back."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    masks = {}
    for mask in ("train", "train+valid"):
        config = Config(model="Pop", dataset="hand", config_dict=hand_config(hand, test_mask=mask))
        dataset = create_dataset(config)
        _, valid, test = data_preparation(config, dataset)

        def tokens(loader, user):
            uid = int(dataset.token2id("user_id", user))
            return set(dataset.id2token("item_id", loader.uid2history_item[uid].numpy()))

        masks[mask] = {"test_u1": tokens(test, "u1"), "test_u2": tokens(test, "u2"), "valid_u1": tokens(valid, "u1"),
                       "test_mask": test.test_mask}
        if mask == "train":
            test.update_config(Config(model="Pop", dataset="hand", config_dict=hand_config(hand)))
            masks["switched back"] = tokens(test, "u1")
    assert masks["train"] == {"test_u1": {"i1"}, "test_u2": {"i1"}, "valid_u1": {"i1"}, "test_mask": "train"}
    assert masks["train+valid"] == {"test_u1": {"i1", "i2"}, "test_u2": {"i1"}, "valid_u1": {"i1"},
                                    "test_mask": "train+valid"}
    assert masks["switched back"] == {"i1", "i2"}


def test_bad_test_mask_values_are_one_line_errors(hand):
    from recbole_metammf.errors import ConfigError

    with pytest.raises(ConfigError, match=r"'test_mask' \(config dict\) must be one of train\+valid, train, got 'valid'"):
        run_pop(hand, test_mask="valid")
    with pytest.raises(ConfigError, match="applies to the full ranking only"):
        run_pop(hand, test_mask="train", eval_args={"mode": {"valid": "full", "test": "uni100"}})
    with pytest.raises(ConfigError, match="must be True or False"):
        run_pop(hand, diagnose_best_test_epoch="yes")
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_recbole.py"), "--model=Pop", "--dataset=hand", f"--data_path={hand}",
         "--benchmark_filename=['train','valid','test']", "--test_mask=everything"],
        capture_output=True, text=True, cwd=hand.parent)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: config key 'test_mask' (command line) must be one of train+valid, train, got 'everything'"]


# --- the diagnostic -----------------------------------------------------------------------------
def _planted_extra():
    return {"epochs": 8, "stopping_step": 3, "valid_metric": "NDCG@10", "learning_rate": 0.01}


def _check_diagnostic(summary: dict, test_result: dict, best_epoch=None, n_evaluations=None) -> None:
    from recbole_metammf.evaluation import DIAGNOSTIC_LABEL

    curve = summary["test_curve"]
    metric = summary["metric"]
    assert metric == "ndcg@10" and summary["label"] == DIAGNOSTIC_LABEL
    assert len(curve) >= 4 and [p["epoch"] for p in curve] == list(range(len(curve)))  # one test per validation
    if n_evaluations is not None:
        assert len(curve) == n_evaluations
    scores = [p["result"][metric] for p in curve]
    assert summary["best_test_result"][metric] == max(scores)
    assert summary["best_test_epoch"] == curve[int(np.argmax(scores))]["epoch"]
    assert summary["best_test_result"] == curve[int(np.argmax(scores))]["result"]
    # the test of the validation-selected epoch, recorded during training, is the reported test result
    selected = next(p for p in curve if p["epoch"] == summary["valid_selected_epoch"])
    assert selected["result"] == pytest.approx({k: float(v) for k, v in test_result.items()}, abs=1e-9)
    if best_epoch is not None:
        assert summary["valid_selected_epoch"] == best_epoch
    assert len(set(scores)) > 1  # the test score moves over the epochs: max() had something to choose


def test_diagnostic_beside_the_unchanged_result_run_recbole_path(planted):
    from recbole_metammf.evaluation import DIAGNOSTIC_KEY
    from recbole_metammf.quick_start import run

    root, name = planted
    off = run("LightGCN", name, config_dict=planted_config(root, name, **_planted_extra()))
    on = run("LightGCN", name, config_dict=planted_config(root, name, diagnose_best_test_epoch=True, **_planted_extra()))
    assert DIAGNOSTIC_KEY not in off
    assert on["test_result"] == off["test_result"]
    assert on["best_valid_result"] == off["best_valid_result"]
    _check_diagnostic(on[DIAGNOSTIC_KEY], on["test_result"])


def test_diagnostic_in_a_trial_file(planted):
    from recbole_metammf.benchmark.trial import run_trial
    from recbole_metammf.evaluation import DIAGNOSTIC_KEY

    root, name = planted
    off = run_trial("BPR", name, 2020, config_dict=planted_config(root, name, **_planted_extra()))
    on = run_trial("BPR", name, 2020, config_dict=planted_config(root, name, diagnose_best_test_epoch=True,
                                                                 **_planted_extra()))
    assert off["status"] == on["status"] == "ok", on.get("traceback")
    assert DIAGNOSTIC_KEY not in off
    assert on["test_result"] == off["test_result"] and on["valid_curve"] == off["valid_curve"]
    assert on["best_epoch"] == off["best_epoch"] and on["protocol"]["test_mask"] == "train+valid"
    summary = json.loads(json.dumps(on[DIAGNOSTIC_KEY]))  # as stored in the trial file
    _check_diagnostic(summary, on["test_result"], best_epoch=on["best_epoch"], n_evaluations=len(on["valid_curve"]))


def test_run_recbole_prints_the_diagnostic_labelled(hand):
    proc = subprocess.run(
        [sys.executable, str(REPO / "run_recbole.py"), "--model=Pop", "--dataset=hand", f"--data_path={hand}",
         "--benchmark_filename=['train','valid','test']", "--load_col={'inter':['user_id','item_id']}",
         "--metrics=['Recall','NDCG']", "--topk=[1,2]", "--valid_metric=Recall@1", "--epochs=2", "--state=ERROR",
         "--train_batch_size=1", "--train_neg_sample_args=None",
         "--test_mask=train", "--diagnose_best_test_epoch=True"],
        capture_output=True, text=True, cwd=hand.parent)
    assert proc.returncode == 0, proc.stderr
    assert printed_results(proc.stdout, "Pop", "hand") == pytest.approx(
        {"recall@1": 0.5, "recall@2": 1.0, "ndcg@1": 0.5, "ndcg@2": EXPECTED["train"]["ndcg@2"]}, abs=1e-4)
    tail = proc.stdout.split("Test results of Pop on hand", 1)[1]
    assert "Best test over epochs (diagnostic, DiffMM-style selection: the epoch is chosen on test; not a result):" in tail
    assert "epoch 0 by test recall@1 (the reported result above: the best-validation epoch 0)" in tail
