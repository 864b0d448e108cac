"""How the command lines end: one line per user mistake, a traceback for a bug.

:func:`run_cli` runs an entry point's ``main``. A :class:`~recbole_metammf.errors.UserError`
(unknown model, missing dataset, bad config key or value, bad data) prints
``error: <message>`` on stderr and exits with status 2, without a traceback; any
other exception is a bug and propagates with its traceback. ``--debug`` on the
command line (removed before anything else sees it) or the environment variable
``RECBOLE_METAMMF_DEBUG=1`` shows the traceback of a user error too. :func:`stop_on_signals` lets the
long-running drivers (``run_benchmark.py``) stop cleanly on SIGINT or SIGTERM wherever they were started.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from recbole_metammf.errors import UserError

DEBUG_FLAG = "--debug"
DEBUG_ENV = "RECBOLE_METAMMF_DEBUG"
EXIT_USER_ERROR = 2


def debug_requested(argv: list) -> tuple[bool, list]:
    """(whether ``--debug`` or the environment asks for tracebacks, ``argv`` without ``--debug``)."""
    flag = DEBUG_FLAG in argv
    env = os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")
    return flag or env, [a for a in argv if a != DEBUG_FLAG]


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def stop_on_signals() -> None:
    """Make SIGINT and SIGTERM stop a long-running driver as Ctrl-C does (``KeyboardInterrupt``: a benchmark
    keeps its finished trials, cancels the running ones and says how to resume). A job started in the
    background of a non-interactive shell (``nohup python run_benchmark.py ... &`` in a script) begins with
    SIGINT ignored, and Python then never raises ``KeyboardInterrupt`` for it; SIGTERM (``kill PID``) would
    end the driver at once. Only from the main thread (elsewhere Python cannot set handlers): a no-op there."""
    if threading.current_thread() is not threading.main_thread():
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def run_cli(main, argv=None) -> int:
    """``main(argv)`` with the user's mistakes as one line and exit status 2; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug, argv = debug_requested(argv)
    # RecBole's Config reads sys.argv itself: keep the flag out of it too
    sys.argv = [a for a in sys.argv if a != DEBUG_FLAG]
    try:
        main(argv)
    except UserError as err:
        if debug:
            raise
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    return 0
