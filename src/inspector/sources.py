"""Where image paths come from: a directory watcher (and, for tests, a fixed list).

A file is handed on only when it is complete:
- a close-after-write or a rename into the directory (inotify) says so at once (cameras often
  write ``x.jpg.part`` and rename it to ``x.jpg``);
- otherwise (start-up scan, back-ends without close events, a retry) the file must have been left
  alone for ``stable_s`` (its mtime at least that old);
- a file seen being written but never closed (a hard link, an mmap writer) falls back to the
  stability check with ``fallback_factor`` times the quiet period.

Nothing is dropped: paths wait in an ordered pending table (oldest first) and ``submit`` may block
for as long as the pipeline needs (back-pressure). A path is in flight from ``submit`` until the
pipeline calls ``settled``; events for it meanwhile are kept and looked at again afterwards.
"""

from __future__ import annotations

import logging
import os
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers.api import BaseObserver

logger = logging.getLogger(__name__)

Submit = Callable[[Path], bool]  # blocks while the pipeline is full; False = stopping

TEMP_SUFFIXES = frozenset(
    {".part", ".partial", ".tmp", ".temp", ".crdownload", ".swp", ".filepart"}
)


class Source(Protocol):
    def start(self, submit: Submit) -> None: ...
    def stop(self) -> None: ...
    def settled(self, path: Path) -> None: ...
    def retry(self, path: Path) -> None: ...
    def idle(self) -> bool: ...


def shown(path: Path | str) -> str:
    """A file name fit for a one-line log message (newlines and other controls escaped)."""
    text = str(path)
    if text.isprintable():
        return text
    return repr(text)[1:-1]


