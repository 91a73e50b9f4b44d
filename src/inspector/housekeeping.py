"""Retention: keep the done folder and the standalone outbox bounded, in age and in size.

One background thread (``Housekeeper``) runs a pass every ``HousekeepingSeconds``, the first
one at start-up. Each pass, for each folder: files older than the age limit are deleted, then,
while the folder is over its size cap, the oldest files (by mtime) are deleted; folders left
empty below it (for an hour) are removed. Every pass that removes something logs one line per
folder with the count and the bytes.

Never touched, whatever the settings say: the held and failed folders (images whose result is
not delivered yet, or that could not be inspected: the operator decides), the watch folder,
the journal and the results file, even when they sit inside a folder under retention.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from inspector.diskspace import MIB

logger = logging.getLogger(__name__)

DAY_S = 86_400.0
_EMPTY_FOLDER_AGE_S = 3600.0


@dataclass(frozen=True)
class Retention:
    """What to keep in one folder."""

    label: str  # "done", "outbox": how log lines name it
    folder: Path
    max_age_s: float = 0.0  # 0 = no age limit
    max_bytes: int = 0  # 0 = no size cap
    protected: tuple[Path, ...] = ()  # never removed, nor anything below them

    @property
    def active(self) -> bool:
        return self.max_age_s > 0 or self.max_bytes > 0


@dataclass(frozen=True)
class Trimmed:
    """What one pass did to one folder."""

    label: str
    folder: Path
    removed_files: int = 0
    removed_bytes: int = 0
    by_age: int = 0
    by_size: int = 0
    kept_files: int = 0
    kept_bytes: int = 0
    errors: int = 0


def trim(retention: Retention, *, now: float | None = None) -> Trimmed:
    """Apply one folder's retention once; oldest files go first."""
    folder = Path(os.path.abspath(retention.folder))
    protected = tuple(Path(os.path.abspath(p)) for p in retention.protected)
    if not retention.active or not folder.is_dir():
        return Trimmed(retention.label, folder)
    if _is_protected(folder, protected):  # e.g. DoneDirectory set inside the failed folder
        return Trimmed(retention.label, folder)
    files: list[tuple[int, str, int]] = []  # (mtime_ns, path, size)
    dirs: list[str] = []
    for here, subdirs, names in os.walk(folder):
        subdirs[:] = [d for d in subdirs if not _is_protected(Path(here, d), protected)]
        dirs.extend(os.path.join(here, d) for d in subdirs)
        for name in names:
            path = os.path.join(here, name)
            if _is_protected(Path(path), protected):
                continue
            try:
                st = os.lstat(path)
            except OSError:
                continue
            files.append((st.st_mtime_ns, path, st.st_size))
    files.sort()
    cutoff_ns = int(((time.time() if now is None else now) - retention.max_age_s) * 1e9)
    total = sum(size for _, _, size in files)
    removed = removed_bytes = by_age = by_size = errors = 0
    for mtime_ns, path, size in files:
        if retention.max_age_s > 0 and mtime_ns < cutoff_ns:
            reason = "age"
        elif retention.max_bytes > 0 and total > retention.max_bytes:
            reason = "size"
        else:
            break  # sorted oldest first: every later file is younger and fits
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            errors += 1
            if errors == 1:
                logger.warning("housekeeping: cannot remove %s: %s", path, exc.strerror or exc)
            continue
        total -= size
        removed += 1
        removed_bytes += size
        by_age += reason == "age"
        by_size += reason == "size"
    for path in sorted(dirs, key=len, reverse=True):  # deepest first
        with contextlib.suppress(OSError):
            # only empty, and left alone a while: the disposer may have just created it and
            # be about to link an image into it
            if time.time() - os.lstat(path).st_mtime > _EMPTY_FOLDER_AGE_S:
                os.rmdir(path)
    return Trimmed(
        retention.label, folder, removed, removed_bytes, by_age, by_size,
        len(files) - removed - errors, total, errors,
    )


def _is_protected(path: Path, protected: Sequence[Path]) -> bool:
    return any(path == p or p in path.parents for p in protected)


def describe(t: Trimmed, retention: Retention) -> str:
    limits = []
    if t.by_age:
        limits.append(f"{t.by_age} older than {retention.max_age_s / DAY_S:g} day(s)")
    if t.by_size:
        limits.append(f"{t.by_size} over the {retention.max_bytes / MIB:g} MiB cap")
    return (
        f"housekeeping: {t.label} ({t.folder}): removed {t.removed_files} file(s), "
        f"{t.removed_bytes / MIB:.1f} MiB ({', '.join(limits)}); kept {t.kept_files} file(s), "
        f"{t.kept_bytes / MIB:.1f} MiB"
    )


class Housekeeper:
    """Runs retention passes on its own schedule, in one background thread."""

    def __init__(
        self,
        policies: Callable[[], Sequence[Retention]],
        interval_s: Callable[[], float],
    ) -> None:
        # callables: the service's settings may change while it runs
        self._policies = policies
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.passes = 0
        self.removed_files = 0
        self.removed_bytes = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="housekeeping", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def run_once(self) -> list[Trimmed]:
        results = []
        for retention in self._policies():
            try:
                result = trim(retention)
            except Exception:  # a bug here must not end the thread (or the service)
                logger.exception("housekeeping: %s failed", retention.label)
                continue
            results.append(result)
            if result.removed_files:
                logger.info("%s", describe(result, retention))
            with self._lock:
                self.removed_files += result.removed_files
                self.removed_bytes += result.removed_bytes
        with self._lock:
            self.passes += 1
        return results

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(max(1.0, self._interval_s()))
