"""Value types shared by every stage: sizes, letterbox geometry, detections, inspections.

Heights and widths never travel as bare tuples here: the well-known YOLOv8 ONNX example swapped
them and the bug hid on square test images. ``Size`` always names its fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np

Verdict = Literal["defect", "pass"]


@dataclass(frozen=True, slots=True)
class Size:
    """An image or tensor size in pixels."""

    height: int
    width: int

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(
                f"Size needs positive height and width, got {self.height}x{self.width}"
            )

    @property
    def pixels(self) -> int:
        return self.height * self.width

    def __str__(self) -> str:  # width x height, as people write image sizes
        return f"{self.width}x{self.height}"


@dataclass(frozen=True, slots=True)
class Letterbox:
    """How a source image was fitted into a model input: resize then centred padding.

    ``resized`` is the size of the image content inside the padded ``target``. The inverse uses
    the actual per-axis scale (``resized / source``), so it undoes the rounding of the resize too.
    """

    source: Size
    target: Size
    resized: Size
    pad_top: int
    pad_left: int

    @property
    def scale_x(self) -> float:
        return self.resized.width / self.source.width

    @property
    def scale_y(self) -> float:
        return self.resized.height / self.source.height

    def to_source(self, xyxy: np.ndarray) -> np.ndarray:
        """Map boxes from model-input pixels to source-image pixels, clipped to the image.

        xyxy: (n, 4) float, model-input pixels. Returns a new (n, 4) float32 array.
        """
        boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        out = np.empty_like(boxes)
        out[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_left) / self.scale_x
        out[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_top) / self.scale_y
        # Basic slices (views), not fancy indexing: clipping into a fancy-indexed copy is a no-op.
        np.clip(out[:, 0::2], 0, self.source.width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.source.height, out=out[:, 1::2])
        return out

    def to_target(self, xyxy: np.ndarray) -> np.ndarray:
        """Map boxes from source pixels to model-input pixels (the forward direction)."""
        boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        out = np.empty_like(boxes)
        out[:, [0, 2]] = boxes[:, [0, 2]] * self.scale_x + self.pad_left
        out[:, [1, 3]] = boxes[:, [1, 3]] * self.scale_y + self.pad_top
        return out


def _empty_boxes() -> np.ndarray:
    return np.zeros((0, 4), dtype=np.float32)


@dataclass(frozen=True)
class Detections:
    """Detections of one image as parallel numpy arrays; validates its own shapes."""

    xyxy: np.ndarray = field(default_factory=_empty_boxes)  # (n, 4) float32, x1 y1 x2 y2
    confidence: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))  # (n,)
    class_id: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int64))  # (n,)
    # the best raw score of any candidate box, kept even when none passes the confidence
    # threshold (``postprocess.decode`` sets it; None when not known, e.g. a selection)
    best_score: float | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32)
        conf = np.asarray(self.confidence, dtype=np.float32)
        cls = np.asarray(self.class_id, dtype=np.int64)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"xyxy: expected (n, 4), got {xyxy.shape}")
        n = xyxy.shape[0]
        if conf.shape != (n,):
            raise ValueError(f"confidence: expected ({n},), got {conf.shape}")
        if cls.shape != (n,):
            raise ValueError(f"class_id: expected ({n},), got {cls.shape}")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "class_id", cls)

    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: np.ndarray | slice) -> Detections:
        """Select by boolean mask, index array or slice."""
        return Detections(self.xyxy[index], self.confidence[index], self.class_id[index])

    @classmethod
    def empty(cls) -> Detections:
        return cls()


def confident(confidence: np.ndarray, conf_threshold: float) -> np.ndarray:
    """THE confidence rule, the one comparison for decoding and the verdict alike: a score counts
    when it is strictly above the threshold (``score > conf_threshold``, as Ultralytics'
    predictor). So a threshold of 1 keeps nothing and one of 0 keeps every non-zero score."""
    return np.asarray(confidence) > conf_threshold


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What post-processing is told to keep: one frozen value, swapped whole (live settings
    changes never need a new model session). Validated here, once: ValueError when out of range.

    conf: a box counts when its score is above it (see ``confident``); iou: a box is suppressed
    when it overlaps a kept box of its class by more than this; max_det: at most this many boxes.
    """

    conf: float = 0.25  # Ultralytics predictor defaults
    iou: float = 0.7
    max_det: int = 300

    def __post_init__(self) -> None:
        if not 0.0 <= self.conf <= 1.0:
            raise ValueError(f"conf_threshold must be within 0..1, got {self.conf}")
        if not 0.0 <= self.iou <= 1.0:
            raise ValueError(f"iou_threshold must be within 0..1, got {self.iou}")
        if self.max_det < 1:
            raise ValueError(f"max_det must be at least 1, got {self.max_det}")


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """The inspected image as the result schema names it."""

    name: str  # file name, no directory
    size: Size  # of the decoded, upright image
    sha256: str  # of the file's bytes


@dataclass(frozen=True, slots=True)
class ImageStats:
    """Grey-level summary of one decoded image (the drift signals): mean and standard deviation
    (contrast) of the grey level, 0..255; see ``inspector.drift.grey_stats``."""

    mean: float
    std: float


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    version: str
    sha256: str
    class_names: tuple[str, ...]
    input_size: Size


@dataclass(frozen=True)
class Inspection:
    """Everything known about one inspected image; ``inspector.result`` turns it into schema v1."""

    image: ImageInfo
    model: ModelInfo
    detections: Detections  # boxes in source-image pixels
    conf_threshold: float
    timings_ms: dict[str, float]  # decode, preprocess, inference, postprocess, total
    time_utc: str  # ISO-8601, UTC, e.g. 2026-11-25T19:22:48.123Z
    image_stats: ImageStats | None = None  # computed by the decode worker (drift signals)

    @property
    def best_confidence(self) -> float:
        """The best score of the image, 0..1: the highest raw candidate score even when no box
        passes ``conf_threshold`` (``Detections.best_score``), else the best detection's."""
        best = self.detections.best_score
        if best is None:
            conf = self.detections.confidence
            best = float(conf.max()) if conf.size else 0.0
        return min(1.0, max(0.0, float(best)))

    @property
    def verdict(self) -> Verdict:
        hit = bool(np.any(confident(self.detections.confidence, self.conf_threshold)))
        return "defect" if hit else "pass"
