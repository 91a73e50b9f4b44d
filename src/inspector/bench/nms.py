"""Our NMS against ``cv2.dnn.NMSBoxes`` on detector-like and scattered candidates.

Also home of the synthetic candidate makers that ``benchmarks/bench_core.py`` uses.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from inspector.bench.timing import median_ms
from inspector.postprocess import nms

NMS_SIZES = (10, 100, 1000)


def detector_like_boxes(
    rng: np.random.Generator, n: int, objects: int = 20, size: int = 640
) -> tuple[np.ndarray, np.ndarray]:
    """n candidates clustered around a few objects, as a detector emits them before NMS."""
    centres = rng.uniform(50, size - 50, (objects, 2))
    wh = rng.uniform(10, 120, (objects, 2))
    which = rng.integers(0, objects, n)
    centre = centres[which] + rng.normal(0, 4, (n, 2))
    box_wh = wh[which] * rng.uniform(0.85, 1.15, (n, 2))
    xyxy = np.concatenate([centre - box_wh / 2, centre + box_wh / 2], axis=1).astype(np.float32)
    return xyxy, rng.uniform(0.25, 1.0, n).astype(np.float32)


def scattered_boxes(rng: np.random.Generator, n: int, size: int = 640) -> tuple[np.ndarray, ...]:
    """n candidates spread over the image: most survive NMS (the worst case for greedy NMS)."""
    xy = rng.uniform(0, size, (n, 2))
    wh = rng.uniform(5, 80, (n, 2))
    xyxy = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    return xyxy, rng.uniform(0.25, 1.0, n).astype(np.float32)


def synthetic_head(rng: np.random.Generator, candidates: int = 200) -> np.ndarray:
    """(1, 5, 8400) with ``candidates`` anchors above 0.25 around ~20 objects, noise elsewhere."""
    raw = np.zeros((1, 5, 8400), dtype=np.float32)
    raw[0, :2] = rng.uniform(0, 640, (2, 8400))
    raw[0, 2:4] = rng.uniform(4, 60, (2, 8400))
    raw[0, 4] = rng.uniform(0, 0.05, 8400)
    xyxy, scores = detector_like_boxes(rng, candidates)
    idx = rng.choice(8400, candidates, replace=False)
    raw[0, 0, idx] = (xyxy[:, 0] + xyxy[:, 2]) / 2
    raw[0, 1, idx] = (xyxy[:, 1] + xyxy[:, 3]) / 2
    raw[0, 2, idx] = xyxy[:, 2] - xyxy[:, 0]
    raw[0, 3, idx] = xyxy[:, 3] - xyxy[:, 1]
    raw[0, 4, idx] = scores
    return raw


def cv2_list_input(xyxy: np.ndarray) -> list[tuple[float, float, float, float]]:
    return [(float(a), float(b), float(c - a), float(d - b)) for a, b, c, d in xyxy.tolist()]


def bench_nms(
    rng: np.random.Generator, repeats: int, iou: float, sizes: tuple[int, ...] = NMS_SIZES
) -> list[dict[str, Any]]:
    """One row per (boxes kind, candidate count): medians of ours and cv2, kept sets compared.

    cv2 is timed from the same numpy xyxy boxes (its xywh conversion counts) and, separately,
    from prebuilt Python lists (conversion not timed).
    """
    rows = []
    for kind, make in (("clustered", detector_like_boxes), ("scattered", scattered_boxes)):
        for n in sizes:
            xyxy, scores = make(rng, n)

            def cv2_nms(xyxy: np.ndarray = xyxy, scores: Any = scores) -> Any:
                xywh: Any = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
                return cv2.dnn.NMSBoxes(xywh, scores, 0.0, iou)  # numpy in, as we have it

            def ours(xyxy: np.ndarray = xyxy, scores: np.ndarray = scores) -> Any:
                return nms(xyxy, scores, iou)

            box_list: Any = cv2_list_input(xyxy)
            score_list: Any = scores.tolist()

            def cv2_lists(boxes: Any = box_list, s: Any = score_list) -> Any:
                return cv2.dnn.NMSBoxes(boxes, s, 0.0, iou)

            ours_kept = nms(xyxy, scores, iou)
            cv2_kept = np.asarray(cv2_nms()).reshape(-1)
            rows.append(
                {
                    "boxes": kind,
                    "candidates": n,
                    "kept": int(ours_kept.size),
                    "same_as_cv2": ours_kept.tolist() == cv2_kept.tolist(),
                    "ours_ms": median_ms(ours, repeats),
                    "cv2_ms": median_ms(cv2_nms, repeats),
                    "cv2_prebuilt_lists_ms": median_ms(cv2_lists, repeats),
                }
            )
    return rows
