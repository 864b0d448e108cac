"""The leaderboard of a benchmark directory, computed from its trial files alone.

Per dataset: ``leaderboard.md`` and ``leaderboard.csv`` (rows = models, columns =
each configured metric at each configured K on the *test* split, mean +- sample
standard deviation over seeds; best in bold, second underlined) with a last row
giving the focus model's relative improvement over the best other model in each
column and the paired t-test p-value over the seeds both ran
(``scipy.stats.ttest_rel``), as in the MetaMMF paper's table. The focus model is
the best one on the validation metric's test counterpart unless one is named.
Plots: ``bars.png`` (means with std error bars) and ``valid_curves.png``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import warnings
from collections import defaultdict

import numpy as np
from scipy import stats

from recbole_metammf.benchmark import published as pub
from recbole_metammf.benchmark import store
from recbole_metammf.benchmark.epochs import selection_section
from recbole_metammf.benchmark.plots import bar_chart, column_label, mean_std, validation_curves
from recbole_metammf.evaluation import DIAGNOSTIC_KEY

COLD_METRICS = ("coldrecall", "coldndcg")  # recbole_metammf.metrics: only items with no training interaction count


def metric_keys(records: list[dict]) -> list[str]:
    """``metric@k`` result keys in the configured order (metrics outer, K inner) present in the results."""
    protocol = records[0]["protocol"]
    keys = [f"{m.lower()}@{k}" for m in protocol["metrics"] for k in protocol["topk"]]
    return [k for k in keys if all(k in r["test_result"] for r in records)]


def paired_p_value(a, b) -> float:
    """Two-sided paired t-test p-value over seeds (nan for fewer than two pairs)."""
    if len(a) < 2:
        return float("nan")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return float(stats.ttest_rel(a, b).pvalue)


def summarise(records: list[dict], focus: str | None = None, model_order=None) -> dict:
    """Everything the leaderboard of one dataset shows, from its 'ok' trial records."""
    records = [r for r in records if r["status"] == "ok"]
    keys = metric_keys(records)
    per_model: dict[str, dict[int, dict]] = defaultdict(dict)
    for r in records:
        per_model[r["model"]][r["seed"]] = r["test_result"]
    models = [m for m in (model_order or []) if m in per_model] + sorted(m for m in per_model if m not in (model_order or []))
    table = {m: {k: mean_std([res[k] for res in per_model[m].values()]) for k in keys} for m in models}

    valid_key = records[0]["valid_metric"].lower()
    rank_key = valid_key if valid_key in keys else keys[0]
    if focus is None:
        focus = max(models, key=lambda m: table[m][rank_key][0])
    best, second, improvement = {}, {}, {}
    for k in keys:
        order = sorted({table[m][k][0] for m in models}, reverse=True)
        best[k] = [m for m in models if table[m][k][0] == order[0]]
        second[k] = [m for m in models if len(order) > 1 and table[m][k][0] == order[1]]
        others = [m for m in models if m != focus]
        if focus not in table or not others:
            continue
        rival = max(others, key=lambda m: table[m][k][0])
        seeds = sorted(set(per_model[focus]) & set(per_model[rival]))
        a = [per_model[focus][s][k] for s in seeds]
        b = [per_model[rival][s][k] for s in seeds]
        f_mean, r_mean = table[focus][k][0], table[rival][k][0]
        p = paired_p_value(a, b)
        improvement[k] = {"rival": rival, "percent": (f_mean - r_mean) / r_mean * 100 if r_mean else float("nan"),
                          "p_value": p, "n_pairs": len(seeds)}
    return {"keys": keys, "models": models, "table": table, "best": best, "second": second,
            "focus": focus, "rank_key": rank_key, "improvement": improvement,
            "seeds": {m: sorted(per_model[m]) for m in models}}


def produced_by(manifest: dict) -> list[str]:
    """Markdown lines saying which command(s) wrote a benchmark directory: the last command, or, when
    its trials came from several different commands (a board finished row by row), each in order."""
    commands = []
    for run in manifest.get("runs", []):
        if run.get("command") and (not commands or commands[-1][0] != run["command"]):
            commands.append((run["command"], run.get("started_at", "")))
    if len(commands) <= 1:
        command = manifest.get("command")
        return ["Produced by:", "", "```bash", command, "```", ""] if command else []
    lines = ["Produced by these runs, in order (each resumes the directory; the trial files record the code "
             "and configuration each trial ran with):", "", "```bash"]
    lines += [f"{command}    # {started}" if started else command for command, started in commands]
    return lines + ["```", ""]


def _fmt(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"


def _fmt_p(p: float) -> str:
    if p is None or math.isnan(p):
        return "n/a"
    return f"{p:.2e}" if p < 1e-3 else f"{p:.3f}"


def csv_text(summary: dict) -> str:
    keys = summary["keys"]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["model", "n_seeds"] + [c for k in keys for c in (column_label(k), column_label(k) + "_std")])
    for m in summary["models"]:
        w.writerow([m, len(summary["seeds"][m])] + [f"{v:.6f}" for k in keys for v in summary["table"][m][k]])
    imp = summary["improvement"]
    if imp:
        w.writerow([f"improvement_% ({summary['focus']} vs best other)", ""]
                   + [c for k in keys for c in (f"{imp[k]['percent']:.4f}", "")])
        w.writerow(["p_value (paired t-test over seeds)", ""]
                   + [c for k in keys for c in (f"{imp[k]['p_value']:.6g}", "")])
    return buf.getvalue()


def table_markdown(summary: dict) -> str:
    keys = summary["keys"]
    lines = ["| Model | seeds | " + " | ".join(column_label(k) for k in keys) + " |",
             "|---|---|" + "---|" * len(keys)]
    for m in summary["models"]:
        cells = []
        for k in keys:
            mean, std = summary["table"][m][k]
            cell = f"{mean:.4f} ± {std:.4f}"
            if m in summary["best"][k]:
                cell = f"**{cell}**"
            elif m in summary["second"][k]:
                cell = f"<u>{cell}</u>"
            cells.append(cell)
        lines.append(f"| {m} | {len(summary['seeds'][m])} | " + " | ".join(cells) + " |")
    imp = summary["improvement"]
    if imp:
        cells = [f"{imp[k]['percent']:+.2f}% (p={_fmt_p(imp[k]['p_value'])})" for k in keys]
        lines.append(f"| %Improv. {summary['focus']} | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _protocol_text(record: dict) -> str:
    p, t = record["protocol"], record["training"]
    ea = p["eval_args"]
    split = ea.get("split", {})
    fixed = (record.get("config") or {}).get("benchmark_filename")
    if fixed:  # RecBole then ignores eval_args.split and reads the pre-split atomic files
        files = "/".join(fixed)
        split_line = (f"* Split: fixed, read from `{record['dataset']}.{{{','.join(fixed)}}}.inter` "
                      f"(`benchmark_filename: [{', '.join(fixed)}]`): the same {files} interactions for every "
                      "seed; the seed varies initialisation and negative sampling only.")
    else:
        split_line = (f"* Split: {split} (`group_by: {ea.get('group_by')}`, `order: {ea.get('order')}`), "
                      "seeded by each trial's seed.")
    return "\n".join([
        split_line,
        f"* Candidates: `mode: {ea.get('mode')}`"
        + ((" = full ranking over all items except the items the user is known to have: the training items "
            "when validating, the training and validation items when testing (RecBole's full sort)."
            if p.get("test_mask", "train+valid") == "train+valid" else
            " = full ranking over all items except the user's training items, when validating and when testing "
            "(`test_mask: train`, as MMRec's and DiffMM's code: a user's validation items stay in the test ranking).")
           if _is_full(ea.get("mode")) else "."),
        f"* Metrics: {', '.join(p['metrics'])} at K = {', '.join(map(str, p['topk']))}, averaged over test users "
        "(HR = total hits / total test interactions, the paper's micro recall)."
        + (" *cold* columns (ColdRecall, ColdNDCG): the same full ranking, but only the user's test items with no "
           "training interaction count as relevant, averaged over the users who have one; a model with item "
           "content scores such items as its `cold_item_id` says."
           if any(m.lower() in COLD_METRICS for m in p["metrics"]) else ""),
        f"* Model selection: the epoch with the best validation `{p['valid_metric']}` (evaluated every "
        f"{t.get('eval_step')} epoch(s), early stop after {t.get('stopping_step')} evaluations without "
        "improvement); its checkpoint is reloaded and evaluated once on the test split. Numbers are test results.",
        *(["* Diagnostic, not a result: the trial files also hold `diagnostic_best_test_over_epochs`, the test "
           "result of every evaluated epoch and the best of them (DiffMM-style selection on test); the tables use "
           "only the validation-selected test results."] if record.get(DIAGNOSTIC_KEY) else []),
        "* Cells: mean ± sample standard deviation (ddof=1) over seeds; **best**, <u>second</u>.",
        "* Last row: the focus model's relative improvement over the best *other* model of each column, and the "
        "p-value of a paired t-test over the seeds both ran (`scipy.stats.ttest_rel`).",
    ])


def _is_full(mode) -> bool:
    return mode == "full" or (isinstance(mode, dict) and set(mode.values()) == {"full"})


def _dataset_text(record: dict) -> str:
    s = record["dataset_stats"]
    feats = ", ".join(f"`{k}` ({v})" for k, v in s["item_features"].items()) or "none"
    tr, va, te = s["split_interactions"]
    return (f"| users | items | interactions | density | train / valid / test interactions |\n|---|---|---|---|---|\n"
            f"| {s['n_users']} | {s['n_items']} | {s['n_interactions']} | {s['density']:.4%} | {tr} / {va} / {te} |\n\n"
            f"Item features loaded: {feats}.")


def _configs_text(records: list[dict], models: list[str]) -> str:
    out = []
    for m in models:
        r = next(r for r in records if r["model"] == m)
        seeds = sorted(x["seed"] for x in records if x["model"] == m)
        out.append(f"**{m}** (seeds {', '.join(map(str, seeds))}; mean best epoch "
                   f"{np.mean([x['best_epoch'] if x['best_epoch'] is not None else np.nan for x in records if x['model'] == m]):.1f}, "
                   f"mean train time {np.mean([x['train_time_s'] for x in records if x['model'] == m]):.1f}s, "
                   f"peak memory {max(x['peak_memory_mb'] for x in records if x['model'] == m):.0f} MiB)\n")
        params = {**r["training"], **r["model_params"]}
        params.pop("seed", None)
        out.append("```yaml\n" + "\n".join(f"{k}: {json.dumps(v)}" for k, v in params.items()) + "\n```")
        extra = {"config_files": [os.path.basename(p) for p in r.get("config_files", [])],
                 "config_overrides": r.get("config_overrides", {})}
        if extra["config_files"] or extra["config_overrides"]:
            out.append(f"Given on top of the defaults: `{json.dumps(extra)}`\n")
    return "\n".join(out)


def as_rows(records: list[dict]) -> list[dict]:
    """Records with ``model`` set to their leaderboard row: a named entry's name (``row``), else the model."""
    return [{**r, "model": r["row"], "recbole_model": r["model"]} if r.get("row") else r for r in records]


