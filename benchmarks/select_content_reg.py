"""Choose ``content_reg_weight`` on the *validation* split (issue: the fused content must not
starve the ID half).

For each weight, every model and dataset is trained once (seed 2020) through the benchmark
runner (Ray trials, resumable: rerunning the command skips finished trials), early-stopped
on the dataset's validation metric; the table of best validation scores is written to
``benchmarks/content_reg_validation.md``. Test metrics are stored in the trial files but
never used for the choice.

    python -m dataset_converters diffmm --src ../shared/data/tiktok-diffmm --out dataset --name tiktok-diffmm
    python benchmarks/select_content_reg.py            # all of it (resumes)
    python benchmarks/select_content_reg.py --require_pow --weights 0.03 0.1 0.3 --models MetaMMF_MF MetaMMF_GCN
                                                       # the squared form (RecBole's require_pow)
    python benchmarks/select_content_reg.py --report   # only rewrite the table from the trial files
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

WEIGHTS = [0.1, 0.0, 1.0, 0.01]  # run in this order (the most informative first)
MODELS = ["MetaMMF_MF", "MetaMMF_GCN", "VBPR"]
DATASETS = ["tiktok-diffmm", "mm-ml-100k"]
OUT = os.path.join(HERE, "validation", "content_reg")
TABLE = os.path.join(HERE, "content_reg_validation.md")


MARGIN = 0.02  # a setting replaces the shipped default only if its rel. is higher by more than this


def _default(model: str) -> tuple[bool, float]:
    """(require_pow, content_reg_weight) of the model's YAML as shipped."""
    import yaml

    with open(os.path.join(REPO, "properties", "model", f"{model}.yaml")) as f:
        conf = yaml.safe_load(f)
    return bool(conf.get("require_pow", False)), float(conf["content_reg_weight"])


def out_dir(weight: float, pow_: bool = False) -> str:
    return os.path.join(OUT, f"w{weight:g}" + ("-pow" if pow_ else ""))


def _setting(directory: str) -> tuple[bool, float]:
    """(require_pow, weight) of a ``w*`` folder: ``w0.1`` is the plain norm, ``w0.1-pow`` the squared one."""
    name = os.path.basename(directory)[1:]
    return name.endswith("-pow"), float(name.removesuffix("-pow"))


def _ok_trials(directory: str):
    """The finished trials (records) under a benchmark folder."""
    for path in sorted(glob.glob(os.path.join(directory, "trials", "*.json"))):  # noqa: PTH207
        t = json.load(open(path))
        if t.get("status") == "ok":
            yield t


def _microlens_cells() -> list[tuple[int, tuple[bool, float], dict]]:
    """(epoch cap, setting, trial) of every MicroLens run: ``w*`` folders at the board's 20 epochs, ``ep60-w*``
    with a 60-epoch cap."""
    cells = []
    for directory in glob.glob(os.path.join(MICROLENS, "*w*")):
        cap, _, setting = os.path.basename(directory).partition("w")
        cells += [(int(cap[2:-1]) if cap else 20, _setting("w" + setting), t) for t in _ok_trials(directory)]
    return sorted(cells, key=lambda c: (c[2]["model"], c[0], c[1]))


def _label(setting: tuple[bool, float]) -> str:
    return f"{setting[1]:g}" + (" (squared)" if setting[0] else "")


def run(weights, models, datasets, epochs: int, pow_: bool = False) -> None:
    import run_benchmark

    for w in weights:
        # --force: a trial run under older plugin code or defaults is run again, never mixed in
        argv = ["--models", *models, "--datasets", *datasets, "--seeds", "1", "--out", out_dir(w, pow_), "--force",
                "--data_path=dataset", f"--epochs={epochs}", f"--content_reg_weight={w}", f"--require_pow={pow_}"]
        print("python run_benchmark.py " + " ".join(argv), flush=True)
        run_benchmark.main(argv)


