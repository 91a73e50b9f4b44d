"""Review uploads (``UncertainUpload``): images a person should label, for the next model.

Selected, among the images that PASS:

- ``uncertain``: the best confidence (``Inspection.best_confidence``: the best raw score, also
  when no box passed) is at least ``ConfidenceThreshold - UncertainBand``: the model nearly
  called it a defect;
- ``audit``: any other pass, with probability ``AuditSampleRate`` (a random sample of what the
  model calls good, to catch the scratches it misses with confidence).

Each selected image is copied (a hard link when the file system allows, else a copy) with its
result JSON into ``ReviewDirectory``: ``<reason>/<thing>/<date>/<stem>-<sha256><suffix>`` and
the same name + ``.json``. Standalone, that folder is the output (bounded by housekeeping:
``ReviewRetentionDays``, ``ReviewMaxMegabytes``). Under Greengrass both files are uploaded through
StreamManager's S3 export (an ``S3Uploader`` of their own streams) to ``UploadBucket`` as
``<ReviewPrefix><reason>/<thing>/<date>/...`` and ``<key>.json``, and the copies are deleted when
the status stream reports the final Success or Failure.

Best effort, never custody: ``send`` never raises and never waits for StreamManager, and the sink
never claims the image, so the image moves to done (or is deleted) exactly as without it. A
failed upload is not retried; StreamManager down or not deployed: a copy not accepted within
``accept_within_s`` is dropped; more than ``max_pending`` waiting: new ones are dropped; no
``UploadBucket``: dropped. Rate limits ``ReviewMaxPerHour`` and ``ReviewMaxMegabytesPerHour``
(a sliding hour) skip images beyond them. Every drop or skip is counted (``status()``, and per
metrics interval ``take()``) and logged as a WARNING at most once an hour per cause.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from inspector.conventions import shown
from inspector.diskspace import MIB
from inspector.drift import uncertain
from inspector.durable import copy_atomic, write_atomic
from inspector.sinks.base import Delivery, Sink
from inspector.sinks.upload import Uploader, object_key, user_metadata
from inspector.types import Inspection

logger = logging.getLogger(__name__)

HOUR_S = 3600.0
COUNTS = ("uncertain", "audit", "skipped_limit", "failed", "uploaded", "saved")
REVIEW_DATA_STREAM = "InspectorReviewImages"
REVIEW_STATUS_STREAM = "InspectorReviewImagesStatus"
ACCEPT_WITHIN_S = 120.0  # a review copy StreamManager has not taken by then is dropped
MAX_PENDING = 64  # review files waiting for StreamManager; beyond, new ones are dropped


class HourlyBudget:
    """A sliding-window limit: at most ``max_count`` items and ``max_bytes`` bytes within any
    ``window_s``. ``take(n)`` says whether one more item of ``n`` bytes fits, and books it."""

    def __init__(self, max_count: int, max_bytes: int, *, window_s: float = HOUR_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.window_s = window_s
        self._clock = clock
        self._taken: collections.deque[tuple[float, int]] = collections.deque()
        self._bytes = 0

    def take(self, nbytes: int) -> bool:
        now = self._clock()
        while self._taken and now - self._taken[0][0] >= self.window_s:
            self._bytes -= self._taken.popleft()[1]
        if len(self._taken) >= self.max_count or self._bytes + nbytes > self.max_bytes:
            return False
        self._taken.append((now, nbytes))
        self._bytes += nbytes
        return True


class _Warnings:
    """One WARNING per cause per hour; the occurrences in between go to DEBUG and are counted
    in the next WARNING."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last: dict[str, float] = {}
        self._quiet: dict[str, int] = {}
        self._lock = threading.Lock()  # the delivery thread and the uploader's both warn

    def warn(self, cause: str, message: str, *args: Any) -> None:
        now = self._clock()
        with self._lock:
            last = self._last.get(cause)
            loud = last is None or now - last >= HOUR_S
            if loud:
                self._last[cause] = now
                quiet = self._quiet.pop(cause, 0)
            else:
                self._quiet[cause] = self._quiet.get(cause, 0) + 1
        if not loud:
            logger.debug(message, *args)
            return
        logger.warning(message + ("" if not quiet else
                                  f" ({quiet} more since the last such warning)"), *args)


def select(inspection: Inspection, *, band: float, audit_rate: float,
           rng: random.Random) -> str | None:
    """``"uncertain"``, ``"audit"`` or None (see the module docstring)."""
    if inspection.verdict != "pass":
        return None
    if uncertain(inspection, band):
        return "uncertain"
    if audit_rate > 0 and rng.random() < audit_rate:
        return "audit"
    return None


def review_name(reason: str, thing: str, result: dict[str, Any]) -> str:
    """``<reason>/<thing>/<date>/<stem>-<sha256><suffix>``, sanitised as upload keys are."""
    safe_reason = reason.replace("{", "").replace("}", "")
    return object_key(safe_reason + "/{device}/{date}/{stem}-{sha256}{suffix}",
                      {**result, "device": thing or result.get("device")})


