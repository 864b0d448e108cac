"""glibc malloc settings for the plugin's training processes (issue 12).

PyTorch's CPU tensors come from the C library's ``malloc``. With glibc's defaults a training step
pays for page faults on memory it freed a moment ago: blocks above the mmap threshold (128 KB at
first, then moved up to the size of the last large block freed, at most 32 MB) are fresh pages
from the kernel each time, and freed memory at the top of the heap is given back to the kernel
as soon as more than twice that threshold is free, to be faulted in again by the next step. A
mid-size GRCN step took 8,400 minor faults (20 ms of system time in a 190 ms step), MetaMMF_GCN
at TikTok shape 52,000 (0.1 s in 0.36 s).

:func:`tune_allocator` fixes the mmap threshold at 32 MB (glibc's largest) and the trim threshold
at 1 GB, so the blocks of a step are reused from the heap instead: 760 and 3,200 faults per step.
Nothing is computed differently. What it costs is memory the process keeps after a step instead
of returning it (the peak is the step's own either way; at TikTok shape it was 1.76 GB against
1.68 GB over 40 steps). ``benchmarks/scale_runs/notes.md`` has the measurements.

The command-line entry points (``run_recbole.py``, the benchmark's trials, ``run_hyper.py``) call
it; library users may call it themselves. It changes nothing when:

* ``METAMMF_MALLOC=default`` is set (keep glibc's defaults);
* the user set glibc's own knobs (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
  ``MALLOC_TOP_PAD_``, ``MALLOC_MMAP_MAX_``, or ``glibc.malloc`` in ``GLIBC_TUNABLES``): theirs win;
* the C library is not glibc (macOS, musl, Windows).
"""

from __future__ import annotations

import ctypes
import os

SWITCH = "METAMMF_MALLOC"
GLIBC_KNOBS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
MMAP_THRESHOLD = 32 * 2**20  # glibc's largest (DEFAULT_MMAP_THRESHOLD_MAX on 64-bit)
TRIM_THRESHOLD = 2**30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # <malloc.h>

_state: str | None = None


def _glibc():
    """The process's C library if it is glibc (has ``mallopt`` and ``gnu_get_libc_version``), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  (glibc only)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def tune_allocator() -> str:
    """Apply the settings above once per process; returns what was done, as a short phrase."""
    global _state
    if _state is not None:
        return _state
    if os.environ.get(SWITCH, "").strip().lower() == "default":
        _state = f"glibc defaults ({SWITCH}=default)"
    elif any(os.environ.get(k) for k in GLIBC_KNOBS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        _state = "the user's glibc malloc settings"
    else:
        libc = _glibc()
        if libc is None:
            _state = "not glibc: the C library's defaults"
        elif (libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
              and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1):
            _state = f"mmap threshold {MMAP_THRESHOLD >> 20} MB, trim threshold {TRIM_THRESHOLD >> 20} MB"
        else:
            _state = "glibc refused the settings: its defaults"
    return _state
