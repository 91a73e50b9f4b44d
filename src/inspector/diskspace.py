"""Free disk space, checked before a result is written (``MinFreeMegabytes``).

    guard = DiskGuard([paths.done, paths.results, paths.state / "spool", paths.state], 50 * 2**20)
    problem = guard()        # None, or "12.0 MiB free on /data (below 50 MiB): /data/done"

Each path is checked on the file system that holds it (its nearest existing ancestor), each file
system once. ``statvfs`` is injectable for tests; the default is ``os.statvfs``. ``f_bavail`` is
what an unprivileged writer may use (root's reserve excluded).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MIB = 2**20  # the settings' "Megabytes" (MinFreeMegabytes, DoneMaxMegabytes ...) are MiB


class DiskGuard:
    def __init__(
        self,
        paths: Sequence[Path],
        min_free_bytes: int,
        *,
        statvfs: Callable[[str], Any] = os.statvfs,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.min_free_bytes = int(min_free_bytes)
        self._statvfs = statvfs

    def __call__(self) -> str | None:
        if self.min_free_bytes <= 0:
            return None
        seen: set[int] = set()
        for path in self.paths:
            existing = _existing_ancestor(path)
            try:
                st = self._statvfs(str(existing))
            except OSError:
                continue  # an unreadable place is reported by the writer itself
            fs_id = int(getattr(st, "f_fsid", 0)) or id(existing)
            if fs_id in seen:
                continue
            seen.add(fs_id)
            free = int(st.f_bavail) * int(st.f_frsize or st.f_bsize)
            if free < self.min_free_bytes:
                return (f"{free / MIB:.1f} MiB free on the file system of {path} (below "
                        f"MinFreeMegabytes {self.min_free_bytes / MIB:g})")
        return None


def _existing_ancestor(path: Path) -> Path:
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    return path
