"""Choosing a default on validation: a small grid over several datasets, picked by a rule written before
the runs, as a benchmark file that ``run_benchmark.py`` runs and reports.

A *selection file* is a YAML file with a ``select`` section::

    select:
      setting: content_reg_weight           # what is chosen (the page's title)
      page: ../content_reg_validation.md    # the page the report writes (relative to this file)
      kind: grid                            # grid: each candidate is its own training (plain benchmarks);
                                            # options: one training per (dataset, model), every candidate an
                                            #   evaluation-time option of it (e.g. cold_item_id)
      models: [MetaMMF_MF, MetaMMF_GCN, VBPR]
      groups:                               # grid: how each candidate's trials run, one benchmark folder a group
        - {datasets: [tiktok-diffmm, mm-ml-100k], seeds: 1, config: {data_path: dataset, epochs: 300}}
        - {datasets: [microlens], seeds: 1, config_files: [budget.yaml], config: {data_path: dataset}}
      candidates:                           # label -> the config it sets and its folders (one per group, in order)
        "0.1": {config: {content_reg_weight: 0.1}, folders: [validation/content_reg/w0.1, ...]}
      rule:
        score: best_valid_score             # grid: a cell is the mean over its seeds of the trials' best validation
                                            #   score; options: valid_hits (validation hits in the top K)
        compare: relative                   # a candidate's ``rel.``: mean over the datasets of its cell / the best
                                            #   candidate's cell on that dataset (datasets count equally); or
                                            #   absolute (the score itself, one dataset)
        incumbent: shipped                  # the model's shipped default (its YAML), or a candidate's label
        margin: 0.02                        # a challenger replaces the incumbent only if it is higher by more
        ties: incumbent                     # ... (ties: incumbent), or by at least that much (ties: challenger)
      intro: ...                            # markdown: the protocol, printed under the title
      notes: ...                            # markdown: printed after the tables (what the figures say)

The test split plays no part in the choice: the trial files hold test metrics, the rule never reads them.
``python run_benchmark.py --file FILE`` runs the missing trials and writes the page; ``--report FILE``
rewrites the page from the trial files alone.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys

import yaml

from recbole_metammf.benchmark import store
from recbole_metammf.benchmark.plan import run_benchmark
from recbole_metammf.benchmark.spec import BenchmarkSpec, expand_seeds
from recbole_metammf.errors import ConfigError
from recbole_metammf.paths import PROPERTIES_DIR

KINDS = ("grid", "options")  # the two ways a candidate is run (see the module docstring)
RULE_KEYS = {"score", "compare", "incumbent", "margin", "ties", "k", "min_seeds"}
KEYS = {"setting", "page", "kind", "models", "groups", "candidates", "rule", "intro", "notes", "also",
        "shipped_when_absent", "rel_without", "results", "dataset", "columns", "overrides", "run"}


def is_selection_file(path: str) -> bool:
    """Whether ``path`` is a YAML file with a ``select`` section."""
    if not (os.path.isfile(path) and path.endswith((".yaml", ".yml"))):
        return False
    with open(path) as f:
        raw = yaml.safe_load(f)
    return isinstance(raw, dict) and "select" in raw


def load_selection(path: str) -> dict:
    """The ``select`` section of ``path`` with paths resolved, or one ConfigError saying what is wrong."""
    with open(path) as f:
        raw = (yaml.safe_load(f) or {}).get("select")
    if not isinstance(raw, dict):
        raise ConfigError(f"selection file {path}: no 'select' section")
    unknown = set(raw) - KEYS
    if unknown:
        raise ConfigError(f"selection file {path}: unknown keys in 'select': {sorted(unknown)} (known: {sorted(KEYS)})")
    here = os.path.dirname(os.path.abspath(path))

    def rel(p):
        return p if os.path.isabs(p) else os.path.normpath(os.path.join(here, p))

    sel = dict(raw)
    sel["file"] = os.path.abspath(path)
    sel["kind"] = sel.get("kind", "grid")
    if sel["kind"] not in KINDS:
        raise ConfigError(f"selection file {path}: kind must be one of {KINDS}")
    for key in ("setting", "page", "models", "candidates", "rule"):
        if not sel.get(key):
            raise ConfigError(f"selection file {path}: 'select' needs '{key}'")
    sel["page"] = rel(sel["page"])
    rule = dict(sel["rule"])
    if set(rule) - RULE_KEYS:
        raise ConfigError(f"selection file {path}: unknown keys in 'rule': {sorted(set(rule) - RULE_KEYS)}")
    rule.setdefault("margin", 0)
    rule.setdefault("ties", "incumbent")
    if rule["ties"] not in ("incumbent", "challenger"):
        raise ConfigError(f"selection file {path}: rule.ties is 'incumbent' or 'challenger'")
    sel["rule"] = rule
    if sel["kind"] == "grid":
        groups = sel.get("groups") or []
        if not groups:
            raise ConfigError(f"selection file {path}: a grid needs 'groups' (how each candidate's trials run)")
        sel["groups"] = [{**g, "config_files": [rel(p) for p in g.get("config_files", [])]} for g in groups]
        cands = {}
        for label, c in sel["candidates"].items():
            folders = [rel(p) for p in c.get("folders", [])]
            if not folders or len(folders) > len(groups):
                raise ConfigError(f"selection file {path}: candidate {label!r} needs 1 to {len(groups)} folders")
            cands[str(label)] = {"config": dict(c.get("config") or {}), "folders": folders}
        sel["candidates"] = cands
        sel["also"] = [{"label": str(a["label"]), "candidate": str(a["candidate"]), "folder": rel(a["folder"]),
                        "group": {**a.get("group", {}),
                                  "config_files": [rel(p) for p in a.get("group", {}).get("config_files", [])]}}
                       for a in sel.get("also") or []]
    else:
        sel["candidates"] = [str(c) for c in sel["candidates"]]
        sel["results"] = rel(sel.get("results") or "")
    return sel


# --- running ----------------------------------------------------------------------------------------
def run_selection(sel: dict, command: str | None = None, **run_kwargs) -> dict:
    """Run every missing trial of the selection (resuming), then write its page; ``{'ran', 'skipped', 'failed'}``."""
    summary = {"ran": [], "skipped": [], "failed": []}
    if sel["kind"] == "grid":
        jobs = [(folder, group, c["config"]) for c in sel["candidates"].values()
                for folder, group in zip(c["folders"], sel["groups"])]
        jobs += [(a["folder"], {**sel["groups"][0], **a["group"]}, sel["candidates"][a["candidate"]]["config"])
                 for a in sel["also"]]
        for folder, group, config in jobs:
            spec = BenchmarkSpec(models=list(group.get("models") or sel["models"]), datasets=list(group["datasets"]),
                                 seeds=expand_seeds(group.get("seeds", 1)), config_files=group["config_files"],
                                 config={**(group.get("config") or {}), **config})
            print(f"{os.path.relpath(folder)}: {json.dumps(config)}", file=sys.stderr, flush=True)
            part = run_benchmark(spec, folder, command=command, **run_kwargs)
            for key in summary:
                summary[key] += part.get(key, [])
    else:
        summary = _run_options(sel)
    write_selection_report(sel)
    return summary


def _run_options(sel: dict) -> dict:
    """Train each (dataset, model) of an ``options`` selection that has no result file yet."""
    summary = {"ran": [], "skipped": [], "failed": []}
    run = sel.get("run") or {}
    os.makedirs(sel["results"], exist_ok=True)
    here = os.getcwd()
    for model in sel["models"]:
        path = os.path.join(sel["results"], f"{sel['dataset']}__{model}.json")
        if os.path.exists(path):
            summary["skipped"].append(os.path.basename(path)[:-5])
            continue
        print(f"{model}: training ...", file=sys.stderr, flush=True)
        try:
            result = train_and_evaluate_options(model, sel["dataset"], os.path.abspath(run.get("data_path", "dataset")),
                                                int(run.get("epochs", 300)), int(run.get("seed", 2020)),
                                                sel["setting"], sel["candidates"])
        finally:
            os.chdir(here)
        store.atomic_write_text(path, json.dumps(result, indent=1))
        summary["ran"].append(os.path.basename(path)[:-5])
    return summary


def train_and_evaluate_options(model: str, dataset: str, data_path: str, epochs: int, seed: int, setting: str,
                               options: list) -> dict:
    """Train ``model`` once (``setting`` at the first option, early stopping on validation), reload its best
    checkpoint and evaluate validation and test under each option of ``setting`` (an evaluation-time key)."""
    import subprocess
    import tempfile
    import time

    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    work = tempfile.mkdtemp(prefix=f"{setting}_")
    os.chdir(work)  # RecBole's log/ and saved/
    config = Config(model=model, dataset=dataset, config_dict={
        "data_path": data_path, "seed": seed, "epochs": epochs, setting: options[0],
        "checkpoint_dir": os.path.join(work, "saved"), "show_progress": False, "state": "WARNING",
    })
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train, valid, test = data_preparation(config, data)
    net = get_model(model)(config, train._dataset).to(config["device"])
    trainer = Trainer(config, net)
    start = time.time()
    trainer.fit(train, valid, saved=True, show_progress=False)
    train_time = time.time() - start
    net.load_state_dict(torch.load(trainer.saved_model_file, weights_only=True)["state_dict"])
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(PROPERTIES_DIR)).stdout.strip()
    out = {"model": model, "dataset": dataset, "seed": seed, "epochs_cap": epochs, "best_epoch": None,
           "valid_metric": config["valid_metric"], "train_time_s": round(train_time, 1), "valid": {}, "test": {},
           "n_cold_items": int(net.cold_items.sum()),
           "n_valid_interactions": len(valid.dataset.inter_feat),
           "n_valid_cold_interactions": int(net.cold_items[valid.dataset.inter_feat[data.iid_field]].sum()),
           "config": {k: config[k] for k in ("content_reg_weight", "reg_weight", "learning_rate", "train_batch_size")
                      if k in config},
           "commit": head}
    for option in options:
        setattr(net, setting, option)
        for split, loader in (("valid", valid), ("test", test)):
            net.restore_user_e = net.restore_item_e = None  # the eval cache holds the previous option's vectors
            out[split][option] = {k: float(v) for k, v in trainer.evaluate(loader, load_best_model=False).items()}
    out["best_epoch"] = int(torch.load(trainer.saved_model_file, weights_only=True)["epoch"])
    return out


# --- the rule -----------------------------------------------------------------------------------------
def choose(scores: dict, incumbent, rule: dict) -> tuple:
    """``(chosen, top, why)``: the candidate with the highest score (``top``; ties: the incumbent, then the
    first listed) replaces ``incumbent`` only if it beats it by more than ``rule['margin']`` (``ties:
    incumbent``) or by at least that much (``ties: challenger``); ``why`` says which in words."""
    order = list(scores)
    favour_incumbent = rule.get("ties", "incumbent") == "incumbent"
    top = max(order, key=lambda c: (scores[c], (c == incumbent) == favour_incumbent, -order.index(c)))
    margin = rule.get("margin", 0)
    if incumbent is None or incumbent not in scores:
        return top, top, "the highest" + (" (no incumbent among the candidates)" if incumbent is not None else "")
    if top == incumbent:
        return top, top, f"the incumbent {incumbent} is the highest"
    gain = scores[top] - scores[incumbent]
    wins = gain > margin if rule.get("ties", "incumbent") == "incumbent" else gain >= margin - 1e-12
    fmt = _fmt_score(rule)
    if wins:
        return top, top, (f"{top} ({fmt(scores[top])}) is {_beats(rule)} the incumbent {incumbent}'s "
                          f"({fmt(scores[incumbent])})")
    return incumbent, top, (f"{top} ({fmt(scores[top])}) is not {_beats(rule)} the incumbent {incumbent}'s "
                            f"({fmt(scores[incumbent])}): the incumbent stays")


def _beats(rule: dict) -> str:
    """What a challenger's score must be, in words: 'higher by more than 0.02 than', 'not lower than' ..."""
    margin, ties = rule.get("margin", 0), rule.get("ties", "incumbent")
    if margin == 0:
        return "higher than" if ties == "incumbent" else "at least as high as"
    return f"higher by {'more than' if ties == 'incumbent' else 'at least'} {margin:g} than"


