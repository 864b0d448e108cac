"""A real Ray cluster on this machine, started the way users start one (issue 23).

A head node (``ray start --head --port P --num-cpus 1``) and a second node (``ray start --address
HOST:P --num-cpus 1``), each its own process group with its own temp dir (tests/ray_nodes.py), and
``run_benchmark.py --ray-address HOST:P`` as the user runs it, in its own process:

* the board runs across both nodes and its trial files and leaderboard equal, to the last digit,
  the same board run locally (``run_benchmark.py`` without ``--ray-address``);
* the second node lost mid-trial (``kill -9`` of its raylet): the board completes, every trial is
  recorded once, the lost attempt is reported, the metrics equal the undisturbed run's;
* the driver killed (``kill -9``) and run again while the cluster stays up: it resumes, runs only the
  missing trials, and the board equals the undisturbed one.

The second node gets its own address (127.0.0.2) as a node of a real cluster has its own machine:
a driver attaches to a node of its own IP, and of two nodes with one IP Ray picks either, so a
driver could otherwise find itself on the node the test kills. The head is on 127.0.0.1, not on the
address Ray would pick (the machine's own network address): in one CI sandbox that address was not
reachable from 127.0.0.2 and the second node never joined. Nodes are torn down by their fixtures
(and by a watchdog should this process die first).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import yaml

from conftest import REPO, planted_config, write_planted_dataset
from ray_nodes import RayNode

pytest.importorskip("ray")
psutil = pytest.importorskip("psutil")  # a dependency of ray

pytestmark = pytest.mark.slow

MODELS = ["BPR", "MetaMMF_MF"]
N_TRIALS = 4  # 2 models x 2 seeds
# what differs between two runs of one trial: wall times, memory, clock, and where it ran
VOLATILE = {"train_time_s", "valid_time_s", "test_time_s", "total_time_s", "peak_memory_mb", "started_at",
            "finished_at", "ray_node_id", "lost_attempts"}
DRIVER_TIMEOUT = 900


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """(bench.yaml, a fresh working dir maker): 2 models x 2 seeds on the planted data, 2 epochs."""
    root = tmp_path_factory.mktemp("cluster")
    write_planted_dataset(root / "data")
    cfg = planted_config(root / "data", "planted", epochs=2)
    cfg.pop("seed")
    cfg.pop("checkpoint_dir")
    (root / "data.yaml").write_text(yaml.safe_dump(cfg))
    bench = root / "bench.yaml"
    bench.write_text(yaml.safe_dump({"models": MODELS, "datasets": ["planted"], "seeds": 2, "base_seed": 7,
                                     "config_files": [str(root / "data.yaml")]}))
    return bench


class Driver:
    """``python run_benchmark.py --file BENCH --out OUT [--ray-address A]`` in its own process group."""

    def __init__(self, bench, cwd, ray_address=None):
        self.cwd = cwd
        self.out = cwd / "out"
        cmd = [sys.executable, str(REPO / "run_benchmark.py"), "--file", str(bench), "--out", str(self.out)]
        if ray_address:
            cmd += ["--ray-address", ray_address]
        cwd.mkdir(parents=True, exist_ok=True)
        self.stdout_path, self.stderr_path = cwd / "driver.out", cwd / "driver.err"
        env = dict(os.environ, OMP_NUM_THREADS="1")
        env.pop("RAY_ADDRESS", None)
        print(f"\n$ cd {cwd}; python run_benchmark.py {' '.join(cmd[2:])}")
        self.started = time.time()
        with open(self.stdout_path, "w") as out, open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                         start_new_session=True)

    def wait(self, timeout=DRIVER_TIMEOUT):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            self.kill()
        self.seconds = time.time() - self.started
        print(f"driver exit {self.proc.returncode} after {self.seconds:.1f}s: {self.stdout.strip()}")
        return self.proc.returncode

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    @property
    def stdout(self):
        return self.stdout_path.read_text()

    @property
    def stderr(self):
        # the progress bar redraws with carriage returns: one line per redraw
        return self.stderr_path.read_text().replace("\r", "\n")

    def trial_files(self):
        d = self.out / "trials"
        return sorted(p.name for p in d.glob("*.json") if not p.name.startswith(".")) if d.is_dir() else []

    def records(self):
        return {name: json.loads((self.out / "trials" / name).read_text()) for name in self.trial_files()}


@pytest.fixture(scope="module")
def reference(board, tmp_path_factory):
    """The same board run locally (Ray started by run_benchmark.py on this machine's cores)."""
    driver = Driver(board, tmp_path_factory.mktemp("local"))
    assert driver.wait() == 0, driver.stderr[-3000:]
    assert f"ran {N_TRIALS} trial(s) (0 failed), kept 0" in driver.stdout
    return driver


@pytest.fixture(scope="module")
def head():
    # on loopback, as the second node: a machine's own network address need not be reachable from
    # 127.0.0.2 (a CI sandbox's eth0 address was not), while loopback always is
    node = RayNode(node_ip="127.0.0.1")
    yield node
    node.stop()


@pytest.fixture
def second_node(head):
    node = RayNode(head.address, node_ip="127.0.0.2")
    yield node
    node.stop()


def assert_same_board(driver, reference):
    """Trial files equal but for times, memory and node; leaderboard.csv byte for byte; the markdown table."""
    ours, ref = driver.records(), reference.records()
    assert sorted(ours) == sorted(ref) and len(ours) == N_TRIALS
    for name, record in ours.items():
        assert record["status"] == "ok", record.get("error")
        kept = {k: v for k, v in record.items() if k not in VOLATILE}
        assert kept == {k: v for k, v in ref[name].items() if k not in VOLATILE}, name
        assert record["test_result"] == ref[name]["test_result"]  # (said twice: the point of it all)
    assert not list((driver.out / "trials").glob(".tmp-*"))  # no half-written trial file
    assert (driver.out / "planted" / "leaderboard.csv").read_bytes() == \
        (reference.out / "planted" / "leaderboard.csv").read_bytes()

    def table(d):
        return [line for line in (d.out / "planted" / "leaderboard.md").read_text().splitlines()
                if line.startswith("| ")]

    assert table(driver) == table(reference) and len(table(driver)) >= 4


def test_board_across_two_nodes_equals_the_local_board(board, reference, head, second_node, tmp_path):
    driver = Driver(board, tmp_path / "run", ray_address=head.address)
    assert driver.wait() == 0, driver.stderr[-3000:]
    assert f"ran {N_TRIALS} trial(s) (0 failed), kept 0" in driver.stdout
    nodes = {r["ray_node_id"] for r in driver.records().values()}
    assert nodes == {head.node_id(), second_node.node_id()}  # both nodes ran trials
    assert "LOST ATTEMPT" not in driver.stdout + driver.stderr
    assert_same_board(driver, reference)


def _worker_in_training(node, cwd):
    """A worker of ``node`` inside a trial's training: it holds the trial's RecBole log file open."""
    log_dir = str(cwd / "log") + os.sep
    for p in node.workers_running("trial_task"):
        try:
            if any(f.path.startswith(log_dir) for f in p.open_files()):
                return p
        except psutil.Error:
            pass
    return None


def test_second_node_lost_mid_trial_board_completes_each_trial_once(board, reference, head, second_node,
                                                                     tmp_path):
    node_id = second_node.node_id()
    driver = Driver(board, tmp_path / "run", ray_address=head.address)
    try:
        worker = None
        while worker is None:
            assert driver.proc.poll() is None, "the board ended before the second node ran a trial"
            worker = _worker_in_training(second_node, driver.cwd)
            time.sleep(0.1)
        raylet = second_node.raylet().pid
        os.kill(raylet, signal.SIGKILL)  # the node is lost
        killed = time.time()
        print(f"$ kill -9 {raylet}    # the second node's raylet, {killed - driver.started:.1f}s into the board, "
              f"while its worker {worker.pid} trains a trial")
        worker.wait(timeout=60)  # its worker goes with it
        print(f"worker {worker.pid} gone {time.time() - killed:.1f}s after its raylet was killed")
    except BaseException:
        driver.kill()
        raise
    assert driver.wait() == 0, driver.stderr[-3000:]
    print(f"board finished {time.time() - killed:.1f}s after the kill")

    assert f"ran {N_TRIALS} trial(s) (0 failed), kept 0" in driver.stdout  # each trial run (and recorded) once
    # the runner's messages (LOST ATTEMPT, FAILED) go to stdout, above the progress bar on stderr
    lost = [line for line in driver.stdout.splitlines() if line.startswith("LOST ATTEMPT")]
    assert len(lost) == 1, driver.stdout + driver.stderr[-3000:]
    print(lost[0])
    m = re.match(r"LOST ATTEMPT (\S+): attempt 1 \(node (\w+), pid (\d+)\) was lost with its worker or node; "
                 r"Ray runs the trial again \(attempt 2, node (\w+)\)", lost[0])
    assert m and m.group(2) == node_id and int(m.group(3)) == worker.pid and m.group(4) == head.node_id(), lost[0]
    records = driver.records()
    retried = records[m.group(1) + ".json"]
    assert retried["lost_attempts"] == [{"attempt": 1, "ray_node_id": node_id, "pid": worker.pid}]
    assert retried["ray_node_id"] == head.node_id()
    assert [r["trial_id"] for r in records.values() if "lost_attempts" in r] == [m.group(1)]
    manifest = json.loads((driver.out / "benchmark.json").read_text())
    assert [run["to_run"] for run in manifest["runs"]] == [N_TRIALS]
    assert_same_board(driver, reference)


def test_driver_killed_and_rerun_resumes_against_the_live_cluster(board, reference, head, second_node, tmp_path):
    first = Driver(board, tmp_path / "run", ray_address=head.address)
    try:
        while not first.trial_files():
            assert first.proc.poll() is None, "the board ended before the driver could be killed"
            time.sleep(0.1)
    finally:
        first.kill()  # kill -9 of the driver, mid-board
    killed = time.time()
    print(f"$ kill -9 -{first.proc.pid}    # the driver, {killed - first.started:.1f}s into the board, "
          f"after its first trial file")
    finished = first.trial_files()
    assert 1 <= len(finished) < N_TRIALS
    before = {name: (first.out / "trials" / name).read_bytes() for name in finished}
    # Ray ends the dead driver's running trials itself: no worker keeps computing for nobody
    deadline = time.time() + 120
    while head.workers_running("trial_task") or second_node.workers_running("trial_task"):
        assert time.time() < deadline, "the dead driver's trials still run"
        time.sleep(0.2)
    print(f"the dead driver's trials ended {time.time() - killed:.1f}s after the kill")

    again = Driver(board, tmp_path / "run", ray_address=head.address)  # the same command again
    assert again.wait() == 0, again.stderr[-3000:]
    left = N_TRIALS - len(finished)
    assert f"{len(finished)} finished trial(s) in {again.out} kept; {left} to run." in again.stderr
    assert f"ran {left} trial(s) (0 failed), kept {len(finished)}" in again.stdout  # each trial once
    assert all((again.out / "trials" / name).read_bytes() == b for name, b in before.items())
    assert "LOST ATTEMPT" not in again.stdout + again.stderr
    assert_same_board(again, reference)
