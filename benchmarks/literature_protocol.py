"""The literature's test protocol beside ours on DiffMM's TikTok subset: writes benchmarks/literature_protocol.md.

    sh benchmarks/literature_protocol/run.sh          # the two trials (one at a time), then this script
    python benchmarks/literature_protocol.py          # the page again from the trial files

Reads the fixed split's files (which users have validation and test interactions) and the trial
files of ``run.sh`` (LightGCN, seed 2020, ``test_mask`` train+valid and train, both with
``diagnose_best_test_epoch``), and writes the page: the users, the test figures under each mask,
and the validation-selected result beside the best test epoch (the diagnostic). The same pair on
the built-in mm-ml-100k (per-user random split, so every user is in validation and test) shows
what the mask does where users overlap; its split is RecBole's, rebuilt here to count them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

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


def trial(mask: str, dataset: str = "tiktok-diffmm") -> dict:
    folder = f"mask-{mask}" if dataset == "tiktok-diffmm" else f"{dataset}-mask-{mask}"
    path = os.path.join(RUNS, folder, "trials", f"{dataset}__LightGCN__seed2020.json")
    with open(path) as f:
        record = json.load(f)
    if record.get("status") != "ok":
        raise SystemExit(f"{path}: status {record.get('status')}, not a finished trial")
    return record


def recbole_split_users(data_dir: str, dataset: str, seed: int) -> tuple[int, int, int]:
    """(validation users, test users, users in both) of RecBole's split of ``dataset`` for ``seed``, as the trial built it."""
    sys.path.insert(0, os.path.dirname(HERE))
    import recbole_metammf  # noqa: F401  (the plugin's protocol: properties/overall.yaml)
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    config = Config(model="LightGCN", dataset=dataset, config_dict={"data_path": data_path_of(data_dir), "seed": seed,
                                                                    "state": "ERROR"})
    init_seed(config["seed"], config["reproducibility"])
    _, valid, test = data_preparation(config, create_dataset(config))
    users = [set(d.dataset.inter_feat[d.dataset.uid_field].numpy().tolist()) for d in (valid, test)]
    return len(users[0]), len(users[1]), len(users[0] & users[1])


def data_path_of(data_dir: str) -> str:
    return os.path.abspath(data_dir)


def overlap_section(data_dir: str) -> list[str]:
    """The mm-ml-100k pair, if its trial files are there."""
    try:
        rec = {m: trial(m, "mm-ml-100k") for m in MASKS}
    except FileNotFoundError:
        return []
    n_valid, n_test, both = recbole_split_users(data_dir, "mm-ml-100k", rec["train"]["seed"])
    t, d = {m: rec[m]["test_result"] for m in MASKS}, {m: rec[m][DIAG] for m in MASKS}
    keys = ("recall@20", "ndcg@20", "recall@10", "ndcg@10")
    lines = [
        "## Where validation and test users overlap: mm-ml-100k",
        "",
        f"The built-in dataset, per-user random split 8:1:1 (seed {rec['train']['seed']}): {n_valid:,} validation "
        f"users, {n_test:,} test users, **{both:,} in both**. LightGCN, default settings, the same runs but the mask:",
        "",
        "| test_mask | best-validation epoch | " + " | ".join(f"test {k}" for k in keys)
        + " | best test epoch (diagnostic, by " + d["train"]["metric"] + ") | its " + d["train"]["metric"] + " |",
        "|---|---|" + "---|" * len(keys) + "---|---|",
    ]
    for m in MASKS:
        lines.append(f"| `{m}` | {rec[m]['best_epoch']} | " + " | ".join(f"{t[m][k]:.4f}" for k in keys)
                     + f" | {d[m]['best_test_epoch']} | {d[m]['best_test_result'][d[m]['metric']]:.4f} |")
    same_training = rec["train"]["valid_curve"] == rec["train+valid"]["valid_curve"]
    rel = {k: t["train"][k] / t["train+valid"][k] - 1 for k in keys}
    lines += [
        "",
        ("Training and validation are identical in the two runs (the same validation curve, epoch for epoch); "
         if same_training else "The validation curves differ; ")
        + "only the test ranking changes: with the validation items left in it (`train`, MMRec's and DiffMM's way) "
        + ", ".join(f"{k} {rel[k]:+.1%}" for k in keys)
        + ". A validation item the model ranks high takes a top-K slot as a miss there.",
        "",
    ]
    return lines


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
        *overlap_section(data_dir),
        "## Commands",
        "",
        "```bash",
        "sh benchmarks/literature_protocol/run.sh      # the four trials, one at a time (OMP_NUM_THREADS=1), then this page",
        "python benchmarks/literature_protocol.py      # this page again from the trial files",
        "```",
        "",
        "which runs, for each MASK (train+valid, then train),",
        "",
        "```bash",
        "python run_benchmark.py --models LightGCN --datasets tiktok-diffmm --seeds 1 \\",
        "    --out benchmarks/literature_protocol/mask-MASK --data_path=dataset --epochs=300 \\",
        "    --test_mask=MASK --diagnose_best_test_epoch=True",
        "python run_benchmark.py --models LightGCN --datasets mm-ml-100k --seeds 1 \\",
        "    --out benchmarks/literature_protocol/mm-ml-100k-mask-MASK --data_path=dataset \\",
        "    --test_mask=MASK --diagnose_best_test_epoch=True",
        "```",
        "",
        "Trial files (every epoch's validation and test result): "
        "`benchmarks/literature_protocol/*mask-*/trials/*__LightGCN__seed2020.json`; RecBole's logs "
        "of the runs: `benchmarks/literature_protocol/logs/`.",
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
