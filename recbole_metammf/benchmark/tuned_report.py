"""The leaderboard of a tuned benchmark (:mod:`.tune`), from its trial files alone.

Per dataset, ``leaderboard.md`` is the plain leaderboard of the final trials (the chosen configuration of
each row over the seeds, on test: :func:`.report.write_dataset_report`) with a *Tuning* section under the
table stating the budget every row got and, per row, its search space, the number of configurations tried,
the chosen configuration, its validation score, the wall time of its search and of its final trials, and
how many of its final trials chose their last validated epoch (against the board's convergence rule).
``search.md`` and ``search.csv`` list every search trial: its configuration, its score at each rung and
whether it went on.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections import defaultdict

from recbole_metammf.benchmark import store
from recbole_metammf.benchmark.epochs import patience_section
from recbole_metammf.benchmark.report import as_rows, produced_by, write_dataset_report, write_report
from recbole_metammf.benchmark.store import TUNE_DEFAULTS as DEFAULTS


def chose_last_epoch(record: dict) -> bool:
    """Whether a trial's best epoch is its last validated one (so it may still have been improving)."""
    curve = record.get("valid_curve") or []
    return bool(curve) and record.get("best_epoch") == curve[-1]["epoch"]


def _fmt_params(params: dict | None) -> str:
    if not params:
        return "-"
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


def _fmt_time(seconds: float) -> str:
    minutes = seconds / 60
    return f"{minutes:.1f} min" if minutes < 120 else f"{minutes / 60:.2f} h"


def row_summaries(rows: list[str], finals: list[dict], search: list[dict]) -> dict:
    """Per row: its search (space, configs tried, trials, time), its choice and its final trials."""
    out = {}
    for row in rows:
        s = [r for r in search if (r.get("row") or r["model"]) == row]
        f = [r for r in finals if r["model"] == row]  # finals come through as_rows: model = row
        ok = [r for r in f if r["status"] == "ok"]
        chosen = next((r.get("tuned_params") for r in f if r.get("tuned_params") is not None), None)
        chosen_from = next((r.get("chosen_from") for r in f if r.get("chosen_from")), None)
        source = next((r for r in s if r["trial_id"] == chosen_from), None)
        out[row] = {
            "model": s[0]["model"] if s else (f[0].get("recbole_model") or f[0]["model"]) if f else row,
            "space": next((r.get("space") for r in s + f if r.get("space")), None),
            "space_source": next((r.get("space_source") for r in s + f if r.get("space_source")), None),
            "configs_tried": len({r.get("config_index") for r in s}),
            "search_trials": len(s),
            "search_failed": sum(r["status"] != "ok" for r in s),
            "search_epochs": sum(r.get("epochs_run") or 0 for r in s),
            "search_time_s": sum(r.get("total_time_s") or 0 for r in s),
            "final_time_s": sum(r.get("total_time_s") or 0 for r in f if not r.get("reused_from")),
            "chosen": chosen,
            "chosen_index": next((r.get("chosen_config_index") for r in f if r.get("chosen_config_index") is not None), None),
            "chosen_valid": source.get("best_valid_score") if source else None,
            "finals": len(ok),
            "finals_failed": len(f) - len(ok),
            "finals_last_epoch": sum(chose_last_epoch(r) for r in ok),
            "reused": sum(bool(r.get("reused_from")) for r in ok),
        }
    return out