class ReviewSink(Sink):
    """See the module docstring. ``uploader`` None: standalone (the folder is the output)."""

    name = "review"

    def __init__(
        self,
        folder: Path,
        settings: Any,
        *,
        uploader: Uploader | None = None,
        thing: str = "",
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self.folder = Path(folder)
        self.uploader = uploader
        self.thing = thing
        self.max_pending = max_pending
        self._rng = rng or random.Random()
        self._lock = threading.Lock()
        self._total = dict.fromkeys(COUNTS, 0)
        self._interval = dict.fromkeys(COUNTS, 0)
        self._warnings = _Warnings(clock)
        self._budget = HourlyBudget(1, 1, clock=clock)
        self.reconfigure(settings)

    def reconfigure(self, settings: Any) -> None:
        self.enabled = bool(settings.UncertainUpload)
        self.band = float(settings.UncertainBand)
        self.audit_rate = float(settings.AuditSampleRate)
        self.prefix = str(settings.ReviewPrefix)
        self.bucket = str(settings.UploadBucket)
        self._budget.max_count = int(settings.ReviewMaxPerHour)
        self._budget.max_bytes = int(float(settings.ReviewMaxMegabytesPerHour) * MIB)

    # --- counts ------------------------------------------------------------------------------

    def _count(self, what: str) -> None:
        with self._lock:
            self._total[what] += 1
            self._interval[what] += 1

    def status(self) -> dict[str, int]:
        with self._lock:
            out = {k: v for k, v in self._total.items() if v}
        if self.uploader is not None and (out or self.uploader.pending()):
            out["pending"] = self.uploader.pending()
        return out

    def take(self) -> dict[str, int]:
        """The counts since the last call (one metrics interval); the next interval starts."""
        with self._lock:
            out, self._interval = self._interval, dict.fromkeys(COUNTS, 0)
        return out

    # --- one image ---------------------------------------------------------------------------

    def send(self, delivery: Delivery) -> None:
        if not self.enabled:
            return
        try:
            self._review(delivery)
        except Exception:  # best effort: never the image's custody, never the delivery's error
            self._count("failed")
            logger.exception("%s: review copy failed", shown(delivery.inspection.image.name))

    def _review(self, delivery: Delivery) -> None:
        reason = select(delivery.inspection, band=self.band, audit_rate=self.audit_rate,
                        rng=self._rng)
        if reason is None:
            return
        name = shown(delivery.inspection.image.name)
        if self.uploader is not None:
            if not self.bucket:
                self._count("failed")
                self._warnings.warn("bucket", "%s: %s image not uploaded for review: "
                                    "UploadBucket is empty (UncertainUpload needs it)", name,
                                    reason)
                return
            if self.uploader.pending() >= self.max_pending:
                self._count("failed")
                self._warnings.warn("pending", "%s: %s image dropped: %d review uploads are "
                                    "waiting for StreamManager already", name, reason,
                                    self.uploader.pending())
                return
        document = json.dumps(delivery.result, ensure_ascii=False, indent=1).encode("utf-8")
        try:
            size = os.stat(delivery.image_path).st_size + len(document)
        except OSError as exc:
            self._count("failed")
            self._warnings.warn("copy", "%s: %s image not kept for review: %s", name, reason,
                                exc)
            return
        if not self._budget.take(size):
            self._count("skipped_limit")
            self._warnings.warn("limit", "%s: %s image skipped: the review limit "
                                "(ReviewMaxPerHour %d, ReviewMaxMegabytesPerHour %g) is "
                                "reached", name, reason, self._budget.max_count,
                                self._budget.max_bytes / MIB)
            return
        relative = review_name(reason, self.thing, delivery.result)
        image_copy = self.folder / relative
        json_copy = image_copy.with_name(image_copy.name + ".json")
        try:
            image_copy.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(delivery.image_path, image_copy)
            write_atomic(json_copy, document)
        except OSError as exc:
            self._count("failed")
            for path in (image_copy, json_copy):
                path.unlink(missing_ok=True)
            self._warnings.warn("copy", "%s: %s image not kept for review: %s", name, reason,
                                exc)
            return
        self._count(reason)
        if self.uploader is None:
            self._count("saved")
            logger.info("%s: kept for review (%s) in %s", name, reason, shown(image_copy))
            return
        key = self.prefix + relative
        metadata = {**user_metadata(delivery.result), "review-reason": reason,
                    "best-confidence": f"{delivery.inspection.best_confidence:.4f}"}
        pair = _Pair(self, name, reason)
        self.uploader.submit(image_copy.absolute(), self.bucket, key, metadata,
                             pair.done(image_copy))
        self.uploader.submit(json_copy.absolute(), self.bucket, key + ".json", metadata,
                             pair.done(json_copy))
        logger.info("%s: review upload (%s) to s3://%s/%s submitted", name, reason, self.bucket,
                    key)

    def _settled(self, name: str, reason: str, failures: list[str]) -> None:
        if failures:
            self._count("failed")
            self._warnings.warn("upload", "%s: review upload (%s) dropped: %s", name, reason,
                                "; ".join(failures))
        else:
            self._count("uploaded")


class _Pair:
    """The image and its JSON: one review upload, settled when both have a final status."""

    def __init__(self, sink: ReviewSink, name: str, reason: str) -> None:
        self._sink, self._name, self._reason = sink, name, reason
        self._left = 2
        self._failures: list[str] = []
        self._lock = threading.Lock()

    def done(self, copy: Path) -> Callable[[bool, str], None]:
        def on_done(ok: bool, reason: str) -> None:
            with contextlib.suppress(OSError):  # StreamManager has read it, or never will
                copy.unlink(missing_ok=True)
            with self._lock:
                if not ok:
                    self._failures.append(f"{copy.name}: {reason}")
                self._left -= 1
                last = self._left == 0
            if last:
                self._sink._settled(self._name, self._reason, self._failures)
        return on_done


def _link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no bytes copied; the image may move to done or be deleted meanwhile), else
    an atomic copy (another file system)."""
    temp = target.with_name(f".{target.name}.part")
    temp.unlink(missing_ok=True)
    try:
        os.link(source, temp)
    except OSError:
        copy_atomic(source, target)
        return
    os.replace(temp, target)