def _fmt_score(rule: dict):
    return (lambda x: f"{x:.3f}") if rule.get("compare", "relative") == "relative" else (lambda x: f"{x:g}")


def shipped_label(sel: dict, model: str) -> str | None:
    """The candidate whose config is the model's shipped YAML (``properties/model/<model>.yaml``)."""
    path = os.path.join(PROPERTIES_DIR, "model", f"{model}.yaml")
    conf = {}
    if os.path.isfile(path):
        with open(path) as f:
            conf = yaml.safe_load(f) or {}
    absent = sel.get("shipped_when_absent") or {}
    for label, c in sel["candidates"].items():
        if all(_same(conf.get(k, absent.get(k)), v) for k, v in c["config"].items()):
            return label
    return None


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(float(a), float(b))
    return a == b


def incumbent_of(sel: dict, model: str):
    inc = sel["rule"].get("incumbent")
    return shipped_label(sel, model) if inc == "shipped" else (str(inc) if inc is not None else None)


# --- the report ---------------------------------------------------------------------------------------
def _ok(folder: str) -> list[dict]:
    return [r for r in store.load_trials(folder) if r.get("status") == "ok"]


def grid_cells(sel: dict) -> dict:
    """``(model, dataset, label) -> [trials]`` from every candidate's folders (ok trials only)."""
    cells: dict = {}
    for label, c in sel["candidates"].items():
        for folder in c["folders"]:
            for t in _ok(folder):
                cells.setdefault((t["model"], t["dataset"], label), []).append(t)
    return cells


