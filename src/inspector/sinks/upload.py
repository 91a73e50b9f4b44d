"""The S3 upload sink: flagged images go to S3 through StreamManager (``greengrass.streams``).

The sink claims every ``defect`` image when ``UploadBucket`` is set, so the pipeline holds the
file (held folder) until the upload's final status: ``release(ok=True)`` after Success (the
image is then settled per ``ProcessedAction``: moved to done or deleted), ``release(ok=False)``
after the last failed retry (moved to the failed folder with the reason). A failed upload is
retried with backoff until ``UploadRetryHours`` after the image's inspection (the result's
``time``, so the window is the same after a restart) and at least ``UploadMaxRetries`` times.
After a restart the pipeline offers the images still held, with their results; they are uploaded
again.

The S3 key comes from ``UploadKeyTemplate``, filled from the result (its ``time``, not the
clock, so a re-issued upload writes the same key) and sanitised: only ``[A-Za-z0-9._-/=+!*()]``,
no empty or ``.`` segments, no ``..`` anywhere, no leading ``/``; a value's own slashes never
add levels.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from inspector.sinks.base import Delivery, Hold, Sink

logger = logging.getLogger(__name__)

MAX_KEY_BYTES = 1024
_UNSAFE = re.compile(r"[^A-Za-z0-9._\-=+!*()]")
_DOTS = re.compile(r"\.{2,}")  # no ".." anywhere, not only as a whole segment


class Uploader(Protocol):
    """What the sink needs of ``inspector.greengrass.streams.S3Uploader``."""

    max_retries: int
    retry_window_s: float
    uploaded: int
    retried: int
    failed: int

    def pending(self) -> int: ...

    def submit(self, path: Path, bucket: str, key: str, metadata: dict[str, str],
               on_done: Callable[[bool, str], None], *, deadline: float | None = None
               ) -> Any: ...


def _segment(value: str) -> str:
    return _UNSAFE.sub("_", value)


def object_key(template: str, result: dict[str, Any]) -> str:
    """The sanitised S3 key of ``result``'s image (see the module docstring)."""
    name = str(result["image"]["name"])
    path = Path(name)
    when = str(result.get("time", ""))  # 2026-11-25T19:41:08.123Z
    fields = {
        "device": result.get("device") or "unknown-device",
        "date": when[:10] or "unknown-date",
        "time": when[11:19].replace(":", "") or "000000",
        "name": name,
        "stem": path.stem,
        "suffix": path.suffix.lower(),
        "sha256": str(result["image"]["sha256"]),
        "verdict": str(result.get("verdict", "")),
    }
    # a value is never a path: its slashes must not add levels (or climb with "..")
    safe = {k: str(v).replace("/", "_").replace("\\", "_") for k, v in fields.items()}
    raw = template.format(**safe)
    parts = [_segment(p) for p in raw.replace("\\", "/").split("/")]
    parts = [p for p in parts if p not in ("", ".", "..")]
    key = _DOTS.sub("_", "/".join(parts))
    if not key.strip("/_"):
        key = _DOTS.sub("_", _segment(f"{fields['stem']}-{fields['sha256']}{fields['suffix']}"))
    encoded = key.encode("utf-8")
    if len(encoded) > MAX_KEY_BYTES:
        key = encoded[:MAX_KEY_BYTES].decode("utf-8", "ignore")
    return key


def user_metadata(result: dict[str, Any]) -> dict[str, str]:
    return {
        "verdict": str(result.get("verdict", "")),
        "detections": str(result.get("detections_total", len(result.get("detections") or []))),
        "model-name": str(result.get("model", {}).get("name", "")),
        "model-version": str(result.get("model", {}).get("version", "")),
        "image-sha256": str(result["image"]["sha256"]),
    }


class UploadSink(Sink):
    name = "s3"

    def __init__(self, uploader: Uploader, *, bucket: str, key_template: str,
                 max_retries: int = 3, retry_hours: float = 0.0) -> None:
        self.uploader = uploader
        self.bucket = bucket
        self.key_template = key_template
        self.retry_hours = retry_hours
        self.uploader.max_retries = max_retries
        self.uploader.retry_window_s = retry_hours * 3600.0

    def status(self) -> dict[str, int]:
        return {"uploaded": self.uploader.uploaded, "retried": self.uploader.retried,
                "failed": self.uploader.failed, "pending": self.uploader.pending()}

    def claims_image(self, delivery: Delivery) -> bool:
        return bool(self.bucket) and delivery.result.get("verdict") == "defect"

    def send(self, delivery: Delivery) -> None:
        if delivery.hold is None:  # not claimed (no bucket, or not a defect)
            return
        self._submit(delivery.result, delivery.image_path, delivery.hold)

    def resume_hold(self, result: dict[str, Any], image_path: Path, hold: Hold) -> bool:
        if not self.bucket or not result.get("image"):
            return False
        self._submit(result, image_path, hold)
        return True

    def reconfigure(self, settings: Any) -> None:
        self.bucket = str(settings.UploadBucket)
        self.key_template = str(settings.UploadKeyTemplate)
        self.uploader.max_retries = int(settings.UploadMaxRetries)
        self.retry_hours = float(settings.UploadRetryHours)
        self.uploader.retry_window_s = self.retry_hours * 3600.0

    def _submit(self, result: dict[str, Any], path: Path, hold: Hold) -> None:
        def done(ok: bool, reason: str) -> None:
            hold.release(self.name, ok=ok, reason="" if ok else f"upload failed: {reason}")

        key = object_key(self.key_template, result)
        inspected = _epoch(str(result.get("time", "")))
        self.uploader.submit(
            Path(path).absolute(), self.bucket, key, user_metadata(result), done,
            deadline=None if inspected is None else inspected + self.retry_hours * 3600.0,
        )
        logger.debug("%s: upload to s3://%s/%s submitted", path.name, self.bucket, key)


def _epoch(when: str) -> float | None:
    """Seconds since the epoch of a result's ``time`` (2026-11-25T19:41:08.123Z), or None."""
    from datetime import datetime

    try:
        return datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
