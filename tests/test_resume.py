"""Resumable trials (``recbole_metammf/benchmark/resume.py``): a trial stopped after an epoch and run
again with the same folder gives, to the last digit, the record of the same trial run without a stop."""

from __future__ import annotations

import pytest
import torch

from conftest import planted_config, write_planted_dataset
from recbole_metammf.benchmark import resume
from recbole_metammf.benchmark.trial import run_trial

RESULT_KEYS = ("valid_curve", "train_loss", "test_result", "best_epoch", "best_valid_score", "best_valid_result",
               "epochs_run", "diagnostic_best_test_over_epochs")
ALL_MODELS = ["BPR", "LightGCN", "MetaMMF_MF", "MetaMMF_GCN", "VBPR", "MMGCN", "GRCN", "LATTICE", "FREEDOM", "BM3",
              "MGCN", "LGMRec", "DRAGON", "DiffMM"]


def _results(record: dict) -> dict:
    """What a trial computed (timings left out: they are the run's, not the result's)."""
    out = {key: record[key] for key in RESULT_KEYS}
    out["diagnostic_best_test_over_epochs"] = {k: v for k, v in out["diagnostic_best_test_over_epochs"].items()
                                               if not k.endswith("time_s")}
    return out


class Stop(Exception):
    """What the test raises after an epoch: the trial's process 'ends' there."""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    write_planted_dataset(root, n_users=120, n_items=160, per_user=12)
    return root


def _trial(model, root, folder=None, stop_at=None, epochs=5):
    cfg = planted_config(root, epochs=epochs, stopping_step=50, diagnose_best_test_epoch=True)

    def on_epoch(point):
        if stop_at is not None and point["epoch"] == stop_at:
            raise Stop(f"stopped after epoch {stop_at}")

    if folder is not None:
        resume.activate(str(folder), every_s=0)  # a snapshot at the start of every epoch
    try:
        record = run_trial(model, "planted", 2020, config_dict=cfg, on_epoch=on_epoch)
    finally:
        info = resume.deactivate()
    return record, info


@pytest.mark.parametrize("model", ALL_MODELS)
def test_a_stopped_trial_resumes_to_the_uninterrupted_result(model, data, tmp_path):
    whole, info = _trial(model, data)
    assert whole["status"] == "ok", whole.get("traceback")
    assert info == {}

    stopped, _ = _trial(model, data, tmp_path / "resume", stop_at=2)
    assert stopped["status"] == "failed" and "stopped after epoch 2" in stopped["error"]
    assert (tmp_path / "resume" / resume.SNAPSHOT).is_file()

    resumed, info = _trial(model, data, tmp_path / "resume")
    assert resumed["status"] == "ok", resumed.get("traceback")
    assert info["resumed_at_epoch"] == 2  # the snapshot taken as epoch 2 began: epochs 0-1 replayed
    assert _results(resumed) == _results(whole), model


def test_keeping_snapshots_changes_nothing(data, tmp_path):
    whole, _ = _trial("DiffMM", data)
    kept, info = _trial("DiffMM", data, tmp_path / "resume")
    assert "resumed_at_epoch" not in info
    assert _results(kept) == _results(whole)


def test_a_snapshot_that_the_replay_does_not_meet_fails_the_trial_with_the_folder_named(data, tmp_path):
    folder = tmp_path / "resume"
    _trial("BPR", data, folder, stop_at=2)
    other, _ = _trial("BPR", data, folder, epochs=1)  # a run that ends before the log does
    assert other["status"] == "failed"
    assert str(folder) in other["error"] and "remove the folder" in other["error"]


def test_a_damaged_snapshot_is_named(data, tmp_path):
    folder = tmp_path / "resume"
    folder.mkdir()
    (folder / resume.SNAPSHOT).write_bytes(b"not a snapshot")
    record, _ = _trial("BPR", data, folder)
    assert record["status"] == "failed"
    assert resume.SNAPSHOT in record["error"] and "cannot be read as a snapshot" in record["error"]


def test_a_trainer_with_its_own_epoch_is_left_alone(data, tmp_path):
    """A trainer subclass that replaces an epoch method would train during a replay: resume stays off for it."""
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.trainer import Trainer
    from recbole.utils import get_model, init_seed

    class OwnEpoch(Trainer):
        def _train_epoch(self, train_data, epoch_idx, loss_func=None, show_progress=False):
            return super()._train_epoch(train_data, epoch_idx, loss_func=loss_func, show_progress=show_progress)

    config = Config(model="BPR", dataset="planted", config_dict=planted_config(data, epochs=2))
    init_seed(config["seed"], True)
    train, valid, _ = data_preparation(config, create_dataset(config))
    folder = tmp_path / "resume"
    resume.activate(str(folder), every_s=0)
    try:
        OwnEpoch(config, get_model("BPR")(config, train._dataset)).fit(train, valid, saved=False)
    finally:
        resume.deactivate()
    assert not folder.exists()


# --- the random states (recbole_metammf/rng.py, shared with the test diagnostic) ------------------------
def _draws(generator):
    import random

    import numpy as np

    return (random.random(), float(np.random.rand()), float(torch.rand(1)),
            float(torch.rand(1, generator=generator)))


def test_captured_random_states_restore_every_generator_and_survive_a_weights_only_load(tmp_path):
    from recbole_metammf import rng

    generator = torch.Generator().manual_seed(7)
    _draws(generator)
    state = rng.capture(generator)
    torch.save(state, tmp_path / "s.pt")
    first = _draws(generator)
    assert _draws(generator) != first  # the draws move on ...
    rng.restore(torch.load(tmp_path / "s.pt", weights_only=True), generator)
    assert _draws(generator) == first  # ... and come back with every state, the loader's included
    with pytest.raises(ValueError, match="no generator was given"):
        rng.restore(state)


def test_cuda_random_states_are_captured_and_restored_when_cuda_is_there(monkeypatch):
    # No GPU here: a stand-in for torch.cuda's state calls checks that both the test diagnostic and the
    # resume snapshots (one helper) carry CUDA's generators, which a model on the GPU draws from.
    from recbole_metammf import rng
    from recbole_metammf.benchmark import resume
    from recbole_metammf.evaluation import TestEpochDiagnostic

    devices = {"now": [torch.tensor([1], dtype=torch.uint8)]}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: [t.clone() for t in devices["now"]])
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: devices.update(now=list(states)))
    state = rng.capture()
    devices["now"] = [torch.tensor([2], dtype=torch.uint8)]
    rng.restore(state)
    assert devices["now"][0].item() == 1

    class _Trainer:  # evaluating test moves the CUDA generator; the diagnostic must put it back
        config = {"valid_metric": "Recall@20"}
        cur_step = 0

        def _valid_epoch(self, valid_data, show_progress=False):
            return 0.0, {}

        def evaluate(self, data, load_best_model=False, show_progress=False):
            devices["now"] = [torch.tensor([9], dtype=torch.uint8)]
            return {"recall@20": 0.5}

    trainer = _Trainer()
    TestEpochDiagnostic(trainer, test_data=None)
    trainer._valid_epoch(None)
    assert devices["now"][0].item() == 1
    loader = type("Loader", (), {"generator": torch.Generator()})()
    assert "cuda" in resume._rng_state(loader) and "loader" in resume._rng_state(loader)
