"""PNG plots of a leaderboard (matplotlib, headless) and the metric columns' names tables and plots share."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

SHORT = {"precision": "P", "recall": "R", "ndcg": "NDCG", "hr": "HR", "hit": "Hit", "mrr": "MRR", "map": "MAP",
         "coldrecall": "cold R", "coldndcg": "cold NDCG"}


def column_label(key: str) -> str:
    """``ndcg@10`` -> ``NDCG@10``: a metric column's name in the tables and plots."""
    metric, k = key.split("@")
    return f"{SHORT.get(metric, metric)}@{k}"


def mean_std(values) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single seed)."""
    values = np.asarray(values, dtype=float)
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return float(values.mean()), std


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def bar_chart(summary: dict, path: str, title: str = "") -> None:
    """Grouped bars: one group per metric column, one bar per model, error bars = std over seeds."""
    plt = _pyplot()
    keys, models = summary["keys"], summary["models"]
    x = np.arange(len(keys))
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(min(14, max(6, 0.6 * len(keys) * (1 + 0.3 * len(models)))), 4.5))
    for i, m in enumerate(models):
        means = [summary["table"][m][k][0] for k in keys]
        stds = [summary["table"][m][k][1] for k in keys]
        ax.bar(x + (i - (len(models) - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=m)
    ax.set_xticks(x, [column_label(k) for k in keys])
    ax.set_ylabel("test value")
    ax.set_title(title)
    ax.legend(fontsize="small", ncol=min(len(models), 5))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def validation_curves(records: list[dict], path: str, models=None, title: str = "") -> None:
    """Validation metric per evaluated epoch, one line per model (mean over seeds, std band)."""
    plt = _pyplot()
    by_model = defaultdict(lambda: defaultdict(list))
    for r in records:
        for point in r.get("valid_curve", []):
            by_model[r["model"]][point["epoch"]].append(point["score"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in models or sorted(by_model):
        if m not in by_model:
            continue
        epochs = sorted(by_model[m])
        per_epoch = [mean_std(by_model[m][e]) for e in epochs]  # (mean, std) over seeds
        mean, std = np.array([ms[0] for ms in per_epoch]), np.array([ms[1] for ms in per_epoch])
        line, = ax.plot(epochs, mean, marker="o" if len(epochs) < 15 else None, markersize=3, label=m)
        ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(records[0].get("valid_metric", "valid score") if records else "valid score")
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