def write_dataset_report(out_dir: str, dataset: str, records: list[dict], manifest: dict, focus=None,
                         sections_after_table=None) -> dict:
    """``sections_after_table``: markdown lines placed under the table and plots (e.g. the tuned mode's)."""
    ok = [r for r in records if r["status"] == "ok"]
    failed = [r for r in records if r["status"] != "ok"]
    d_dir = os.path.join(out_dir, dataset)
    os.makedirs(d_dir, exist_ok=True)
    if not ok:
        store.atomic_write_text(os.path.join(d_dir, "leaderboard.md"),
                                f"# {dataset}\n\nNo finished trial yet ({len(failed)} failed).\n")
        return {}
    order = manifest.get("spec", {}).get("models")
    summary = summarise(ok, focus=focus, model_order=order)
    store.atomic_write_text(os.path.join(d_dir, "leaderboard.csv"), csv_text(summary))
    bar_chart(summary, os.path.join(d_dir, "bars.png"), title=f"{dataset}: test metrics (mean ± std over seeds)")
    validation_curves(ok, os.path.join(d_dir, "valid_curves.png"), models=summary["models"],
                      title=f"{dataset}: validation {ok[0]['valid_metric']} per epoch (mean ± std over seeds)")
    md = [f"# Leaderboard: {dataset}", ""] + produced_by(manifest)
    note = manifest.get("spec", {}).get("note")
    if note:
        md += [note, ""]
    md += [table_markdown(summary), "", "![bars](bars.png)", "", "![validation curves](valid_curves.png)", ""]
    md += _published_section(d_dir, summary, manifest.get("spec", {}).get("published") or {}, dataset)
    md += selection_section(ok, summary["models"], manifest.get("spec", {}).get("published") or {}, dataset)
    md += list(sections_after_table or [])
    md += ["## Protocol", "", _protocol_text(ok[0]), "", "## Dataset", "", _dataset_text(ok[0]), "",
           "## Configs", "", "Training settings and each model's hyper-parameters as run (full configs: "
           "`trials/*.json`, key `config`).", "", _configs_text(ok, summary["models"]), ""]
    if failed:
        md += ["## Failed trials", ""] + [f"* `{r['trial_id']}`: {r.get('error', '')[:300]}" for r in failed] + [""]
    v = ok[0]["versions"]
    md += [f"Versions: python {v['python']}, torch {v['torch']}, recbole {v['recbole']}, "
           f"recbole-metammf {v['recbole_metammf']}.", ""]
    store.atomic_write_text(os.path.join(d_dir, "leaderboard.md"), "\n".join(md))
    return summary


