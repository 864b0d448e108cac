"""Ray nodes started the way a user starts a cluster (``ray start``), for the cluster tests.

Each node is one ``ray start --block`` in its own process group (a new session) with its own
temporary directory (``TMPDIR``/``RAY_TMPDIR``; the head's also as ``--temp-dir``), so that

* it is torn down by killing that group and nothing else: ``ray stop`` (Ray 2.6) stops every
  Ray process of the machine, other users' local Ray instances included, so it is never used here;
* Ray's address file goes to that directory, not to ``/tmp/ray/ray_current_cluster``, where a plain
  ``ray.init()`` of some other process on this machine would find it and join the test cluster.

A watchdog shell in the group tears the node down if the process that started it dies without
doing so (a test run killed with ``kill -9``), so no node outlives its test run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# Runs "$@" (ray start ... --block) and, when it ends or the watched process is gone, kills the group.
_WATCHDOG = r'''
"$@" & child=$!
trap '' TERM
while kill -0 "$WATCH_PID" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 1; done
kill -TERM 0; sleep 3; kill -KILL 0
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def ray_executable() -> str:
    """The ``ray`` command of this Python's environment."""
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else shutil.which("ray")


class RayNode:
    """``ray start --head`` (``address=None``) or ``ray start --address ADDRESS``, one CPU."""

    def __init__(self, address: str | None = None, num_cpus: int = 1, node_ip: str | None = None,
                 timeout: float = 120):
        # short: Ray's unix sockets live under this directory and a socket path has at most 107 bytes
        self.tmp = tempfile.mkdtemp(prefix="rmm-ray-", dir="/tmp")
        self.head = address is None
        self.port = free_port() if self.head else None
        args = [ray_executable(), "start", "--num-cpus", str(num_cpus), "--block", "--disable-usage-stats",
                # agent and metrics ports of our own: the defaults are fixed ports two nodes of one machine
                # (or another user's Ray) would both want
                "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--metrics-export-port", str(free_port())]
        if self.head:
            args += ["--head", "--port", str(self.port), "--temp-dir", self.tmp, "--include-dashboard", "false",
                     "--dashboard-port", str(free_port()), "--ray-client-server-port", str(free_port())]
        else:
            args += ["--address", address]
        if node_ip:
            args += ["--node-ip-address", node_ip]
        python_path = [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
        env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=self.tmp, RAY_TMPDIR=self.tmp,
                   PYTHONPATH=os.pathsep.join(python_path), WATCH_PID=str(os.getpid()))
        env.pop("RAY_ADDRESS", None)
        # a raylet ends itself when its agent (a Python process) has not registered within 30 s, which
        # on a machine loaded by other work happens (seen here at a load of 30 on 2 cores)
        env.setdefault("RAY_agent_register_timeout_ms", "300000")
        self.log = Path(self.tmp) / "ray-start.log"
        self.command = " ".join(["ray", *args[1:]])
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(["sh", "-c", _WATCHDOG, "sh", *args], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         start_new_session=True)
        self.pgid = self.proc.pid
        self.started = time.time()
        try:
            self._wait_started(timeout)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.time() - self.started
        print(f"\n$ {self.command}    # pgid {self.pgid}, TMPDIR {self.tmp}: started in {self.start_seconds:.1f}s")

    def _wait_started(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            text = self.log.read_text()
            # started, and its raylet's agent registered (or the raylet would end itself)
            if "Ray runtime started." in text and any(
                    "HandleRegisterAgent" in log.read_text(errors="replace")
                    for log in Path(self.tmp).rglob("raylet.out")):
                self.ip = re.search(r"Local node IP: (\S+)", text).group(1)
                if self.head:
                    self.address = f"{self.ip}:{self.port}"
                return
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode}:\n{text[-3000:]}")
            time.sleep(0.2)
        raise TimeoutError(f"ray start did not finish in {timeout}s:\n{self.log.read_text()[-3000:]}")

    def processes(self):
        """psutil processes of this node (its process group), the watchdog shell included."""
        import psutil

        found = []
        for p in psutil.process_iter(["pid", "cmdline", "name"]):
            try:
                if os.getpgid(p.pid) == self.pgid:
                    found.append(p)
            except (ProcessLookupError, psutil.Error):
                pass
        return found

    def workers_running(self, task_name: str):
        """Worker processes of this node executing ``task_name`` now (Ray titles them ``ray::NAME``)."""
        return [p for p in self.processes() if (p.info["cmdline"] or [""])[0].startswith(f"ray::{task_name}")]

    def raylet(self):
        return next(p for p in self.processes() if p.info["name"] == "raylet")

    def node_id(self) -> str:
        """The node's Ray id, from its raylet's log."""
        for log in Path(self.tmp).rglob("raylet.out"):
            m = re.search(r"Raylet of id, ([0-9a-f]{56}) started", log.read_text(errors="replace"))
            if m:
                return m.group(1)
        raise LookupError(f"no node id in the raylet log under {self.tmp}")

    def alive(self) -> bool:
        return bool(self.processes())

    def stop(self, grace: float = 10):
        """SIGTERM to the node's process group, SIGKILL to what is left after ``grace`` s; remove its dir."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.pgid, sig)
            except ProcessLookupError:
                break
            deadline = time.time() + wait
            while time.time() < deadline and self.alive():
                time.sleep(0.2)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        shutil.rmtree(self.tmp, ignore_errors=True)
