"""Tests of ``dataset_converters``: real samples, a full-layout fixture, bad input, determinism.

The real data lives outside the repository in ``../shared/data``; tests that
need it skip with the reason when it is absent.
"""

import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import printed_results
from dataset_converters.cli import main
from dataset_converters.ml100k import build_ml100k, title_tokens, year_vector
from dataset_converters.mmgcn import convert_mmgcn
from dataset_converters.pca import pca_reduce
from dataset_converters.recbole_files import dataset_yaml
from dataset_converters.safe_io import ConversionError, atomic_dir, load_npy
from dataset_converters.splits import chrono_parts, random_parts, split_counts
from dataset_converters.synthetic import generate

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared(name):
    """Path of a real data folder, or skip the test when it is not there."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} not available (expected beside the repository)")
    return path


def read_atomic(path):
    """RecBole atomic file -> (header list, list of row lists of strings)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return lines[0].split("\t"), [line.split("\t") for line in lines[1:]]


def floats(cell):
    return np.array(cell.split(), dtype=np.float64).astype(np.float32)


def convert(kind, src, out, *extra):
    """Run the CLI in-process; return the dataset directory."""
    name = f"{kind}-t"
    assert main([kind, "--src", str(src), "--out", str(out), "--name", name, *extra]) == 0
    return Path(out) / name


# ------------------------------------------------------------ full-layout fixture
N_USERS, N_ITEMS = 6, 9
# Each user's items (0-based) per split, as the authors' files would hold them.
TRAIN = {0: [0, 1, 2], 1: [3, 4], 2: [5, 0], 3: [6], 4: [7, 1], 5: [2, 3]}
VALID = {0: [3], 2: [6], 4: [8]}
TEST = {0: [4, 5], 1: [8], 5: [7]}


def write_full_layout(src, with_text=True):
    """Write a tiny TikTok dataset in exactly the real full MMGCN format."""
    src.mkdir(parents=True, exist_ok=True)
    off = N_USERS  # item ids are offset by the user count
    train = np.array([[u, i + off] for u, items in TRAIN.items() for i in items], dtype=np.int64)
    np.save(src / "train.npy", train)
    for fname, split in (("val_full.npy", VALID), ("test_full.npy", TEST)):
        rows = np.empty(len(split), dtype=object)
        for r, (u, items) in enumerate(split.items()):
            rows[r] = [u] + [i + off for i in items]
        np.save(src / fname, rows, allow_pickle=True)
    user_items = {u: [i + off for i in items] for u, items in TRAIN.items()}
    np.save(src / "user_item_dict.npy", np.array(user_items, dtype=object), allow_pickle=True)
    rng = np.random.default_rng(0)
    torch.save(torch.from_numpy(rng.standard_normal((N_ITEMS, 4))), src / "feat_v.pt")
    torch.save(torch.from_numpy(rng.standard_normal((N_ITEMS, 3))), src / "feat_a.pt")
    if with_text:
        pairs = torch.tensor([[0, 0, 1, 3, 8, 8, 8], [5, 7, 5, 2, 1, 9, 1]], dtype=torch.int64)
        torch.save(pairs, src / "feat_t.pt")
    return src


@pytest.fixture
def full_src(tmp_path):
    return write_full_layout(tmp_path / "raw")


def pairs_of(split):
    return [[str(u), str(i)] for u, items in split.items() for i in items]


def test_full_layout_original_split_is_reproduced(full_src, tmp_path, capsys):
    out = convert("tiktok", full_src, tmp_path / "data", "--split", "original")
    for part, split in (("train", TRAIN), ("valid", VALID), ("test", TEST)):
        header, rows = read_atomic(out / f"tiktok-t.{part}.inter")
        assert header == ["user_id:token", "item_id:token"]
        assert rows == pairs_of(split)  # same pairs, same order, offsets removed
    _, rows = read_atomic(out / "tiktok-t.inter")
    assert rows == pairs_of(TRAIN) + pairs_of(VALID) + pairs_of(TEST)
    header, items = read_atomic(out / "tiktok-t.item")
    assert header == ["item_id:token", "visual:float_seq", "acoustic:float_seq",
                      "textual:token_seq"]
    assert [r[0] for r in items] == [str(i) for i in range(N_ITEMS)]
    visual = torch.load(full_src / "feat_v.pt", weights_only=True).numpy().astype(np.float32)
    np.testing.assert_array_equal(np.stack([floats(r[1]) for r in items]), visual)  # round trip
    assert [r[3] for r in items[:4]] == ["5 7", "5", "", "2"]
    assert items[8][3] == "1 9 1"
    printed = capsys.readouterr().out
    assert "users: 6" in printed and "interactions: 19" in printed
    assert "train 12  valid 3  test 4" in printed
    assert "python run_recbole.py --model=MetaMMF_GCN --dataset=tiktok-t" in printed