def _published_section(d_dir: str, summary: dict, published: dict, dataset: str) -> list[str]:
    """Published figures beside ours (``published.csv``, ``published.png``, a markdown section)."""
    lines = pub.markdown(summary, published, dataset)
    if lines:
        store.atomic_write_text(os.path.join(d_dir, "published.csv"), pub.csv_text(summary, published, dataset))
        pub.chart(summary, published, dataset, os.path.join(d_dir, "published.png"))
        lines += ["![ours beside published](published.png)", ""]
    return lines


def write_report(out_dir: str, focus: str | None = None) -> dict:
    """(Re)write every dataset's leaderboard and plots from ``out_dir/trials``; ``{dataset: summary}``."""
    damaged: list = []
    records = as_rows(store.load_trials(out_dir, damaged=damaged))
    manifest = store.load_manifest(out_dir)
    by_dataset = defaultdict(list)
    for r in records:
        by_dataset[r["dataset"]].append(r)
    order = manifest.get("spec", {}).get("datasets") or []
    datasets = [d for d in order if d in by_dataset] + sorted(d for d in by_dataset if d not in order)
    summaries = {d: write_dataset_report(out_dir, d, by_dataset[d], manifest, focus) for d in datasets}
    index = [f"# Benchmark `{os.path.basename(os.path.normpath(out_dir))}`", ""]
    index += produced_by(manifest)
    if manifest.get("spec", {}).get("note"):
        index += [manifest["spec"]["note"], ""]
    n_ok = sum(r["status"] == "ok" for r in records)
    index += [f"{n_ok} finished trial(s), {len(records) - n_ok} failed.", ""]
    index += store.report_damaged(damaged, out_dir)
    index += [f"* [{d}]({d}/leaderboard.md)" for d in datasets]
    store.atomic_write_text(os.path.join(out_dir, "README.md"), "\n".join(index) + "\n")
    return summaries
