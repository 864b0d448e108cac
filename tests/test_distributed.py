"""Multi-process training through RecBole's own path (``nproc=2``, torch.distributed).

Without a GPU the plugin runs that path with gloo on the CPU (``compat.py``, section 3),
and the spawned processes register the plugin themselves (``quick_start._run_recboles``).
On the planted dataset, two processes must reach the single-process test metrics within
noise: both see the same data and the same effective batch (each rank takes half), but
they draw different negatives and dropout masks, so the numbers are close, not equal.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from conftest import REPO, planted_config, printed_results, write_planted_dataset
from recbole_metammf.quick_start import run

HOOK = REPO / "tests" / "ddp_hook"  # sitecustomize: every rank saves its parameters at the end of fit

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


def pop_ndcg(root, name) -> float:
    """Pop's test NDCG@10: popularity is flat within a planted cluster, so it does not know a user's taste."""
    return run_model("Pop", root, name, nproc=1)["ndcg@10"]


def hook_env(params_dir) -> dict:
    """The environment under which every rank saves its last parameters to ``params_dir/rank{R}.pt``."""
    path = os.pathsep.join([str(HOOK), str(REPO), os.environ.get("PYTHONPATH", "")])
    return {"METAMMF_TEST_PARAMS_DIR": str(params_dir), "PYTHONPATH": path}


def assert_ranks_hold_the_same_parameters(params_dir, world_size=2):
    """Every rank ends training with the same parameters, and they are trained (not the initial ones
    of a model that took no step: two ranks that never averaged their gradients would differ)."""
    ranks = [torch.load(params_dir / f"rank{r}.pt", weights_only=True) for r in range(world_size)]
    assert len(ranks[0]) > 0 and all(set(p) == set(ranks[0]) for p in ranks)
    for name in ranks[0]:
        for other in ranks[1:]:
            assert torch.equal(ranks[0][name], other[name]), name


def test_metammf_gcn_two_processes_match_one(planted, tmp_path, monkeypatch):
    root, name = planted
    single = run_model("MetaMMF_GCN", root, name, nproc=1)
    params = tmp_path / "params"
    params.mkdir()
    for key, value in hook_env(params).items():
        monkeypatch.setenv(key, value)  # read by the spawned ranks
    double = run_model("MetaMMF_GCN", root, name, nproc=2)
    assert_ranks_hold_the_same_parameters(params)
    for metric in ("ndcg@10", "recall@20"):
        assert abs(single[metric] - double[metric]) <= TOLERANCE, (metric, single, double)
    assert double["ndcg@10"] > 2 * pop_ndcg(root, name), double  # learned the planted clusters


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


# --- two "nodes": two launches of run_recbole.py, one process each -------------------------------------
NODE_TIMEOUT = 900  # seconds for a whole two-node run on a loaded 2-core machine
DDP_TIMEOUT = 60  # the runs' ddp_timeout: a peer gone silent ends the run after this


def launch_nodes(data_root, workdir, port, epochs, env_extra=None):
    """Two ``run_recbole.py`` processes as two nodes of one run (``--nproc=1 --world_size=2``,
    ``--group_offset`` 0 and 1, the same ``--ip/--port``), each in its own folder and process group."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    procs = []
    for node in (0, 1):
        cwd = workdir / f"node{node}"
        cwd.mkdir(parents=True)
        cmd = [sys.executable, str(REPO / "run_recbole.py"), "--model=MetaMMF_GCN", "--dataset=planted",
               f"--data_path={data_root}", f"--epochs={epochs}", "--train_batch_size=512", "--seed=2020",
               "--show_progress=False", "--state=INFO", f"--ddp_timeout={DDP_TIMEOUT}",
               "--nproc=1", "--world_size=2", f"--group_offset={node}", "--ip=127.0.0.1", f"--port={port}"]
        procs.append(subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True))
    return procs


def kill_group(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass



@pytest.fixture
def planted_on_disk(tmp_path):
    root = tmp_path / "data"
    path = write_planted_dataset(root)
    (path / "planted.yaml").write_text("load_col:\n  inter: [user_id, item_id]\n  item: [item_id, visual, audio, tags]\n")
    return root


@pytest.mark.slow
def test_two_nodes_train_like_one_process(planted_on_disk, tmp_path):
    """Two launches of run_recbole.py as two nodes reach the single-process test metrics within the
    noise of the two-process test, with the same parameters on both ranks."""
    root = planted_on_disk
    single = run_model("MetaMMF_GCN", root, "planted", nproc=1)
    params = tmp_path / "params"
    params.mkdir()
    procs = launch_nodes(root, tmp_path / "run", free_port(), EPOCHS, hook_env(params))
    try:
        outs = [proc.communicate(timeout=NODE_TIMEOUT) for proc in procs]
    finally:
        for proc in procs:
            kill_group(proc)
    for proc, (out, err) in zip(procs, outs):
        assert proc.returncode == 0, err[-3000:]
    assert_ranks_hold_the_same_parameters(params)
    two = printed_results(outs[0][0], "MetaMMF_GCN", "planted")
    for metric in ("ndcg@10", "recall@20"):
        assert abs(single[metric] - two[metric]) <= TOLERANCE, (metric, single, two)
    assert two["ndcg@10"] > 2 * pop_ndcg(root, "planted"), two


@pytest.mark.slow
def test_a_dead_node_ends_the_other_with_one_error(planted_on_disk, tmp_path):
    """kill -9 of one node while the run trains: the other exits within ddp_timeout (plus start-up
    slack) with one line naming what happened, and no traceback."""
    procs = launch_nodes(planted_on_disk, tmp_path / "run", free_port(), epochs=200)
    logs = tmp_path / "run" / "node0" / "log"
    try:
        deadline = time.monotonic() + NODE_TIMEOUT
        while time.monotonic() < deadline:  # until node 0 trains (its log shows an epoch)
            if any("epoch 1 training" in f.read_text() for f in logs.rglob("*.log")):
                break
            assert procs[0].poll() is None and procs[1].poll() is None, "a node ended before training"
            time.sleep(1)
        else:
            pytest.fail("node 0 did not start training")
        kill_group(procs[1])
        killed = time.monotonic()
        out, err = procs[0].communicate(timeout=DDP_TIMEOUT + 120)
        elapsed = time.monotonic() - killed
    finally:
        for proc in procs:
            kill_group(proc)
    assert procs[0].returncode == 2, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and errors[0].startswith(
        "error: multi-process run stopped: rank 0 of 2 lost another process of the run"), err[-3000:]
    assert elapsed < DDP_TIMEOUT + 120, elapsed
    print(f"node 0 ended {elapsed:.1f} s after node 1 was killed: {errors[0]}")
