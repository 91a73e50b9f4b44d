"""Metrics: per-stage latency percentiles and the periodic publisher."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from inspector.errors import IpcTimeout
from inspector.greengrass.metrics import LatencySink, MetricsPublisher
from inspector.sinks.base import Delivery
from inspector.types import Detections, ImageInfo, Inspection, ModelInfo, Size


def delivery(total_ms: float) -> Delivery:
    inspection = Inspection(
        image=ImageInfo("a.jpg", Size(10, 10), "a" * 64),
        model=ModelInfo("m", "1", "b" * 64, ("scratch",), Size(64, 64)),
        detections=Detections.empty(),
        conf_threshold=0.25,
        timings_ms={"decode": 1.0, "inference": total_ms / 2, "total": total_ms},
        time_utc="2026-11-25T00:00:00.000Z",
    )
    return Delivery({}, inspection, Path("a.jpg"))


def test_latency_percentiles_per_stage() -> None:
    sink = LatencySink(window=100)
    for ms in range(1, 201):  # only the last 100 (101..200) count
        sink.send(delivery(float(ms)))
    latency, samples = sink.percentiles()
    assert samples == 100
    assert latency["total"] == {"p50": float(np.percentile(np.arange(101, 201), 50)),
                                "p95": float(np.percentile(np.arange(101, 201), 95))}
    assert latency["decode"] == {"p50": 1.0, "p95": 1.0}
    assert "preprocess" not in latency  # no samples, no entry


class FakeIpc:
    def __init__(self, fail: bool = False) -> None:
        self.messages: list[tuple[str, dict[str, Any], str]] = []
        self.fail = fail
        self.event = threading.Event()

    def publish_to_iot_core(self, topic: str, payload: bytes, *, qos: str = "1",
                            attempts: int | None = None) -> None:
        if self.fail:
            raise IpcTimeout("no answer")
        self.messages.append((topic, json.loads(payload), qos))
        self.event.set()


def test_publisher_sends_periodically_and_follows_new_settings() -> None:
    ipc = FakeIpc()
    count = iter(range(1000))
    publisher = MetricsPublisher(ipc, lambda: {"n": next(count)}, topic="m/1",
                                 interval_s=0.05).start()
    deadline = time.monotonic() + 10
    while len(ipc.messages) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [m[0] for m in ipc.messages[:2]] == ["m/1", "m/1"]
    publisher.configure(topic="m/2", interval_s=0.05)
    while not any(m[0] == "m/2" for m in ipc.messages) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert any(m[0] == "m/2" for m in ipc.messages)
    publisher.configure(topic="m/2", interval_s=0)  # off
    before = len(ipc.messages)
    # a second publisher on the same interval is the clock: once it has sent four messages,
    # the first would have sent some too had "off" not stopped it (one may have been in flight)
    reference = FakeIpc()
    clock = MetricsPublisher(reference, lambda: {}, topic="r", interval_s=0.05).start()
    while len(reference.messages) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    clock.close()
    assert len(reference.messages) >= 4
    assert len(ipc.messages) <= before + 1
    publisher.close()


class FlakyIpc(FakeIpc):
    """Times out ``failures`` times, then publishes."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.attempts = 0

    def publish_to_iot_core(self, topic: str, payload: bytes, *, qos: str = "1",
                            attempts: int | None = None) -> None:
        self.attempts += 1
        self.fail = self.attempts <= self.failures
        super().publish_to_iot_core(topic, payload, qos=qos, attempts=attempts)


def test_a_failed_publish_is_logged_and_the_next_one_goes_out(
    caplog: pytest.LogCaptureFixture
) -> None:
    ipc = FlakyIpc(failures=2)
    publisher = MetricsPublisher(ipc, lambda: {"n": 1}, topic="m", interval_s=0.02).start()
    try:
        assert ipc.event.wait(10), "the publisher thread did not survive the failures"
    finally:
        publisher.close()
    assert ipc.attempts >= 3 and publisher.sent >= 1 and ipc.messages[0][1] == {"n": 1}
    failures = [r for r in caplog.records if r.getMessage() == "metrics not published: no answer"]
    assert len(failures) == 2 and all(r.levelname == "WARNING" for r in failures)


@pytest.mark.parametrize("collect", [lambda: {"x": float("nan")}, lambda: 1 / 0])
def test_a_bad_metrics_message_is_logged_not_sent(collect: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """NaN is not JSON (allow_nan=False), a broken collect() is a bug: both logged with the
    traceback, nothing sent, the caller goes on."""
    ipc = FakeIpc()
    publisher = MetricsPublisher(ipc, collect, topic="m", interval_s=60)
    assert publisher.publish_now() is False
    assert ipc.messages == [] and publisher.sent == 0
    assert any(r.exc_info and r.getMessage() == "metrics not published" for r in caplog.records)


def test_no_topic_means_nothing_is_published() -> None:
    ipc = FakeIpc()
    assert MetricsPublisher(ipc, lambda: {}, topic="", interval_s=1).publish_now() is False
    assert ipc.messages == []
