"""Annotated copies of inspected images for people: boxes, label and confidence."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from inspector.types import Detections

# BGR colours per class id (cycled); bright on a dark belt and on grey metal alike.
PALETTE = ((0, 0, 255), (0, 200, 255), (255, 0, 255), (255, 128, 0), (0, 255, 0))


def annotate(
    image_bgr: np.ndarray, detections: Detections, class_names: Sequence[str], *,
    in_place: bool = False,
) -> np.ndarray:
    """A copy of ``image_bgr`` (H, W, 3) with each detection drawn; boxes in source pixels.
    ``in_place``: draw on ``image_bgr`` itself (no second full-size frame in memory).

    Labels never cover each other: each goes above its box if that spot is free, else inside
    the box's top, below the box, inside its bottom, else the nearest free spot further down
    (``place_labels``).
    """
    out = image_bgr if in_place else image_bgr.copy()
    height, width = out.shape[:2]
    thickness = max(1, round(min(height, width) / 400))
    font_scale = max(0.4, min(height, width) / 1600)
    boxes = [tuple(round(float(v)) for v in box) for box in detections.xyxy]
    texts = []
    for conf, cls in zip(detections.confidence, detections.class_id.tolist(), strict=True):
        name = class_names[cls] if 0 <= cls < len(class_names) else str(cls)
        texts.append(f"{name} {float(conf):.2f}")
    sizes = []
    for text in texts:
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        sizes.append((tw + 2, th + baseline + 2, th))
    labels = place_labels(boxes, [(w, h) for w, h, _ in sizes], (height, width))
    for (x1, y1, x2, y2), cls in zip(boxes, detections.class_id.tolist(), strict=True):
        cv2.rectangle(out, (x1, y1), (x2, y2), PALETTE[cls % len(PALETTE)], thickness,
                      cv2.LINE_AA)
    for (lx, ly, lw, lh), (_, _, th), text, cls in zip(
        labels, sizes, texts, detections.class_id.tolist(), strict=True
    ):
        colour = PALETTE[cls % len(PALETTE)]
        cv2.rectangle(out, (lx, ly), (lx + lw, ly + lh), colour, cv2.FILLED)
        cv2.putText(out, text, (lx + 1, ly + th + 1), cv2.FONT_HERSHEY_SIMPLEX, font_scale,
                    (255, 255, 255), thickness, cv2.LINE_AA)
    return out


Rect = tuple[int, int, int, int]  # x, y, width, height in pixels


def place_labels(
    boxes: Sequence[tuple[int, ...]], sizes: Sequence[tuple[int, int]], image_hw: tuple[int, int]
) -> list[Rect]:
    """A spot (x, y, w, h) for each box's label, none overlapping another label, inside the image
    where it fits. Boxes are ``(x1, y1, x2, y2)``; ``sizes`` the labels' ``(w, h)``."""
    height, width = image_hw
    placed: list[Rect] = []
    for (x1, y1, _x2, y2), (w, h) in zip(boxes, sizes, strict=True):
        x = min(max(0, x1), max(0, width - w))
        candidates = [y1 - h, y1, y2, y2 - h]  # above, inside top, below, inside bottom
        spots = [(x, y, w, h) for y in candidates if y >= 0 and y + h <= height]
        free = next((r for r in spots if not any(_overlap(r, p) for p in placed)), None)
        if free is None:  # slide down from the preferred spot to the first free row
            y = min(max(0, y1 - h), max(0, height - h))
            free = (x, y, w, h)
            for _ in range(len(placed) + 1):
                hit = [p for p in placed if _overlap(free, p)]
                if not hit:
                    break
                free = (x, max(p[1] + p[3] for p in hit), w, h)
        placed.append(free)
    return placed


def _overlap(a: Rect, b: Rect) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]
