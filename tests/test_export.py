"""``python -m recbole_metammf.export``: top-K lists equal RecBole's own ``full_sort_topk``,
known items are excluded as asked, embeddings reproduce the scores, the faiss index agrees
with the exact top-K, and bad input is one clear line."""

from __future__ import annotations

import csv
import glob
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest
import torch
from recbole.quick_start import run_recbole

from conftest import REPO, planted_config, write_planted_dataset
from recbole_metammf.checkpoint import load_checkpoint
from recbole_metammf.export import export, known_items, main


def _train(root, model: str, **extra) -> str:
    cfg = planted_config(root, epochs=2, **extra)
    run_recbole(model=model, dataset="planted", config_dict=cfg, saved=True)
    (path,) = glob.glob(str(root / "saved" / f"{model}-*.pth"))
    return path


def _read_topk(path) -> dict:
    """user token -> [(rank, item token, score), ...] in file order."""
    out = defaultdict(list)
    with open(path) as f:
        reader = csv.reader(f)
        assert next(reader) == ["user_id", "rank", "item_id", "score"]
        for user, rank, item, score in reader:
            out[user].append((int(rank), item, float(score)))
    return out


@pytest.fixture
def small(tmp_path):
    root = tmp_path / "data"
    write_planted_dataset(root, n_users=80, n_items=120, per_user=12)
    return root


@pytest.mark.parametrize("model", ["MetaMMF_MF", "BPR", "LightGCN"])
def test_topk_equals_recbole_full_sort_topk(small, tmp_path, model):
    from recbole.utils.case_study import full_sort_topk

    checkpoint = _train(small, model)
    k = 10
    export(checkpoint, str(tmp_path / "out"), topk=k, exclude="train+valid")
    ours = _read_topk(tmp_path / "out" / "topk.csv")

    loaded = load_checkpoint(checkpoint)
    ds, test = loaded.dataset, loaded.test_data
    test_users = np.unique(test.dataset.inter_feat[ds.uid_field].numpy())
    scores, items = full_sort_topk(test_users, loaded.model, test, k, device=loaded.config["device"])
    assert len(test_users) > 0
    for uid, s_row, i_row in zip(test_users, scores.cpu().numpy(), items.cpu().numpy()):
        rows = ours[ds.id2token(ds.uid_field, uid)]
        assert [r for r, _, _ in rows] == list(range(1, k + 1))
        assert [it for _, it, _ in rows] == list(ds.id2token(ds.iid_field, i_row))
        assert np.allclose([s for _, _, s in rows], s_row, rtol=1e-5, atol=1e-6)

    # every user with a training interaction has a list, and only those
    train_users = set(ds.id2token(ds.uid_field, np.unique(loaded.train_data.dataset.inter_feat[ds.uid_field].numpy())))
    assert set(ours) == train_users


def test_exclusion_modes(small, tmp_path):
    checkpoint = _train(small, "BPR")
    loaded = load_checkpoint(checkpoint)
    ds = loaded.dataset
    parts = {
        name: split.dataset.inter_matrix(form="csr")
        for name, split in (("train", loaded.train_data), ("valid", loaded.valid_data), ("test", loaded.test_data))
    }
    k = 100  # most of the catalogue: a known item left in would show up
    for mode, excluded in (("train", ["train"]), ("train+valid", ["train", "valid"]), ("all", ["train", "valid", "test"])):
        out = tmp_path / mode
        export(checkpoint, str(out), topk=k, exclude=mode)
        lists = _read_topk(out / "topk.csv")
        hits = {"train": 0, "valid": 0, "test": 0}
        for user, rows in lists.items():
            uid = ds.token2id(ds.uid_field, user)
            iids = ds.token2id(ds.iid_field, [it for _, it, _ in rows])
            n_known = sum(parts[p][uid].nnz for p in excluded)
            # exactly the non-excluded items are ranked, up to k (no padding, no known item)
            assert len(rows) == min(k, ds.item_num - 1 - n_known)
            assert all(s1 >= s2 for (_, _, s1), (_, _, s2) in zip(rows, rows[1:]))
            for name, matrix in parts.items():
                hits[name] += int(np.asarray(matrix[uid, iids].todense()).sum())
        for name in excluded:
            assert hits[name] == 0
        for name in set(parts) - set(excluded):
            assert hits[name] > 0  # not excluded, so some do appear in a top-100 of 120 items
    # the known-item matrix is the union of the asked splits
    union = known_items(loaded, "all")
    assert union.nnz == (parts["train"] + parts["valid"] + parts["test"]).astype(bool).sum()


