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
    content: str = "planted",
) -> Path:
    """Atomic files where a user's taste is one item cluster and the cluster shows in the features.

    Items carry a 16-d 'visual' vector centred on their cluster's centre, optionally an 8-d
    'audio' vector (another view of the cluster) and a bag of cluster-specific tag tokens.
    Each user picks a cluster and interacts with ``per_user`` items, ``1 - noise`` of them in
    the cluster; popularity is flat within a cluster, so Pop cannot learn the preference.

    ``content`` makes a control with the same interactions: ``"shuffled"`` gives every item the
    features (vectors and tags) of another item, drawn by a fixed permutation, so the content has
    the same distribution but says nothing about the item's cluster; ``"zero"`` gives every item
    all-zero vectors and the same single tag.
    """
    if content not in ("planted", "shuffled", "zero"):
        raise ValueError(f"content must be planted, shuffled or zero, got {content!r}")
    rng = np.random.default_rng(seed)
    item_cluster = rng.integers(0, n_clusters, size=n_items)  # planted_item_clusters() repeats this draw
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

    feature_cluster = item_cluster  # the cluster the item's features show
    if content == "shuffled":
        perm = np.random.default_rng(seed + 1).permutation(n_items)
        visual, audio, feature_cluster = visual[perm], audio[perm], item_cluster[perm]
    elif content == "zero":
        visual, audio = np.zeros_like(visual), np.zeros_like(audio)

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
                tags = [f"c{feature_cluster[i]}t{k}" for k in rng.choice(4, 2, replace=False)]
                tags += [f"noise{rng.integers(50)}"]
                fields.append("none" if content == "zero" else " ".join(tags))
            f.write("\t".join(fields) + "\n")
    return path


def planted_item_clusters(n_items: int = 400, n_clusters: int = 8, seed: int = 0) -> np.ndarray:
    """The taste cluster of item token ``i + 1`` of :func:`write_planted_dataset` (its first draw)."""
    return np.random.default_rng(seed).integers(0, n_clusters, size=n_items)


def write_cold_split(root: Path, name: str = "planted", cold_share: float = 0.1, seed: int = 0, **kw) -> set:
    """A planted dataset with a fixed split: ``cold_share`` of the items only in valid/test. Returns their tokens."""
    write_planted_dataset(root, name, **kw)
    path = root / name
    lines = (path / f"{name}.inter").read_text().splitlines()
    header, rows = lines[0], [line.split("\t") for line in lines[1:]]
    rng = np.random.default_rng(seed)
    items = sorted({i for _, i in rows}, key=int)
    cold = set(rng.choice(items, int(round(cold_share * len(items))), replace=False).tolist())
    parts = {"train": [], "valid": [], "test": []}
    by_user = {}
    for u, i in rows:
        by_user.setdefault(u, []).append(i)
    for u, its in by_user.items():
        its = [its[j] for j in rng.permutation(len(its))]
        warm = [i for i in its if i not in cold]
        n_train = int(round(0.8 * len(warm)))
        n_valid = int(round(0.1 * len(warm)))
        parts["train"] += [(u, i) for i in warm[:n_train]]
        parts["valid"] += [(u, i) for i in warm[n_train : n_train + n_valid]]
        parts["test"] += [(u, i) for i in warm[n_train + n_valid :]]
        for j, i in enumerate(i for i in its if i in cold):  # cold: alternately valid and test
            parts["valid" if j % 2 else "test"].append((u, i))
    for part, pairs in parts.items():
        (path / f"{name}.{part}.inter").write_text(header + "\n" + "".join(f"{u}\t{i}\n" for u, i in pairs))
    return cold


