"""Multi-process training through RecBole's own path (``nproc=2``, torch.distributed).

Without a GPU the plugin runs that path with gloo on the CPU (``compat.py``, section 3),
and the spawned processes register the plugin themselves (``quick_start._run_recboles``).
On the planted dataset, two processes must reach the single-process test metrics within
noise: both see the same data and the same effective batch (each rank takes half), but
they draw different negatives and dropout masks, so the numbers are close, not equal.
"""

from __future__ import annotations

import socket

import pytest
import torch

from conftest import planted_config
from recbole_metammf.quick_start import run

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed unavailable")

EPOCHS = 4
TOLERANCE = 0.06  # NDCG@10 / Recall@20, absolute; the planted signal is far larger (random NDCG@10 ~ 0.03)


def free_port() -> str:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return str(s.getsockname()[1])


def run_model(model, root, name, nproc, **extra):
    cfg = planted_config(root, name, epochs=EPOCHS, **extra)
    result = run(model, name, config_dict=cfg, nproc=nproc, port=free_port())
    assert result is not None, "rank 0 returned no result"
    return dict(result["test_result"])


def test_metammf_gcn_two_processes_match_one(planted):
    root, name = planted
    single = run_model("MetaMMF_GCN", root, name, nproc=1)
    double = run_model("MetaMMF_GCN", root, name, nproc=2)
    for metric in ("ndcg@10", "recall@20"):
        assert abs(single[metric] - double[metric]) <= TOLERANCE, (metric, single, double)
    assert double["ndcg@10"] > 0.1, double  # learned the planted clusters


@pytest.mark.parametrize("model", ["MetaMMF_MF", "VBPR", "LightGCN"])
def test_models_train_and_evaluate_on_two_processes(planted, model):
    root, name = planted
    result = run_model(model, root, name, nproc=2)
    assert all(0.0 <= v <= 1.0 for v in result.values()), result
    assert result["recall@20"] > 0.0, result


def test_spawned_processes_register_the_plugin(planted, monkeypatch):
    """The children import the plugin themselves: no dependence on the parent's main module."""
    from recbole_metammf import quick_start

    spawned = {}

    def fake_spawn(fn, args, nprocs, join):
        spawned.update(fn=fn, nprocs=nprocs)

    monkeypatch.setattr(torch.multiprocessing, "spawn", fake_spawn)
    root, name = planted
    assert run("MetaMMF_MF", name, config_dict=planted_config(root, name), nproc=2) is None
    assert spawned == {"fn": quick_start._run_recboles, "nprocs": 2}
    assert spawned["fn"].__module__ == "recbole_metammf.quick_start"
