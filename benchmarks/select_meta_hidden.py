"""Choose ``meta_hidden_size`` (the meta extractor's hidden width) on the *validation* split (issue 12).

The released code's extractor is ``d_in -> d_in -> d_s`` (``meta_hidden_size: ~``); at TikTok's
d_in = 288 it is most of a MetaMMF_GCN step's dense work (``benchmarks/RESULTS.md``, profile). A
narrower width is a departure from the reference, so it becomes the default only if it is **at least
as accurate on validation** as d_in: its mean relative best validation score over the real datasets
(score / the better of the two widths on that dataset, datasets counting equally) is not lower than
d_in's. The rule was written before any cell was run; no margin in the narrower width's favour.

Each cell: trials through the benchmark runner, seeds 2020-2022 on mm-ml-100k and tiktok-diffmm (one
seed's validation score moves by about ±15 % there: MetaMMF_GCN's three TikTok seeds on the board are .0636,
.0538, .0472), seed 2020 on MicroLens-50k under its leaderboard's budget
(``benchmarks/validation/content_reg_microlens/budget.yaml``); early-stopped on the dataset's validation
metric, every other key the model's default YAML. A cell's score is the mean over its seeds. Test
metrics are stored in the trial files and not used.

    python -m dataset_converters diffmm --src ../shared/data/tiktok-diffmm --out dataset --name tiktok-diffmm
    python -m dataset_converters microlens --src ../shared/data/microlens-50k --out dataset --name microlens \\
        --split random --seed 2020 --text tfidf
    python benchmarks/select_meta_hidden.py            # every cell (resumes: finished trials are kept)
    python benchmarks/select_meta_hidden.py --report   # only rewrite benchmarks/meta_hidden_validation.md
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import sys
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)
sys.path.insert(0, HERE)

from select_content_reg import MICROLENS, _ok_trials  # noqa: E402

WIDTHS = [None, 64]  # None: d_in, the released code's width
MODELS = ["MetaMMF_MF", "MetaMMF_GCN"]
DATASETS = ["mm-ml-100k", "tiktok-diffmm"]
BUDGET = os.path.join(MICROLENS, "budget.yaml")
OUT = os.path.join(HERE, "validation", "meta_hidden")
TABLE = os.path.join(HERE, "meta_hidden_validation.md")


def _name(width) -> str:
    return "d_in" if width is None else str(width)


def run(widths, models, microlens: bool, seeds: int) -> None:
    import run_benchmark

    for w in widths:
        common = ["--models", *models, "--data_path=dataset", f"--meta_hidden_size={'~' if w is None else w}"]
        calls = [["--datasets", *DATASETS, "--seeds", str(seeds), "--out", os.path.join(OUT, _name(w)), "--epochs=300"]]
        if microlens:
            calls.append(["--datasets", "microlens", "--seeds", "1", "--out", os.path.join(OUT, _name(w) + "-microlens"),
                          "--config_files", BUDGET])
        for call in calls:
            argv = common + call
            print("python run_benchmark.py " + " ".join(argv), flush=True)
            run_benchmark.main(argv)


def report() -> str:
    trials = {}
    for directory in glob.glob(os.path.join(OUT, "*")):
        width = os.path.basename(directory).removesuffix("-microlens")
        for t in _ok_trials(directory):
            trials.setdefault((t["model"], t["dataset"], width), []).append(t)
    rows = {k: statistics.mean(t["best_valid_score"] for t in ts) for k, ts in trials.items()}
    lines = [
        "# meta_hidden_size chosen on validation",
        "",
        "Produced by `python benchmarks/select_meta_hidden.py` (seeds 2020-2022 on mm-ml-100k and tiktok-diffmm,",
        "seed 2020 on MicroLens-50k; early stopping on the dataset's validation metric: NDCG@10 on mm-ml-100k and",
        "MicroLens-50k, Recall@20 on tiktok-diffmm; MicroLens under its leaderboard's budget, 20 epochs of",
        "8,192-triple batches at lr 4e-3; every other key the model's default YAML). Cells: **best validation",
        "score**, mean over the seeds run (each seed's score and best epoch in brackets). `rel.`: mean over the",
        "datasets of the cell / the better width's cell on that dataset. Rule, fixed before the runs: the narrower",
        "width becomes the default only if its `rel.` is not lower than d_in's (the released code's).",
        "Trial files (test metrics too, not used): `benchmarks/validation/meta_hidden/`.",
        "",
    ]
    for model in sorted({m for m, _, _ in rows}):
        datasets = sorted({d for m, d, _ in rows if m == model})
        widths = sorted({w for m, _, w in rows if m == model}, key=lambda w: (w != "d_in", w))
        lines += [f"## {model}", "", "| meta_hidden_size | " + " | ".join(datasets) + " | rel. |",
                  "|---|" + "---|" * (len(datasets) + 1)]
        rel = {}
        for w in widths:
            cells = []
            for d in datasets:
                ts = sorted(trials.get((model, d, w), []), key=lambda t: t["seed"])
                seeds = ", ".join(f"{t['best_valid_score']:.4f} @{t['best_epoch']}" for t in ts)
                cells.append("—" if not ts else f"{rows[(model, d, w)]:.4f} ({seeds})")
            if all((model, d, w) in rows for d in datasets):
                rel[w] = sum(rows[(model, d, w)] / max(rows[(model, d, v)] for v in widths if (model, d, v) in rows)
                             for d in datasets) / len(datasets)
            lines.append(f"| {w} | " + " | ".join(cells) + (f" | {rel[w]:.3f} |" if w in rel else " | — |"))
        if "d_in" in rel and len(rel) > 1:
            narrow = [w for w in rel if w != "d_in" and rel[w] >= rel["d_in"]]
            chosen = max(narrow, key=rel.get) if narrow else "d_in"
            short = [k for k in trials if k[0] == model and k[1] in DATASETS and len(trials[k]) < 3]
            lines += ["", f"Chosen by the rule: **{chosen}**" + ("" if narrow else " (the narrower width scored lower)")
                      + (f" (provisional: {len(short)} cells have fewer than 3 seeds)" if short else "")]
        lines.append("")
    text = "\n".join(lines)
    Path(TABLE).write_text(text)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--report", action="store_true", help="only rewrite the table")
    p.add_argument("--widths", nargs="+", default=[_name(w) for w in WIDTHS], help="d_in or an int")
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--seeds", type=int, default=3, help="seeds on mm-ml-100k and tiktok-diffmm (MicroLens: 1)")
    p.add_argument("--no-microlens", dest="microlens", action="store_false")
    args = p.parse_args(argv)
    if not args.report:
        run([None if w == "d_in" else int(w) for w in args.widths], args.models, args.microlens, args.seeds)
    print(report())


if __name__ == "__main__":
    main()