def test_full_layout_defaults_to_original_and_kwai_without_text(tmp_path):
    src = write_full_layout(tmp_path / "raw", with_text=False)
    (src / "feat_a.pt").unlink()
    out = convert("kwai", src, tmp_path / "data")
    header, _ = read_atomic(out / "kwai-t.item")
    assert header == ["item_id:token", "visual:float_seq"]
    _, rows = read_atomic(out / "kwai-t.test.inter")
    assert rows == pairs_of(TEST)
    yaml = (out / "kwai-t.yaml").read_text()
    assert "modality_fields: [visual]" in yaml
    assert "benchmark_filename: [train, valid, test]" in yaml


# -------------------------------------------------------------------- bad input
def _drop(name):
    return lambda src: (src / name).unlink()


def _save_npy(name, arr):
    return lambda src: np.save(src / name, arr, allow_pickle=arr.dtype == object)


def _feature(name, arr):
    return lambda src: torch.save(torch.from_numpy(arr), src / name)


def _nan_features(value):
    def mutate(src):
        x = np.ones((N_ITEMS, 4))
        x[2, 1] = value
        torch.save(torch.from_numpy(x), src / "feat_v.pt")
    return mutate


def _object_rows(rows):
    arr = np.empty(len(rows), dtype=object)
    for r, row in enumerate(rows):
        arr[r] = row
    return arr


def _dict_npy(d):
    return np.array(d, dtype=object)


