"""Where image paths come from: a directory watcher (and, for tests, a fixed list).

A file is handed on only when it is complete:
- quiet: its size, mtime and inode unchanged for ``stable_s`` (by its mtime's age, or by watching
  it that long), even after a close-after-write event, since a camera that reopens its file for
  each chunk closes it many times; a file renamed into the directory (cameras often write
  ``x.jpg.part`` and rename it to ``x.jpg``) needs no quiet period, a rename being atomic, nor
  does a JPEG/PNG closed after its last write that already ends with its end marker (only the
  last chunk's close leaves one there), so the usual case costs no latency;
- a file seen being written and not closed since waits ``fallback_factor`` times longer;
- and, for JPEG and PNG, ending with the format's end marker (EOI, IEND; zero padding after it
  allowed). A file still without one after the longer quiet period is handed on anyway, and the
  reader fails it as incomplete: nothing waits forever.

The watch folder itself is checked every ``root_check_s`` (and at once when inotify says it was
deleted): a folder that vanishes is logged as an ERROR once, and when it returns (or is replaced
by a new folder of that name) the watch is armed again and the folder scanned at once. In
recursive mode a new subfolder is scanned as soon as it appears, so files written into it before
its watch was armed are not left for the periodic rescan.

Files whose extension is not in ``Extensions`` are logged once each (WARNING, with the reason)
and counted as skipped: none sits in the folder silently.

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

from inspector.conventions import shown

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
    def skipped(self) -> int: ...


def relative_name(root: Path, path: Path) -> str:
    """How results name an image: its path below the watch folder, POSIX style
    (``line2/a.jpg``); a file directly in the folder keeps its plain name."""
    try:
        return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        return Path(path).name


def suffixes(extensions: Iterable[str]) -> frozenset[str]:
    """The file suffixes (".jpg") that ``Extensions`` (case-insensitive, dot optional) names."""
    return frozenset("." + e.lower().lstrip(".") for e in extensions)


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
        self.extensions = suffixes(extensions)
        self.recursive = recursive
        self.ignored = tuple(Path(os.path.abspath(p)) for p in ignored)

    def accepts(self, path: Path | str) -> bool:
        return self._judge(path) is None

    def refusal(self, path: Path | str) -> str:
        """Why a file the watcher could otherwise take is not an image for it (its extension),
        or "" when it is accepted or is not a candidate at all (hidden, temporary, elsewhere)."""
        return self._judge(path) or ""

    def _judge(self, path: Path | str) -> str | None:
        """None: a candidate image; "": not a candidate at all; else why its extension is not
        taken."""
        path = Path(os.path.abspath(path))
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return ""
        parts = rel.parts
        if not parts or (len(parts) > 1 and not self.recursive):
            return ""
        if any(part.startswith(".") for part in parts):
            return ""  # hidden files, and everything under hidden folders (.inspector)
        if any(path == folder or folder in path.parents for folder in self.ignored):
            return ""
        name = parts[-1]
        if name.endswith("~"):
            return ""
        suffix = Path(name).suffix.lower()
        if suffix in TEMP_SUFFIXES:
            return ""
        if suffix in self.extensions:
            return None
        if not suffix:
            return "no file extension, so not an image for Extensions"
        return f"extension {suffix} not in Extensions ({', '.join(sorted(self.extensions))})"

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


_TAIL_BYTES = 64 * 1024  # how far back from the end an end marker (then zero padding) is sought
_REFUSED_MEMORY = 100_000  # refused files remembered (so each is logged once); then forgotten


@dataclass
class _Pending:
    renamed: bool = False  # renamed into place: complete at once (a rename is atomic)
    writing: bool = False  # a write was seen and no close-after-write since
    closed: bool = False  # a close-after-write was seen (and no write since)
    rescanned: bool = False  # found by a periodic rescan, not by an event
    key: tuple[int, int, int] | None = None  # (size, mtime_ns, inode) when last looked at
    unchanged_since: float = 0.0  # monotonic time ``key`` was first seen
    ends: bool | None = None  # end marker present for ``key`` (None: no marker to look for)
    ends_checked: bool = False
    due_s: float = 0.0  # when waiting for quiet: seconds until it has been quiet long enough


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
        root_check_s: float = 1.0,
        on_root_back: Callable[[], None] | None = None,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.filter = file_filter
        self.watch = watch
        self.stable_s = stable_s
        # a file seen being written and not closed, or without its end marker, waits this long
        self.fallback_s = max(stable_s * fallback_factor, stable_s)
        self.poll_s = poll_s
        self.rescan_s = rescan_s  # a safety net for lost events (inotify queue overflow); 0 = off
        self.root_check_s = root_check_s
        self._on_root_back = on_root_back
        self._next_rescan = time.monotonic() + rescan_s
        self._next_root_check = time.monotonic() + root_check_s
        self._root_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the folder watched
        self._root_missing = False
        self._pending: dict[Path, _Pending] = {}
        self._in_flight: set[Path] = set()
        # what each path was when it was handed on, (size, mtime_ns, inode): an event that
        # arrives after that about a write already seen (the watcher judges the file as it is,
        # which can be ahead of the events still queued) must not hand the same file on again
        self._handed: dict[Path, tuple[int, int, int]] = {}
        self._refused: set[Path] = set()
        self._skipped = 0
        self.rescans = 0  # periodic rescans done (what a rescan did not find twice is settled)
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._check_root_now = threading.Event()
        # inotify said the folder itself was deleted: a folder created again at once can get the
        # same inode number, so (st_dev, st_ino) alone cannot tell it from the old one
        self._root_deleted = False
        self._scan_done = False
        self._observer: BaseObserver | None = None
        self._close_events = False  # whether the back-end reports close-after-write
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self, submit: Submit) -> None:
        self._root_id = _folder_id(self.root)
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
        self._stop_observer()
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
            self._handed.pop(path, None)
            self._pending.pop(path, None)
            self._pending[path] = _Pending(writing=True)
            self._cond.notify_all()

    def idle(self) -> bool:
        with self._cond:
            return self._scan_done and not self._pending and not self._in_flight

    def pending_count(self) -> int:
        with self._cond:
            return len(self._pending)

    def skipped(self) -> int:
        """Files refused by extension (each logged once) since the start."""
        with self._cond:
            return self._skipped

    @property
    def root_missing(self) -> bool:
        return self._root_missing

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

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            if observer is not threading.current_thread():
                observer.join(timeout=2.0)

    def _scan(
        self, *, rescan: bool = False, folder: Path | None = None, why: str = "start-up scan"
    ) -> None:
        """List the folder (or one new subfolder) and add what is not known yet."""
        found: list[tuple[int, str, Path]] = []
        refused: list[tuple[Path, str]] = []
        stack = [folder or self.root]
        while stack:
            here = stack.pop()
            try:
                entries = list(os.scandir(here))
            except FileNotFoundError:
                continue  # vanished (the root itself is checked by _check_root)
            except OSError as exc:
                logger.warning("cannot list %s: %s", shown(here), exc.strerror)
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
                    if not is_dir and (why := self.filter.refusal(path)):
                        refused.append((path, why))
                    continue
                try:
                    mtime_ns = entry.stat(follow_symlinks=False).st_mtime_ns
                except OSError:
                    continue
                found.append((mtime_ns, entry.name, path))
        found.sort()
        added = 0
        with self._cond:
            for _, _, path in found:
                if path not in self._pending and path not in self._in_flight:
                    self._pending[path] = _Pending(rescanned=rescan)
                    added += 1
            self._scan_done = True
            self._cond.notify_all()
        for path, why in refused:
            self._refuse(path, why)
        where = shown(folder or self.root)
        if added and folder is not None:
            logger.info("new folder %s: %d image(s) already in it", where, added)
        elif added and not rescan:
            logger.info("%s: %d image(s) waiting in %s", why, added, where)
        elif added:
            logger.debug("rescan: %d image(s) without an event", added)

    def scan_new_folder(self, folder: Path) -> None:
        """A subfolder appeared (recursive mode): take what was written before its watch."""
        folder = Path(os.path.abspath(folder))
        if self.filter.recursive and self.filter.accepts_dir(folder) and folder != self.root:
            self._scan(folder=folder)

    def note(self, path: Path, *, renamed: bool = False, writing: bool | None = None) -> None:
        """An event about ``path``: ``writing`` True after a write, False after a close."""
        if not self.filter.accepts(path):
            if (why := self.filter.refusal(path)) and not os.path.isdir(path):
                self._refuse(path, why)
            return
        with self._cond:
            entry = self._pending.get(path)
            if entry is None:
                entry = self._pending[path] = _Pending()
            entry.renamed = renamed
            if writing is not None:
                entry.writing = writing
                entry.closed = not writing
            self._cond.notify_all()

    def _refuse(self, path: Path, why: str) -> None:
        with self._cond:
            if path in self._refused:
                return
            if len(self._refused) >= _REFUSED_MEMORY:
                self._refused.clear()
            self._refused.add(path)
            self._skipped += 1
        logger.warning("%s: skipped: %s", shown(relative_name(self.root, path)), why)

    def forget(self, path: Path) -> None:
        with self._cond:
            self._refused.discard(path)
            self._handed.pop(path, None)
            if self._pending.pop(path, None) is not None and path not in self._in_flight:
                logger.info("%s: removed before it could be read; skipped",
                            shown(relative_name(self.root, path)))

    def root_event(self) -> None:
        """inotify says the watch folder itself was deleted: check it now."""
        self._root_deleted = True  # even if a new folder of that name (and inode) is there
        self._check_root_now.set()
        with self._cond:
            self._cond.notify_all()

    def _check_root(self) -> None:
        """Notice the watch folder vanishing (once, ERROR) and coming back (re-arm, scan)."""
        ident = _folder_id(self.root)
        if ident is None:
            if not self._root_missing:
                self._root_missing = True
                logger.error(
                    "watch folder %s has vanished (removed, renamed or unmounted); nothing can "
                    "be inspected until it is back; checking every %.0f s",
                    shown(self.root), self.root_check_s,
                )
                if self.watch:
                    self._stop_observer()
            return
        deleted, self._root_deleted = self._root_deleted, False
        if not self._root_missing and ident == self._root_id and not deleted:
            return
        if not self._root_missing:  # replaced between two checks: gone and back at once
            logger.error("watch folder %s was removed and created again", shown(self.root))
        self._root_missing = False
        self._root_id = ident
        with self._cond:
            self._handed.clear()  # another folder (or the same one back): judge every file anew
        if self.watch:
            self._stop_observer()
            try:
                self._start_observer()
            except OSError as exc:  # gone again already: the next check says so
                logger.error("cannot watch %s: %s", shown(self.root), exc)
                return
        logger.warning("watch folder %s is back; watching it again", shown(self.root))
        if self._on_root_back is not None:
            try:
                self._on_root_back()
            except Exception:
                logger.exception("re-arming after the watch folder came back failed")
        self._scan(why="watch folder back")

    # --- feeding -----------------------------------------------------------------------------

    def _feed(self, submit: Submit) -> None:
        while not self._stopping.is_set():
            now = time.monotonic()
            if self._check_root_now.is_set() or now >= self._next_root_check:
                self._check_root_now.clear()
                self._check_root()
                self._next_root_check = time.monotonic() + self.root_check_s
            if (self.watch and self.rescan_s > 0 and now >= self._next_rescan
                    and not self._root_missing):
                self._scan(rescan=True)
                self.rescans += 1
                logger.debug("rescan %d done", self.rescans)
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
            now = time.monotonic()
            soonest = self.poll_s
            for path, entry in list(self._pending.items()):
                if path in self._in_flight:
                    continue
                verdict = self._readiness(path, entry, now)
                if verdict == "seen":  # late events about the file already handed on
                    del self._pending[path]
                    logger.debug("%s: events about a write already seen; not again",
                                 shown(relative_name(self.root, path)))
                    self._cond.notify_all()
                    continue
                if verdict == "gone":
                    del self._pending[path]
                    self._handed.pop(path, None)
                    log = logger.debug if entry.rescanned else logger.info
                    log("%s: vanished before it could be read; skipped",
                        shown(relative_name(self.root, path)))
                    self._cond.notify_all()
                    continue
                if verdict == "ready":
                    del self._pending[path]
                    self._in_flight.add(path)
                    if entry.key is not None:
                        if len(self._handed) >= _REFUSED_MEMORY:
                            self._handed.clear()
                        self._handed[path] = entry.key
                    return path
                if entry.due_s > 0:
                    soonest = min(soonest, entry.due_s)
            # a closed file's short settle ends before the next poll: look again right then,
            # not up to poll_s later (that wait was most of a single image's latency)
            self._cond.wait(timeout=max(0.001, soonest))
        return None

    def _readiness(self, path: Path, entry: _Pending, now: float) -> str:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return "gone"
        except OSError:
            return "ready"  # let the pipeline read it and report the reason
        if stat_mod.S_ISDIR(st.st_mode) or stat_mod.S_ISLNK(st.st_mode):
            return "ready"  # refused by ``admit``; nothing to wait for
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        if key != entry.key:
            entry.key, entry.unchanged_since, entry.ends_checked = key, now, False
        if not entry.rescanned and self._handed.get(path) == key:
            # an event about this path after it was handed on, the file unchanged since: the
            # write it reports was already read. (A rescan still finds a kept image again.)
            return "seen"
        quiet_s = max(now - entry.unchanged_since, time.time() - st.st_mtime)
        if entry.renamed:
            needed = 0.0
        elif entry.writing and self._close_events:
            needed = self.fallback_s  # open for writing: the writer may only be pausing
        elif entry.closed and self._ends(path, entry, st.st_size) is True:
            # closed after its last write AND ending with its end marker now: complete, no
            # quiet period (it would add to every image's latency). Why this is safe for a
            # camera that reopens its file for each chunk and closes it many times: the
            # marker is looked for in the bytes as they are NOW (read after this stat, keyed
            # by size, mtime and inode), not as they were at the close, and a file cut short
            # anywhere cannot end with one: JPEG stuffs 0xFF in scan data so FF D9 cannot
            # appear inside it (the walk skips an EXIF thumbnail's EOI), PNG's IEND is its
            # last chunk. So an earlier chunk's close, whatever events are still queued, is
            # seen as "no marker" and waits. Whatever is written after this check (a maker
            # trailer appended, the file rewritten) changes size or mtime: the reader
            # compares them before and after and reads a changed file again (``retry``).
            # The events of the writes already read may still be queued (the file can be
            # ahead of them): ``_handed`` keeps them from handing the same file on twice.
            # (It was a 30 ms settle, which let those events arrive first; measured: it was
            # 30 of the 33 ms a single image spent outside its own stages.)
            needed = 0.0
        else:
            needed = self.stable_s
        entry.due_s = 0.0
        if quiet_s < needed:
            entry.due_s = needed - quiet_s
            return "wait"
        if self._ends(path, entry, st.st_size) is False and quiet_s < self.fallback_s:
            return "wait"  # no end marker yet; after fallback_s the reader fails it
        return "ready"


    @staticmethod
    def _ends(path: Path, entry: _Pending, size: int) -> bool | None:
        """``_ends_properly`` for the file as it is now, read once per (size, mtime, inode)."""
        if not entry.ends_checked:
            entry.ends, entry.ends_checked = _ends_properly(path, size), True
        return entry.ends


def _folder_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat_mod.S_ISDIR(st.st_mode) else None


def _ends_properly(path: Path, size: int) -> bool | None:
    """Whether the file ends with its format's end marker; None when there is none to look for
    (or the file cannot be read now: the pipeline will say why)."""
    from inspector.imageio import HEAD_BYTES, ends_properly  # cv2: once images are watched

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
            return None
        head = os.pread(fd, min(size, HEAD_BYTES), 0)
        tail = os.pread(fd, min(size, _TAIL_BYTES), max(0, size - _TAIL_BYTES))
    except OSError:
        return None
    finally:
        os.close(fd)
    return ends_properly(head, tail, size)


class _Handler(FileSystemEventHandler):
    """Translates watchdog events into the source's pending table (runs on watchdog's thread)."""

    def __init__(self, source: DirectorySource) -> None:
        self.source = source

    @staticmethod
    def _path(raw: bytes | str) -> Path:
        return Path(os.fsdecode(raw))

    def on_closed(self, event: FileSystemEvent) -> None:
        self.source.note(self._path(event.src_path), writing=False)

    def on_created(self, event: FileSystemEvent) -> None:
        path = self._path(event.src_path)
        if event.is_directory and self.source.filter.recursive:
            self.source.scan_new_folder(path)
            return
        # a directory named like an image is a candidate too: it ends in the failed folder
        self.source.note(path)

    def on_modified(self, event: FileSystemEvent) -> None:
        if not event.is_directory:
            self.source.note(self._path(event.src_path), writing=True)

    def on_moved(self, event: FileSystemEvent) -> None:
        if event.src_path:
            self.source.forget(self._path(event.src_path))
        if not event.dest_path:
            return
        dest = self._path(event.dest_path)
        if event.is_directory and self.source.filter.recursive:
            self.source.scan_new_folder(dest)
        else:
            # a rename is atomic: the file under its new name is complete
            self.source.note(dest, renamed=True, writing=False)

    def on_deleted(self, event: FileSystemEvent) -> None:
        path = self._path(event.src_path)
        if os.path.abspath(path) == str(self.source.root):
            self.source.root_event()
            return
        self.source.forget(path)


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

    def skipped(self) -> int:
        return 0
