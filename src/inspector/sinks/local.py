"""Standalone sinks, used when no Greengrass environment is present.

- ``JsonlSink``: one schema-v1 result per line in a results file (appended, fsynced per line).
- ``ConsoleSink``: running totals, logged as a summary when the service stops.
- ``OutboxSink``: flagged images copied to an outbox folder with their result (and, optionally,
  a copy with the boxes drawn). In standalone mode this copy stands in for the S3 upload.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from inspector.conventions import shown
from inspector.durable import copy_atomic, deleted, write_atomic
from inspector.errors import ImageError, SinkError
from inspector.result import to_json
from inspector.sinks.base import Delivery, Sink

logger = logging.getLogger(__name__)


class JsonlSink(Sink):
    """Appends one result per line; ``send`` returns once the line is written and fsynced.

    The line goes out in one unbuffered ``write`` on an ``O_APPEND`` descriptor; if the write or
    the fsync fails (disk full, read-only, I/O error) the file is cut back to its size before
    the write, so a failed result leaves no torn line and is never written "later" by a buffer:
    the pipeline keeps the image and retries, and the retry writes the line exactly once.
    """

    name = "jsonl"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = None
        self.written = 0

    def preflight(self) -> None:
        """The results file can be created and appended to (else SinkError naming it)."""
        with self._lock:
            try:
                self._open()
            except OSError as exc:
                raise SinkError(f"results file {self.path}: {_reason(exc)}") from exc

    def _open(self) -> int:
        if self._fd is not None and deleted(self._fd):
            # its folder was removed (the watch folder with the state folder inside): lines
            # appended to a deleted file would be lost without a word
            logger.warning("results file %s was deleted; starting a new one", self.path)
            self._close_fd()
        if self._fd is None:
            if self.path.is_dir():
                raise IsADirectoryError(21, "it is a directory", str(self.path))
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot create its folder {self.path.parent}: "
                              f"{_reason(exc)}") from exc
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        return self._fd

    def send(self, delivery: Delivery) -> None:
        data = (to_json(delivery.result) + "\n").encode("utf-8")
        with self._lock:
            try:
                fd = self._open()
            except OSError as exc:
                raise SinkError(f"cannot append to {self.path}: {_reason(exc)}") from exc
            try:
                start = os.fstat(fd).st_size
            except OSError as exc:
                self._close_fd()
                raise SinkError(f"cannot append to {self.path}: {_reason(exc)}") from exc
            try:
                written = os.write(fd, data)
                if written != len(data):
                    raise OSError(28, f"short write ({written} of {len(data)} bytes)")
                os.fsync(fd)
            except OSError as exc:
                try:
                    os.ftruncate(fd, start)  # the line is not there: no torn or late line
                except OSError:
                    logger.error("%s: could not remove a partly written line at byte %d",
                                 self.path, start)
                self._close_fd()  # a read-only remount or a replaced file: open again next time
                raise SinkError(f"cannot append to {self.path}: {_reason(exc)}") from exc
            self.written += 1

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def status(self) -> dict[str, int]:
        return {"written": self.written}

    def close(self, timeout_s: float = 5.0) -> None:
        with self._lock:
            self._close_fd()


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


class ConsoleSink(Sink):
    """Keeps totals; the per-image line is the pipeline's own log line."""

    name = "console"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.images = 0
        self.defects = 0
        self.repeats = 0
        self.total_ms = 0.0

    def send(self, delivery: Delivery) -> None:
        with self._lock:
            self.images += 1
            self.defects += delivery.inspection.verdict == "defect"
            self.repeats += bool(delivery.result.get("repeat"))
            self.total_ms += float(delivery.inspection.timings_ms.get("total", 0.0))

    def summary(self) -> str:
        with self._lock:
            mean = self.total_ms / self.images if self.images else 0.0
            return (
                f"{self.images} image(s) inspected: {self.defects} defect, "
                f"{self.images - self.defects} pass, {self.repeats} repeat(s); "
                f"mean {mean:.1f} ms per image"
            )

    def close(self, timeout_s: float = 5.0) -> None:
        logger.info("summary: %s", self.summary())


class OutboxSink(Sink):
    """Copies each flagged image (verdict ``defect``) into ``folder`` with its result."""

    name = "outbox"

    def __init__(self, folder: Path, *, annotate: bool = True) -> None:
        self.folder = folder
        self.annotate = annotate

    def reconfigure(self, settings: Any) -> None:
        self.annotate = bool(settings.AnnotateOutbox)

    def send(self, delivery: Delivery) -> None:
        inspection = delivery.inspection
        if inspection.verdict != "defect":
            return
        image = inspection.image
        # image.name may be a path below the watch folder (line2/a.jpg): flattened, so that
        # same-named images from two subfolders get two outbox entries
        flat = Path(image.name.replace("/", "__"))
        stem = f"{flat.stem}-{image.sha256[:12]}"
        suffix = flat.suffix.lower()
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            copy_atomic(delivery.image_path, self.folder / f"{stem}{suffix}")
            write_atomic(
                self.folder / f"{stem}.json",
                json.dumps(delivery.result, ensure_ascii=False, indent=2).encode("utf-8"),
            )
            if self.annotate:
                _write_annotated(delivery, self.folder / f"{stem}.annotated.jpg")
        except OSError as exc:
            raise SinkError(f"cannot copy {shown(image.name)} to the outbox: {exc}") from exc


ANNOTATED_SIDE = 1024  # the annotated copy's longer side, at least (when the image has it)


def _write_annotated(delivery: Delivery, target: Path) -> None:
    """The outbox's annotated copy, at a capped resolution: a JPEG is decoded at the largest
    reduction (1/2, 1/4, 1/8: libjpeg's scaled IDCT) that leaves its longer side at least
    ``ANNOTATED_SIDE`` (2448x2048 -> 1224x1024: 3.6 MiB instead of 14 MiB for the frame, less
    to encode), other formats are decoded whole and shrunk to that size before drawing. The
    full-resolution original is copied beside it; boxes are scaled to the copy."""
    import cv2
    import numpy as np

    from inspector.annotate import annotate
    from inspector.imageio import read_image
    from inspector.types import Detections, Size

    inspection = delivery.inspection
    cap = Size(height=ANNOTATED_SIDE, width=ANNOTATED_SIDE)
    try:  # the decoder the inspection used: same orientation, same pixels the boxes refer to
        decoded = read_image(delivery.image_path, max_pixels=inspection.image.size.pixels,
                             fit=cap)
    except ImageError as exc:
        raise OSError(f"cannot decode it again for annotation: {exc.reason}") from exc
    bgr, size = decoded.bgr, decoded.info.size
    del decoded
    longer = max(bgr.shape[0], bgr.shape[1])
    if longer > 2 * ANNOTATED_SIDE:  # not reduced while decoding (not a JPEG)
        f = ANNOTATED_SIDE / longer
        bgr = cv2.resize(bgr, (max(1, round(bgr.shape[1] * f)), max(1, round(bgr.shape[0] * f))),
                         interpolation=cv2.INTER_AREA)
    detections = inspection.detections
    scale = np.array([bgr.shape[1] / size.width, bgr.shape[0] / size.height] * 2, np.float32)
    if not np.allclose(scale, 1.0):
        detections = Detections(detections.xyxy * scale, detections.confidence,
                                detections.class_id)
    drawn = annotate(bgr, detections, inspection.model.class_names, in_place=True)
    ok, encoded = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError("cannot encode the annotated image")
    write_atomic(target, encoded.tobytes())
