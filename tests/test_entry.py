"""The command lines' ending: clean stops on SIGINT / SIGTERM wherever a driver was started."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO

CHILD = """
import signal, sys, time
sys.path.insert(0, {repo!r})
from recbole_metammf.entry import stop_on_signals
if {install}:
    stop_on_signals()
try:
    print("ready", flush=True)  # inside: the signal may come as soon as the line is out
    time.sleep(60)
    print("slept", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(130)
"""


def _ignoring_sigint():  # what bash does to `cmd &` when job control is off (a script, nohup ... &)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_background_driver_stops_as_on_ctrl_c(sig):
    """Started with SIGINT ignored, a driver that calls stop_on_signals turns SIGINT and SIGTERM into
    KeyboardInterrupt (run_benchmark.py's clean stop); without it SIGINT is lost and SIGTERM kills outright."""
    for install in (True, False):
        child = subprocess.Popen([sys.executable, "-c", CHILD.format(repo=str(REPO), install=install)],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 preexec_fn=_ignoring_sigint)
        try:
            assert child.stdout.readline().strip() == "ready"
            child.send_signal(sig)
            if install:
                code = child.wait(timeout=30)
                assert code == 130, child.stdout.read()
                assert child.stdout.read().strip() == "interrupted"
            elif sig == signal.SIGINT:
                time.sleep(1.0)
                assert child.poll() is None  # the signal was ignored: still sleeping
            else:  # ended by the signal (or a library's own SIGTERM handler), without the clean stop
                assert child.wait(timeout=30) != 130
                assert "interrupted" not in child.stdout.read()
        finally:
            child.kill()
            child.wait()