def tuning_section(dataset: str, rows: list[str], finals: list[dict], search: list[dict], tune: dict,
                   seeds: list) -> list[str]:
    """The *Tuning* section of a tuned leaderboard (markdown lines)."""
    per_row = row_summaries(rows, finals, search)
    example = next((r for r in finals + search if r.get("status") == "ok"), {})
    training = example.get("training") or {}
    metric = example.get("valid_metric", "the validation metric")
    rungs, eta = tune.get("rungs") or [], tune.get("eta", 2)
    if rungs:
        halving = (f"successive halving over that sample (ASHA-style, deterministic): rungs of "
                   f"{', '.join(map(str, rungs))} epoch{'s' if rungs != [1] else ''}, the best 1/{eta} of each "
                   "rung going on, each run from "
                   "scratch with the same seed; the survivors of the last rung trained until early stopping ended them")
    else:
        halving = "every configuration trained until early stopping ended it"
    budget = (f"at most {training.get('epochs')} epochs, validated every {training.get('eval_step')}, stopped after "
              f"{training.get('stopping_step')} evaluations without improvement") if training else "see Configs"
    lines = [
        "## Tuning: how every row was tuned", "",
        f"**Tuned: every row was searched under the same budget.** {tune.get('configs')} configurations per row, "
        f"sampled from the row's search space with seed {tune.get('seed')} (the same sample on every rerun), "
        f"searched with one seed ({tune.get('seed')}) on validation `{metric}`: {halving} ({budget}). The "
        f"configuration with the best validation `{metric}` was then trained with seeds {', '.join(map(str, seeds))} "
        "and evaluated once on test: the table above. The test split played no part in the search. The final "
        f"trial of seed {tune.get('seed')} is the search's own last-stage run of the chosen configuration (the same "
        "trial, not rerun) when that seed is one of the seeds. Every search trial: [search.md](search.md).", "",
    ]
    ok_finals = [r for r in finals if r["status"] == "ok"]
    n_last = sum(chose_last_epoch(r) for r in ok_finals)
    share = tune.get("max_last_epoch_share", DEFAULTS["max_last_epoch_share"])
    if share is None:
        rule = "no convergence rule on this board (relaxed: see the note above)"
    else:
        met = n_last <= share * len(ok_finals)
        rule = (f"the rule is at most {share:.0%} of them ({'met' if met else '**not met**: raise the epoch cap'})")
    lines += [f"**Convergence:** {n_last} of {len(ok_finals)} final trials chose their last validated epoch; {rule}.", ""]
    lines += ["| Row | model | configs tried | search trials (epochs) | chosen configuration | search valid "
              f"{metric} | search time | final time | final trials (at last epoch) |",
              "|---|---|---|---|---|---|---|---|---|"]
    total = 0.0
    for row, s in per_row.items():
        total += s["search_time_s"] + s["final_time_s"]
        failed = f", {s['search_failed']} failed" if s["search_failed"] else ""
        finals_cell = f"{s['finals']} ({s['finals_last_epoch']})" + (f", {s['finals_failed']} failed" if s["finals_failed"] else "")
        valid = f"{s['chosen_valid']:.4f}" if isinstance(s["chosen_valid"], (int, float)) else "-"
        if s["chosen"] is not None:
            chosen = f"#{s['chosen_index']}: {_fmt_params(s['chosen'])}"
        elif s["search_trials"] and s["search_failed"] == s["search_trials"]:
            chosen = "every search trial failed (see search.md)"
        else:
            chosen = "search in progress"
        lines.append(f"| {row} | {s['model']} | {s['configs_tried']} | {s['search_trials']} ({s['search_epochs']}){failed} "
                     f"| {chosen} | {valid} | {_fmt_time(s['search_time_s'])} | {_fmt_time(s['final_time_s'])} "
                     f"| {finals_cell} |")
    lines += ["", f"Times are wall times of the trials (each on its own {_cores(finals + search)}), summed per row: "
              f"{_fmt_time(total)} in all.", "", "### Search spaces", ""]
    for row, s in per_row.items():
        where = f" (`{s['space_source']}`)" if s["space_source"] else ""
        lines.append(f"* **{row}**{where}: {s['space'] or '-'}")
    return lines + [""]


def _cores(records: list[dict]) -> str:
    cpus = {r.get("cpus_per_trial") for r in records if r.get("cpus_per_trial")}
    return f"{cpus.pop()} core(s)" if len(cpus) == 1 else "core(s)"