def write_selection_report(sel: dict) -> str:
    """Write the selection's page from its trial files; returns its text."""
    lines = [f"# {sel['setting']} chosen on validation", ""]
    root = os.path.dirname(PROPERTIES_DIR)  # the checkout: the page names the file as a command run from there
    rel_file = os.path.relpath(sel["file"], root) if sel["file"].startswith(root + os.sep) else sel["file"]
    lines += [f"Produced by `python run_benchmark.py --file {rel_file}` (runs what is missing, then writes this "
              f"page); `python run_benchmark.py --report {rel_file}` rewrites it from the trial files alone.", ""]
    if sel.get("intro"):
        lines += [str(sel["intro"]).strip(), ""]
    lines += _rule_text(sel)
    body, chosen = (_grid_report if sel["kind"] == "grid" else _options_report)(sel)
    lines += body
    lines += ["## Chosen", ""] + [f"* **{m}**: `{sel['setting']}` = **{c}** ({why})" for m, (c, why) in chosen.items()]
    lines.append("")
    if sel.get("notes"):
        lines += [str(sel["notes"]).strip(), ""]
    text = "\n".join(lines)
    store.atomic_write_text(sel["page"], text)
    return text


def _rule_text(sel: dict) -> list[str]:
    rule = sel["rule"]
    inc = rule.get("incumbent")
    inc_text = ("the model's shipped default (its YAML in `properties/model/`)" if inc == "shipped"
                else f"`{inc}`" if inc is not None else "none")
    if rule.get("compare", "relative") == "relative":
        score = ("`rel.`: the mean over the model's datasets of its cell / the best candidate's cell on that dataset "
                 "(datasets count equally, whatever their metric's scale); a cell is the best validation score, "
                 "mean over the seeds run")
    else:
        score = f"the score: {rule.get('score')}"
    return ["**Rule, written before the runs.** The candidate with the highest score replaces the incumbent, "
            f"{inc_text}, only if its score is {_beats(rule)} the incumbent's; else the incumbent stays. Score: "
            f"{score}. Test metrics are in the trial files and play no part in the choice.", ""]


