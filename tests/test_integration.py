"""The plugin inside RecBole: registration, defaults and their priority, the command line,
checkpoints, HyperTuning, and the paper's HR metric."""

from __future__ import annotations

import glob
import multiprocessing
import os
import subprocess
import sys

import pytest
import torch
from recbole.config import Config
from recbole.evaluator.collector import DataStruct
from recbole.quick_start import load_data_and_model, objective_function, run_recbole
from recbole.trainer import Trainer

from conftest import REPO, planted_config
from recbole_metammf.metrics import HR


# --- the HR metric -------------------------------------------------------------------------------
def _topk_struct(hits, pos_len):
    data = DataStruct()
    rec = torch.cat([torch.tensor(hits, dtype=torch.long), torch.tensor(pos_len).view(-1, 1)], dim=1)
    data.set("rec.topk", rec)
    return data


def test_hr_is_total_hits_over_total_test_items():
    # three users, top-3 hit indicators, and their test-set sizes
    data = _topk_struct([[1, 0, 1], [0, 0, 0], [0, 1, 0]], [4, 1, 2])
    result = HR({"topk": [2, 3], "metric_decimal_place": 6}).calculate_metric(data)
    assert result == {"hr@2": pytest.approx(2 / 7, abs=1e-6), "hr@3": pytest.approx(3 / 7, abs=1e-6)}
    # RecBole's per-user Recall on the same lists differs: (1/4 + 0 + 1/2) / 3 at K=2
    from recbole.evaluator.metrics import Recall

    recall = Recall({"topk": [2, 3], "metric_decimal_place": 6}).calculate_metric(data)
    assert recall["recall@2"] == pytest.approx(0.25, abs=1e-6)


# --- registration and defaults -------------------------------------------------------------------
def test_recbole_run_recbole_finds_plugin_models_and_defaults(planted):
    root, name = planted
    result = run_recbole(model="MetaMMF_GCN", dataset=name, config_dict=planted_config(root, epochs=1), saved=False)
    assert set(result["test_result"]) == {
        f"{m}@{k}" for m in ("recall", "ndcg", "precision", "hit", "hr") for k in (10, 20)
    }
    config = Config(model="MetaMMF_GCN", dataset=name, config_dict=planted_config(root))
    assert config["fusion_form"] == "cp" and config["propagation"] == "sage"  # model YAML
    assert config["topk"] == [10, 20] and config["valid_metric"] == "NDCG@10"  # plugin protocol
    assert config["eval_args"]["split"] == {"RS": [0.8, 0.1, 0.1]}


def test_config_priority(planted, tmp_path, monkeypatch):
    """plugin model YAML < dataset YAML beside the files < config files < config dict < command line."""
    root, name = planted
    (root / name / f"{name}.yaml").write_text("fused_size: 16\ncp_rank: 8\nmeta_size: 7\nid_embedding_size: 12\nnegative_slope: 0.2\n")
    user_file = tmp_path / "user.yaml"
    user_file.write_text("cp_rank: 4\nmeta_size: 6\nnegative_slope: 0.3\n")
    cfg = planted_config(root, meta_size=3, negative_slope=0.4)
    monkeypatch.setattr(sys, "argv", ["prog", "--negative_slope=0.5"])
    config = Config(model="MetaMMF_MF", dataset=name, config_file_list=[str(user_file)], config_dict=cfg)
    assert config["fusion_form"] == "cp"  # model YAML only
    assert config["fused_size"] == 16 and config["id_embedding_size"] == 12  # dataset YAML over model YAML
    assert config["cp_rank"] == 4  # config file over dataset YAML
    assert config["meta_size"] == 3  # config dict over config file
    assert config["negative_slope"] == 0.5  # command line over all


def test_checkpoint_reloads_with_weights_only_and_gives_same_metrics(planted):
    root, name = planted
    result = run_recbole(model="MetaMMF_GCN", dataset=name, config_dict=planted_config(root, epochs=2), saved=True)
    (checkpoint,) = glob.glob(str(root / "saved" / "MetaMMF_GCN-*.pth"))
    torch.load(checkpoint, weights_only=True)  # no unsafe global left in the file
    config, model, dataset, train, valid, test = load_data_and_model(checkpoint)
    reloaded = Trainer(config, model).evaluate(test, load_best_model=False)
    assert dict(reloaded) == pytest.approx(dict(result["test_result"]))


def test_runs_started_in_the_same_second_get_their_own_checkpoints(planted, monkeypatch):
    # RecBole names the checkpoint {model}-{time}.pth to the second; seeds launched together in one folder
    # shared one file. With the clock frozen, two processes (two pids) still get two names.
    import recbole.trainer.trainer as recbole_trainer
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model

    root, name = planted
    monkeypatch.setattr(recbole_trainer, "get_local_time", lambda: "Dec-02-2026_12-00-00")
    config = Config(model="BPR", dataset=name, config_dict=planted_config(root))
    train, _, _ = data_preparation(config, create_dataset(config))
    model = get_model("BPR")(config, train._dataset)
    pid = os.getpid()
    first = Trainer(config, model).saved_model_file
    monkeypatch.setattr(os, "getpid", lambda: 424242)  # another process, the same second
    second = Trainer(config, model).saved_model_file
    assert os.path.basename(first) == f"BPR-Dec-02-2026_12-00-00-{pid}.pth"
    assert os.path.basename(second) == "BPR-Dec-02-2026_12-00-00-424242.pth"
    assert first != second and os.path.dirname(first) == os.path.dirname(second)