def fit_model(model, root, name="planted", **extra):
    """(model, dataset, train, valid, test) after RecBole's ``Trainer.fit`` on a fixed split written
    by :func:`write_cold_split`."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    cfg = planted_config(root, name, benchmark_filename=["train", "valid", "test"], **extra)
    config = Config(model=model, dataset=name, config_dict=cfg)
    init_seed(config["seed"], True)
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    net = get_model(model)(config, train._dataset).to(config["device"])
    Trainer(config, net).fit(train, valid, saved=False, show_progress=False)
    net.eval()
    return net, dataset, train, valid, test


def cold_ranking(dataset, train, valid, test, k: int = 10):
    """What ranking the cold items (no training interaction) of a fixed split involves: for every user
    with a cold test item, (user id, the cold items they may be recommended, their cold test items)."""
    uid, iid = dataset.uid_field, dataset.iid_field
    counts = np.bincount(train.dataset.inter_feat[iid].numpy(), minlength=dataset.item_num)
    cold = counts == 0
    cold[0] = False  # padding
    known = valid.dataset.inter_matrix(form="csr")  # a user's cold validation items are not candidates
    relevant: dict[int, set] = {}
    inter = test.dataset.inter_feat
    for u, i in zip(inter[uid].tolist(), inter[iid].tolist()):
        if cold[i]:
            relevant.setdefault(u, set()).add(i)
    return [(u, np.setdiff1d(np.flatnonzero(cold), known[u].indices), rel) for u, rel in sorted(relevant.items())]


def _ndcg_at(order, relevant: set, k: int) -> float:
    dcg = sum(1 / np.log2(r + 2) for r, i in enumerate(order[:k]) if i in relevant)
    return dcg / sum(1 / np.log2(r + 2) for r in range(min(k, len(relevant))))


def cold_ranking_ndcg(net, ranking, k: int = 10) -> float:
    """Mean NDCG@k of each user's cold test items when ``net`` ranks the user's candidate cold items."""
    import torch
    from recbole.data.interaction import Interaction

    users = torch.tensor([u for u, _, _ in ranking])
    with torch.no_grad():
        scores = net.full_sort_predict(Interaction({net.USER_ID: users})).view(len(users), -1).cpu().numpy()
    out = []
    for row, (_, cand, rel) in zip(scores, ranking):
        out.append(_ndcg_at(cand[np.argsort(-row[cand], kind="stable")], rel, k))
    return float(np.mean(out))


def cold_ranking_references(dataset, train, ranking, clusters, k: int = 10, draws: int = 20, seed: int = 0):
    """(chance, oracle): the expected NDCG@k of :func:`cold_ranking_ndcg` for a random order of the
    candidates, and for an order that puts the items of the user's taste cluster (the cluster most of
    the user's training items are in; ``clusters`` from :func:`planted_item_clusters`) first, in a
    random order within. Monte Carlo over ``draws`` orders per user."""
    uid, iid = dataset.uid_field, dataset.iid_field
    tokens = dataset.id2token(iid, np.arange(1, dataset.item_num)).astype(int)
    item_cluster = np.concatenate([[-1], clusters[tokens - 1]])  # internal id -> cluster
    inter = train.dataset.inter_feat
    users, items = inter[uid].numpy(), inter[iid].numpy()
    rng = np.random.default_rng(seed)
    chance, oracle = [], []
    for u, cand, rel in ranking:
        taste = np.bincount(item_cluster[items[users == u]], minlength=clusters.max() + 1).argmax()
        for _ in range(draws):
            chance.append(_ndcg_at(cand[np.argsort(rng.random(len(cand)))], rel, k))
            key = rng.random(len(cand)) + (item_cluster[cand] == taste)
            oracle.append(_ndcg_at(cand[np.argsort(-key)], rel, k))
    return float(np.mean(chance)), float(np.mean(oracle))


def printed_results(stdout: str, model: str, dataset: str) -> dict:
    """The ``key: value`` table that ``run_recbole.py`` prints under "Test results of MODEL on DATASET"."""
    lines = stdout.splitlines()
    out = {}
    for line in lines[lines.index(f"Test results of {model} on {dataset}") + 1:]:
        key, _, value = line.strip().partition(": ")
        if not value:
            break
        out[key] = float(value)
    return out


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


@pytest.fixture(scope="module")
def cold_planted(tmp_path_factory):
    """Roots of two planted datasets with the same interactions and fixed split, 20 % of the items cold
    (only in validation / test): ``planted`` (features show the item's cluster) and ``shuffled`` (every
    item has another item's features)."""
    root = tmp_path_factory.mktemp("cold_planted")
    for content in ("planted", "shuffled"):
        write_cold_split(root / content, content=content, cold_share=0.2)
    return {content: root / content for content in ("planted", "shuffled")}


def assert_learns_what_features_decide(model, roots, **extra):
    """A cold item (never seen in training) can only be ranked from its content. ``model`` (content-only
    scores for cold items: ``cold_item_id: zero``) ranks each user's cold test items among the cold items;
    trained on the planted features it must close at least half of the gap between a random order and
    the cluster oracle, and beat the same model trained on shuffled features (same interactions and
    feature distribution, no link to the item) by at least that half-gap too."""
    ndcg = {}
    for content, root in roots.items():
        net, dataset, train, valid, test = fit_model(model, root, cold_item_id="zero", **extra)
        ranking = cold_ranking(dataset, train, valid, test)
        ndcg[content] = cold_ranking_ndcg(net, ranking)
        if content == "planted":
            chance, oracle = cold_ranking_references(dataset, train, ranking, planted_item_clusters())
    half_gap = (oracle - chance) / 2
    assert oracle > chance + 0.2, (chance, oracle)  # the split does leave something to learn
    assert ndcg["planted"] >= chance + half_gap, (model, ndcg, chance, oracle)
    assert ndcg["planted"] >= ndcg["shuffled"] + half_gap, (model, ndcg, chance, oracle)


@pytest.fixture
def planted(tmp_path):
    """(data_root, name) of a planted dataset with visual + audio + tags modalities."""
    write_planted_dataset(tmp_path / "data")
    return tmp_path / "data", "planted"


def assert_predict_agrees_with_full_sort(net, users=(1, 5, 9)) -> None:
    """In eval mode, ``full_sort_predict`` of ``users`` equals ``predict`` of every (user, item) pair, and is finite."""
    import torch
    from recbole.data.interaction import Interaction

    net.eval()
    users = torch.tensor(list(users))
    n_items = net.n_items
    with torch.no_grad():
        full = net.full_sort_predict(Interaction({net.USER_ID: users})).view(len(users), n_items)
        pair = Interaction({net.USER_ID: users.repeat_interleave(n_items),
                            net.ITEM_ID: torch.arange(n_items).repeat(len(users))})
        single = net.predict(pair).view(len(users), n_items)
    assert torch.isfinite(full).all() and torch.allclose(full, single, atol=1e-5)


def assert_same_full_sort(net, other, users=(1, 2, 3)) -> None:
    """In eval mode, ``other`` (a model loaded from ``net``'s state) ranks ``users`` as ``net`` does."""
    import torch
    from recbole.data.interaction import Interaction

    net.eval(), other.eval()
    batch = Interaction({net.USER_ID: torch.tensor(list(users))})
    with torch.no_grad():
        assert torch.allclose(net.full_sort_predict(batch), other.full_sort_predict(batch), atol=1e-5)


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray for a module's in-process benchmarks (run_benchmark reuses it); skipped without Ray."""
    ray = pytest.importorskip("ray")
    from recbole_metammf.benchmark.runner import init_ray

    started = init_ray()
    yield
    if started:
        ray.shutdown()