def search_table(rows: list[str], search: list[dict], tune: dict) -> tuple[str, str]:
    """(markdown, csv) of every search trial: configuration, score at each rung, fate."""
    n_stages = len(tune.get("rungs") or []) + 1
    stage_names = [f"{e} epochs" for e in (tune.get("rungs") or [])] + ["to early stop"]
    md = ["# Search trials", "", "Best validation score of each configuration at each stage (rungs of successive "
          "halving, then training to early stopping); `-`: pruned before that stage; `failed`: the trial failed.", ""]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["row", "config_index", "rung", "epoch_budget", "params", "status", "best_valid_score", "best_epoch",
                "epochs_run", "total_time_s", "trial_id"])
    for row in rows:
        s = sorted((r for r in search if (r.get("row") or r["model"]) == row),
                   key=lambda r: (r.get("config_index", 0), r.get("rung", 0)))
        if not s:
            continue
        md += [f"## {row}", "", f"Search space: {s[0].get('space', '-')}", "",
               "| config | " + " | ".join(stage_names) + " |", "|---|" + "---|" * n_stages]
        by_config = defaultdict(dict)
        params = {}
        for r in s:
            by_config[r.get("config_index")][r.get("rung")] = r
            params[r.get("config_index")] = r.get("params")
            w.writerow([row, r.get("config_index"), r.get("rung"), r.get("epoch_budget"), json.dumps(r.get("params")),
                        r["status"], r.get("best_valid_score"), r.get("best_epoch"), r.get("epochs_run"),
                        r.get("total_time_s"), r["trial_id"]])
        for k in sorted(by_config):
            cells = []
            for rung in range(n_stages):
                r = by_config[k].get(rung)
                cells.append("-" if r is None else ("failed" if r["status"] != "ok" else f"{r['best_valid_score']:.4f}"))
            md.append(f"| #{k}: {_fmt_params(params[k])} | " + " | ".join(cells) + " |")
        md.append("")
    return "\n".join(md) + "\n", buf.getvalue()


def write_tuned_report(out_dir: str, focus: str | None = None) -> dict:
    """(Re)write every dataset's tuned leaderboard, search tables and plots; ``{dataset: summary}``."""
    damaged: list = []
    finals = as_rows(store.load_trials(out_dir, damaged=damaged))
    search = store.load_trials(out_dir, store.SEARCH, damaged=damaged)
    manifest = store.load_manifest(out_dir)
    spec = manifest.get("spec", {})
    tune = {**DEFAULTS, **(spec.get("tune") or {}), **(manifest.get("tune") or {})}
    seeds = spec.get("seeds") or sorted({r["seed"] for r in finals})
    datasets = list(spec.get("datasets") or [])
    datasets += sorted({r["dataset"] for r in finals + search} - set(datasets))
    summaries = {}
    index = [f"# Tuned benchmark `{os.path.basename(os.path.normpath(out_dir))}`", ""]
    index += produced_by(manifest)
    if spec.get("note"):
        index += [spec["note"], ""]
    index += store.report_damaged(damaged, out_dir)
    for dataset in datasets:
        f = [r for r in finals if r["dataset"] == dataset]
        s = [r for r in search if r["dataset"] == dataset]
        rows = list(spec.get("models") or [])
        rows += sorted(({r["model"] for r in f} | {r.get("row") or r["model"] for r in s}) - set(rows))
        d_dir = os.path.join(out_dir, dataset)
        os.makedirs(d_dir, exist_ok=True)
        section = tuning_section(dataset, rows, f, s, tune, seeds)
        section += patience_section([r for r in f if r["status"] == "ok"], rows)
        md, table = search_table(rows, s, tune)
        store.atomic_write_text(os.path.join(d_dir, "search.md"), md)
        store.atomic_write_text(os.path.join(d_dir, "search.csv"), table)
        if any(r["status"] == "ok" for r in f):
            summaries[dataset] = write_dataset_report(out_dir, dataset, f, manifest, focus, sections_after_table=section)
        else:
            store.atomic_write_text(os.path.join(d_dir, "leaderboard.md"), "\n".join(
                [f"# Leaderboard (tuned): {dataset}", "", "No final trial yet: the search is in progress.", ""]
                + section))
        n_ok = sum(r["status"] == "ok" for r in f)
        index.append(f"* [{dataset}]({dataset}/leaderboard.md): {len(s)} search trials, {n_ok} final trials")
    store.atomic_write_text(os.path.join(out_dir, "README.md"), "\n".join(index) + "\n")
    return summaries


def is_tuned(out_dir: str) -> bool:
    """Whether ``out_dir`` holds a tuned benchmark (its manifest says so, or it has search trials)."""
    return store.load_manifest(out_dir).get("mode") == "tuned" or os.path.isdir(os.path.join(out_dir, "search"))


def write_any_report(out_dir: str, focus: str | None = None) -> dict:
    """The tuned or the plain report, whichever ``out_dir`` holds."""
    if is_tuned(out_dir):
        return write_tuned_report(out_dir, focus)
    return write_report(out_dir, focus)
