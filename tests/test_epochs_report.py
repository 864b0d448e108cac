"""recbole_metammf/benchmark/epochs.py: the two selections of the epoch and the patience check, on hand-made
trial records (a real diagnostic run: tests/test_literature_protocol.py)."""

from __future__ import annotations

from recbole_metammf.benchmark.epochs import longest_plateau, patience_section, selection_section
from recbole_metammf.evaluation import DIAGNOSTIC_KEY


def _curve(scores):
    return [{"epoch": e, "score": s} for e, s in enumerate(scores)]


def test_longest_plateau_follows_recboles_rule():
    # new bests at epochs 0, 1, 5 (a tie with the best counts as one, as in RecBole's early_stopping), 8
    scores = [0.10, 0.20, 0.15, 0.18, 0.19, 0.20, 0.12, 0.11, 0.30, 0.29, 0.28]
    assert longest_plateau(_curve(scores)) == (3, 8)  # epochs 2-4 before the tie at 5; the tail does not count
    assert longest_plateau(_curve([0.5, 0.4, 0.3])) == (0, 0)
    # smaller is better: the mirror image
    assert longest_plateau(_curve([-s for s in scores]), bigger=False) == (3, 8)
    assert longest_plateau([]) == (0, None)


def _record(model, seed, test_r, diag_r, best_epoch, diag_epoch, scores, patience=20):
    return {"model": model, "trial_id": f"d__{model}__s{seed}", "seed": seed, "best_epoch": best_epoch,
            "test_result": {"recall@20": test_r, "ndcg@20": test_r / 2},
            DIAGNOSTIC_KEY: {"best_test_epoch": diag_epoch,
                             "best_test_result": {"recall@20": diag_r, "ndcg@20": diag_r / 2}},
            "valid_curve": _curve(scores), "training": {"stopping_step": patience},
            "protocol": {"valid_metric_bigger": True}}


def test_selection_section_puts_the_diagnostic_beside_the_result_and_the_published_figure():
    records = [_record("A", 1, 0.08, 0.10, 4, 6, [0.1]), _record("A", 2, 0.06, 0.08, 8, 10, [0.1]),
               _record("B", 1, 0.05, 0.05, 3, 3, [0.1])]
    published = {"datasets": {"d": {"A": {"recall@20": 0.12}}}}
    lines = selection_section(records, ["A", "B", "C"], published, "d")
    rows = {line.split(" | ")[0].lstrip("| "): line for line in lines if line.startswith("| A") or line.startswith("| B")}
    # A: validation-selected mean .07 (std .0141), diagnostic .09, epochs 6 / 8, published R@20 .12, N@20 none
    assert rows["A"] == ("| A | 2 | 0.0700 ± 0.0141 | 0.0900 ± 0.0141 | 0.0350 ± 0.0071 | 0.0450 ± 0.0071 | 6 / 8 "
                         "| 0.1200 | — |")
    assert rows["B"].startswith("| B | 1 | 0.0500 ± 0.0000 | 0.0500 ± 0.0000 |")
    assert not any(line.startswith("| C") for line in lines)  # no trial, no row
    # without the diagnostic in any record there is no section
    plain = [{k: v for k, v in r.items() if k != DIAGNOSTIC_KEY} for r in records]
    assert selection_section(plain, ["A", "B"], published, "d") == []


def test_patience_section_counts_trials_a_shorter_patience_would_have_cut():
    plateau_12 = [0.1] + [0.05] * 12 + [0.2, 0.1]  # a new best after 12 evaluations without one
    plateau_3 = [0.1, 0.05, 0.05, 0.05, 0.2]
    records = [_record("A", 1, 0, 0, 13, 13, plateau_12), _record("A", 2, 0, 0, 4, 4, plateau_3),
               _record("B", 1, 0, 0, 4, 4, plateau_3)]
    text = "\n".join(patience_section(records, ["A", "B"], shorter=10))
    assert "| A | 2 | 12, 3 | 12 | 1 |" in text and "| B | 1 | 3 | 3 | 0 |" in text
    assert "patience of 20 evaluations" in text
    assert "A patience of 10 would have stopped 1 of these 3 trials" in text
    assert "the longest plateau of all is 12 evaluation(s) (`d__A__s1`)" in text
    assert patience_section(records, ["C"]) == []
    # by default the longest of 10 (RecBole's) and 20 (MMRec's) below the trials' patience: 10 under 20, 20 under 50
    assert "A patience of 10 would have stopped 1 of these 3 trials" in "\n".join(patience_section(records, ["A", "B"]))
    at_fifty = [{**r, "training": {**r["training"], "stopping_step": 50}} for r in records]
    assert "A patience of 20 would have stopped 0 of these 3 trials" in "\n".join(patience_section(at_fifty, ["A", "B"]))
    unknown = [{k: v for k, v in r.items() if k != "training"} for r in records]  # no stopping_step recorded: 10
    assert "A patience of 10 would have stopped 1 of these 3 trials" in "\n".join(patience_section(unknown, ["A", "B"]))
    # trials that all ran at patience 10 cannot hold a longer plateau: no section
    at_ten = [{**r, "training": {**r["training"], "stopping_step": 10}} for r in records]
    assert patience_section(at_ten, ["A", "B"], shorter=10) == []
