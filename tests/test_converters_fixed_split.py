"""Tests of the converters for data that comes with its own split: DiffMM's layout
(pickled COO matrices) and MMRec's (one ``.inter`` with ``x_label``).

The real DiffMM TikTok subset lives in ``../shared/data/tiktok-diffmm``; the tests
that need it skip with the reason when it is absent. Everything else builds its
input in the test.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from dataset_converters.cli import main
from dataset_converters.diffmm import convert_diffmm
from dataset_converters.mmrec import convert_mmrec
from dataset_converters.safe_io import ConversionError, load_coo_pickle

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_atomic(path):
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def pairs(path):
    _, rows = read_atomic(path)
    return sorted((int(r[0]), int(r[1])) for r in rows)


# ------------------------------------------------------------------ DiffMM layout
N_USERS, N_ITEMS = 5, 7
# (user, item) per part; item 6 never in train (cold, in test); user 4 has no train
D_TRAIN = [(0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 0), (3, 5), (3, 1)]
D_VALID = [(0, 2), (1, 4), (4, 3)]
D_TEST = [(0, 6), (2, 1), (3, 6), (4, 0)]


def coo(pairs_, shape=(N_USERS, N_ITEMS), values=None):
    rows, cols = zip(*pairs_)
    data = np.ones(len(pairs_)) if values is None else np.asarray(values, dtype=np.float64)
    return sp.coo_matrix((data, (np.array(rows), np.array(cols))), shape=shape)


def dump(obj, path, protocol=4, old_class_path=False):
    """Pickle like DiffMM's files; ``old_class_path`` names scipy's pre-1.8 ``scipy.sparse.coo``."""
    data = pickle.dumps(obj, protocol=protocol)
    if old_class_path:
        assert protocol <= 3  # GLOBAL opcodes carry the path as text
        assert b"scipy.sparse._coo\ncoo_matrix" in data
        data = data.replace(b"scipy.sparse._coo\ncoo_matrix", b"scipy.sparse.coo\ncoo_matrix")
    Path(path).write_bytes(data)


def write_diffmm(root, protocol=4, old_class_path=False, features=("image", "audio"), **override):
    """A DiffMM-layout folder; ``override`` replaces a matrix ("trn"/"val"/"tst") or feature."""
    root.mkdir(parents=True, exist_ok=True)
    mats = {"trn": coo(D_TRAIN), "val": coo(D_VALID), "tst": coo(D_TEST)}
    rng = np.random.default_rng(0)
    feats = {f: rng.normal(size=(N_ITEMS, 4)).astype(np.float16) for f in features}
    for key, value in override.items():
        (mats if key in mats else feats)[key] = value
    for key, m in mats.items():
        dump(m, root / f"{key}Mat.pkl", protocol, old_class_path)
    for key, arr in feats.items():
        np.save(root / f"{key}_feat.npy", arr)
    return root, feats


@pytest.mark.parametrize("protocol,old", [(4, False), (5, False), (2, False), (3, True), (2, True)])
def test_diffmm_split_kept_exactly_both_class_paths(tmp_path, protocol, old):
    src, feats = write_diffmm(tmp_path / "raw", protocol=protocol, old_class_path=old)
    assert main(["diffmm", "--src", str(src), "--out", str(tmp_path / "out"), "--name", "dm"]) == 0
    out = tmp_path / "out" / "dm"
    assert pairs(out / "dm.train.inter") == sorted(D_TRAIN)
    assert pairs(out / "dm.valid.inter") == sorted(D_VALID)
    assert pairs(out / "dm.test.inter") == sorted(D_TEST)
    assert pairs(out / "dm.inter") == sorted(D_TRAIN + D_VALID + D_TEST)
    header, rows = read_atomic(out / "dm.item")
    assert header == ["item_id:token", "visual:float_seq", "acoustic:float_seq"]
    assert [int(r[0]) for r in rows] == list(range(N_ITEMS))
    for col, key in ((1, "image"), (2, "audio")):
        got = np.array([r[col].split() for r in rows], dtype=np.float32)
        np.testing.assert_array_equal(got, feats[key].astype(np.float32))
    yaml = (out / "dm.yaml").read_text()
    assert "valid_metric: Recall@20" in yaml and "topk: [10, 20]" in yaml
    assert "benchmark_filename: [train, valid, test]" in yaml
    assert "modality_fields: [visual, acoustic]" in yaml


def test_diffmm_reports_cold_items_and_users_without_training(tmp_path, capsys):
    src, _ = write_diffmm(tmp_path / "raw")
    assert main(["diffmm", "--src", str(src), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "1 user(s) have no training interaction" in printed
    # items 6 (test twice) has no train interaction; nor does nothing else: 0..5 all train
    assert "1 of 7 items have no training interaction (cold)" in printed
    assert "1 of them appear in test (2 test interactions, 50.0 %)" in printed
    assert "samples training negatives from every item" in printed
    assert "textual: absent" in printed
    assert "--dataset=tiktok-diffmm" in printed  # the default name


def test_diffmm_any_subset_of_features(tmp_path):
    src, _ = write_diffmm(tmp_path / "raw", features=("text",))
    ds = convert_diffmm(src, name="x")
    assert [m.name for m in ds.modalities] == ["textual"]


def test_coo_loader_reads_what_it_should_and_nothing_else(tmp_path):
    m = coo(D_TRAIN)
    dump(m, tmp_path / "m.pkl")
    row, col, data, shape = load_coo_pickle(tmp_path / "m.pkl")
    assert shape == (N_USERS, N_ITEMS)
    assert sorted(zip(row.tolist(), col.tolist())) == sorted(D_TRAIN)
    # a CSR matrix is a scipy class too, but not the one the layout holds
    dump(m.tocsr(), tmp_path / "csr.pkl")
    with pytest.raises(ConversionError, match="csr.pkl: unsafe or corrupt pickle.*refused global"):
        load_coo_pickle(tmp_path / "csr.pkl")
    # a plain dict is not a matrix
    dump({"row": 1}, tmp_path / "dict.pkl")
    with pytest.raises(ConversionError, match="dict.pkl: holds a dict, expected"):
        load_coo_pickle(tmp_path / "dict.pkl")


class _Payload:
    """Pickles to ``os.system(cmd)``: what a tampered matrix file would do."""

    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        import os

        return (os.system, (self.cmd,))


def test_diffmm_tampered_pickle_refused_runs_nothing_leaves_nothing(tmp_path, capsys):
    marker = tmp_path / "pwned"
    src, _ = write_diffmm(tmp_path / "raw")
    # a real COO matrix whose state smuggles a call in: the exploit hides inside a valid file
    m = coo(D_VALID)
    m.maxprint = _Payload(f"touch {marker}")
    dump(m, src / "valMat.pkl")
    out = tmp_path / "out"
    assert main(["diffmm", "--src", str(src), "--out", str(out), "--name", "dm"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "valMat.pkl: unsafe or corrupt pickle" in err
    assert "refused global" in err and "system" in err
    assert not marker.exists()
    assert not out.exists()
    # the whole file replaced by a foreign object
    dump(_Payload(f"touch {marker}"), src / "trnMat.pkl")
    assert main(["diffmm", "--src", str(src), "--out", str(out)]) == 2
    assert "trnMat.pkl: unsafe or corrupt pickle" in capsys.readouterr().err
    assert not marker.exists() and not out.exists()


def _out_of_range():
    m = coo(D_TEST)
    m.row = m.row.copy()
    m.row[0] = N_USERS + 3  # scipy does not check on pickling
    return m


BAD_DIFFMM = [
    ("shape", dict(val=coo(D_VALID, shape=(N_USERS, N_ITEMS + 1))),
     r"valMat.pkl: matrix shape \(5, 8\) differs from trnMat.pkl's \(5, 7\)"),
    ("values", dict(trn=coo(D_TRAIN, values=[1, 1, 2, 1, 1, 1, 1, 1])),
     r"trnMat.pkl: 1 value\(s\) are not 0/1 \(first 2.0\)"),
    ("range", dict(tst=_out_of_range()),
     r"tstMat.pkl: 1 row \(user\) index\(es\) outside the matrix shape"),
    ("duplicate", dict(trn=coo(D_TRAIN + [(0, 1)])),
     "trnMat.pkl: 1 duplicate interaction.*user 0, item 1"),
    ("overlap", dict(tst=coo(D_TEST + [(1, 2)])),
     "tstMat.pkl: 1 interaction.*also in the train part.*user 1, item 2"),
    ("rows", dict(image=np.zeros((N_ITEMS - 1, 4), np.float16)),
     "image_feat.npy: 6 feature rows but the interactions have 7 items"),
    ("nan", dict(audio=np.full((N_ITEMS, 4), np.nan, np.float16)),
     "audio_feat.npy: 28 NaN or infinite value"),
    ("dtype", dict(image=np.array(["a"] * N_ITEMS)),
     "image_feat.npy: expected a numeric feature matrix"),
]


@pytest.mark.parametrize("case,override,message", BAD_DIFFMM, ids=[c[0] for c in BAD_DIFFMM])
def test_diffmm_bad_input_one_error_no_output(tmp_path, capsys, case, override, message):
    src, _ = write_diffmm(tmp_path / "raw", **override)
    out = tmp_path / "out"
    assert main(["diffmm", "--src", str(src), "--out", str(out), "--name", "dm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not out.exists()


def test_diffmm_missing_files(tmp_path):
    src, _ = write_diffmm(tmp_path / "raw", features=())
    with pytest.raises(ConversionError, match="missing file: none of image_feat.npy"):
        convert_diffmm(src)
    src, _ = write_diffmm(tmp_path / "raw2")
    (src / "tstMat.pkl").unlink()
    with pytest.raises(ConversionError, match=r"tstMat.pkl: missing test matrix"):
        convert_diffmm(src)
    with pytest.raises(ConversionError, match="missing source directory"):
        convert_diffmm(tmp_path / "nowhere")


def test_diffmm_real_tiktok_subset(tmp_path, capsys):
    src = SHARED_DATA / "tiktok-diffmm"
    if not src.is_dir():
        pytest.skip(f"real data {src} not available (expected beside the repository)")
    assert main(["diffmm", "--src", str(src), "--out", str(tmp_path), "--name", "tt"]) == 0
    printed = capsys.readouterr().out
    out = tmp_path / "tt"
    counts = {p: len(read_atomic(out / f"tt.{p}.inter")[1]) for p in ("train", "valid", "test")}
    assert counts == {"train": 59541, "valid": 3051, "test": 6130}
    assert len(read_atomic(out / "tt.inter")[1]) == 59541 + 3051 + 6130
    header, rows = read_atomic(out / "tt.item")
    assert header == ["item_id:token", "visual:float_seq", "acoustic:float_seq"]
    assert len(rows) == 6710 and all(len(r[1].split()) == 128 for r in rows[:50])
    image = np.load(src / "image_feat.npy")
    np.testing.assert_array_equal(np.array(rows[123][1].split(), np.float32),
                                  image[123].astype(np.float32))
    assert "users: 9,308" in printed
    assert "10 user(s) have no training interaction" in printed
    assert "465 of 6,710 items have no training interaction (cold)" in printed
    assert "340 of them appear in test (449 test interactions, 7.3 %)" in printed


# ------------------------------------------------------------------- MMRec layout
M_ROWS = [  # userID, itemID, rating, timestamp, x_label
    (0, 0, 5, 100, 0), (0, 1, 4, 101, 0), (0, 2, 3, 102, 1), (0, 3, 5, 103, 2),
    (1, 1, 4, 200, 0), (1, 4, 2, 201, 0), (1, 0, 4, 202, 2),
    (2, 2, 5, 300, 0), (2, 3, 1, 301, 0), (2, 4, 3, 302, 1), (2, 5, 4, 303, 2),
]
M_ITEMS = 6


def write_mmrec(root, rows=M_ROWS, image=True, text=True, header="userID\titemID\trating\ttimestamp\tx_label",
                name="baby", n_items=M_ITEMS):
    root.mkdir(parents=True, exist_ok=True)
    lines = [header] + ["\t".join(map(str, r)) for r in rows]
    (root / f"{name}.inter").write_text("\n".join(lines) + "\n")
    rng = np.random.default_rng(1)
    feats = {}
    if image:
        feats["image"] = rng.normal(size=(n_items, 5)).astype(np.float32)
        np.save(root / "image_feat.npy", feats["image"])
    if text:
        feats["text"] = rng.normal(size=(n_items, 3)).astype(np.float32)
        np.save(root / "text_feat.npy", feats["text"])
    return root, feats


@pytest.mark.parametrize("image,text", [(True, True), (True, False), (False, True)])
def test_mmrec_split_kept_with_each_feature_subset(tmp_path, image, text):
    src, feats = write_mmrec(tmp_path / "raw", image=image, text=text)
    assert main(["mmrec", "--src", str(src), "--out", str(tmp_path / "out")]) == 0
    out = tmp_path / "out" / "baby"  # name defaults to the .inter file's
    for k, part in enumerate(("train", "valid", "test")):
        assert pairs(out / f"baby.{part}.inter") == sorted((u, i) for u, i, _, _, x in M_ROWS if x == k)
    header, inter = read_atomic(out / "baby.inter")
    assert header == ["user_id:token", "item_id:token", "timestamp:float"]
    assert sorted(float(r[2]) for r in inter) == sorted(float(r[3]) for r in M_ROWS)
    header, rows = read_atomic(out / "baby.item")
    want = [("visual", "image")] * image + [("textual", "text")] * text
    assert header == ["item_id:token"] + [f"{m}:float_seq" for m, _ in want]
    assert len(rows) == M_ITEMS
    for col, (_, key) in enumerate(want, start=1):
        got = np.array([r[col].split() for r in rows], dtype=np.float32)
        np.testing.assert_array_equal(got, feats[key])
    yaml = (out / "baby.yaml").read_text()
    assert "valid_metric: Recall@20" in yaml and "TIME_FIELD: timestamp" in yaml


def test_mmrec_typed_header_and_cold_report(tmp_path, capsys):
    header = "userID:token\titemID:token\trating:float\ttimestamp:float\tx_label:token"
    src, _ = write_mmrec(tmp_path / "raw", header=header)
    assert main(["mmrec", "--src", str(src), "--out", str(tmp_path / "out"), "--name", "b2"]) == 0
    printed = capsys.readouterr().out
    # item 5 is only in test: cold
    assert "1 of 6 items have no training interaction (cold); 0 of them appear in valid" in printed
    assert "1 of them appear in test (1 test interactions, 33.3 %)" in printed


# (case, write_mmrec arguments, message, the file the message names: relative to the source folder)
BAD_MMREC = [
    ("no-label", dict(header="userID\titemID\trating\ttimestamp\tlabel"), "header lacks column\\(s\\) x_label", "baby.inter"),
    ("label", dict(rows=M_ROWS[:-1] + [(2, 5, 4, 303, 3)]), "1 x_label value\\(s\\) not 0/1/2", "baby.inter"),
    ("item-range", dict(rows=M_ROWS + [(1, 9, 1, 1, 0)]), "1 item id\\(s\\) out of range \\[0, 6\\)", "baby.inter"),
    ("duplicate", dict(rows=M_ROWS + [(0, 1, 4, 101, 0)]), "1 duplicate interaction", "baby.inter"),
    ("non-int", dict(rows=M_ROWS + [("x", 1, 4, 101, 0)]), "column userID holds a non-number", "baby.inter"),
    ("ragged", dict(rows=M_ROWS + [(0, 1)]), "rows do not all have 5 tab-separated fields", "baby.inter"),
    ("no-test", dict(rows=[r for r in M_ROWS if r[4] != 2]), "no interaction has x_label 2 \\(test\\)", "baby.inter"),
    ("no-features", dict(image=False, text=False), "missing file: neither image_feat.npy", ""),
    ("feature-rows", dict(n_items=4), "4 item id|out of range \\[0, 4\\)", "baby.inter"),
]


@pytest.mark.parametrize("case,kw,message,where", BAD_MMREC, ids=[c[0] for c in BAD_MMREC])
def test_mmrec_bad_input_one_error_no_output(tmp_path, capsys, case, kw, message, where):
    src, _ = write_mmrec(tmp_path / "raw", **kw)
    out = tmp_path / "out"
    assert main(["mmrec", "--src", str(src), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"error: {src / where if where else src}: "), err  # names the file (or the folder)
    assert re.search(message, err), err
    assert not out.exists()


def test_mmrec_needs_exactly_one_inter_file(tmp_path):
    src, _ = write_mmrec(tmp_path / "raw")
    (src / "other.inter").write_text((src / "baby.inter").read_text())
    with pytest.raises(ConversionError, match="2 \\*.inter files"):
        convert_mmrec(src)
    with pytest.raises(ConversionError, match="no \\*.inter file"):
        convert_mmrec(tmp_path)


# --------------------------------------------------- every model on the converted data
MODELS = ["MetaMMF_GCN", "MetaMMF_MF", "BPR", "LightGCN", "VBPR", "MMGCN", "GRCN", "LATTICE", "FREEDOM", "DRAGON", "DiffMM"]


def _bigger_diffmm(root, seed=0, n_users=40, n_items=60, cold=6):
    """A DiffMM folder with cold items (in test only) and a user with no training interaction."""
    rng = np.random.default_rng(seed)
    warm = n_items - cold
    train, valid, test = set(), set(), set()
    for u in range(n_users - 1):
        items = rng.choice(warm, 8, replace=False)
        train |= {(u, int(i)) for i in items[:6]}
        valid.add((u, int(items[6])))
        test.add((u, int(items[7])))
    for k in range(cold):
        test.add((k, warm + k))
    test.add((n_users - 1, 0))  # this user has test only
    shape = (n_users, n_items)
    root.mkdir(parents=True)
    for key, ps in (("trn", train), ("val", valid), ("tst", test)):
        dump(coo(sorted(ps), shape=shape), root / f"{key}Mat.pkl")
    np.save(root / "image_feat.npy", rng.normal(size=(n_items, 8)).astype(np.float16))
    np.save(root / "audio_feat.npy", rng.normal(size=(n_items, 6)).astype(np.float16))
    return root


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_and_evaluates_on_diffmm_with_cold_items(tmp_path, model):
    from recbole_metammf.quick_start import run

    src = _bigger_diffmm(tmp_path / "raw")
    assert main(["diffmm", "--src", str(src), "--out", str(tmp_path / "data"), "--name", "dmx"]) == 0
    result = run(model=model, dataset="dmx", config_dict={
        "data_path": str(tmp_path / "data"), "epochs": 1, "state": "ERROR", "seed": 1,
        "train_batch_size": 256, "checkpoint_dir": str(tmp_path / "saved"),
    })
    test = result["test_result"]
    assert set(test) >= {"recall@20", "ndcg@20"}  # the dataset YAML's topk reached RecBole
    assert all(np.isfinite(v) for v in test.values())
    assert result["best_valid_score"] == result["best_valid_result"]["recall@20"]  # valid_metric
    # the converted split keeps the 6 cold items out of training, so RecBole reports the cold metrics,
    # and they are those of the saved (best) model's ranking, computed by hand
    (checkpoint,) = (tmp_path / "saved").glob(f"{model}-*.pth")
    by_hand = _cold_metrics_by_hand(str(checkpoint), ks=(10, 20), cold_users=6)
    assert {key: test[key] for key in by_hand} == pytest.approx(by_hand, abs=6e-5)


def _cold_metrics_by_hand(checkpoint: str, ks, cold_users: int) -> dict:
    """ColdRecall@K / ColdNDCG@K of a checkpoint's model on its test split: each user with a cold test
    item (no training interaction) ranks every item but its training and validation ones; the hits
    among the top K that are cold test items, over min(K, its cold test items)."""
    import torch
    from recbole.data.interaction import Interaction

    from recbole_metammf.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint)
    ds, model = loaded.dataset, loaded.model.eval()
    uid, iid = ds.uid_field, ds.iid_field
    cold = np.bincount(loaded.train_data.dataset.inter_feat[iid].numpy(), minlength=ds.item_num) == 0
    cold[0] = False
    known = (loaded.train_data.dataset.inter_matrix(form="csr") + loaded.valid_data.dataset.inter_matrix(form="csr")).tocsr()
    relevant = {}
    test = loaded.test_data.dataset.inter_feat
    for u, i in zip(test[uid].tolist(), test[iid].tolist()):
        if cold[i]:
            relevant.setdefault(u, set()).add(i)
    assert len(relevant) == cold_users, relevant
    users = sorted(relevant)
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({uid: torch.tensor(users)})).view(len(users), -1).numpy()
    out = {}
    for k in ks:
        recalls, ndcgs = [], []
        for row, u in zip(scores.astype(np.float64), users):
            row[0] = -np.inf
            row[known[u].indices] = -np.inf
            hits = [i in relevant[u] for i in np.argsort(-row, kind="stable")[:k]]
            recalls.append(sum(hits) / len(relevant[u]))
            ideal = sum(1 / np.log2(r + 2) for r in range(min(k, len(relevant[u]))))
            ndcgs.append(sum(1 / np.log2(r + 2) for r, h in enumerate(hits) if h) / ideal)
        out[f"coldrecall@{k}"], out[f"coldndcg@{k}"] = float(np.mean(recalls)), float(np.mean(ndcgs))
    return out


def test_run_recbole_trains_on_converted_mmrec(tmp_path):
    from recbole_metammf.quick_start import run

    rng = np.random.default_rng(3)
    rows = []
    for u in range(30):  # enough items for topk 20
        for k, i in enumerate(rng.choice(40, 8, replace=False)):
            rows.append((u, int(i), 5, 1000 * u + k, 0 if k < 6 else k - 5))
    src, _ = write_mmrec(tmp_path / "raw", rows=rows, n_items=40)
    assert main(["mmrec", "--src", str(src), "--out", str(tmp_path / "data"), "--name", "mm"]) == 0
    result = run(model="MetaMMF_GCN", dataset="mm", config_dict={
        "data_path": str(tmp_path / "data"), "epochs": 1, "state": "ERROR", "seed": 1,
        "checkpoint_dir": str(tmp_path / "saved"),
    })
    assert np.isfinite(result["test_result"]["recall@20"])