@pytest.mark.parametrize("model", ["MetaMMF_GCN", "VBPR", "BPR"])
def test_embeddings_reproduce_scores_with_id_order(small, tmp_path, model):
    checkpoint = _train(small, model)
    out = tmp_path / "out"
    export(checkpoint, str(out), topk=5)
    users_e = np.load(out / "user_embeddings.npy")
    items_e = np.load(out / "item_embeddings.npy")
    user_ids = (out / "user_ids.txt").read_text().split()
    item_ids = (out / "item_ids.txt").read_text().split()
    loaded = load_checkpoint(checkpoint)
    ds = loaded.dataset
    assert users_e.shape[0] == len(user_ids) == ds.user_num - 1
    assert items_e.shape[0] == len(item_ids) == ds.item_num - 1
    # row n of the files is the id on line n: its vectors give the model's own score
    from recbole.data.interaction import Interaction

    for row in (0, 7, len(user_ids) - 1):
        uid = ds.token2id(ds.uid_field, user_ids[row])
        iids = torch.as_tensor(ds.token2id(ds.iid_field, item_ids))
        with torch.no_grad():
            expected = loaded.model.predict(
                Interaction({ds.uid_field: torch.full_like(iids, uid), ds.iid_field: iids})
            ).numpy()
        assert np.allclose(items_e @ users_e[row], expected, rtol=1e-4, atol=1e-5)
    # and each user's top-K list is the top of those scores over every item the user may be recommended
    # (exclude 'all', the default: not one of the user's train, valid or test items)
    parts = (loaded.train_data, loaded.valid_data, loaded.test_data)
    known = sum(split.dataset.inter_matrix(form="csr") for split in parts).tocsr()
    internal_ids = ds.token2id(ds.iid_field, item_ids)
    lists = _read_topk(out / "topk.csv")
    assert len(lists) > 50
    for user, rows in lists.items():
        row = user_ids.index(user)
        scores = items_e @ users_e[row]  # [n_items - 1], item_ids order
        candidates = np.flatnonzero(~np.isin(internal_ids, known[ds.token2id(ds.uid_field, user)].indices))
        best = candidates[np.argsort(-scores[candidates], kind="stable")[:5]]
        assert [it for _, it, _ in rows] == [item_ids[i] for i in best], user
        assert np.allclose([s for _, _, s in rows], scores[best], rtol=1e-4, atol=1e-5)


def test_model_without_inner_product_gets_no_embeddings(small, tmp_path):
    checkpoint = _train(small, "NeuMF")
    out = tmp_path / "out"
    written = export(checkpoint, str(out), topk=5)
    assert "embeddings" not in written and not (out / "item_embeddings.npy").exists()
    assert written["topk.csv"] == 5 * written["users"]


