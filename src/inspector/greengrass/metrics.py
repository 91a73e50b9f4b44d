"""Service metrics on an MQTT topic, every ``MetricsIntervalSeconds``.

``LatencySink`` is a sink that only watches: it keeps the per-stage timings of the last
``window`` images. ``MetricsPublisher`` publishes, on its own thread, one JSON message::

    {"schema": "inspector.metrics/1", "device", "time", "uptime_s", "interval_s",
     "images", "defects", "failures", "skipped", "repeats", "held", "held_now", "kept",
     "delivery_retries", "stalled_s", "stall", "disk_paused", "disk_pauses", "sinks",
     "queue_depth", "sink_errors",
     "latency_ms": {"decode": {"p50", "p95"}, ..., "total": {...}}, "latency_samples",
     "model": {"name", "version", "sha256"}, "results_spooled", "dead_letters", "uploads": {...},
     "drift": {...}, "review": {...}}

``drift`` (``inspector.drift.DriftSink.take``) and ``review`` (``ReviewSink.take``) cover the
interval since the previous message only (they start empty after each message); every other
count runs since the start. docs/greengrass.md "Review uploads and drift signals" lists them.

Metrics are best effort: one IPC attempt per interval with a timeout, never spooled (the next
message carries the running totals anyway).
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from inspector.conventions import utc_now
from inspector.errors import IpcError
from inspector.sinks.base import Delivery, Sink

logger = logging.getLogger(__name__)

METRICS_SCHEMA = "inspector.metrics/1"
STAGES = ("decode", "preprocess", "inference", "postprocess", "total")


class LatencySink(Sink):
    """Records the per-stage timings of every inspected image (last ``window`` images)."""

    name = "latency"

    def __init__(self, window: int = 1000) -> None:
        self._lock = threading.Lock()
        self._samples: dict[str, collections.deque[float]] = {
            stage: collections.deque(maxlen=window) for stage in STAGES
        }

    def send(self, delivery: Delivery) -> None:
        timings = delivery.inspection.timings_ms
        with self._lock:
            for stage in STAGES:
                if stage in timings:
                    self._samples[stage].append(float(timings[stage]))

    def percentiles(self) -> tuple[dict[str, dict[str, float]], int]:
        """({stage: {"p50", "p95"}}, number of samples); empty stages are left out."""
        with self._lock:
            samples = {stage: list(values) for stage, values in self._samples.items()}
        out = {}
        for stage, values in samples.items():
            if values:
                p50, p95 = np.percentile(np.asarray(values), [50, 95])
                out[stage] = {"p50": round(float(p50), 2), "p95": round(float(p95), 2)}
        return out, len(samples["total"])


class MetricsIpc(Protocol):
    def publish_to_iot_core(self, topic: str, payload: bytes, *, qos: str = "1",
                            attempts: int | None = None) -> None: ...


class MetricsPublisher:
    """Publishes ``collect()`` every ``interval_s`` on ``topic``; 0 or "" = off (live)."""

    def __init__(
        self,
        ipc: MetricsIpc,
        collect: Callable[[], dict[str, Any]],
        *,
        topic: str,
        interval_s: float,
    ) -> None:
        self.ipc = ipc
        self.collect = collect
        self.topic = topic
        self.interval_s = interval_s
        self.sent = 0
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MetricsPublisher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="metrics", daemon=True)
            self._thread.start()
        return self

    def configure(self, *, topic: str, interval_s: float) -> None:
        if (topic, interval_s) != (self.topic, self.interval_s):
            self.topic, self.interval_s = topic, interval_s
            self._changed.set()

    def close(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def publish_now(self) -> bool:
        if not self.topic:
            return False

        try:
            message = self.collect()
            payload = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
            self.ipc.publish_to_iot_core(self.topic, payload, qos="0", attempts=1)
        except IpcError as exc:
            logger.warning("metrics not published: %s", exc)
            return False
        except Exception:
            logger.exception("metrics not published")
            return False
        self.sent += 1
        return True

    def _loop(self) -> None:
        while not self._stop.is_set():
            interval = self.interval_s
            if interval <= 0 or not self.topic:
                self._changed.wait()
                self._changed.clear()
                continue
            deadline = time.monotonic() + interval
            while not self._stop.is_set() and time.monotonic() < deadline:
                if self._changed.wait(max(0.0, deadline - time.monotonic())):
                    self._changed.clear()
                    break  # new interval or topic: start over
            else:
                if not self._stop.is_set():
                    self.publish_now()


def collect_metrics(
    service: Any,
    latency: LatencySink,
    *,
    extra: Callable[[], dict[str, Any]] | None = None,
    drift: Any = None,  # an inspector.drift.DriftSink
    review: Any = None,  # an inspector.sinks.review.ReviewSink
) -> dict[str, Any]:
    """The metrics message of a running ``inspector.service.Service``."""
    base = service.metrics()
    model = service.pipeline.detector.model
    latency_ms, samples = latency.percentiles()
    message: dict[str, Any] = {
        "schema": METRICS_SCHEMA,
        "device": base.get("device"),
        "time": utc_now(),
        "uptime_s": base.get("uptime_s"),
        "interval_s": service.settings.MetricsIntervalSeconds,
        "images": base.get("processed", 0),
        "defects": base.get("defects", 0),
        "failures": base.get("failed", 0),
        "skipped": base.get("skipped", 0),
        "repeats": base.get("repeats", 0),
        "held": base.get("held", 0),
        "held_now": base.get("held_now", 0),
        "kept": base.get("kept", 0),
        "delivery_retries": base.get("delivery_retries", 0),
        "stalled_s": base.get("stalled_s", 0.0),
        "stall": base.get("stall", ""),
        "disk_paused": base.get("disk_paused", False),
        "disk_pauses": base.get("disk_pauses", 0),
        "sinks": base.get("sinks", {}),
        "queue_depth": base.get("in_flight", 0),
        "sink_errors": base.get("sink_errors", {}),
        "latency_ms": latency_ms,
        "latency_samples": samples,
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
    }
    if drift is not None:
        message["drift"] = drift.take()
    if review is not None:
        message["review"] = review.take()
    if extra is not None:
        message.update(extra())
    return message
