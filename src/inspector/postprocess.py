"""Post-processing: decode the YOLOv8 detection head, then class-aware greedy NMS, in numpy.

Pure functions. Conventions match Ultralytics' predictor (``non_max_suppression``) and
``cv2.dnn.NMSBoxes``: a candidate survives the confidence filter when ``score > conf_threshold``
(``inspector.types.confident``, the rule the verdict uses too) and is suppressed when its IoU with
a kept box is ``> iou_threshold``. So a confidence threshold
of 1 keeps nothing, an IoU threshold of 1 suppresses nothing and an IoU threshold of 0 suppresses
every overlap (boxes that merely touch have IoU 0 and both stay).
"""

from __future__ import annotations

import numpy as np

from inspector.types import Detections, Letterbox, Thresholds, confident

DEFAULTS = Thresholds()
MAX_NMS_CANDIDATES = 30_000  # Ultralytics' max_nms: the top boxes by score that enter NMS
CLASS_OFFSET = 7680.0  # Ultralytics' max_wh: per-class shift so classes never overlap


def head_layout(shape: tuple[int, ...], num_classes: int | None = None) -> str:
    """Which way round a YOLOv8 detection output is: "channels_first" (1, 4+nc, N) or
    "channels_last" (1, N, 4+nc). Raises ValueError when the shape is not a detection head.

    With ``num_classes`` known the layout is exact; without, an axis under 5 is the anchors one,
    else the longer axis is (8400 anchors at 640 px against 4+nc channels).
    """
    if len(shape) != 3 or shape[0] != 1:
        raise ValueError(f"expected a (1, 4+nc, N) detection output, got shape {shape}")
    _, a, b = shape
    if num_classes is not None:
        channels = 4 + num_classes
        if a == channels:
            return "channels_first"
        if b == channels:
            return "channels_last"
        raise ValueError(
            f"expected (1, {channels}, N) or (1, N, {channels}) for {num_classes} classes, "
            f"got shape {shape}"
        )
    if max(a, b) < 5:
        raise ValueError(f"expected (1, 4+nc, N) with nc >= 1, got shape {shape}")
    if a < 5:  # too few to be 4 box rows + scores: the anchors axis
        return "channels_last"
    if b < 5:
        return "channels_first"
    return "channels_last" if a > b else "channels_first"


def decode(
    raw: np.ndarray,
    *,
    conf_threshold: float = DEFAULTS.conf,
    num_classes: int | None = None,
) -> Detections:
    """Raw head output -> candidate boxes (xyxy, model-input pixels) above ``conf_threshold``.

    raw: (1, 4+nc, N) or (1, N, 4+nc); rows 0..3 are cx, cy, w, h, rows 4.. the class scores.
    """
    layout = head_layout(tuple(raw.shape), num_classes)
    pred = raw[0] if layout == "channels_first" else raw[0].T  # (4+nc, N), a view
    scores = pred[4:]
    if scores.shape[0] == 1:
        confidence = scores[0]
        best_score = _best(confidence)
        mask = confident(confidence, conf_threshold)
        class_id = np.zeros(int(mask.sum()), dtype=np.int64)
        confidence = confidence[mask]
    else:
        best = scores.max(axis=0)
        best_score = _best(best)
        mask = confident(best, conf_threshold)
        confidence = best[mask]
        class_id = scores[:, mask].argmax(axis=0)
    cxcywh = pred[:4, mask]  # (4, k): only the survivors are converted
    half_w = cxcywh[2] * 0.5
    half_h = cxcywh[3] * 0.5
    xyxy = np.stack(
        (cxcywh[0] - half_w, cxcywh[1] - half_h, cxcywh[0] + half_w, cxcywh[1] + half_h), axis=1
    )
    finite = np.isfinite(xyxy).all(axis=1)
    if not finite.all():  # a broken model must not put NaN into results (JSON forbids it)
        xyxy, confidence, class_id = xyxy[finite], confidence[finite], class_id[finite]
    return Detections(xyxy=xyxy, confidence=confidence, class_id=class_id, best_score=best_score)


def _best(scores: np.ndarray) -> float:
    """The highest finite score (0 when there is none): the image's best confidence, kept even
    when no box passes the threshold (uncertain-band uploads, the drift histogram)."""
    if not scores.size:
        return 0.0
    return float(np.max(scores, initial=0.0, where=np.isfinite(scores)))


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box (4,) against many (n, 4); (n,) float32. Empty boxes give IoU 0."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(
    xyxy: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = DEFAULTS.iou,
    *,
    class_id: np.ndarray | None = None,
    max_det: int | None = None,
) -> np.ndarray:
    """Greedy NMS; returns the kept indices (int64), highest score first.

    xyxy: (n, 4); scores: (n,). With ``class_id`` (n,) it is class-aware: boxes of different
    classes are shifted apart by ``CLASS_OFFSET`` so they can never overlap. Ties in score keep
    the earlier index first (stable sort), as cv2.dnn.NMSBoxes does.

    The plain loop: keep the best box left, drop every box that overlaps it by more than
    ``iou_threshold``, repeat. With the 10-100 candidates a frame yields it is a small part of
    a millisecond (benchmarks/ compares it with OpenCV); it is written for reading, not speed.
    """
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    if class_id is not None:
        boxes = boxes + (np.asarray(class_id, dtype=np.float32) * CLASS_OFFSET)[:, None]
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    limit = len(order) if max_det is None else max_det
    kept: list[int] = []
    while order.size and len(kept) < limit:
        best, rest = order[0], order[1:]
        kept.append(int(best))
        order = rest[box_iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.asarray(kept, dtype=np.int64)


def postprocess(
    raw: np.ndarray,
    letterbox: Letterbox,
    thresholds: Thresholds = DEFAULTS,
    *,
    num_classes: int | None = None,
) -> Detections:
    """Decode, NMS, cap at ``max_det``, map to source pixels: the detections of one image."""
    candidates = decode(raw, conf_threshold=thresholds.conf, num_classes=num_classes)
    best_score = candidates.best_score  # a selection below does not keep it
    if len(candidates) > MAX_NMS_CANDIDATES:
        top = np.argsort(-candidates.confidence, kind="stable")[:MAX_NMS_CANDIDATES]
        candidates = candidates[top]
    keep = nms(
        candidates.xyxy,
        candidates.confidence,
        thresholds.iou,
        class_id=candidates.class_id,
        max_det=thresholds.max_det,
    )
    kept = candidates[keep]
    return Detections(
        xyxy=letterbox.to_source(kept.xyxy), confidence=kept.confidence, class_id=kept.class_id,
        best_score=best_score,
    )
