"""glibc malloc tuned for a long-running service that handles large short-lived buffers.

Every image passes through buffers of megabytes (the file's bytes, the decoded frame, the
4.7 MiB model input, the outbox's annotated copy), freed a moment later. glibc serves
allocations above its mmap threshold (128 KiB at start) with their own mappings, returned to
the system on free; but it RAISES that threshold to the size of each such block freed (the
"dynamic mmap threshold", up to 32 MiB on 64-bit), so after the first image these buffers come
from the heap, whose freed space it keeps. Measured with the 2,000-image soak (standalone,
AnnotateOutbox on, fp32): ~280 MB steady with the dynamic threshold, ~217 MB with it fixed
(``MALLOC_MMAP_THRESHOLD_=131072``), no slower. ``tune()`` fixes it with ``mallopt`` (which also
turns the dynamic adjustment off; see mallopt(3), M_MMAP_THRESHOLD) unless the operator set
``MALLOC_MMAP_THRESHOLD_`` themselves; a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # <malloc.h>
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed


def tune(environ: dict[str, str] | None = None) -> bool:
    """Fix glibc's mmap threshold for this process; True when it was set."""
    env = os.environ if environ is None else environ
    if "MALLOC_MMAP_THRESHOLD_" in env:
        return False  # the operator's choice, already applied by glibc at start
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):
        return False
    logger.debug("glibc malloc: mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD, ok)
    return ok
