"""A generated picture with its labels, and the ways to write it out (image file, YOLO lines)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from inspector.types import Size


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    boxes_xyxy: np.ndarray  # (n, 4) float32, source pixels, pixel-edge coordinates
    tag_polygon: np.ndarray  # (4, 2) float32, image pixels, corners of the tag
    meta: dict[str, object] = field(default_factory=dict)  # JSON-ready render parameters

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"image: expected (H, W, 3) uint8, got {self.image.shape} "
                             f"{self.image.dtype}")
        if self.boxes_xyxy.ndim != 2 or self.boxes_xyxy.shape[1] != 4:
            raise ValueError(f"boxes_xyxy: expected (n, 4), got {self.boxes_xyxy.shape}")
        if self.tag_polygon.shape != (4, 2):
            raise ValueError(f"tag_polygon: expected (4, 2), got {self.tag_polygon.shape}")

    @property
    def size(self) -> Size:
        return Size(height=int(self.image.shape[0]), width=int(self.image.shape[1]))


def write_image(sample: Sample, path_without_suffix: str | Path) -> Path:
    """Write the image as JPEG (quality from the sample) or PNG; returns the path written."""
    base = Path(path_without_suffix)
    if sample.meta.get("format") == "png":
        path = base.with_name(base.name + ".png")
        params = [cv2.IMWRITE_PNG_COMPRESSION, 3]
    else:
        path = base.with_name(base.name + ".jpg")
        quality = sample.meta.get("jpeg_quality", 90)
        params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]  # type: ignore[call-overload]
    ok, encoded = cv2.imencode(path.suffix, sample.image, params)
    if not ok:
        raise OSError(f"cv2 could not encode {path.name}")
    path.write_bytes(encoded.tobytes())
    return path


def yolo_label_lines(sample: Sample, class_id: int = 0) -> list[str]:
    """One ``class cx cy w h`` line per box, normalised to 0..1 by the image size."""
    size = sample.size
    boxes = np.asarray(sample.boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, size.width) / size.width
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, size.height) / size.height
    lines = []
    for x1, y1, x2, y2 in boxes:
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        lines.append(f"{class_id} {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}")
    return lines


def downscale(sample: Sample, max_side: int) -> Sample:
    """Shrink the image (area interpolation) so its long side is <= ``max_side``; boxes follow.

    ``boxes_xyxy`` and ``tag_polygon`` are rescaled; the render parameters in ``meta`` stay in
    source pixels (``meta["downscaled_from"]`` records the source size).
    """
    size = sample.size
    factor = max_side / max(size.width, size.height)
    if factor >= 1.0:
        return sample
    new_w = max(1, round(size.width * factor))
    new_h = max(1, round(size.height * factor))
    image = cv2.resize(sample.image, (new_w, new_h), interpolation=cv2.INTER_AREA)
    sx, sy = new_w / size.width, new_h / size.height
    scale = np.array([sx, sy, sx, sy], dtype=np.float32)
    meta = copy.deepcopy(sample.meta)
    meta["downscaled_from"] = {"width": size.width, "height": size.height}
    return Sample(
        image=image,
        boxes_xyxy=sample.boxes_xyxy * scale,
        tag_polygon=sample.tag_polygon * scale[:2],
        meta=meta,
    )
