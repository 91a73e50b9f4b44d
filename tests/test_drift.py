"""Drift signals (``inspector.drift``): grey-level statistics and the per-interval summary."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from inspector.drift import BINS, DriftSink, confidence_bin, grey_stats
from inspector.sinks.base import Delivery
from inspector.types import Detections, ImageInfo, ImageStats, Inspection, ModelInfo, Size


def test_grey_stats_of_known_images() -> None:
    flat = grey_stats(np.full((48, 64, 3), 90, np.uint8))
    assert (flat.mean, flat.std) == (90.0, 0.0)
    halves = np.zeros((48, 64, 3), np.uint8)
    halves[:, 32:] = 200  # half black, half 200: mean 100, std 100
    stats = grey_stats(halves)
    assert stats.mean == pytest.approx(100.0) and stats.std == pytest.approx(100.0)
    blue = np.zeros((10, 10, 3), np.uint8)
    blue[..., 0] = 255  # BT.601 as OpenCV: 0.114 * 255
    assert grey_stats(blue).mean == pytest.approx(29.0, abs=0.5)
    assert grey_stats(np.full((8, 8), 7, np.uint8)).mean == 7.0  # grey input as is


def test_a_large_frame_is_sampled_and_stays_close() -> None:
    rng = np.random.default_rng(3)
    big = rng.integers(0, 256, (2048, 2448, 3), dtype=np.uint8)
    big[:1024] //= 2  # a darker top half
    exact = ImageStats(float(big.mean()), 0.0)  # the mean of the channels' mean, near grey's
    sampled = grey_stats(big)
    assert sampled.mean == pytest.approx(exact.mean, abs=1.5)
    assert 50 < sampled.std < 80


def delivery(best: float | None, *, defect: bool = False, brightness: float | None = None,
             contrast: float = 0.0) -> Delivery:
    detections = (Detections(np.array([[1, 1, 5, 5]], np.float32),
                             np.array([best or 0.9], np.float32), np.array([0]),
                             best_score=best)
                  if defect else Detections(best_score=best))
    inspection = Inspection(
        image=ImageInfo("a.png", Size(10, 10), "0" * 64),
        model=ModelInfo("m", "1", "0" * 64, ("scratch",), Size(10, 10)),
        detections=detections, conf_threshold=0.5, timings_ms={},
        time_utc="2026-12-01T00:00:00Z",
        image_stats=None if brightness is None else ImageStats(brightness, contrast))
    return Delivery({}, inspection, Path("a.png"))


def test_confidence_bins() -> None:
    assert [confidence_bin(v) for v in (0.0, 0.0999, 0.1, 0.55, 0.9999, 1.0, 1.7, -1)] == [
        0, 0, 1, 5, 9, 9, 9, 0]


def test_drift_interval_summary_and_reset() -> None:
    sink = DriftSink(uncertain_band=0.15)
    for value in (0.02, 0.05, 0.12, 0.4, 0.45):  # 0.4 and 0.45 are in the band [0.35, 0.5]
        sink.send(delivery(value, brightness=100 + value * 100, contrast=20))
    sink.send(delivery(0.97, defect=True, brightness=180, contrast=40))
    sink.send(delivery(None))  # a model that scored nothing: best 0, no brightness known
    sink.send(delivery(0.5))  # equal to the threshold: a pass, uncertain
    summary = sink.take()
    histogram = [0] * BINS
    for b in (0, 0, 1, 4, 4, 9, 0, 5):
        histogram[b] += 1
    assert summary["confidence_histogram"] == histogram
    assert summary["confidence_bins"] == BINS
    assert (summary["images"], summary["defects"], summary["uncertain"]) == (8, 1, 3)
    assert summary["defect_rate"] == 0.125 and summary["uncertain_share"] == 0.375
    values = [102.0, 105.0, 112.0, 140.0, 145.0, 180.0]
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    assert summary["brightness"] == {"mean": round(float(np.mean(values)), 2),
                                     "p10": round(float(p10), 2), "p50": round(float(p50), 2),
                                     "p90": round(float(p90), 2)}
    assert summary["contrast"]["p50"] == 20.0 and summary["contrast"]["p90"] == 30.0  # 5 x 20, 40
    empty = sink.take()  # the next interval starts empty
    assert empty["images"] == 0 and empty["defect_rate"] is None
    assert empty["brightness"] is None and sum(empty["confidence_histogram"]) == 0


def test_standalone_logs_the_drift_signals(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                           ) -> None:
    """No metrics topic standalone: the interval's drift object is logged instead (here the
    last, partial interval, at the stop)."""
    import json

    import cv2

    from inspector.service import build_service
    from inspector.settings import Settings
    from onnx_factory import max_pixel_model, write_model

    size = Size(64, 96)
    model = write_model(tmp_path / "max.onnx", max_pixel_model(size))
    watch = tmp_path / "watch"
    watch.mkdir()
    for name, level in (("a.png", 40), ("b.png", 140), ("c.png", 255)):
        ok, data = cv2.imencode(".png", np.full((size.height, size.width, 3), level, np.uint8))
        assert ok
        (watch / name).write_bytes(data.tobytes())
    settings = Settings.from_mapping({"ImageDirectory": str(watch), "ModelPath": str(model),
                                      "AllowUnverifiedModel": True, "ConfidenceThreshold": 0.6,
                                      "StableSeconds": 0.0})
    caplog.set_level(logging.INFO, "inspector.service")
    build_service(settings, drain=True).run()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("drift")]
    assert len(lines) == 1
    drift = json.loads(lines[0].split(": ", 1)[1])
    assert drift["images"] == 3 and drift["defects"] == 1 and drift["uncertain"] == 1
    assert drift["confidence_histogram"] == [0, 1, 0, 0, 0, 1, 0, 0, 0, 1]
    assert drift["brightness"]["p50"] == 140.0 and drift["contrast"]["p90"] == 0.0
