"""Diagnostic: how much MetaMMF_MF's fused content helps or hurts its score.

Trains MetaMMF_MF through RecBole's own trainer with the fused content ``e_i^m`` of every
item multiplied by ``--alpha`` before the inner product (``--alpha 0``: the ID half alone, a
plain MF with the same users, items and training; ``--alpha 1``: the model as it is), on
the modalities given by ``--modalities`` (default: the dataset's own), under the MicroLens
leaderboard's budget (benchmarks/microlens-budget.yaml: 20 epochs, batches of 8,192, lr
4e-3, validation every 2nd epoch), and prints the test metrics of the best validation epoch.

    python benchmarks/diagnose_content.py --alpha 0
    python benchmarks/diagnose_content.py --alpha 1 --modalities textual
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

warnings.filterwarnings("ignore")

import recbole_metammf  # noqa: E402,F401  (registers the plugin)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpha", type=float, default=1.0, help="factor on the fused content in the score")
    parser.add_argument("--modalities", default=None, help="comma-separated modality_fields (default: the dataset's)")
    parser.add_argument("--dataset", default="microlens")
    parser.add_argument("--data_path", default=str(REPO / "dataset"))
    parser.add_argument("--seed", type=int, default=2020)
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
    config = Config(model="MetaMMF_MF", dataset=args.dataset, config_dict=cfg)
    init_seed(args.seed, config["reproducibility"])
    train, valid, test = data_preparation(config, create_dataset(config))
    init_seed(args.seed, config["reproducibility"])
    model = get_model("MetaMMF_MF")(config, train.dataset).to(config["device"])
    fused = config["fused_size"]
    represent = model.item_representation

    def item_representation(items=None):
        e = represent(items)
        return torch.cat([args.alpha * e[:, :fused], e[:, fused:]], dim=-1)

    model.item_representation = item_representation  # used by training and by evaluation alike
    trainer = get_trainer(config["MODEL_TYPE"], "MetaMMF_MF")(config, model)
    t0 = time.perf_counter()
    best_valid, _ = trainer.fit(train, valid, verbose=False, saved=True)
    result = trainer.evaluate(test, load_best_model=True)
    print(f"alpha {args.alpha} modalities {config['modality_fields']} seed {args.seed}: best valid NDCG@10 "
          f"{best_valid:.4f}, test NDCG@10 {result['ndcg@10']:.4f}, test Recall@10 {result['recall@10']:.4f} "
          f"({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
