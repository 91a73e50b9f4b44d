"""A bounded on-disk spool of messages not yet acknowledged by the nucleus.

One small JSON file per message, named by a growing sequence number, so the oldest is re-sent
first and a crash leaves at worst one torn ``.part`` file (ignored). ``put`` returns only once the
message is durable: the file is written and fsynced under a temporary name, renamed, and the
folder is fsynced (so a power cut after ``put`` cannot lose the message or leave it empty). A
message leaves the spool only when its publish was acknowledged; everything still there is re-sent
after a reconnect or a restart. Re-sending after a timeout may duplicate a message: the cloud
de-duplicates results by ``device`` + ``image.name`` + ``image.sha256`` + ``time``.

    spool = Spool(state / "spool", max_items=10_000, max_bytes=64 * 2**20)
    entry = spool.put({"target": "iotcore", "topic": "t", "payload": "..."})
    for entry in spool.pending(): ...
    spool.remove(entry.id)
    spool.dead_letter(entry, error="UnauthorizedError: ...")   # refused for good: kept aside

Messages the nucleus refuses for good (not authorized, invalid) are not retried forever and not
dropped: ``dead_letter`` appends them, one JSON line each (``image``, ``target``, ``topic``,
``error``, ``time``, ``payload``), to ``dead-letter.jsonl`` beside the spool's messages, fsynced,
before the message leaves the spool.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspector.durable import write_atomic
from inspector.errors import SinkError, SpoolFull

logger = logging.getLogger(__name__)

_SUFFIX = ".json"
DEAD_LETTER_FILE = "dead-letter.jsonl"


@dataclass(frozen=True)
class SpoolEntry:
    id: int
    record: dict[str, Any]


class Spool:
    """Thread-safe; the folder is created on first use."""

    def __init__(
        self, folder: Path, *, max_items: int = 10_000, max_bytes: int = 64 * 2**20
    ) -> None:
        self.folder = Path(folder)
        self.max_items = max_items
        self.max_bytes = max_bytes  # of message files: a device's disk is shared and small
        self._lock = threading.Lock()
        self._ids: list[int] = []
        self._sizes: dict[int, int] = {}
        self._bytes = 0  # sum of _sizes, kept up to date: put() must not re-add 10,000 sizes
        self._next = 1
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        ids = []
        for path in self.folder.iterdir():
            if path.suffix == _SUFFIX and path.stem.isdigit():
                ids.append(int(path.stem))
                try:
                    self._sizes[ids[-1]] = path.stat().st_size
                except OSError:
                    self._sizes[ids[-1]] = 0
            elif path.name.endswith(".part"):
                path.unlink(missing_ok=True)  # torn by a crash before its rename
        self._ids = sorted(ids)
        self._bytes = sum(self._sizes.values())
        self._next = (self._ids[-1] + 1) if self._ids else 1
        self._loaded = True
        if self._ids:
            logger.info("spool %s: %d message(s) from an earlier run to send", self.folder,
                        len(self._ids))

    def __len__(self) -> int:
        with self._lock:
            self._load()
            return len(self._ids)

    @property
    def bytes(self) -> int:
        """Size of the messages waiting, in bytes."""
        with self._lock:
            self._load()
            return self._bytes

    def put(self, record: dict[str, Any]) -> SpoolEntry:
        """Write ``record`` (JSON types only); raises SpoolFull, or SinkError on I/O errors."""
        data = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        with self._lock:
            self._load()
            waiting = self._bytes
            if len(self._ids) >= self.max_items or waiting + len(data) > self.max_bytes:
                raise SpoolFull(
                    f"spool {self.folder} is full ({len(self._ids)} messages, {waiting} bytes "
                    f"waiting for the nucleus; limits {self.max_items} messages, "
                    f"{self.max_bytes} bytes); this message is not published"
                )
            entry_id = self._next
            path = self._path(entry_id)
            try:
                write_atomic(path, data)
            except OSError as exc:
                raise SinkError(f"cannot write to the spool {self.folder}: {exc}") from exc
            self._next += 1
            self._ids.append(entry_id)
            self._sizes[entry_id] = len(data)
            self._bytes += len(data)
        return SpoolEntry(entry_id, record)

    def pending(self, limit: int | None = None) -> list[SpoolEntry]:
        """The oldest messages first (at most ``limit``); unreadable files are dropped, logged."""
        with self._lock:
            self._load()
            ids = list(self._ids if limit is None else self._ids[:limit])
        entries = []
        for entry_id in ids:
            try:
                record = json.loads(self._path(entry_id).read_bytes())
            except FileNotFoundError:
                continue  # removed meanwhile
            except (OSError, ValueError) as exc:
                logger.error("spool: dropping unreadable message %d: %s", entry_id, exc)
                self.remove(entry_id)
                continue
            entries.append(SpoolEntry(entry_id, record))
        return entries

    def remove(self, entry_id: int) -> None:
        with self._lock:
            self._path(entry_id).unlink(missing_ok=True)
            if entry_id in self._ids:
                self._ids.remove(entry_id)
            self._bytes -= self._sizes.pop(entry_id, 0)

    @property
    def dead_letter_path(self) -> Path:
        return self.folder / DEAD_LETTER_FILE

    def dead_letter(self, entry: SpoolEntry, *, error: str, when: str) -> Path:
        """Append ``entry`` to the dead-letter file (fsynced), then remove it from the spool.
        Raises OSError when the line cannot be written (the message then stays spooled)."""
        record = entry.record
        line = json.dumps({
            "image": record.get("image", ""), "target": record.get("target", ""),
            "topic": record.get("topic", ""), "error": error, "time": when,
            "payload": record.get("payload", ""),
        }, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.dead_letter_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                start = os.fstat(fd).st_size
                try:
                    os.write(fd, line.encode("utf-8"))
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, start)  # no torn line for a reader
                    raise
            finally:
                os.close(fd)
        self.remove(entry.id)
        return self.dead_letter_path

    def _path(self, entry_id: int) -> Path:
        return self.folder / f"{entry_id:012d}{_SUFFIX}"
