"""A grid of thumbnails with their label boxes drawn, for a person to check the labels."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from inspector.synth.sample import Sample


def contact_sheet(
    samples: Sequence[Sample], columns: int = 4, thumb_width: int = 400
) -> np.ndarray:
    """(H, W, 3) uint8 BGR grid: boxes in green, the tag outline in blue, a caption per image."""
    if not samples:
        return np.zeros((thumb_width * 3 // 4, thumb_width, 3), dtype=np.uint8)
    thumb_height = thumb_width * 3 // 4
    rows = (len(samples) + columns - 1) // columns
    sheet = np.full((rows * thumb_height, columns * thumb_width, 3), 32, dtype=np.uint8)
    for i, sample in enumerate(samples):
        size = sample.size
        factor = min(thumb_width / size.width, thumb_height / size.height)
        w, h = max(1, round(size.width * factor)), max(1, round(size.height * factor))
        thumb = cv2.resize(sample.image, (w, h), interpolation=cv2.INTER_AREA)
        poly = np.round(sample.tag_polygon * factor).astype(np.int32)
        cv2.polylines(thumb, [poly], True, (255, 128, 0), 1, cv2.LINE_AA)
        for x1, y1, x2, y2 in sample.boxes_xyxy * factor:
            cv2.rectangle(
                thumb, (int(np.floor(x1)), int(np.floor(y1))),
                (int(np.ceil(x2)), int(np.ceil(y2))), (0, 255, 0), 1,
            )
        source = sample.meta.get("downscaled_from", sample.meta.get("size"))
        shown = f"{source['width']}x{source['height']}" if isinstance(source, dict) else size
        caption = f"#{sample.meta.get('index', i)} {shown} n={len(sample.boxes_xyxy)}"
        cv2.putText(thumb, caption, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 255, 255), 1,
                    cv2.LINE_AA)
        r, c = divmod(i, columns)
        top, left = r * thumb_height, c * thumb_width
        sheet[top : top + h, left : left + w] = thumb
    return sheet