def test_objective_function_and_hypertuning(planted, tmp_path):
    root, name = planted
    cfg = planted_config(root, model="MetaMMF_MF", dataset=name, epochs=1)
    out = objective_function(config_dict=cfg, saved=False)
    assert out["model"] == "MetaMMF_MF" and "hr@10" in out["test_result"]

    from recbole.trainer import HyperTuning

    import yaml

    fixed = tmp_path / "fixed.yaml"
    fixed.write_text(yaml.safe_dump({k: v for k, v in cfg.items()}))
    space = tmp_path / "space.hyper"
    space.write_text("fused_size choice [8,16]\n")
    tuner = HyperTuning(objective_function, algo="exhaustive", early_stop=10, max_evals=2,
                        params_file=str(space), fixed_config_file_list=[str(fixed)])
    tuner.run()
    # the tuner picks the size with the best validation score (NDCG@10: bigger is better), and the two
    # sizes were really trained (a tuner whose parameters were ignored would see one score twice)
    scores = {key: result["best_valid_score"] for key, result in tuner.params2result.items()}
    assert set(scores) == {"fused_size:8", "fused_size:16"}
    assert scores["fused_size:8"] != scores["fused_size:16"], scores
    assert all(result["valid_score_bigger"] for result in tuner.params2result.values())
    best = max(scores, key=scores.get)
    assert tuner.params2str(tuner.best_params) == best and tuner.best_score == scores[best], (tuner.best_params, scores)


# --- command line ---------------------------------------------------------------------------------
def _cli(args, cwd, entry=None):
    cmd = [sys.executable, *(entry or [str(REPO / "run_recbole.py")]), *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("model", ["MetaMMF_MF", "BPR"])
def test_run_recbole_script_runs_plugin_and_builtin_models(planted, tmp_path, model):
    root, name = planted
    conf = tmp_path / "data.yaml"
    conf.write_text("load_col:\n  inter: [user_id, item_id]\n  item: [item_id, visual, audio, tags]\nshow_progress: False\n")
    proc = _cli([f"--model={model}", f"--dataset={name}", f"--data_path={root}", "--epochs=1",
                 f"--config_files={conf}"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Test results of {model} on {name}" in proc.stdout
    assert "hr@10" in proc.stdout and "ndcg@20" in proc.stdout
    assert glob.glob(str(tmp_path / "saved" / f"{model}-*.pth"))  # RecBole wrote under the cwd


def test_module_entry_point(planted, tmp_path):
    root, name = planted
    conf = tmp_path / "data.yaml"
    conf.write_text("load_col:\n  inter: [user_id, item_id]\n  item: [item_id, visual]\n")
    proc = subprocess.run(
        [sys.executable, "-m", "recbole_metammf", "--model=MetaMMF_GCN", f"--dataset={name}", f"--data_path={root}",
         "--epochs=1", f"--config_files={conf}", "--state=ERROR"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Test results of MetaMMF_GCN" in proc.stdout


def _recbole_ensure_dir(dir_path):
    """RecBole 1.2.1's own ``ensure_dir`` (recbole/utils/utils.py), which the plugin replaces."""
    if not os.path.exists(dir_path):
        os.makedirs(dir_path)


def _race(ensure_dir, base, rounds, barrier, queue):
    """One of several processes that, released together, each make ``base/d{r}/log`` for every round r."""
    failures = 0
    for r in range(rounds):
        barrier.wait()
        try:
            ensure_dir(os.path.join(base, f"d{r}", "log"))
        except FileExistsError:
            failures += 1
    queue.put(failures)


def _failures_in_race(ensure_dir, base, rounds, processes=4) -> int:
    ctx = multiprocessing.get_context("fork")  # the children inherit the patched modules as they are
    barrier, queue = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(ensure_dir, str(base), rounds, barrier, queue)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    counts = [queue.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    return sum(counts)


def test_directory_creation_is_race_free(tmp_path):
    """RecBole's modules create log/ and saved/ through the plugin's exist_ok version, which survives
    processes creating the same directory at the same moment; RecBole's own version does not."""
    import importlib

    from recbole_metammf import compat

    for name in compat._ENSURE_DIR_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "ensure_dir"):
            assert module.ensure_dir is compat.ensure_dir, name
    # a real race: processes released by a barrier create the same fresh directory, round after round.
    # RecBole's check-then-create loses some rounds (FileExistsError); run until it has (so the race is
    # shown to happen here), then the same number of rounds with what RecBole now calls: no loss.
    rounds, lost = 0, 0
    while not lost and rounds < 20_000:
        lost = _failures_in_race(_recbole_ensure_dir, tmp_path / f"recbole{rounds}", 500)
        rounds += 500
    assert lost > 0, f"no FileExistsError in {rounds} rounds: the test created no race"
    from recbole.utils import logger

    assert _failures_in_race(logger.ensure_dir, tmp_path / "plugin", rounds) == 0
    assert (tmp_path / "plugin" / f"d{rounds - 1}" / "log").is_dir()


def test_unknown_model_name_is_a_plain_error(tmp_path):
    proc = _cli(["--model=MetaMMF_GNC", "--dataset=planted"], cwd=tmp_path)
    assert proc.returncode != 0
    assert "unknown model 'MetaMMF_GNC'" in proc.stderr
    assert "MetaMMF_GCN" in proc.stderr  # lists what exists