def _grid_report(sel: dict) -> tuple[list[str], dict]:
    cells = grid_cells(sel)
    labels = list(sel["candidates"])
    without = list(sel.get("rel_without") or [])
    min_seeds = sel["rule"].get("min_seeds") or {}
    lines, chosen = [], {}
    for model in sel["models"]:
        datasets = sorted({d for m, d, _ in cells if m == model})
        if not datasets:
            continue
        score = {(d, c): statistics.mean(t["best_valid_score"] for t in ts)
                 for (m, d, c), ts in cells.items() if m == model}
        best = {d: max(s for (dd, _), s in score.items() if dd == d) for d in datasets}
        sub = [d for d in datasets if d not in without]
        extra = bool(without) and len(sub) < len(datasets)
        best_sub = {d: best[d] for d in sub}
        lines += [f"## {model}", "", f"| {sel['setting']} | " + " | ".join(datasets) + " | rel. |"
                  + (f" rel. without {', '.join(without)} |" if extra else ""),
                  "|---|" + "---|" * (len(datasets) + 1 + extra)]
        rel, run = {}, []
        for c in labels:
            if not any((d, c) in score for d in datasets):
                continue  # a candidate this model was not run with
            run.append(c)
            row = []
            for d in datasets:
                ts = sorted(cells.get((model, d, c), []), key=lambda t: t["seed"])
                if not ts:
                    row.append("—")
                elif len(ts) == 1:
                    row.append(f"{score[(d, c)]:.4f} ({ts[0]['best_epoch']})")
                else:
                    row.append(f"{score[(d, c)]:.4f} (" + ", ".join(f"{t['best_valid_score']:.4f} @{t['best_epoch']}"
                                                                  for t in ts) + ")")
            if all((d, c) in score for d in datasets):
                rel[c] = sum(score[(d, c)] / best[d] for d in datasets) / len(datasets)
            line = f"| {c} | " + " | ".join(row) + (f" | {rel[c]:.3f} |" if c in rel else " | — |")
            if extra:
                line += (f" {sum(score[(d, c)] / best_sub[d] for d in sub) / len(sub):.3f} |"
                         if all((d, c) in score for d in sub) else " — |")
            lines.append(line)
        lines.append("")
        if rel:
            inc = incumbent_of(sel, model)
            pick, top, why = choose(rel, inc, sel["rule"])
            short = [(d, c) for (m, d, c), ts in cells.items() if m == model and len(ts) < min_seeds.get(d, 0)]
            if short:
                why += f"; provisional: {len(short)} cell(s) have fewer seeds than the rule asks"
            if len(rel) < len(run):
                why += (f"; `rel.` over every dataset for {len(rel)} of the {len(run)} candidates run "
                        "(a candidate without every dataset's cell is not compared)")
            chosen[model] = (pick, why)
            lines += [f"Highest `rel.`: {top}. Incumbent: {inc if inc is not None else 'none'}. "
                      f"Chosen: **{pick}** ({why}).", ""]
    if sel.get("also"):
        lines += _also_section(sel, cells)
    return lines, chosen


