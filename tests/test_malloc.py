"""inspector.malloc: glibc's mmap threshold fixed, unless the operator set it."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from inspector import malloc

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def test_the_operators_own_setting_is_left_alone():
    assert malloc.tune({"MALLOC_MMAP_THRESHOLD_": "65536"}) is False


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_a_freed_large_buffer_goes_back_to_the_system():
    """The dynamic threshold keeps a freed 16 MiB block in the heap (RSS stays up); fixed, the
    next one is its own mapping and leaves with free. In a fresh interpreter each way."""
    probe = """
import ctypes, sys
from inspector import malloc
if sys.argv[1] == "tuned":
    assert malloc.tune({})
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
size = 16 * 2**20
first = libc.malloc(size); ctypes.memset(first, 1, size); libc.free(first)  # raises the threshold
keep = libc.malloc(64); base = rss()  # pins the heap top: a heap block cannot be trimmed
block = libc.malloc(size); ctypes.memset(block, 1, size); libc.free(block)
print(rss() - base)
"""
    grown = {}
    for mode in ("default", "tuned"):
        out = subprocess.run([sys.executable, "-c", probe, mode], capture_output=True, text=True,
                             check=True, timeout=60)
        grown[mode] = int(out.stdout.strip())
    assert grown["tuned"] < 4 <= grown["default"], grown
