"""Where an image ends, and the journal that lets a restart recognise repeats.

Every image ends in exactly one known state:
- processed: moved to the done folder (or deleted, per ``ProcessedAction``);
- failed: moved to the failed folder, ``<name>.reason.txt`` written beside it first;
- held: moved to the held folder while a sink (an S3 upload) still needs the file, then
  processed (or failed) once every claiming sink has released it.

A move is a hard link into the target folder, then an unlink of the source (``os.replace``
where links are impossible; a copy to a temporary name then a rename across file systems), so a
crash never leaves a file half-moved: at worst it is in both places, and its second inspection
is marked as a repeat.

The journal is an append-only JSONL file: ``begin`` before a result goes to the sinks, ``hold``
when the image is held, ``end`` when it is settled. An image begun but not ended when the service
stopped may have had its result delivered; if it is seen again it is marked as a repeat. The same
holds within a run: an image begun and not ended (its result went to some sink, but it could not
be moved to done, or was kept because another sink failed) is a repeat when inspected again.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from inspector.conventions import utc_now
from inspector.durable import deleted, write_atomic

logger = logging.getLogger(__name__)

ProcessedAction = Literal["move", "delete"]


class Disposer:
    """Moves images into the done, failed and held folders. Thread-safe."""

    def __init__(
        self,
        *,
        root: Path,
        done: Path,
        failed: Path,
        held: Path,
        action: ProcessedAction = "move",
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.done_dir = Path(os.path.abspath(done))
        self.failed_dir = Path(os.path.abspath(failed))
        self.held_dir = Path(os.path.abspath(held))
        self.action = action
        self._lock = threading.Lock()

    def prepare(self) -> None:
        """Create the folders (the one start-up I/O of this class)."""
        for folder in (self.done_dir, self.failed_dir, self.held_dir):
            folder.mkdir(parents=True, exist_ok=True)

    def done(self, path: Path) -> Path | None:
        """Processed: moved to the done folder (returned) or deleted (None)."""
        with self._lock:
            if self.action == "delete":
                _unlink(path)
                return None
            return self._move(path, self.done_dir)

    def fail(self, path: Path, reason: str) -> Path:
        """Failed: the reason file is written first, then the image is moved beside it."""
        with self._lock:
            os.lstat(path)  # FileNotFoundError before any folder is created for a vanished file
            target = self._target(path, self.failed_dir)
            reason_file = target.with_name(target.name + ".reason.txt")
            write_atomic(
                reason_file,
                f"{reason}\n\nfile: {path}\ntime: {utc_now()}\n".encode(),
            )
            _replace(path, target)
            return target

    def hold(self, path: Path) -> Path:
        with self._lock:
            return self._move(path, self.held_dir)

    def held_files(self) -> list[Path]:
        """Images left in the held folder (by an earlier run), oldest first."""
        try:
            entries = [p for p in self.held_dir.iterdir() if p.is_file()]
        except FileNotFoundError:
            return []
        return sorted(entries, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def _move(self, path: Path, folder: Path) -> Path:
        # FileNotFoundError first: creating the target's folders for a file that is gone could
        # bring back a removed (or unmounted) watch folder that holds the state folder
        os.lstat(path)
        target = self._target(path, folder)
        _replace(path, target)
        return target

    def _target(self, path: Path, folder: Path) -> Path:
        """A free name in ``folder``, keeping the path below the watch root (recursive mode)."""
        path = Path(os.path.abspath(path))
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            rel = Path(path.name)
        if any(path.is_relative_to(own) for own in (self.held_dir, self.done_dir)):
            rel = Path(path.name)
        if not folder.is_dir() and not os.path.isdir(self.root):
            # the watch folder is gone (removed, unmounted): re-creating it (with the state
            # folder inside) would hide that, or write onto the mount point's file system
            raise FileNotFoundError(errno.ENOENT, "the watch folder is gone", str(self.root))
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        n = 1
        while os.path.lexists(target) or os.path.lexists(str(target) + ".reason.txt"):
            target = target.with_name(f"{rel.stem}-{n}{rel.suffix}")
            n += 1
        return target


def _replace(source: Path, target: Path) -> None:
    # A regular file is hard-linked into place, then unlinked: the watch directory sees a plain
    # delete. A rename shows up there as IN_MOVED_FROM, for which watchdog holds back every
    # later event up to 0.5 s waiting for a matching IN_MOVED_TO, delaying the next image.
    if os.path.isfile(source) and not os.path.islink(source):
        try:
            os.link(source, target)  # never overwrites: FileExistsError if taken
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                raise
        else:
            os.unlink(source)
            return
    try:
        os.replace(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        # another file system: copy under a temporary name, rename, then remove the source
        temp = target.with_name(f".{target.name}.part")
        try:
            if os.path.isdir(source):
                shutil.copytree(source, temp, symlinks=True)
                os.replace(temp, target)
                shutil.rmtree(source)
            else:
                shutil.copy2(source, temp, follow_symlinks=False)
                os.replace(temp, target)
                os.unlink(source)
        except OSError:
            _unlink(temp)  # a disk-full copy must not keep the space it took
            raise


def _unlink(path: Path) -> None:
    try:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        else:
            os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass(frozen=True)
class HeldRecord:
    name: str
    sha256: str
    path: Path  # where the image was held
    result: dict[str, Any]


class Journal:
    """Append-only record of deliveries in progress; survives crashes.

    Compacted on open, and online whenever the file grows past ``max_bytes``: it is rewritten
    (atomically) with only the entries still open, which are also kept in memory. The same
    rewrite brings the file back when it was deleted under us (its folder removed with the watch
    folder): appending to a deleted file would silently lose every record.
    """

    def __init__(self, path: Path, *, max_bytes: int = 1024 * 1024) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._unsettled: dict[tuple[str, str], dict[str, Any]] = {}  # from the previous run
        self._held: dict[tuple[str, str], HeldRecord] = {}
        self._open: dict[tuple[str, str], list[str]] = {}  # lines of entries not ended yet
        self._fh: Any = None
        self._size = 0
        self._rewritten = 0  # bytes of the file as last rewritten (its open entries)
        self._closed = False
        self._lost = False  # the file could not be written again: logged once
        self.compactions = 0

    def open(self) -> None:
        """Replay the file, keep only what is still open, start appending."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        open_entries: dict[tuple[str, str], list[dict[str, Any]]] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        record = json.loads(line)
                        key = (record["name"], record["sha256"])
                    except (ValueError, KeyError, TypeError):
                        continue  # a line torn by a crash
                    if record.get("op") == "end":
                        open_entries.pop(key, None)
                    else:
                        open_entries.setdefault(key, []).append(record)
        for key, records in open_entries.items():
            self._unsettled[key] = records[0]
            self._open[key] = [json.dumps(r, ensure_ascii=False) + "\n" for r in records]
            for record in records:
                if record.get("op") == "hold":
                    self._held[key] = HeldRecord(
                        key[0], key[1], Path(record["path"]), record.get("result") or {}
                    )
        with self._lock:
            self._rewrite()
        if self._unsettled:
            logger.info(
                "journal: %d image(s) were in flight when the service last stopped",
                len(self._unsettled),
            )

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._fh is not None:
                try:
                    self._fh.flush()
                    os.fsync(self._fh.fileno())
                except OSError as exc:
                    logger.error("journal %s: cannot flush: %s", self.path, exc)
                finally:
                    with contextlib.suppress(OSError):
                        self._fh.close()
                    self._fh = None

    def is_repeat(self, name: str, sha256: str) -> bool:
        """Whether this image's result may already have been delivered (by an earlier run, or
        earlier in this one without the image reaching done): its entry is still open."""
        with self._lock:
            return (name, sha256) in self._open

    def held(self) -> list[HeldRecord]:
        with self._lock:
            return list(self._held.values())

    def open_entries(self) -> int:
        with self._lock:
            return len(self._open)

    def begin(self, name: str, sha256: str) -> None:
        """Raises OSError when the line cannot be written (the caller keeps the image)."""
        self._append({"op": "begin", "name": name, "sha256": sha256, "time": utc_now()},
                     strict=True)

    def hold(self, name: str, sha256: str, path: Path, result: dict[str, Any]) -> None:
        self._append(
            {"op": "hold", "name": name, "sha256": sha256, "path": str(path), "result": result}
        )

    def end(self, name: str, sha256: str, state: str) -> None:
        with self._lock:
            self._unsettled.pop((name, sha256), None)
            self._held.pop((name, sha256), None)
        self._append(
            {"op": "end", "name": name, "sha256": sha256, "state": state, "time": utc_now()}
        )

    def _append(self, record: dict[str, Any], *, strict: bool = False) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        key = (record["name"], record["sha256"])
        with self._lock:
            if self._closed:
                # a hold released after shutdown: the entry stays open and the next run,
                # finding the image settled, simply has nothing to resume
                logger.debug("journal closed; not recorded: %s", line.strip())
                return
            if record["op"] == "end":
                self._open.pop(key, None)
            else:
                self._open.setdefault(key, []).append(line)
            if self._fh is None or deleted(self._fh.fileno()):
                if self._fh is not None:
                    logger.warning(
                        "journal %s was deleted (its folder removed?); writing it again with "
                        "the %d entries still open", self.path, len(self._open),
                    )
                self._rewrite()  # holds ``line`` already, unless it was an end
                if strict and self._fh is None:
                    raise OSError(f"journal {self.path} cannot be written")
                return
            try:
                self._fh.write(line)
                self._fh.flush()  # a crash of the process keeps what the OS has; no fsync
            except OSError as exc:
                with contextlib.suppress(OSError):  # the buffered line fails again on close
                    self._fh.close()
                self._fh = None  # the next record tries to write the file again
                if strict:
                    raise
                # a lost hold/end line only makes a later re-inspection a (harmless) repeat
                logger.error("journal %s: cannot record %s of %s: %s", self.path,
                             record.get("op"), record.get("name"), exc)
                return
            self._size += len(line.encode("utf-8"))
            if self._size > self._compact_at():
                self._rewrite()

    def _rewrite(self) -> None:
        """Write the open entries (only) to a fresh file and append from there. Under the lock.

        The folder is created when missing, but not its parents: if those are gone too (the
        watch folder removed with the state folder inside it, or unmounted) nothing is created
        in their place; the entries stay in memory and the next record tries again.
        """
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        lines = [line for lines in self._open.values() for line in lines]
        data = "".join(lines).encode("utf-8")
        try:
            self.path.parent.mkdir(exist_ok=True)
            write_atomic(self.path, data)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as exc:
            if not self._lost:
                logger.error(
                    "journal %s cannot be written (%s); %d open entries kept in memory until "
                    "it can", self.path, exc.strerror or exc, len(self._open),
                )
            self._lost = True
            return
        if self._lost:
            logger.warning("journal %s written again (%d open entries)", self.path, len(lines))
        self._lost = False
        if self._size > self._compact_at():
            self.compactions += 1
            logger.info("journal %s compacted: %d bytes -> %d bytes (%d open entries)",
                        self.path, self._size, len(data), len(self._open))
        self._size = len(data)
        self._rewritten = len(data)

    def _compact_at(self) -> int:
        # open entries alone may approach the bound (many held images): never rewrite per record.
        # Read at each record, so a live change of max_bytes applies at once.
        return max(self.max_bytes, 2 * self._rewritten)
