"""Issue 25 diagnostic: what MetaMMF's parts do epoch by epoch (validation, and the lengths behind it).

Trains a model through RecBole's own trainer one epoch at a time and prints, after each epoch, the
validation Recall@20 / NDCG@20 and: the mean row norm of the fused content e^m and of the ID part e^c
(before propagation), of the final user and item vectors, the mean |gain| of ``content_scale`` (rms /
gate), and the correlation of each item's mean score (over 2,000 users) with its training popularity.
The output is written to ``benchmarks/robust/diagnose/<name>.txt`` beside the command that made it.

    python benchmarks/diagnose_content_gain.py --model MetaMMF_MF --dataset tiktok-diffmm --epochs 8
    python benchmarks/diagnose_content_gain.py --model MetaMMF_GCN --dataset tiktok-diffmm --epochs 4 --set learning_rate=0.00025
    python benchmarks/diagnose_content_gain.py --model MetaMMF_GCN --dataset tiktok-diffmm --epochs 8 --drop_users_above 49

``--drop_users_above N`` trains on a copy of a fixed-split dataset (``NAME.train/valid/test.inter``) without
the users who have more than N training interactions (all their rows, in every split; the items stay): on
the TikTok subset the 103 users with 50 or more make 71 % of the training triples.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
import torch
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="MetaMMF_GCN")
    parser.add_argument("--dataset", default="tiktok-diffmm")
    parser.add_argument("--data_path", default=os.path.join(os.path.dirname(HERE), "dataset"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config key (YAML value)")
    parser.add_argument("--drop_users_above", type=int, default=None, metavar="N",
                        help="train on a copy without the users who have more than N training interactions")
    args = parser.parse_args(argv)
    if args.drop_users_above is not None:
        with tempfile.TemporaryDirectory() as tmp:
            args.data_path = without_heavy_users(args.data_path, args.dataset, args.drop_users_above, tmp)
            return run(args)
    return run(args)


def without_heavy_users(data_path: str, dataset: str, limit: int, tmp: str) -> str:
    """A copy of ``data_path/dataset`` in ``tmp`` without the users who have more than ``limit`` training rows."""
    import pandas as pd

    src, dst = os.path.join(data_path, dataset), os.path.join(tmp, dataset)
    os.makedirs(dst)
    train_file = os.path.join(src, f"{dataset}.train.inter")
    if not os.path.isfile(train_file):
        raise FileNotFoundError(f"{train_file}: missing (--drop_users_above needs a fixed-split dataset)")
    tables = {}
    for name in os.listdir(src):
        if name.endswith(".inter"):
            tables[name] = pd.read_csv(os.path.join(src, name), sep="\t", dtype=str)
        else:
            shutil.copy(os.path.join(src, name), os.path.join(dst, name))
    train = tables[f"{dataset}.train.inter"]
    user = train.columns[0]
    counts = train[user].value_counts()
    heavy = set(counts[counts > limit].index)
    for name, table in tables.items():
        table[~table[user].isin(heavy)].to_csv(os.path.join(dst, name), sep="\t", index=False)
    kept = int((~train[user].isin(heavy)).sum())
    print(f"--drop_users_above {limit}: {len(heavy)} users dropped ({len(train) - kept} of {len(train)} "
          f"training rows); training on {kept}", flush=True)
    return tmp


def run(args) -> None:
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_trainer, init_seed

    from recbole_metammf.registry import get_model

    extra = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.set)}
    model_class = get_model(args.model)
    config = Config(model=model_class, dataset=args.dataset, config_dict={
        "data_path": args.data_path, "show_progress": False, "state": "ERROR", "seed": args.seed, **extra})
    init_seed(config["seed"], config["reproducibility"])
    torch.set_num_threads(1)
    train, valid, _ = data_preparation(config, create_dataset(config))
    model = model_class(config, train._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    trainer.eval_collector.data_collect(train)
    items = train._dataset.inter_feat[config["ITEM_ID_FIELD"]].numpy()
    popularity = np.bincount(items, minlength=model.n_items).astype(float)
    fused = model.fusion.layers[-1].out_dim

    name = "__".join([args.dataset, args.model, *(f"{k}={v}" for k, v in extra.items())])
    if args.drop_users_above is not None:
        name += f"__drop_users_above={args.drop_users_above}"
    out_dir = os.path.join(HERE, "robust", "diagnose")
    os.makedirs(out_dir, exist_ok=True)
    lines = [f"python benchmarks/diagnose_content_gain.py --model {args.model} --dataset {args.dataset} "
             f"--epochs {args.epochs} --seed {args.seed}" + "".join(f" --set {kv}" for kv in args.set)
             + ("" if args.drop_users_above is None else f" --drop_users_above {args.drop_users_above}"), ""]

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    def lengths() -> str:
        model.eval()
        with torch.no_grad():
            users, item_vectors = model.compute_all()
            ego = model.item_representation()
            mean_score = (users[:2000] @ item_vectors.T).mean(0).cpu().numpy()
            gain = getattr(model.fusion.output_scale, "gain", None)
        corr = np.corrcoef(mean_score[1:], popularity[1:])[0, 1]
        return (f"content |e^m| {ego[:, :fused].norm(dim=1).mean():.4f}  ID |e^c| {ego[:, fused:].norm(dim=1).mean():.4f}  "
                f"final user {users.norm(dim=1).mean():.4f} item {item_vectors.norm(dim=1).mean():.4f}  "
                f"gain {'-' if gain is None else f'{gain.abs().mean():.4f}'}  score~popularity {corr:.3f}")

    result = trainer.evaluate(valid, load_best_model=False, show_progress=False)
    say(f"init: valid Recall@20 {result['recall@20']:.4f} NDCG@20 {result['ndcg@20']:.4f}  {lengths()}")
    for epoch in range(args.epochs):
        model.train()
        loss = trainer._train_epoch(train, epoch, show_progress=False)
        result = trainer.evaluate(valid, load_best_model=False, show_progress=False)
        say(f"epoch {epoch}: loss {float(loss):.3f}  valid Recall@20 {result['recall@20']:.4f} NDCG@20 "
            f"{result['ndcg@20']:.4f}  {lengths()}")
    with open(os.path.join(out_dir, name + ".txt"), "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