def report() -> str:
    weights = sorted(_setting(d) for d in glob.glob(os.path.join(OUT, "w*")))  # (pow, weight): plain norm first
    rows = {}
    for w in weights:
        for t in _ok_trials(out_dir(w[1], w[0])):
            rows[(t["dataset"], t["model"], w)] = t
    for cap, w, t in _microlens_cells():  # MicroLens-50k under its board's budget
        if cap == 20:
            rows[(t["dataset"], t["model"], w)] = t
    weights = sorted({w for _, _, w in rows})
    lines = [
        "# content_reg_weight chosen on validation",
        "",
        "Produced by `python benchmarks/select_content_reg.py` (seed 2020, one trial per cell, early",
        "stopping on the dataset's validation metric: Recall@20 on tiktok-diffmm, NDCG@10 on",
        "mm-ml-100k; epoch cap 300; every other key the model's default YAML; MetaMMF_MF also on MicroLens-50k,",
        "validation NDCG@10 under its leaderboard's budget, see the last section). The cells are the",
        "**best validation score** (best epoch in brackets); each row's `rel.` is the mean over the",
        "datasets of score / the best score of that column, and the chosen weight is the row with the",
        "highest `rel.` (datasets count equally, whatever their metric's scale), unless the shipped default is within",
        f"{MARGIN} of it (one seed per cell: such a difference is noise), then the default stays. \"(squared)\" rows use RecBole's",
        "`require_pow: True` form of EmbLoss (sum of squares / 2 per batch row, as LightGCN's option); the others its",
        "default plain norm / batch size. Test metrics are in the trial files",
        f"(`benchmarks/validation/content_reg/w*/trials/`) and were not looked at for the choice.",
        "",
        "The squared rows were added after planted data (`benchmarks/planted_dynamic.py --variant planted-latent`)",
        "showed MetaMMF_MF's content going unused under the plain norm (test NDCG@10 on a par with BPR) and used",
        "under the squared form at 0.1 (+32 % over BPR, one seed); on the real validation splits the squared form",
        "costs mm-ml-100k more than it gains on TikTok, so it did not become a default. The margin rule was written",
        "when MetaMMF_GCN's 0.03 (squared) came out 0.011 above its default: a change on that evidence would be a",
        "choice by one seed's noise.",
        "",
        "MetaMMF_MF's MicroLens-50k column was added later (the issue asks for the real datasets' validation",
        "splits, and MicroLens had not been run). With it the plain norm at 1 has the highest `rel.` (0.911 against",
        "0.773 for the previous default 0.1), so it became MetaMMF_MF's default: it costs TikTok (.0577 -> .0482) and",
        "gains on mm-ml-100k (.2329 -> .2395) and much more on MicroLens (.0110 -> .0236; with a 60-epoch cap",
        ".0135 -> .0238, so not an artefact of the 20-epoch budget). The two squared settings without a MicroLens",
        "cell cannot reach 0.911 whatever it would be (their TikTok and mm-ml-100k cells bound them at 0.87 and 0.59).",
        "MetaMMF_GCN was then run on MicroLens at its default and at 1 (the same budget): 0.1 scores higher there too",
        "(.0171 vs .0161), so its default stays. VBPR was not run on MicroLens.",
        "",
    ]
    for model in MODELS:
        datasets = sorted({d for d, m, _ in rows if m == model})
        two = [d for d in datasets if d != "microlens"]
        extra = len(two) < len(datasets)
        lines += [f"## {model}", "", "| content_reg_weight | " + " | ".join(datasets) + " | rel. |" +
                  (" rel. without microlens |" if extra else ""),
                  "|---|" + "---|" * (len(datasets) + 1 + extra)]
        best = {d: max((t["best_valid_score"] for (dd, m, _), t in rows.items() if dd == d and m == model),
                       default=None) for d in datasets}
        rel = {}
        for w in weights:
            if not any((d, model, w) in rows for d in datasets):
                continue  # a setting this model was not run with
            cells = []
            for d in datasets:
                t = rows.get((d, model, w))
                cells.append("—" if t is None else f"{t['best_valid_score']:.4f} ({t['best_epoch']})")
            if all((d, model, w) in rows for d in datasets):
                rel[w] = sum(rows[(d, model, w)]["best_valid_score"] / best[d] for d in datasets) / len(datasets)
            line = f"| {_label(w)} | " + " | ".join(cells) + (f" | {rel[w]:.3f} |" if w in rel else " | — |")
            if extra:
                best2 = {d: max(t["best_valid_score"] for (dd, m, _), t in rows.items() if dd == d and m == model)
                         for d in two}
                line += (f" {sum(rows[(d, model, w)]['best_valid_score'] / best2[d] for d in two) / len(two):.3f} |"
                         if all((d, model, w) in rows for d in two) else " — |")
            lines.append(line)
        if rel:
            complete = len(rel) == len([w for w in weights if any((d, model, w) in rows for d in datasets)])
            top = max(rel, key=rel.get)
            default = _default(model)
            chosen = default if default in rel and rel[top] - rel[default] <= MARGIN else top
            lines += ["", f"Highest `rel.`: {_label(top)}. Chosen: **{_label(chosen)}**" +
                      (f" (the default, {_label(default)}, stays unless another setting's `rel.` beats it by more "
                       f"than {MARGIN}: one seed per cell)" if default in rel else "") + ("" if complete else
                      f" (so far: {len(rel)} of {len(weights)} weights complete)")]
        lines.append("")
    lines += microlens_lines()
    text = "\n".join(lines)
    with open(TABLE, "w") as f:
        f.write(text)
    return text


