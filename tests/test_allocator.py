"""glibc malloc settings of the training processes (recbole_metammf/allocator.py). Each case runs in a
fresh interpreter that loads allocator.py alone (no torch, no RecBole), since the settings are the
process's and glibc's own thresholds move with what a process has allocated and freed before."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import REPO

# a 24 MB block through malloc, as a tensor of a training step is: is it mmapped (fresh pages from the
# kernel, given back at free), and does the heap keep it after free (mallinfo2: hblkhd = mmapped bytes,
# arena = heap bytes, keepcost = releasable bytes at the heap's top)
PROBE = f"""
import ctypes, importlib.util
spec = importlib.util.spec_from_file_location("allocator", {str(REPO / "recbole_metammf" / "allocator.py")!r})
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
print(allocator.tune_allocator())
libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print("no mallinfo2"); raise SystemExit
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                               "fsmblks", "uordblks", "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
before = libc.mallinfo2()
block = libc.malloc(24 * 2**20)
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(during.hblkhd - before.hblkhd, after.arena - before.arena, after.keepcost)
"""
MB24 = 24 * 2**20


def probe(**env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "METAMMF_MALLOC", "GLIBC_TUNABLES"))}
    proc = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          timeout=60, check=True)
    state, figures = proc.stdout.strip().splitlines()
    if state.startswith("not glibc") or figures == "no mallinfo2":
        pytest.skip(f"needs glibc >= 2.33 (mallinfo2): {state}, {figures}")
    mmapped, heap_growth, keepcost = map(int, figures.split())
    return state, mmapped, heap_growth, keepcost


def test_settings_keep_a_steps_blocks_in_the_heap():
    state, mmapped, heap_growth, keepcost = probe()
    assert state == "mmap threshold 32 MB, trim threshold 1024 MB"
    assert mmapped == 0  # from the heap, not fresh pages from the kernel
    assert heap_growth >= MB24 and keepcost >= MB24  # kept after free, for the next step to reuse


@pytest.mark.parametrize("env,state", [
    ({"METAMMF_MALLOC": "Default"}, "glibc defaults (METAMMF_MALLOC=default)"),
    ({"MALLOC_TRIM_THRESHOLD_": "131072"}, "the user's glibc malloc settings"),
    ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=131072"}, "the user's glibc malloc settings"),
])
def test_switch_and_users_own_settings_leave_glibc_alone(env, state):
    got, mmapped, heap_growth, keepcost = probe(**env)
    assert got == state
    assert mmapped >= MB24 and heap_growth == 0 and keepcost < MB24  # glibc's own: mmapped, given back at free
