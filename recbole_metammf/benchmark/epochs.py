"""How a leaderboard's epochs were chosen, read from its trial files: two report sections.

* :func:`selection_section`: every row's test figures at the epoch chosen on validation (the result) beside
  the best test figures over its epochs (``diagnose_best_test_epoch``: the selection DiffMM's code makes,
  labelled as a diagnostic) and the published figures, so a published table can be lined up with ours.
* :func:`patience_section`: the longest run of evaluations without a new best that each final trial went
  through before its best epoch, against the patience it ran with: a patience shorter than such a run would
  have stopped the trial on that plateau. RecBole's rule (``early_stopping``): a score equal to or above the
  best so far resets the count, and a run stops once the count exceeds ``stopping_step``.
"""

from __future__ import annotations

from recbole_metammf.benchmark.plots import column_label, mean_std
from recbole_metammf.benchmark.published import dataset_figures
from recbole_metammf.evaluation import DIAGNOSTIC_KEY


def longest_plateau(curve: list[dict], bigger: bool = True) -> tuple[int, int | None]:
    """(the longest run of evaluations without a new best before the last new best, the epoch of that best)
    of a validation curve ``[{"epoch", "score"}, ...]`` under RecBole's rule (ties count as a new best)."""
    best, since, longest, best_epoch = None, 0, 0, None
    for point in curve:
        score = point.get("score")
        if score is None:
            continue
        if best is None or (score >= best if bigger else score <= best):
            longest = max(longest, since)
            best, since, best_epoch = score, 0, point.get("epoch")
        else:
            since += 1
    return longest, best_epoch


def _mean_std(values: list[float]) -> str:
    if not values:
        return "—"
    return "{:.4f} ± {:.4f}".format(*mean_std(values))


def selection_section(records: list[dict], models: list[str], published: dict, dataset: str,
                      metrics=("recall@20", "ndcg@20")) -> list[str]:
    """Markdown lines (empty when no trial holds the diagnostic): per row, the validation-selected test
    figures (the leaderboard's), the best test figures over the epochs (diagnostic) and the published ones."""
    with_diag = [r for r in records if isinstance(r.get(DIAGNOSTIC_KEY), dict)]
    if not with_diag:
        return []
    figures = dataset_figures(published, dataset)
    head = ["Row", "seeds"]
    for k in metrics:
        label = column_label(k)
        head += [f"{label}: validation-selected (result)", f"{label}: best test epoch (diagnostic)"]
    head += ["mean epoch: validation / test selection"] + ([f"{column_label(k)} published" for k in metrics]
                                                          if figures else [])
    lines = ["## Two selections of the epoch", "",
             "The table above reports each trial's test result at the epoch with the best validation score. "
             "Published TikTok tables (DiffMM's code and the works built on it) report the epoch with the best "
             "*test* score instead; every trial here also recorded its test result at every epoch "
             "(`diagnose_best_test_epoch: True`), and the best of them is shown beside ours as a diagnostic, "
             "never as a result: it chooses the epoch on the test split. Mean ± std over the same seeds.", "",
             "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for m in models:
        rows = [r for r in with_diag if r.get("model") == m]
        if not rows:
            continue
        cells = [m, str(len(rows))]
        for k in metrics:
            cells.append(_mean_std([r["test_result"][k] for r in rows if k in r.get("test_result", {})]))
            cells.append(_mean_std([r[DIAGNOSTIC_KEY]["best_test_result"][k] for r in rows
                                    if k in r[DIAGNOSTIC_KEY].get("best_test_result", {})]))
        valid_epochs = [r["best_epoch"] for r in rows if isinstance(r.get("best_epoch"), int)]
        test_epochs = [r[DIAGNOSTIC_KEY]["best_test_epoch"] for r in rows
                       if isinstance(r[DIAGNOSTIC_KEY].get("best_test_epoch"), int)]
        cells.append(f"{sum(valid_epochs) / len(valid_epochs):.0f} / {sum(test_epochs) / len(test_epochs):.0f}"
                     if valid_epochs and test_epochs else "—")
        if figures:
            cells += [f"{figures[m][k]:.4f}" if k in figures.get(m, {}) else "—" for k in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


COMMON_PATIENCES = (10, 20)  # RecBole's default stopping_step, MMRec's


def patience_section(records: list[dict], models: list[str], shorter: int | None = None) -> list[str]:
    """Markdown lines: per row, the longest plateau before the best epoch over its trials, and how many of its
    trials a patience of ``shorter`` evaluations would have stopped on a plateau before their best epoch
    (default: the longest of RecBole's 10 and MMRec's 20 below the trials' own patience; 10 when unknown).
    Nothing when every trial already ran with a patience of at most ``shorter`` (no plateau of theirs can be
    longer, so the comparison would say nothing)."""
    rows_out, worst, cut, total = [], (-1, None), 0, 0
    patience = sorted({r.get("training", {}).get("stopping_step") for r in records} - {None})
    if shorter is None:
        shorter = max([p for p in COMMON_PATIENCES if patience and p < max(patience)], default=COMMON_PATIENCES[0])
    if patience and max(patience) <= shorter:
        return []
    for m in models:
        rows = [r for r in records if r.get("model") == m and r.get("valid_curve")]
        if not rows:
            continue
        plateaus = []
        for r in rows:
            bigger = bool(r.get("protocol", {}).get("valid_metric_bigger", True))
            longest, _ = longest_plateau(r["valid_curve"], bigger)
            plateaus.append(longest)
            if longest > worst[0]:
                worst = (longest, r.get("trial_id"))
        n_cut = sum(p > shorter for p in plateaus)
        cut += n_cut
        total += len(rows)
        rows_out.append(f"| {m} | {len(rows)} | {', '.join(map(str, plateaus))} | {max(plateaus)} | {n_cut} |")
    if not rows_out:
        return []
    ran = ", ".join(map(str, patience)) or "?"
    return ["## Patience", "",
            f"Every trial above ran with a patience of {ran} evaluations (RecBole's `stopping_step`: a run stops "
            "when more than that many evaluations in a row fail to reach its best score). Before its best epoch a trial "
            "may pass through plateaus; the longest is listed per trial (evaluations without a new best). A "
            f"patience of {shorter} would have stopped {cut} of these {total} trials on such a plateau, before "
            f"the epoch they chose; the longest plateau of all is {worst[0]} evaluation(s) (`{worst[1]}`).", "",
            "| Row | trials | longest plateau before the best epoch, per trial | max | "
            f"stopped early at patience {shorter} |",
            "|---|---|---|---|---|", *rows_out, ""]