def _also_section(sel: dict, cells: dict) -> list[str]:
    """Every trial of the datasets the ``also`` runs repeat, beside those runs (not used for the choice)."""
    datasets = sorted({t["dataset"] for a in sel["also"] for t in _ok(a["folder"])})
    rows = [(m, c, t) for (m, d, c), ts in cells.items() if d in datasets for t in ts]
    rows += [(t["model"], a["label"], t) for a in sel["also"] for t in _ok(a["folder"])]
    order = list(sel["candidates"]) + [a["label"] for a in sel["also"]]
    rows.sort(key=lambda r: (r[0], order.index(r[1])))
    lines = [f"## Every {', '.join(datasets)} trial, with the runs not used for the choice", "",
             "Best validation score (best epoch / epochs run); the last column: / the model's best of these.", "",
             f"| model | {sel['setting']} | dataset | score | / the model's best |", "|---|---|---|---|---|"]
    for m, label, t in rows:
        top = max(u["best_valid_score"] for mm, _, u in rows if mm == m)
        lines.append(f"| {m} | {label} | {t['dataset']} | {t['best_valid_score']:.4f} ({t['best_epoch']} / "
                     f"{t['epochs_run']}) | {t['best_valid_score'] / top:.3f} |")
    return lines + [""]


def _hits(result: dict, option: str, k: int) -> int:
    """Validation hits in the top ``k`` under ``option``: HR@k (total hits / total interactions) x interactions."""
    return round(result["valid"][option][f"hr@{k}"] * result["n_valid_interactions"])


