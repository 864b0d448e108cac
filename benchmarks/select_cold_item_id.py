"""Choose each multimodal model's ``cold_item_id`` default on the *validation* split.

``cold_item_id`` only changes how items with no training interaction are scored at
evaluation / serving time (training is the same), so one training per model suffices: each
model is trained once with its default YAML (seed 2020, ``cold_item_id: none``, early stopping
on the dataset's validation metric), its best checkpoint is reloaded, and the validation split
is evaluated under ``none``, ``zero`` and ``mean``. The default becomes the option with the
most validation hits in the top 20 (HR@20 x validation interactions; the cold items' hits are
among them), if it beats ``none`` by more than one hit (a single hit is noise); else ``none``.
Test metrics are recorded beside them and never used for the choice.

    python -m dataset_converters diffmm --src ../shared/data/tiktok-diffmm --out dataset --name tiktok-diffmm
    python benchmarks/select_cold_item_id.py --data_path dataset     # trains what is missing (resumes)
    python benchmarks/select_cold_item_id.py --report                # only rewrite the table

Results: ``benchmarks/validation/cold_item_id/<dataset>__<model>.json`` and the table
``benchmarks/cold_item_id_validation.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, REPO)

MODELS = ["MetaMMF_MF", "MetaMMF_GCN", "VBPR", "MMGCN", "GRCN", "LATTICE", "FREEDOM"]
MODES = ["none", "zero", "mean"]
OUT = os.path.join(HERE, "validation", "cold_item_id")
TABLE = os.path.join(HERE, "cold_item_id_validation.md")
SHOWN = ["coldrecall@20", "coldndcg@20", "recall@20", "ndcg@20"]


NOTE_TIKTOK = (
    "What the figures say. The validation split holds 3,051 interactions, 223 of them (one per user) on cold "
    "items, so a validation cold R@20 of 0.0045 is a single hit. Trained to convergence with their default "
    "settings, the models almost never put a cold item in a validation top 20 whichever option scores it: the "
    "graph models rank the warm items their propagation lifts above any node without edges, and MetaMMF_MF and "
    "VBPR, regularised on their content (`content_reg_weight` 0.1 and 1.0), lean on their ID part. So for cold "
    "items themselves no option helps here, and six models keep `none`. LATTICE is the exception, for another "
    "reason: its item-item graph is built from content, so cold items are neighbours of warm ones, and their "
    "pushed-down ID vectors are propagated into the warm items' representations; replacing them by the warm "
    "mean (`mean`) gives +16 validation hits (Recall@20 0.0747 -> 0.0800), the same gain as in a first run of "
    "this script (+15). FREEDOM, whose frozen content graph links cold items to warm ones too, shows no such "
    "gain (the same hits; NDCG@20 +0.0001). An earlier run, before `content_reg_weight` was "
    "chosen (0 for every model, 30-epoch cap; `benchmarks/validation/cold_item_id/earlier/`, written by an "
    "earlier version of this script), showed the option doing what it is for on content-led models: `zero` "
    "lifted the cold items of MetaMMF_MF (validation cold R@20 0.0090 -> 0.0179, 2 -> 4 hits; overall Recall@20 "
    "0.0367 -> 0.0377) and of VBPR (0.0179 -> 0.0224, though its overall Recall@20 fell, 0.0216 -> 0.0210). The "
    "option stays available for cold-start use (`--cold_item_id=zero`, e.g. on a `--cold-items` split)."
)


def result_path(dataset: str, model: str) -> str:
    return os.path.join(OUT, f"{dataset}__{model}.json")


def _head() -> str:
    import subprocess

    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO)
    return out.stdout.strip()


def run_one(model: str, dataset: str, data_path: str, epochs: int, seed: int) -> dict:
    import torch

    import recbole_metammf  # noqa: F401
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    work = tempfile.mkdtemp(prefix="cold_item_id_")
    os.chdir(work)  # RecBole's log/ and saved/
    config = Config(model=model, dataset=dataset, config_dict={
        "data_path": os.path.abspath(data_path), "seed": seed, "epochs": epochs, "cold_item_id": "none",
        "checkpoint_dir": os.path.join(work, "saved"), "show_progress": False, "state": "WARNING",
    })
    init_seed(config["seed"], config["reproducibility"])
    data = create_dataset(config)
    train, valid, test = data_preparation(config, data)
    net = get_model(model)(config, train._dataset).to(config["device"])
    trainer = Trainer(config, net)
    start = time.time()
    best_score, _ = trainer.fit(train, valid, saved=True, show_progress=False)
    train_time = time.time() - start
    net.load_state_dict(torch.load(trainer.saved_model_file, weights_only=True)["state_dict"])
    out = {"model": model, "dataset": dataset, "seed": seed, "epochs_cap": epochs, "best_epoch": None,
           "valid_metric": config["valid_metric"], "train_time_s": round(train_time, 1), "valid": {}, "test": {},
           "n_cold_items": int(net.cold_items.sum()),
           "n_valid_interactions": len(valid.dataset.inter_feat),
           "n_valid_cold_interactions": int(net.cold_items[valid.dataset.inter_feat[data.iid_field]].sum()),
           "config": {k: config[k] for k in ("content_reg_weight", "reg_weight", "learning_rate", "train_batch_size")
                      if k in config},
           "commit": _head()}
    for mode in MODES:
        net.cold_item_id = mode
        for split, loader in (("valid", valid), ("test", test)):
            net.restore_user_e = net.restore_item_e = None  # the eval cache holds the previous mode's vectors
            out[split][mode] = {k: float(v) for k, v in trainer.evaluate(loader, load_best_model=False).items()}
    out["best_epoch"] = int(torch.load(trainer.saved_model_file, weights_only=True)["epoch"])
    return out


def hits(result: dict, mode: str) -> int:
    """Validation hits in the top 20 under ``mode``: HR@20 (total hits / total interactions) x interactions."""
    return round(result["valid"][mode]["hr@20"] * result["n_valid_interactions"])


def choose(result: dict) -> str:
    """The option with the most validation hits in the top 20 (cold items' hits included), if it beats
    ``none`` by more than one hit; else ``none``."""
    best = max(MODES, key=lambda m: (hits(result, m), m == "none"))
    return best if hits(result, best) - hits(result, "none") > 1 else "none"


# A checkpoint's choice checked end to end: trained with the option in effect at every validation epoch
# (which drives early stopping), 3 seeds each, best validation score compared; where it loses, ``none`` stays.
END_TO_END = {
    ("tiktok-diffmm", "LATTICE"): (
        "none",
        "**End to end, LATTICE's `mean` lost, so LATTICE keeps `none`.** The table re-evaluates one checkpoint "
        "trained under `none`; but `cold_item_id` also acts at every validation epoch of a training, and those "
        "epochs decide early stopping. Trained with `mean` in effect (the TikTok leaderboard, "
        "`python run_benchmark.py --file benchmarks/tiktok-defaults.yaml`, seeds 2020-2022, commit 36d935a), "
        "LATTICE's best validation Recall@20 was .0872 / .0649 / .0869 (best epochs 73 / 6 / 60), against "
        ".0901 / .0888 / .0934 (119 / 82 / 107) with `none` (the same board on commit 34172e8): lower in every "
        "seed, seed 2021 stopping at epoch 18. (Test Recall@20 fell from .0891 to .0747 on average; not used "
        "for the choice.)",
    ),
}


def final_choice(r: dict) -> str:
    return END_TO_END.get((r["dataset"], r["model"]), (choose(r),))[0]


def report() -> str:
    rows = []
    for name in sorted(os.listdir(OUT)) if os.path.isdir(OUT) else []:
        if name.endswith(".json"):
            rows.append(json.load(open(os.path.join(OUT, name))))
    order = {m: i for i, m in enumerate(MODELS)}
    rows.sort(key=lambda r: (r["dataset"], order.get(r["model"], 99)))
    caps = sorted({r["epochs_cap"] for r in rows})
    commands = " and ".join(
        "`python benchmarks/select_cold_item_id.py --data_path dataset --epochs {} --models {}`".format(
            cap, " ".join(r["model"] for r in rows if r["epochs_cap"] == cap))
        for cap in caps)
    lines = [
        "# cold_item_id chosen on validation",
        "",
        f"Produced by {commands} after "
        "`python -m dataset_converters diffmm --src ../shared/data/tiktok-diffmm --out dataset --name tiktok-diffmm` "
        "(the TikTok subset DiffMM distributes, its own split: 465 items without a training interaction, "
        "193 of them in validation (223 interactions), 340 in test (449)).",
        "",
        "Each model trained once with its default YAML (seed 2020, `cold_item_id: none`, early stopping on the "
        "dataset's validation metric, Recall@20, patience 10, epoch cap as the TikTok leaderboard's "
        "`benchmarks/tiktok-defaults.yaml`); its best checkpoint evaluated on validation under each option (`cold_item_id` "
        "acts at evaluation only, so one training serves all three). Choice: the option with the most validation "
        "hits in the top 20 (HR@20 x validation interactions; cold items' hits included), when it beats `none` by "
        "more than one hit (a single hit is noise), else `none`. Test figures are shown for information and were "
        "not used.",
        "",
        "| dataset | model | epochs (best / cap) | option | valid hits@20 | valid cold R@20 | valid cold NDCG@20 | "
        "valid R@20 | valid NDCG@20 | test cold R@20 | test cold NDCG@20 | test R@20 | chosen |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        chosen = choose(r)
        for mode in MODES:
            v, t = r["valid"][mode], r["test"][mode]
            cells = [f"{v.get(k, float('nan')):.4f}" for k in SHOWN] + [
                f"{t.get(k, float('nan')):.4f}" for k in ("coldrecall@20", "coldndcg@20", "recall@20")]
            mark = "**yes**" if mode == chosen else ""
            if mode == final_choice(r) != chosen:
                mark = "**yes** (end to end)"
            elif mode == chosen != final_choice(r):
                mark = "checkpoint only"
            lines.append(f"| {r['dataset']} | {r['model']} | {r['best_epoch']} / {r['epochs_cap']} | `{mode}` | "
                         f"{hits(r, mode)} | " + " | ".join(cells) + f" | {mark} |")
    chosen = {r["model"]: final_choice(r) for r in rows}
    lines += ["", "Chosen defaults: " + ", ".join(f"{m} `{c}`" for m, c in chosen.items()) + "."]
    lines += [text for (d, m), (_, text) in END_TO_END.items() if any(r["dataset"] == d and r["model"] == m
                                                                       for r in rows) for text in ("", text)]
    if any(r["dataset"] == "tiktok-diffmm" for r in rows):
        lines += ["", NOTE_TIKTOK]
    recorded = [r for r in rows if r.get("config")]
    if recorded:
        lines += ["", "Recorded settings: " + "; ".join(
            f"{r['model']} " + ", ".join(f"`{k}: {v}`" for k, v in r["config"].items()) + f" (commit {r['commit']})"
            for r in recorded) + "."]
    text = "\n".join(lines) + "\n"
    with open(TABLE, "w") as f:
        f.write(text)
    return text


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS)
    p.add_argument("--dataset", default="tiktok-diffmm")
    p.add_argument("--data_path", default="dataset")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--report", action="store_true", help="only rewrite the table from the result files")
    args = p.parse_args(argv)
    if not args.report:
        os.makedirs(OUT, exist_ok=True)
        here = os.getcwd()
        data_path = os.path.abspath(args.data_path)
        for model in args.models:
            path = result_path(args.dataset, model)
            if os.path.exists(path):
                print(f"{model}: done ({path})", flush=True)
                continue
            print(f"{model}: training ...", flush=True)
            result = run_one(model, args.dataset, data_path, args.epochs, args.seed)
            os.chdir(here)
            with open(path + ".tmp", "w") as f:
                json.dump(result, f, indent=1)
            os.replace(path + ".tmp", path)
            print(f"{model}: {result['train_time_s']}s, best epoch {result['best_epoch']}, chosen {choose(result)}", flush=True)
    print(report())


if __name__ == "__main__":
    main()