MICROLENS = os.path.join(HERE, "validation", "content_reg_microlens")


def microlens_lines() -> list[str]:
    """MetaMMF_MF on MicroLens-50k under its leaderboard's budget: a check of the chosen default on a third
    real dataset (each trial one command, in the table)."""
    cells = _microlens_cells()
    if not cells:
        return []
    lines = ["## MicroLens-50k: how its cells were run", "",
             "The MicroLens leaderboard's budget (`benchmarks/validation/content_reg_microlens/budget.yaml`: 20 epochs of",
             "8,192-triple batches, learning rate 4e-3, validation every 2nd epoch; not converged), seed 2020, dataset from",
             "`python -m dataset_converters microlens --src ../shared/data/microlens-50k --out dataset --name microlens",
             "--split random --seed 2020 --text tfidf`; each cell `python run_benchmark.py --models <MODEL> --datasets",
             "microlens --seeds 1 --out benchmarks/validation/content_reg_microlens/w<W>[-pow] --data_path=dataset",
             "--config_files benchmarks/validation/content_reg_microlens/budget.yaml --content_reg_weight=<W>",
             "--require_pow=<True|False>`. The table above uses the 20-epoch cells; `ep60-w*` reran two of them with",
             "a 60-epoch cap (`budget60.yaml`) to see whether the order holds closer to convergence.",
             "Best validation NDCG@10 (best epoch / epochs run):", "",
             "| model | epoch cap | content_reg_weight | microlens | / the model's best |", "|---|---|---|---|---|"]
    for cap, setting, t in cells:
        best = max(u["best_valid_score"] for _, _, u in cells if u["model"] == t["model"])
        lines.append(f"| {t['model']} | {cap} | {_label(setting)} | {t['best_valid_score']:.4f} "
                     f"({t['best_epoch']} / {t['epochs_run']}) | {t['best_valid_score'] / best:.3f} |")
    return lines + [""]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", action="store_true", help="only rewrite the table")
    p.add_argument("--weights", type=float, nargs="+", default=WEIGHTS)
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--datasets", nargs="+", default=DATASETS)
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--require_pow", action="store_true", help="the squared form of the penalty (RecBole's require_pow)")
    args = p.parse_args(argv)
    if not args.report:
        run(args.weights, args.models, args.datasets, args.epochs, args.require_pow)
    print(report())


if __name__ == "__main__":
    main()
