"""Drift signals: what the images and the model's scores look like, per metrics interval.

``grey_stats`` runs in the decode worker on the already-decoded (reduced) frame: the mean grey
level (brightness) and its standard deviation (contrast), 0..255. A frame whose long side is over
``SAMPLE_SIDE`` px is first sampled down to it (nearest neighbour: every pixel read is a real
pixel, no blur changing the contrast), so the cost does not grow with the frame: about 0.05 ms
for any frame size on this project's 2-core CPU (docs/greengrass.md), against the tens of ms
the decode takes; a 256 px sample keeps the mean within about 0.2 grey levels.

``DriftSink`` is a sink that only watches (like ``LatencySink``): per interval it counts images
and defects, bins each image's best confidence (``Inspection.best_confidence``, so images whose
best box stayed under the threshold are counted too) into ``BINS`` equal bins over [0, 1], counts
images in the uncertain band, and keeps the images' brightness and contrast; ``take()`` returns
the interval's summary and starts the next one (the metrics message calls it once per message).
"""

from __future__ import annotations

import threading
from typing import Any

import cv2
import numpy as np

from inspector.sinks.base import Delivery, Sink
from inspector.types import ImageStats, Inspection

BINS = 10  # the best-confidence histogram: bin i holds [i/10, (i+1)/10), the last also 1.0
SAMPLE_SIDE = 256  # the long side of the sample the statistics are computed on
MAX_INTERVAL_SAMPLES = 20_000  # brightness samples kept per interval (the counts stay exact)


def grey_stats(bgr: np.ndarray) -> ImageStats:
    """Mean and standard deviation of the grey level (ITU-R BT.601 weights, as OpenCV's
    BGR2GRAY) of an (H, W, 3) uint8 BGR or (H, W) grey image."""
    height, width = bgr.shape[:2]
    scale = max(height, width) / SAMPLE_SIDE
    sample = bgr
    if scale > 1:
        size = (max(1, round(width / scale)), max(1, round(height / scale)))  # (w, h): OpenCV's
        sample = cv2.resize(bgr, size, interpolation=cv2.INTER_NEAREST)
    grey = sample if sample.ndim == 2 else cv2.cvtColor(sample, cv2.COLOR_BGR2GRAY)
    mean, std = cv2.meanStdDev(grey)
    return ImageStats(mean=float(mean[0, 0]), std=float(std[0, 0]))


def uncertain(inspection: Inspection, band: float) -> bool:
    """A pass whose best confidence lies within ``band`` below the threshold: the model nearly
    called it a defect (counted here, uploaded for review by ``UncertainUpload``)."""
    return (inspection.verdict == "pass"
            and inspection.best_confidence >= inspection.conf_threshold - band)


def confidence_bin(confidence: float) -> int:
    """The histogram bin of a best confidence (clipped into 0..1)."""
    return min(BINS - 1, max(0, int(confidence * BINS)))


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    arr = np.asarray(values, dtype=np.float64)
    p10, p50, p90 = np.percentile(arr, [10, 50, 90])
    return {"mean": round(float(arr.mean()), 2), "p10": round(float(p10), 2),
            "p50": round(float(p50), 2), "p90": round(float(p90), 2)}


class DriftSink(Sink):
    """Collects the drift signals of one metrics interval (see the module docstring)."""

    name = "drift"

    def __init__(self, uncertain_band: float = 0.15) -> None:
        self.uncertain_band = uncertain_band
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._images = 0
        self._defects = 0
        self._uncertain = 0
        self._histogram = [0] * BINS
        self._brightness: list[float] = []
        self._contrast: list[float] = []

    def reconfigure(self, settings: Any) -> None:
        self.uncertain_band = float(settings.UncertainBand)

    def send(self, delivery: Delivery) -> None:
        inspection = delivery.inspection
        best = inspection.best_confidence
        defect = inspection.verdict == "defect"
        near = uncertain(inspection, self.uncertain_band)
        stats = inspection.image_stats
        with self._lock:
            self._images += 1
            self._defects += defect
            self._uncertain += near
            self._histogram[confidence_bin(best)] += 1
            if stats is not None and len(self._brightness) < MAX_INTERVAL_SAMPLES:
                self._brightness.append(stats.mean)
                self._contrast.append(stats.std)

    def take(self) -> dict[str, Any]:
        """This interval's signals (JSON types only); the next interval starts empty."""
        with self._lock:
            images, defects, uncertain = self._images, self._defects, self._uncertain
            histogram = list(self._histogram)
            brightness, contrast = self._brightness, self._contrast
            self._reset()
        return {
            "images": images,
            "defects": defects,
            "defect_rate": round(defects / images, 4) if images else None,
            "uncertain": uncertain,
            "uncertain_share": round(uncertain / images, 4) if images else None,
            "confidence_bins": BINS,
            "confidence_histogram": histogram,
            "brightness": _summary(brightness),
            "contrast": _summary(contrast),
        }
