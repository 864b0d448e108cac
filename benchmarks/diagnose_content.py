"""Diagnostic: how much MetaMMF_MF's fused content helps or hurts its score.

Trains MetaMMF_MF through RecBole's own trainer with the fused content ``e_i^m`` of every
item multiplied by ``--alpha`` before the inner product (``--alpha 0``: the ID half alone, a
plain MF with the same users, items and training; ``--alpha 1``: the model as it is), on
the modalities given by ``--modalities`` (default: the dataset's own), under the MicroLens
leaderboard's budget (benchmarks/microlens-budget.yaml: 20 epochs, batches of 8,192, lr
4e-3, validation every 2nd epoch), and prints the test metrics of the best validation epoch.

    python benchmarks/diagnose_content.py --alpha 0
    python benchmarks/diagnose_content.py --alpha 1 --modalities textual

``--model`` and ``--set KEY=VALUE`` (repeatable, YAML values) run another MetaMMF model or
configuration under the same budget; ``--reg-scope fused`` makes ``content_reg_weight``
penalise only the first ``fused_size`` columns of the regularised vectors (the dimensions that
meet the fused content in the score), leaving the ID columns to ``reg_weight``. The MicroLens
diagnosis of MetaMMF_GCN on LightGCN's propagation (README, "Results on MicroLens-50k"):

    python benchmarks/diagnose_content.py --model MetaMMF_GCN --set propagation=lightgcn \
        --set learning_rate=0.012 --set content_reg_weight=1.0 --set reg_weight=1e-5 --reg-scope fused --seed 2020
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import warnings  # noqa: E402

import torch  # noqa: E402
import yaml  # noqa: E402

warnings.filterwarnings("ignore")

import recbole_metammf  # noqa: E402,F401  (registers the plugin)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpha", type=float, default=1.0, help="factor on the fused content in the score")
    parser.add_argument("--modalities", default=None, help="comma-separated modality_fields (default: the dataset's)")
    parser.add_argument("--dataset", default="microlens")
    parser.add_argument("--data_path", default=str(REPO / "dataset"))
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--model", default="MetaMMF_MF", choices=["MetaMMF_MF", "MetaMMF_GCN"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config key (YAML value)")
    parser.add_argument("--reg-scope", choices=["whole", "fused"], default="whole",
                        help="what content_reg_weight penalises: the whole vectors (the model) or their fused columns")
    args = parser.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads the command line too

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    torch.set_num_threads(1)
    data_path = os.path.abspath(args.data_path)
    os.chdir(tempfile.mkdtemp())  # RecBole's log/ and saved/ go there
    cfg = {"data_path": data_path, "state": "ERROR", "show_progress": False, "seed": args.seed,
           "epochs": 20, "eval_step": 2, "train_batch_size": 8192, "learning_rate": 0.004}
    if args.modalities:
        cfg["modality_fields"] = args.modalities.split(",")
    for item in args.set:
        key, _, value = item.partition("=")
        cfg[key] = yaml.safe_load(value)
    config = Config(model=args.model, dataset=args.dataset, config_dict=cfg)
    init_seed(args.seed, config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    init_seed(args.seed, config["reproducibility"])
    model = get_model(args.model)(config, train.dataset).to(config["device"])
    fused = config["fused_size"]
    represent = model.item_representation
    if args.reg_scope == "fused":
        regularised = model.content_reg_embeddings

        def content_reg_embeddings(*a):
            return [e[:, :fused] for e in regularised(*a)]

        model.content_reg_embeddings = content_reg_embeddings

    def item_representation(*items):  # MetaMMF_MF takes the items (or none: all), MetaMMF_GCN none
        e = represent(*items)
        return torch.cat([args.alpha * e[:, :fused], e[:, fused:]], dim=-1)

    if args.alpha != 1.0:  # (x 1.0 changes no number)
        model.item_representation = item_representation  # used by training and by evaluation alike
    trainer = get_trainer(config["MODEL_TYPE"], args.model)(config, model)
    t0 = time.perf_counter()
    best_valid, _ = trainer.fit(train, valid, verbose=False, saved=True)
    result = trainer.evaluate(test, load_best_model=True)
    print(f"{args.model} alpha {args.alpha} reg-scope {args.reg_scope} {' '.join(args.set)} modalities "
          f"{config['modality_fields']} seed {args.seed}: best valid NDCG@10 "
          f"{best_valid:.4f}, test NDCG@10 {result['ndcg@10']:.4f}, test Recall@10 {result['recall@10']:.4f} "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