def _options_report(sel: dict) -> tuple[list[str], dict]:
    k = int(sel["rule"].get("k", 20))
    options = sel["candidates"]
    columns = sel.get("columns") or [f"valid recall@{k}", f"valid ndcg@{k}"]
    rows = []
    for name in sorted(os.listdir(sel["results"])) if os.path.isdir(sel["results"]) else []:
        if name.endswith(".json"):
            with open(os.path.join(sel["results"], name)) as f:
                rows.append(json.load(f))
    order = {m: i for i, m in enumerate(sel["models"])}
    rows.sort(key=lambda r: (r["dataset"], order.get(r["model"], 99)))
    overrides = {(o["dataset"], o["model"]): o for o in sel.get("overrides") or []}
    head = ["dataset", "model", "epochs (best / cap)", "option", f"valid hits@{k}"] + columns + ["chosen"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    chosen = {}
    for r in rows:
        hits = {o: _hits(r, o, k) for o in options}
        inc = incumbent_of(sel, r["model"])
        pick, _, why = choose(hits, inc, sel["rule"])
        final, final_why = pick, why
        o = overrides.get((r["dataset"], r["model"]))
        if o:
            final, final_why = str(o["chosen"]), f"checkpoint rule: {pick} ({why}); overruled end to end: see above"
        for option in options:
            cells = []
            for col in columns:
                split, key = col.split(" ", 1)
                cells.append(f"{r[split][option].get(key, float('nan')):.4f}")
            mark = "**yes**" if option == pick == final else ""
            if option == final != pick:
                mark = "**yes** (end to end)"
            elif option == pick != final:
                mark = "checkpoint only"
            lines.append(f"| {r['dataset']} | {r['model']} | {r['best_epoch']} / {r['epochs_cap']} | `{option}` | "
                         f"{hits[option]} | " + " | ".join(cells) + f" | {mark} |")
        chosen[r["model"]] = (final, final_why)
    lines.append("")
    for o in sel.get("overrides") or []:
        if any(r["dataset"] == o["dataset"] and r["model"] == o["model"] for r in rows):
            lines += [str(o["why"]).strip(), ""]
    recorded = [r for r in rows if r.get("config")]
    if recorded:
        lines += ["Recorded settings: " + "; ".join(
            f"{r['model']} " + ", ".join(f"`{k_}: {v}`" for k_, v in r["config"].items()) + f" (commit {r['commit']})"
            for r in recorded) + ".", ""]
    return lines, chosen