class _Evil:
    """Pickles into a call of os.system; a safe loader must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _evil_dict(src):
    marker = src / "PWNED"
    payload = {0: [N_USERS], 1: _Evil(marker)}
    with open(src / "user_item_dict.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(
            f, {"descr": "|O", "fortran_order": False, "shape": ()})
        pickle.dump(_dict_npy(payload), f, protocol=2)


def _evil_pt(src):
    torch.save({"x": _Evil(src / "PWNED")}, src / "feat_v.pt")


BAD_INPUTS = [
    ("missing-file", _drop("test_full.npy"), "test_full.npy", "missing"),
    ("missing-feature", _drop("feat_a.pt"), "feat_a.pt", "missing"),
    ("row-count", _feature("feat_a.pt", np.ones((N_ITEMS + 1, 3))), "feat_a.pt", "feature rows"),
    ("not-offset", _save_npy("train.npy", np.array([[0, 1], [1, 2]] * 6)), "train.npy",
     "offset by the user count 6"),
    ("out-of-range", _save_npy("test_full.npy", _object_rows([[0, 4 + N_USERS + N_ITEMS]])),
     "test_full.npy", "out of range"),
    ("user-out-of-range", _save_npy("val_full.npy", _object_rows([[17, 7]])), "val_full.npy",
     "out of range"),
    ("nan", _nan_features(np.nan), "feat_v.pt", "NaN or infinite"),
    ("inf", _nan_features(np.inf), "feat_v.pt", "NaN or infinite"),
    ("empty-user-dict", _save_npy("user_item_dict.npy", _dict_npy(
        {u: ([] if u == 3 else [i + N_USERS for i in TRAIN[u]]) for u in TRAIN})),
     "user_item_dict.npy", "empty user"),
    ("empty-row", _save_npy("val_full.npy", _object_rows([[0, 9], [2]])), "val_full.npy",
     "empty user"),
    ("npy-is-text", lambda src: (src / "train.npy").write_text("user,item\n0,6\n"),
     "train.npy", "not a valid .npy"),
    ("pt-is-garbage", lambda src: (src / "feat_v.pt").write_bytes(b"\x00garbage" * 10),
     "feat_v.pt", "not a loadable tensor"),
    ("dict-is-list", _save_npy("user_item_dict.npy", _object_rows([[6, 7], [8]])),
     "user_item_dict.npy", "not a pickled"),
    ("train-is-float", _save_npy("train.npy", np.ones((12, 2))), "train.npy", "int array"),
    ("pt-holds-dict", lambda src: torch.save({"v": torch.ones(3)}, src / "feat_v.pt"),
     "feat_v.pt", "expected a tensor"),
    ("evil-pickle", _evil_dict, "user_item_dict.npy", "refused global"),
    ("evil-pt", _evil_pt, "feat_v.pt", "not a loadable tensor"),
]


@pytest.mark.parametrize("mutate,fname,phrase", [b[1:] for b in BAD_INPUTS],
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_full_input_one_clear_error_and_nothing_written(full_src, tmp_path, mutate, fname,
                                                            phrase, capsys):
    mutate(full_src)
    out = tmp_path / "data"
    with pytest.raises(ConversionError) as err:
        convert_mmgcn("tiktok", full_src, name="x", split="original")
    assert fname in str(err.value) and phrase in str(err.value)
    assert main(["tiktok", "--src", str(full_src), "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and fname in captured.err
    assert "Traceback" not in captured.err and captured.err.count("\n") == 1
    assert not out.exists()  # nothing left behind, not even the output directory
    assert not (full_src / "PWNED").exists()  # a malicious pickle never ran


def test_failed_conversion_keeps_existing_output_untouched(full_src, tmp_path):
    out = tmp_path / "data"
    good = convert("tiktok", full_src, out)
    before = {p.name: p.read_bytes() for p in good.iterdir()}
    (full_src / "feat_a.pt").unlink()
    assert main(["tiktok", "--src", str(full_src), "--out", str(out), "--name", "tiktok-t"]) == 2
    assert {p.name: p.read_bytes() for p in good.iterdir()} == before
    assert sorted(p.name for p in out.iterdir()) == ["tiktok-t"]  # no temp dirs left


def test_cli_process_prints_error_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dataset_converters", "movielens", "--src",
                           str(tmp_path / "nope"), "--out", str(tmp_path / "data")],
                          cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'nope'}: missing source directory"


def test_sample_layout_has_no_original_split():
    with pytest.raises(ConversionError, match="no original split"):
        convert_mmgcn("tiktok", shared("tiktok-sample"), split="original")


def test_restricted_unpickler_admits_real_sample_and_refuses_globals(tmp_path):
    d = load_npy(shared("tiktok-sample") / "user_item_dict_sample.npy").item()
    assert len(d) == 100 and sum(map(len, d.values())) == 1929
    path = tmp_path / "x.npy"
    np.save(path, np.array([{"a": 1}, Path("/")], dtype=object), allow_pickle=True)
    with pytest.raises(ConversionError, match="refused global pathlib"):
        load_npy(path)


# ----------------------------------------------------------------- real samples
def test_tiktok_sample_counts(tmp_path):
    out = convert("tiktok", shared("tiktok-sample"), tmp_path)
    _, inter = read_atomic(out / "tiktok-t.inter")
    header, items = read_atomic(out / "tiktok-t.item")
    assert len({u for u, _ in inter}) == 100
    assert len(inter) == 1929
    assert len(items) == 1651
    assert len({i for _, i in inter}) == 1562
    assert header == ["item_id:token", "visual:float_seq", "acoustic:float_seq",
                      "textual:token_seq"]
    assert {len(r[1].split()) for r in items} == {128}
    split_rows = sum(len(read_atomic(out / f"tiktok-t.{p}.inter")[1])
                     for p in ("train", "valid", "test"))
    assert split_rows == 1929
    raw = torch.load(shared("tiktok-sample") / "a_feat_sample.pt", weights_only=True).numpy()
    np.testing.assert_array_equal(np.stack([floats(r[2]) for r in items]),
                                  raw.astype(np.float32))


def test_movielens_sample_counts(tmp_path):
    out = convert("movielens", shared("movielens-sample"), tmp_path)
    _, inter = read_atomic(out / "movielens-t.inter")
    header, items = read_atomic(out / "movielens-t.item")
    assert len({u for u, _ in inter}) == 100 and len(inter) == 2071
    assert len(items) == 1141
    assert header == ["item_id:token", "acoustic:float_seq", "textual:float_seq"]  # no visual
    assert {len(r[1].split()) for r in items} == {128}
    assert {len(r[2].split()) for r in items} == {100}
    assert "modality_fields: [acoustic, textual]" in (out / "movielens-t.yaml").read_text()


def test_same_seed_same_bytes_other_seed_other_split(tmp_path):
    src = shared("tiktok-sample")
    a = convert("tiktok", src, tmp_path / "a", "--seed", "7")
    b = convert("tiktok", src, tmp_path / "b", "--seed", "7")
    c = convert("tiktok", src, tmp_path / "c", "--seed", "8")
    for f in sorted(p.name for p in a.iterdir()):
        assert (a / f).read_bytes() == (b / f).read_bytes(), f
    assert (a / "tiktok-t.test.inter").read_bytes() != (c / "tiktok-t.test.inter").read_bytes()


def test_pca_reduces_dense_modalities_only(tmp_path):
    out = convert("tiktok", shared("tiktok-sample"), tmp_path, "--pca", "16")
    header, items = read_atomic(out / "tiktok-t.item")
    assert {len(r[1].split()) for r in items} == {16}
    assert {len(r[2].split()) for r in items} == {16}
    assert header[3] == "textual:token_seq"
    assert "PCA 128 -> 16" in (out / "tiktok-t.yaml").read_text()


def test_pca_matches_svd_and_is_deterministic():
    x = np.random.default_rng(1).standard_normal((300, 12)) @ np.diag(np.arange(12, 0, -1.0))
    y = pca_reduce(x, 4)  # [300, 4]
    assert y.shape == (300, 4) and y.dtype == np.float32
    _, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    np.testing.assert_allclose(np.linalg.norm(y, axis=0), s[:4], rtol=1e-4)  # top variances
    np.testing.assert_array_equal(y, pca_reduce(x.copy(), 4))
    assert pca_reduce(x, 12).shape == (300, 12)


def test_truncated_svd_matches_numpy_and_pads_small_inputs():
    import scipy.sparse as sp

    from dataset_converters.text import tfidf_svd, truncated_svd

    x = np.random.default_rng(0).standard_normal((50, 30))
    s = np.linalg.svd(x, compute_uv=False)
    y = truncated_svd(sp.csr_matrix(x), 5)  # [50, 5] = U S
    np.testing.assert_allclose(np.linalg.norm(y, axis=0), s[:5], rtol=1e-5)
    assert tfidf_svd(["a b", "c d"], 8).shape == (2, 8)  # rank 0 vocabulary -> zero columns


# ------------------------------------------------------------------------ splits
def test_split_counts_match_recbole_rs():
    from recbole.data.dataset import Dataset

    n = np.arange(1, 60)
    expected = [Dataset._calcu_split_ids(None, int(t), [0.8, 0.1, 0.1]) for t in n]
    ours = np.cumsum(split_counts(n), axis=1)[:, :2]
    assert ours.tolist() == [list(e) for e in expected]


def test_chrono_split_keeps_time_order_per_user():
    users = np.array(list("aaaaabbbbbbbbbbbc"))
    parts = chrono_parts(users)
    assert parts.tolist() == [0, 0, 0, 1, 2] + [0] * 9 + [1, 2] + [0]
    assert sorted(random_parts(users, 3).tolist()) == sorted(parts.tolist())


# -------------------------------------------------------------------- MicroLens
def test_microlens_counts_tfidf_and_chrono(tmp_path):
    src = shared("microlens-50k")
    assert main(["microlens", "--src", str(src), "--out", str(tmp_path), "--name", "ml50",
                 "--split", "chrono", "--text", "tfidf", "--text-dim", "32"]) == 0
    out = tmp_path / "ml50"
    header, inter = read_atomic(out / "ml50.inter")
    assert header == ["user_id:token", "item_id:token", "timestamp:float"]
    assert len(inter) == 359708 and len({r[0] for r in inter}) == 50000
    header, items = read_atomic(out / "ml50.item")
    assert header == ["item_id:token", "textual:float_seq", "hashtag:token_seq"]
    assert len(items) == 19220 and {len(r[1].split()) for r in items[:100]} == {32}
    assert items[0][2] == "comic two_yuan my_destiny_villain"
    _, test = read_atomic(out / "ml50.test.inter")
    _, train = read_atomic(out / "ml50.train.inter")
    last_train = {}
    for u, _, t in train:
        last_train[u] = max(last_train.get(u, -1), float(t))
    assert all(float(t) > last_train[u] for u, _, t in test)  # test is each user's latest


@pytest.mark.parametrize("pairs,titles,phrase", [
    ("1 5 6\n", "item,title\n5,a\n6,b\n", "is not 'user<TAB>item"),
    ("1\t\n", "item,title\n5,a\n", "empty user"),
    ("1\t5 7\n", "item,title\n5,a\n", "have no row in"),
    ("1\t5\n", "id,name\n5,a\n", "expected the header"),
])
def test_microlens_bad_input(tmp_path, pairs, titles, phrase, capsys):
    src = tmp_path / "raw"
    src.mkdir()
    (src / "MicroLens-50k_pairs.tsv").write_text(pairs)
    (src / "MicroLens-50k_titles.csv").write_text(titles)
    assert main(["microlens", "--src", str(src), "--out", str(tmp_path / "data")]) == 2
    assert phrase in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


# ------------------------------------------------------------------- ml-100k
def test_ml100k_builder(tmp_path):
    out = build_ml100k(tmp_path)
    assert out == tmp_path / "mm-ml-100k"
    header, inter = read_atomic(out / "mm-ml-100k.inter")
    assert header == ["user_id:token", "item_id:token", "timestamp:float"]
    assert len(inter) == 100000 and len({r[0] for r in inter}) == 943
    header, items = read_atomic(out / "mm-ml-100k.item")
    assert header == ["item_id:token", "title:token_seq", "genre:float_seq", "year:float_seq"]
    assert len(items) == 1682
    toy = items[0]
    assert toy[1] == "toy story"
    assert floats(toy[2]).sum() == 3 and len(toy[2].split()) == 19
    assert floats(toy[3]).tolist() == pytest.approx([0.95, 0, 0, 0, 0, 1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mm-ml-100k"]
    yaml = (out / "mm-ml-100k.yaml").read_text()
    assert yaml == (REPO / "properties" / "dataset" / "mm-ml-100k.yaml").read_text()


def test_ml100k_title_and_year_helpers():
    assert title_tokens("Children's Story, The (1995)") == ["childrens", "story", "the"]
    assert title_tokens("Seven (Se7en)") == ["seven", "se7en"]
    assert year_vector(None).tolist() == [0] * 6
    assert year_vector(1959)[1] == 1 and year_vector(1960)[2] == 1


def test_atomic_dir_replaces_only_on_success(tmp_path):
    target = tmp_path / "d"
    with atomic_dir(target) as tmp:
        (tmp / "a").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a").write_text("2")
        raise RuntimeError
    assert (target / "a").read_text() == "1" and sorted(os.listdir(tmp_path)) == ["d"]


# ------------------------------------------------------------------ synthetic
def test_synthetic_full_layout_converts_exactly(tmp_path):
    report = generate("tiktok", tmp_path / "raw", scale=0.005, seed=3)
    assert "183 users, 380 items, 3,630 interactions" in report
    train = np.load(tmp_path / "raw" / "train.npy")
    assert train[:, 1].min() >= 183  # items offset by the user count
    ds = convert_mmgcn("tiktok", tmp_path / "raw", name="syn")
    assert len(ds.inter) == 3630 and len(ds.item_ids) == 380
    assert sum(len(p) for p in ds.splits.values()) == 3630
    assert {m.name: m.ftype for m in ds.modalities} == {
        "visual": "float_seq", "acoustic": "float_seq", "textual": "token_seq"}
    pairs = set(zip(ds.inter.user.tolist(), ds.inter.item.tolist()))
    assert len(pairs) == 3630  # distinct
    # planted structure: a user's items are closer in visual space than random items
    v = ds.modalities[0].values
    u0 = ds.inter.item[ds.inter.user == ds.inter.user[0]]
    spread_user = np.linalg.norm(v[u0] - v[u0].mean(0), axis=1).mean()
    spread_all = np.linalg.norm(v - v.mean(0), axis=1).mean()
    assert spread_user < spread_all
    assert "planted" not in dataset_yaml(ds)


@pytest.mark.parametrize("kind", ["movielens", "tiktok", "kwai"])
def test_properties_yaml_matches_what_the_converter_writes(kind, tmp_path):
    yaml = pytest.importorskip("yaml")
    generate(kind, tmp_path / "raw", scale=0.002, seed=1)
    out = convert(kind, tmp_path / "raw", tmp_path / "data")
    written = yaml.safe_load((out / f"{kind}-t.yaml").read_text())
    shipped = yaml.safe_load((REPO / "properties" / "dataset" / f"{kind}.yaml").read_text())
    assert written == shipped


def test_microlens_properties_yaml_matches(tmp_path):
    yaml = pytest.importorskip("yaml")
    src = tmp_path / "raw"
    src.mkdir()
    (src / "MicroLens-50k_pairs.tsv").write_text("1\t5 6 7\n2\t6 7\n")
    titles = 'item,title\n5,"a cat # pets"\n6,dog cat\n7,dog\n'
    (src / "MicroLens-50k_titles.csv").write_text(titles)
    out = convert("microlens", src, tmp_path / "data", "--text", "tfidf")
    written = yaml.safe_load((out / "microlens-t.yaml").read_text())
    shipped = yaml.safe_load((REPO / "properties" / "dataset" / "microlens.yaml").read_text())
    assert written == shipped


# ------------------------------------------------------------------ RecBole load
def test_recbole_loads_converted_sample_with_fixed_split(tmp_path):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    out = convert("tiktok", shared("tiktok-sample"), tmp_path)
    config = Config(model="BPR", dataset="tiktok-t",
                    config_file_list=[str(out / "tiktok-t.yaml")],
                    config_dict={"data_path": str(tmp_path), "show_progress": False,
                                 "checkpoint_dir": str(tmp_path / "saved")})
    ds = create_dataset(config)
    assert ds.user_num - 1 == 100 and ds.item_num - 1 == 1651 and ds.inter_num == 1929
    assert len(ds.item_feat["visual"][1]) == 128  # row 0 is RecBole's padding item
    train, valid, test = data_preparation(config, ds)
    sizes = [len(read_atomic(out / f"tiktok-t.{p}.inter")[1]) for p in ("train", "valid", "test")]
    assert [len(train.dataset), len(valid.dataset), len(test.dataset)] == sizes


@pytest.mark.skipif(not (REPO / "run_recbole.py").exists(), reason="run_recbole.py not written yet")
def test_end_to_end_run_recbole_on_converted_sample(tmp_path):
    data = tmp_path / "data"
    convert("tiktok", shared("tiktok-sample"), data)
    proc = subprocess.run([sys.executable, str(REPO / "run_recbole.py"), "--model=MetaMMF_GCN",
                           "--dataset=tiktok-t", f"--data_path={data}", "--epochs=1"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the printed table: every metric of the plugin's protocol at the YAML's cut-offs, with the values of
    # the saved (best) model evaluated again on the converted test split
    printed = printed_results(proc.stdout, "MetaMMF_GCN", "tiktok-t")
    assert {k for k in printed if not k.startswith("cold")} == {
        f"{m}@{k}" for m in ("recall", "ndcg", "precision", "hit", "hr") for k in (10, 20)
    }
    from recbole.trainer import Trainer

    from recbole_metammf.checkpoint import load_checkpoint

    (checkpoint,) = (tmp_path / "saved").glob("MetaMMF_GCN-*.pth")
    loaded = load_checkpoint(str(checkpoint))
    trainer = Trainer(loaded.config, loaded.model)
    trainer.eval_collector.data_collect(loaded.train_data)  # as fit() does: the cold metrics need it
    again = trainer.evaluate(loaded.test_data, load_best_model=False, show_progress=False)
    assert printed == pytest.approx(dict(again), abs=1.01e-4)
    assert printed["hit@20"] >= printed["hit@10"]
