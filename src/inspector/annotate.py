"""Annotated copies of inspected images for people: boxes, label and confidence."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from inspector.types import Detections

# BGR colours per class id (cycled); bright on a dark belt and on grey metal alike.
PALETTE = ((0, 0, 255), (0, 200, 255), (255, 0, 255), (255, 128, 0), (0, 255, 0))


def annotate(
    image_bgr: np.ndarray, detections: Detections, class_names: Sequence[str]
) -> np.ndarray:
    """A copy of ``image_bgr`` (H, W, 3) with each detection drawn; boxes in source pixels."""
    out = image_bgr.copy()
    height, width = out.shape[:2]
    thickness = max(1, round(min(height, width) / 400))
    font_scale = max(0.4, min(height, width) / 1600)
    for box, conf, cls in zip(
        detections.xyxy, detections.confidence, detections.class_id.tolist(), strict=True
    ):
        colour = PALETTE[cls % len(PALETTE)]
        x1, y1, x2, y2 = (round(float(v)) for v in box)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thickness, cv2.LINE_AA)
        name = class_names[cls] if 0 <= cls < len(class_names) else str(cls)
        text = f"{name} {float(conf):.2f}"
        (tw, th), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thickness)
        # the label sits above the box, or inside it when the box touches the top edge
        top = y1 - th - baseline - 2 if y1 - th - baseline - 2 >= 0 else y1
        cv2.rectangle(out, (x1, top), (x1 + tw + 2, top + th + baseline + 2), colour, cv2.FILLED)
        cv2.putText(
            out,
            text,
            (x1 + 1, top + th + 1),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (255, 255, 255),
            thickness,
            cv2.LINE_AA,
        )
    return out
