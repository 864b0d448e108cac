"""Published figures beside a leaderboard, clearly labelled as published.

A benchmark YAML file may carry::

    published:
      source: "DiffMM (Jiang et al., ACM MM 2024), Table 1; their protocol"
      differences: >            # what differs from this leaderboard's protocol (free text)
        ...
      datasets:
        tiktok-diffmm:          # rows: a model of the leaderboard, or any other published model
          BPR: {recall@20: 0.0346, ndcg@20: 0.0130}
          DiffMM: {recall@20: 0.1129, ndcg@20: 0.0456}

The leaderboard then gets a section with, per metric the source reports, our test mean
(± std over seeds) beside the published value and their ratio; a model only the source
has appears with its published figures alone. Nothing here is computed from the
published numbers but the ratio.
"""

from __future__ import annotations

import csv
import io

from recbole_metammf.benchmark.plots import column_label


def dataset_figures(published: dict, dataset: str) -> dict:
    """``{model: {metric@k (lower case): value}}`` published for ``dataset`` ({} when none)."""
    return {m: {k.lower(): v for k, v in vals.items()}
            for m, vals in ((published.get("datasets") or {}).get(dataset) or {}).items()}


def _rows(summary: dict, figures: dict) -> tuple[list[str], list[str]]:
    """(metric keys the source reports, in their first-seen order; row models: ours first, then theirs)."""
    keys: list[str] = []
    for vals in figures.values():
        keys += [k.lower() for k in vals if k.lower() not in keys]
    ours = [m for m in summary.get("models", []) if m in figures] + \
           [m for m in summary.get("models", []) if m not in figures]
    theirs = [m for m in figures if m not in ours]
    return keys, ours + theirs


def markdown(summary: dict, published: dict, dataset: str) -> list[str]:
    """Markdown lines of the published-comparison section (empty when nothing is published for ``dataset``)."""
    figures = dataset_figures(published, dataset)
    if not figures:
        return []
    keys, models = _rows(summary, figures)
    head = ["Model"]
    for k in keys:
        label = column_label(k)
        head += [f"{label} ours", f"{label} **published**", "ours / published"]
    lines = ["## Published figures for the same data", "",
             f"Published (not run here): {published.get('source', 'see the benchmark file')}.", ""]
    if published.get("differences"):
        lines += [str(published["differences"]).strip(), ""]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    table = summary.get("table", {})
    for m in models:
        cells = [m]
        for k in keys:
            mine = table.get(m, {}).get(k)
            theirs = figures.get(m, {}).get(k)
            cells.append("—" if mine is None else f"{mine[0]:.4f} ± {mine[1]:.4f}")
            cells.append("—" if theirs is None else f"{theirs:.4f}")
            cells.append(f"{mine[0] / theirs:.2f}" if mine is not None and theirs else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def csv_text(summary: dict, published: dict, dataset: str) -> str:
    """The same comparison as CSV (``model, metric, ours_mean, ours_std, published``); '' if none."""
    figures = dataset_figures(published, dataset)
    if not figures:
        return ""
    keys, models = _rows(summary, figures)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "metric", "ours_mean", "ours_std", "published"])
    for m in models:
        for k in keys:
            mine = summary.get("table", {}).get(m, {}).get(k)
            theirs = figures.get(m, {}).get(k)
            w.writerow([m, column_label(k), "" if mine is None else f"{mine[0]:.6f}",
                        "" if mine is None else f"{mine[1]:.6f}", "" if theirs is None else theirs])
    return buf.getvalue()


def check_published(published, path) -> dict:
    """The ``published`` mapping of a benchmark file, or a ValueError naming what is wrong."""
    if not isinstance(published, dict) or not isinstance(published.get("datasets"), dict):
        raise ValueError(f"{path}: 'published' needs a 'datasets' mapping (dataset -> model -> metric -> value)")
    unknown = set(published) - {"source", "differences", "datasets"}
    if unknown:
        raise ValueError(f"{path}: unknown keys under 'published': {sorted(unknown)}")
    for dataset, rows in published["datasets"].items():
        for model, vals in (rows or {}).items():
            if not isinstance(vals, dict) or not all(
                    "@" in str(k) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in vals.items()):
                raise ValueError(f"{path}: published figures of {model} on {dataset} must map metric@K to a number")
    return {"source": str(published.get("source", "")), "differences": str(published.get("differences", "")),
            "datasets": {d: {m: {str(k).lower(): float(v) for k, v in vals.items()} for m, vals in (rows or {}).items()}
                         for d, rows in published["datasets"].items()}}


def chart(summary: dict, published: dict, dataset: str, path: str) -> None:
    """Grouped bars: ours (mean ± std over seeds) beside the published value, per metric and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figures = dataset_figures(published, dataset)
    keys, models = _rows(summary, figures)
    table = summary.get("table", {})
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 0.45 * len(models) + 1.8), squeeze=False)
    y = np.arange(len(models))
    for ax, k in zip(axes[0], keys):
        ours = [table.get(m, {}).get(k, (np.nan, 0.0)) for m in models]
        theirs = [figures.get(m, {}).get(k, np.nan) for m in models]
        ax.barh(y - 0.2, [o[0] for o in ours], 0.4, xerr=[o[1] for o in ours], label="ours (this leaderboard)")
        ax.barh(y + 0.2, theirs, 0.4, label="published", hatch="//", color="lightgrey", edgecolor="black")
        ax.set_yticks(y, models)
        ax.invert_yaxis()
        ax.set_title(column_label(k))
    axes[0][0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{dataset}: ours beside published figures", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