def test_faiss_index_top_k_matches_exact(small, tmp_path):
    import faiss  # in requirements.txt: the tests run the --index path
    checkpoint = _train(small, "MetaMMF_MF")
    out = tmp_path / "out"
    export(checkpoint, str(out), topk=5, index=True)
    users_e = np.load(out / "user_embeddings.npy")
    items_e = np.load(out / "item_embeddings.npy")
    index = faiss.read_index(str(out / "item_index.faiss"))
    assert index.ntotal == len(items_e)
    k = 10
    scores, rows = index.search(np.ascontiguousarray(users_e[:20]), k)
    exact = users_e[:20] @ items_e.T  # [20, n_items]
    exact_rows = np.argsort(-exact, axis=1, kind="stable")[:, :k]
    for u in range(20):
        assert np.allclose(scores[u], exact[u, exact_rows[u]], rtol=1e-5, atol=1e-5)
        assert set(rows[u]) == set(exact_rows[u])


def test_bad_input_is_one_clear_line(small, tmp_path):
    missing = tmp_path / "nope.pth"
    result = subprocess.run(
        [sys.executable, "-m", "recbole_metammf.export", "--checkpoint", str(missing), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: {missing}: no such checkpoint file"]
    # not a checkpoint at all
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file")
    assert main(["--checkpoint", str(junk), "--out", str(tmp_path / "o")]) == 2
    # a torch file that is not a RecBole checkpoint
    plain = tmp_path / "plain.pth"
    torch.save({"weights": torch.zeros(2)}, plain)
    assert main(["--checkpoint", str(plain), "--out", str(tmp_path / "o")]) == 2
    assert not (tmp_path / "o").exists()


def test_bad_input_messages(small, tmp_path, capsys):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file")
    assert main(["--checkpoint", str(junk), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {junk}: not a checkpoint torch can load with weights_only=True")
    plain = tmp_path / "plain.pth"
    torch.save({"weights": torch.zeros(2)}, plain)
    main(["--checkpoint", str(plain), "--out", str(tmp_path / "o")])
    assert capsys.readouterr().err.strip() == f"error: {plain}: not a RecBole checkpoint (no 'config' and 'state_dict' entries)"
    # a checkpoint whose dataset has moved away
    checkpoint = _train(small, "BPR")
    (small / "planted").rename(small / "moved")
    assert main(["--checkpoint", checkpoint, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its dataset 'planted' is not at" in err[0] and err[0].startswith(f"error: {checkpoint}: ")


def test_cli_writes_every_file(small, tmp_path):
    checkpoint = _train(small, "MetaMMF_MF")
    out = tmp_path / "cli"
    result = subprocess.run(
        [sys.executable, "-m", "recbole_metammf.export", "--checkpoint", checkpoint, "--out", str(out), "--topk", "3"],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == {
        "topk.csv", "user_embeddings.npy", "item_embeddings.npy", "user_ids.txt", "item_ids.txt"
    }
    lists = _read_topk(out / "topk.csv")
    assert len(lists) == 80 and all([r for r, _, _ in rows] == [1, 2, 3] for rows in lists.values())


def test_metammf_mf_checkpoint_holds_no_eval_cache(small):
    """MetaMMF_MF's cached user tensor is its embedding table: it must not become a saved parameter."""
    checkpoint = _train(small, "MetaMMF_MF")
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert not {"restore_user_e", "restore_item_e"} & set(state)
    # a checkpoint written before the fix (the cache saved as a parameter) still loads
    loaded = load_checkpoint(checkpoint)
    old = dict(state, restore_user_e=state["user_embedding.weight"].clone())
    loaded.model.load_state_dict(old)
    assert torch.equal(loaded.model.user_embedding.weight, state["user_embedding.weight"])


def test_only_general_models_are_served():
    from recbole.utils import ModelType

    from recbole_metammf.export import ExportError, check_model_type

    check_model_type("x.pth", {"MODEL_TYPE": ModelType.GENERAL, "model": "BPR"})
    check_model_type("x.pth", {"MODEL_TYPE": ModelType.TRADITIONAL, "model": "Pop"})
    with pytest.raises(ExportError, match=r"x.pth: holds SASRec, a sequential model; export serves general"):
        check_model_type("x.pth", {"MODEL_TYPE": ModelType.SEQUENTIAL, "model": "SASRec"})