class FileFilter:
    """Which paths are candidate images, by name and place alone (no I/O)."""

    def __init__(
        self,
        root: Path,
        *,
        extensions: Iterable[str],
        recursive: bool = False,
        ignored: Sequence[Path] = (),
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.extensions = frozenset("." + e.lower().lstrip(".") for e in extensions)
        self.recursive = recursive
        self.ignored = tuple(Path(os.path.abspath(p)) for p in ignored)

    def accepts(self, path: Path | str) -> bool:
        path = Path(os.path.abspath(path))
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return False
        parts = rel.parts
        if not parts or (len(parts) > 1 and not self.recursive):
            return False
        if any(part.startswith(".") for part in parts):
            return False  # hidden files, and everything under hidden folders (.inspector)
        if any(path == folder or folder in path.parents for folder in self.ignored):
            return False
        name = parts[-1]
        if name.endswith("~"):
            return False
        suffix = Path(name).suffix.lower()
        return suffix in self.extensions and suffix not in TEMP_SUFFIXES

    def accepts_dir(self, path: Path) -> bool:
        """Whether a recursive scan descends into ``path``."""
        path = Path(os.path.abspath(path))
        if path.name.startswith("."):
            return False
        return not any(path == folder or folder in path.parents for folder in self.ignored)


@dataclass(frozen=True)
class Admission:
    """Whether a candidate may be read now: ``ok``, or refused with a reason, or vanished."""

    ok: bool
    reason: str = ""
    vanished: bool = False


def admit(path: Path, root: Path) -> Admission:
    """Checks made right before reading: a regular file, and no symlink out of the root."""
    try:
        lst = os.lstat(path)
    except FileNotFoundError:
        return Admission(False, "vanished before it could be read", vanished=True)
    except OSError as exc:
        return Admission(False, f"cannot stat: {exc.strerror}")
    if os.path.islink(path):
        target = Path(os.path.realpath(path))
        real_root = Path(os.path.realpath(root))
        if real_root not in target.parents:
            return Admission(False, f"symlink to outside the watch directory ({target})")
        try:
            st = os.stat(path)
        except OSError:
            return Admission(False, f"dangling symlink ({target})")
    else:
        st = lst
    if stat_mod.S_ISDIR(st.st_mode):
        return Admission(False, "is a directory, not an image file")
    if not stat_mod.S_ISREG(st.st_mode):
        return Admission(False, "not a regular file")
    return Admission(True)


@dataclass
class _Pending:
    complete: bool  # closed after write, or renamed in
    seen_writing: bool  # an event said it was being written
    since: float  # monotonic time it became pending
    rescanned: bool = False  # found by a periodic rescan, not by an event


class DirectorySource:
    """Watches one directory (optionally recursively) and hands complete image files on."""

    def __init__(
        self,
        root: Path,
        file_filter: FileFilter,
        *,
        watch: bool = True,
        stable_s: float = 1.0,
        fallback_factor: float = 10.0,
        poll_s: float = 0.05,
        rescan_s: float = 60.0,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.filter = file_filter
        self.watch = watch
        self.stable_s = stable_s
        self.fallback_s = max(stable_s * fallback_factor, stable_s)
        self.poll_s = poll_s
        self.rescan_s = rescan_s  # a safety net for lost events (inotify queue overflow); 0 = off
        self._next_rescan = time.monotonic() + rescan_s
        self._pending: dict[Path, _Pending] = {}
        self._in_flight: set[Path] = set()
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._scan_done = False
        self._observer: BaseObserver | None = None
        self._close_events = False  # whether the back-end reports close-after-write
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, submit: Submit) -> None:
        if self.watch:
            self._start_observer()  # before the scan, so nothing written meanwhile is missed
        self._scan()
        self._thread = threading.Thread(
            target=self._feed, args=(submit,), name="source-feeder", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            self._cond.notify_all()
        observer = self._observer
        if observer is not None:
            observer.stop()
            observer.join(timeout=2.0)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)

    def settled(self, path: Path) -> None:
        with self._cond:
            self._in_flight.discard(path)
            if path in self._pending and not os.path.lexists(path):
                del self._pending[path]  # a late event about the image just settled
            self._cond.notify_all()

    def retry(self, path: Path) -> None:
        """The pipeline found the file still being written: watch it again."""
        with self._cond:
            self._in_flight.discard(path)
            self._pending.pop(path, None)
            self._pending[path] = _Pending(False, True, time.monotonic())
            self._cond.notify_all()

    def idle(self) -> bool:
        with self._cond:
            return self._scan_done and not self._pending and not self._in_flight

    def pending_count(self) -> int:
        with self._cond:
            return len(self._pending)

    # --- discovery ---------------------------------------------------------------------------

    def _start_observer(self) -> None:
        handler = _Handler(self)
        observer: BaseObserver
        try:
            from watchdog.observers.inotify import InotifyObserver

            # full events: a rename into the directory arrives as a move, not as a creation
            observer = InotifyObserver(generate_full_events=True)
            self._close_events = True
        except (ImportError, OSError):
            from watchdog.observers import Observer

            observer = Observer()
        observer.schedule(handler, str(self.root), recursive=self.filter.recursive)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def _scan(self, *, rescan: bool = False) -> None:
        found: list[tuple[int, str, Path]] = []
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                logger.warning("cannot list %s: %s", shown(folder), exc.strerror)
                continue
            for entry in entries:
                path = Path(entry.path)
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir and self.filter.recursive:
                    if self.filter.accepts_dir(path):
                        stack.append(path)
                    continue
                if not self.filter.accepts(path):
                    continue
                try:
                    mtime_ns = entry.stat(follow_symlinks=False).st_mtime_ns
                except OSError:
                    continue
                found.append((mtime_ns, entry.name, path))
        found.sort()
        now = time.monotonic()
        added = 0
        with self._cond:
            for _, _, path in found:
                if path not in self._pending and path not in self._in_flight:
                    self._pending[path] = _Pending(False, False, now, rescanned=rescan)
                    added += 1
            self._scan_done = True
            self._cond.notify_all()
        if added and not rescan:
            logger.info("start-up scan: %d image(s) waiting in %s", added, shown(self.root))
        elif added:
            logger.debug("rescan: %d image(s) without an event", added)

    def note(self, path: Path, *, complete: bool, writing: bool) -> None:
        if not self.filter.accepts(path):
            return
        with self._cond:
            entry = self._pending.get(path)
            if entry is None:
                self._pending[path] = _Pending(complete, writing, time.monotonic())
            else:
                entry.complete = complete
                entry.seen_writing = entry.seen_writing or writing
            self._cond.notify_all()

    def forget(self, path: Path) -> None:
        with self._cond:
            if self._pending.pop(path, None) is not None and path not in self._in_flight:
                logger.info("%s: removed before it could be read; skipped", shown(path.name))

    # --- feeding -----------------------------------------------------------------------------

    def _feed(self, submit: Submit) -> None:
        while not self._stopping.is_set():
            if self.watch and self.rescan_s > 0 and time.monotonic() >= self._next_rescan:
                self._scan(rescan=True)
                self._next_rescan = time.monotonic() + self.rescan_s
            path = self._next_ready()
            if path is None:
                continue
            if not submit(path):
                with self._cond:
                    self._in_flight.discard(path)
                return

    def _next_ready(self) -> Path | None:
        """The oldest pending path that is complete, moved to in-flight; None after a wait."""
        with self._cond:
            for path, entry in list(self._pending.items()):
                if path in self._in_flight:
                    continue
                verdict = self._readiness(path, entry)
                if verdict == "gone":
                    del self._pending[path]
                    log = logger.debug if entry.rescanned else logger.info
                    log("%s: vanished before it could be read; skipped", shown(path.name))
                    self._cond.notify_all()
                    continue
                if verdict == "ready":
                    del self._pending[path]
                    self._in_flight.add(path)
                    return path
            self._cond.wait(timeout=self.poll_s)
        return None

    def _readiness(self, path: Path, entry: _Pending) -> str:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return "gone"
        except OSError:
            return "ready"  # let the pipeline read it and report the reason
        if entry.complete:
            return "ready"
        if os.path.isdir(path) or os.path.islink(path):
            return "ready"  # refused by ``admit``; nothing to wait for
        quiet = self.fallback_s if (entry.seen_writing and self._close_events) else self.stable_s
        age = time.time() - st.st_mtime
        return "ready" if age >= quiet else "wait"


class _Handler(FileSystemEventHandler):
    """Translates watchdog events into the source's pending table (runs on watchdog's thread)."""

    def __init__(self, source: DirectorySource) -> None:
        self.source = source

    @staticmethod
    def _path(raw: bytes | str) -> Path:
        return Path(os.fsdecode(raw))

    def on_closed(self, event: FileSystemEvent) -> None:
        self.source.note(self._path(event.src_path), complete=True, writing=True)

    def on_created(self, event: FileSystemEvent) -> None:
        # a directory named like an image is a candidate too: it ends in the failed folder
        if event.is_directory and self.source.filter.recursive:
            return
        self.source.note(self._path(event.src_path), complete=False,
                         writing=not event.is_directory)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.source.note(self._path(event.src_path), complete=False, writing=True)

    def on_moved(self, event: FileSystemEvent) -> None:
        if event.src_path:
            self.source.forget(self._path(event.src_path))
        if event.dest_path and not (event.is_directory and self.source.filter.recursive):
            # a rename is atomic: the file under its new name is complete
            self.source.note(self._path(event.dest_path), complete=True, writing=False)

    def on_deleted(self, event: FileSystemEvent) -> None:
        self.source.forget(self._path(event.src_path))


class ListSource:
    """A fixed list of paths, handed on in order: the test seam for the pipeline."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.paths = list(paths)
        self.settled_paths: list[Path] = []
        self.retried: list[Path] = []
        self._lock = threading.Lock()
        self._handed = 0
        self._thread: threading.Thread | None = None

    def start(self, submit: Submit) -> None:
        def feed() -> None:
            for path in self.paths:
                if not submit(path):
                    return
                with self._lock:
                    self._handed += 1

        self._thread = threading.Thread(target=feed, name="list-source", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        pass

    def settled(self, path: Path) -> None:
        with self._lock:
            self.settled_paths.append(path)

    def retry(self, path: Path) -> None:
        with self._lock:
            self.retried.append(path)
            self.settled_paths.append(path)

    def idle(self) -> bool:
        with self._lock:
            return len(self.settled_paths) >= len(self.paths)
