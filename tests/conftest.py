"""Shared fixtures: every test runs in its own temporary working directory
(RecBole writes log/, log_tensorboard/ and saved/ there), and a small planted
multimodal dataset in which item features decide what users like."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

import recbole_metammf  # noqa: E402,F401  (registers the plugin)


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # RecBole's Config also reads sys.argv; keep pytest's own arguments out of it
    monkeypatch.setattr(sys, "argv", [sys.argv[0]])
    yield


def write_planted_dataset(
    root: Path,
    name: str = "planted",
    n_users: int = 300,
    n_items: int = 400,
    n_clusters: int = 8,
    per_user: int = 24,
    noise: float = 0.1,
    with_tokens: bool = True,
    with_audio: bool = True,
    seed: int = 0,
) -> Path:
    """Atomic files where a user's taste is one item cluster and the cluster shows in the features.

    Items carry a 16-d 'visual' vector centred on their cluster's centre, optionally an 8-d
    'audio' vector (another view of the cluster) and a bag of cluster-specific tag tokens.
    Each user picks a cluster and interacts with ``per_user`` items, ``1 - noise`` of them in
    the cluster; popularity is flat within a cluster, so Pop cannot learn the preference.
    """
    rng = np.random.default_rng(seed)
    item_cluster = rng.integers(0, n_clusters, size=n_items)
    centres_v = rng.normal(size=(n_clusters, 16)) * 2
    centres_a = rng.normal(size=(n_clusters, 8)) * 2
    visual = centres_v[item_cluster] + rng.normal(size=(n_items, 16))
    audio = centres_a[item_cluster] + rng.normal(size=(n_items, 8))

    rows = []
    for u in range(n_users):
        c = rng.integers(n_clusters)
        in_c = np.flatnonzero(item_cluster == c)
        out_c = np.flatnonzero(item_cluster != c)
        n_in = min(len(in_c), int(round(per_user * (1 - noise))))
        chosen = np.concatenate(
            [rng.choice(in_c, n_in, replace=False), rng.choice(out_c, per_user - n_in, replace=False)]
        )
        rows += [(u + 1, i + 1) for i in chosen]

    path = root / name
    path.mkdir(parents=True, exist_ok=True)
    with open(path / f"{name}.inter", "w") as f:
        f.write("user_id:token\titem_id:token\n")
        f.writelines(f"{u}\t{i}\n" for u, i in rows)
    cols = ["item_id:token", "visual:float_seq"]
    if with_audio:
        cols.append("audio:float_seq")
    if with_tokens:
        cols.append("tags:token_seq")
    with open(path / f"{name}.item", "w") as f:
        f.write("\t".join(cols) + "\n")
        for i in range(n_items):
            fields = [str(i + 1), " ".join(f"{x:.6f}" for x in visual[i])]
            if with_audio:
                fields.append(" ".join(f"{x:.6f}" for x in audio[i]))
            if with_tokens:
                tags = [f"c{item_cluster[i]}t{k}" for k in rng.choice(4, 2, replace=False)]
                fields.append(" ".join(tags + [f"noise{rng.integers(50)}"]))
            f.write("\t".join(fields) + "\n")
    return path


def planted_config(root: Path, name: str = "planted", **extra) -> dict:
    """A config dict for the planted dataset: quick, quiet and deterministic."""
    item_cols = ["item_id", "visual", "audio", "tags"]
    item_cols = [c for c in item_cols if (root / name / f"{name}.item").read_text().split("\n")[0].find(c + ":") >= 0]
    cfg = {
        "data_path": str(root),
        "load_col": {"inter": ["user_id", "item_id"], "item": item_cols},
        "epochs": 5,
        "train_batch_size": 512,
        "state": "ERROR",
        "show_progress": False,
        "seed": 2020,
        "reproducibility": True,
        "checkpoint_dir": str(root / "saved"),
    }
    cfg.update(extra)
    return cfg


def build_model(model, root, name="planted", **extra):
    """(config, model, train, test) for ``model`` on a planted dataset, built as RecBole's quick start does."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, init_seed

    config = Config(model=model, dataset=name, config_dict=planted_config(root, name, **extra))
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    net = get_model(model)(config, train._dataset).to(config["device"])
    return config, net, train, test


@pytest.fixture
def planted(tmp_path):
    """(data_root, name) of a planted dataset with visual + audio + tags modalities."""
    write_planted_dataset(tmp_path / "data")
    return tmp_path / "data", "planted"
