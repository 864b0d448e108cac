"""The literature's test protocol beside ours on DiffMM's TikTok subset: writes benchmarks/literature_protocol.md.

    sh benchmarks/literature_protocol/run.sh          # the two trials (one at a time), then this script
    python benchmarks/literature_protocol.py          # the page again from the trial files

Reads the fixed split's files (which users have validation and test interactions) and the trial
files of ``run.sh`` (LightGCN, seed 2020, ``test_mask`` train+valid and train, both with
``diagnose_best_test_epoch``), and writes the page: the users, the test figures under each mask,
and the validation-selected result beside the best test epoch (the diagnostic).
"""

from __future__ import annotations

import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
RUNS = os.path.join(HERE, "literature_protocol")
MASKS = ("train+valid", "train")
METRICS = ("recall@20", "ndcg@20")
DIAG = "diagnostic_best_test_over_epochs"


def users_by_split(folder: str, name: str) -> dict:
    """split -> {user token: set of item tokens} of the fixed split's atomic files."""
    out = {}
    for part in ("train", "valid", "test"):
        users: dict = {}
        with open(os.path.join(folder, f"{name}.{part}.inter")) as f:
            next(f)
            for line in f:
                u, i = line.rstrip("\n").split("\t")[:2]
                users.setdefault(u, set()).add(i)
        out[part] = users
    return out


def trial(mask: str) -> dict:
    path = os.path.join(RUNS, f"mask-{mask}", "trials", "tiktok-diffmm__LightGCN__seed2020.json")
    with open(path) as f:
        record = json.load(f)
    if record.get("status") != "ok":
        raise SystemExit(f"{path}: status {record.get('status')}, not a finished trial")
    return record


def page(data_dir: str) -> str:
    split = users_by_split(os.path.join(data_dir, "tiktok-diffmm"), "tiktok-diffmm")
    valid, test = split["valid"], split["test"]
    both = set(valid) & set(test)
    n_valid_inter = sum(map(len, valid.values()))
    n_test_inter = sum(map(len, test.values()))
    rec = {m: trial(m) for m in MASKS}
    t, d = {m: rec[m]["test_result"] for m in MASKS}, {m: rec[m][DIAG] for m in MASKS}

    def cells(result):
        return " | ".join(f"{result[k]:.4f}" for k in METRICS)

    identical = all(t["train"][k] == t["train+valid"][k] for k in t["train"]) and all(
        p["result"] == q["result"] for p, q in zip(d["train"]["test_curve"], d["train+valid"]["test_curve"]))
    base = rec["train+valid"]
    lines = [
        "# The literature's test protocol beside ours (TikTok subset)",
        "",
        "Issue 22, item 4: MMRec's and DiffMM's code test differently from RecBole in two ways, now",
        "available as options beside the plugin's protocol ([Protocol](../docs/protocol.md#the-literatures-way-side-by-side)):",
        "`test_mask: train` masks only each user's training items at test (RecBole: training and",
        "validation items), and `diagnose_best_test_epoch: True` reports, as a labelled diagnostic, the best",
        "test score over the epochs (DiffMM's code never loads the validation split and prints that).",
        "",
        "## The users",
        "",
        f"DiffMM's TikTok subset (`dataset/tiktok-diffmm`, the data's own split): {len(valid):,} validation users "
        f"({n_valid_inter:,} interactions), {len(test):,} test users ({n_test_inter:,} interactions), "
        f"**{len(both)} users in both**. "
        + ("So no test user has a validation item that the mask could keep or remove: the two masks must give "
           "the same test figures here." if not both else
           "The mask decides the test ranking of those users."),
        "",
        "## LightGCN, seed 2020, default settings",
        "",
        "| test_mask | best-validation epoch | test R@20 | test N@20 | best test epoch (diagnostic) | "
        "its R@20 | its N@20 | epochs run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in MASKS:
        lines.append(f"| `{m}` | {rec[m]['best_epoch']} | {cells(t[m])} | {d[m]['best_test_epoch']} | "
                     f"{cells(d[m]['best_test_result'])} | {rec[m]['epochs_run']} |")
    gain = {k: d["train+valid"]["best_test_result"][k] / t["train+valid"][k] - 1 for k in METRICS}
    lines += [
        "",
        ("The two masks give **identical** test results, every metric and every epoch of the diagnostic's "
         "per-epoch test curve, as the disjoint users require."
         if identical else "The two masks give **different** test results."),
        f"Selecting the epoch on test, as DiffMM's code does, reports Recall@20 "
        f"{d['train+valid']['best_test_result']['recall@20']:.4f} at epoch {d['train+valid']['best_test_epoch']} "
        f"instead of the validation-selected {t['train+valid']['recall@20']:.4f} at epoch {base['best_epoch']} "
        f"({gain['recall@20']:+.1%}; NDCG@20 {gain['ndcg@20']:+.1%}): the optimism of choosing on the data one "
        "reports, on one seed. It is a diagnostic, never a result: the leaderboards use the validation-selected "
        "figures only.",
        "",
        "Validation Recall@20 of the selected epoch: "
        f"{base['best_valid_result']['recall@20']:.4f}. Early stopping: patience {base['training']['stopping_step']} "
        f"evaluations, cap {base['training']['epochs']} epochs. The diagnostic's test evaluations took "
        f"{d['train+valid']['test_time_s']:.0f} s of the {base['total_time_s']:.0f} s run (shared machine, one "
        "thread).",
        "",
        "## Commands",
        "",
        "```bash",
        "sh benchmarks/literature_protocol/run.sh      # both trials, one at a time (OMP_NUM_THREADS=1), then this page",
        "python benchmarks/literature_protocol.py      # this page again from the trial files",
        "```",
        "",
        "which runs, for each mask,",
        "",
        "```bash",
        "python run_benchmark.py --models LightGCN --datasets tiktok-diffmm --seeds 1 \\",
        "    --out benchmarks/literature_protocol/mask-MASK --data_path=dataset --epochs=300 \\",
        "    --test_mask=MASK --diagnose_best_test_epoch=True",
        "```",
        "",
        "Trial files (every epoch's validation and test result): "
        "`benchmarks/literature_protocol/mask-*/trials/tiktok-diffmm__LightGCN__seed2020.json`; RecBole's logs "
        "of the two runs: `benchmarks/literature_protocol/logs/`.",
        "",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data_path", default="dataset", help="folder holding tiktok-diffmm/ (default dataset)")
    args = p.parse_args(argv)
    text = page(args.data_path)
    out = os.path.join(HERE, "literature_protocol.md")
    with open(out, "w") as f:
        f.write(text)
    print(out)


if __name__ == "__main__":
    main()
