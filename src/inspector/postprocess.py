"""Post-processing: decode the YOLOv8 detection head, then class-aware greedy NMS, in numpy.

Pure functions. Conventions match Ultralytics' predictor (``non_max_suppression``) and
``cv2.dnn.NMSBoxes``: a candidate survives the confidence filter when ``score > conf_threshold``
and is suppressed when its IoU with a kept box is ``> iou_threshold``. So a confidence threshold
of 1 keeps nothing, an IoU threshold of 1 suppresses nothing and an IoU threshold of 0 suppresses
every overlap (boxes that merely touch have IoU 0 and both stay).
"""

from __future__ import annotations

import numpy as np

from inspector.types import Detections, Letterbox

DEFAULT_CONF_THRESHOLD = 0.25  # Ultralytics predictor defaults
DEFAULT_IOU_THRESHOLD = 0.7
DEFAULT_MAX_DET = 300
MAX_NMS_CANDIDATES = 30_000  # Ultralytics' max_nms: the top boxes by score that enter NMS
CLASS_OFFSET = 7680.0  # Ultralytics' max_wh: per-class shift so classes never overlap
_NMS_BLOCK_MIN = 64  # boxes per NMS round, adapted between these bounds
_NMS_BLOCK_MAX = 256
_FIXED_POINT_ROUNDS = 8


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
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
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
        mask = confidence > conf_threshold
        class_id = np.zeros(int(mask.sum()), dtype=np.int64)
        confidence = confidence[mask]
    else:
        best = scores.max(axis=0)
        mask = best > conf_threshold
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
    return Detections(xyxy=xyxy, confidence=confidence, class_id=class_id)


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
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    *,
    class_id: np.ndarray | None = None,
    max_det: int | None = None,
) -> np.ndarray:
    """Greedy NMS; returns the kept indices (int64), highest score first.

    xyxy: (n, 4); scores: (n,). With ``class_id`` (n,) it is class-aware: boxes of different
    classes are shifted apart by ``CLASS_OFFSET`` so they can never overlap. Ties in score keep
    the earlier index first (stable sort), as cv2.dnn.NMSBoxes does.

    The result is exactly the one-box-at-a-time greedy result, computed a block of boxes at a
    time so that Python loops over blocks rather than over boxes: the block's IoU against every
    box still alive is one broadcast, the greedy choice inside the block is a short fixed-point
    iteration, and the block's kept boxes suppress the rest at once. The block size adapts (64 to
    256) to how densely the boxes overlap.
    """
    n = int(scores.shape[0])
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    boxes = np.asarray(xyxy, dtype=np.float32)
    if class_id is not None:
        boxes = boxes + (np.asarray(class_id, dtype=np.float32) * CLASS_OFFSET)[:, None]
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    sorted_boxes = boxes[order]  # sorted once; everything below works in sorted positions
    # Contiguous columns, so that the broadcasts below stream through memory.
    x1, y1, x2, y2 = (np.ascontiguousarray(sorted_boxes[:, c]) for c in range(4))
    # iou > t  <=>  inter > t * (a_i + a_j - inter)  <=>  inter > t / (1 + t) * (a_i + a_j)
    scaled_areas = (x2 - x1) * (y2 - y1) * np.float32(iou_threshold / (1.0 + iou_threshold))
    limit = n if max_det is None else min(n, max_det)
    alive = np.ones(n, dtype=bool)
    kept: list[np.ndarray] = []
    kept_count = 0
    start = 0
    block_size = _NMS_BLOCK_MIN
    while start < n and kept_count < limit:
        rest = np.flatnonzero(alive[start:]) + start  # ascending sorted positions
        if not rest.size:
            break
        block = rest[:block_size]
        over = _overlaps(block, rest, x1, y1, x2, y2, scaled_areas)
        chosen = _greedy_in_block(over[:, : block.size])
        kept.append(block[chosen])
        kept_count += int(chosen.sum())
        suppressed = rest[over[chosen].any(axis=0)]
        alive[suppressed] = False
        start = int(block[-1]) + 1
        # Dense overlaps (a kept box removes many): small blocks waste less work on boxes that
        # are about to go; sparse overlaps: large blocks mean fewer rounds.
        if suppressed.size > 2 * block.size:
            block_size = max(_NMS_BLOCK_MIN, block_size // 2)
        else:
            block_size = min(_NMS_BLOCK_MAX, block_size * 2)
    positions = np.concatenate(kept)[:limit]
    return order[positions]


def _overlaps(
    rows: np.ndarray,
    cols: np.ndarray,
    x1: np.ndarray,
    y1: np.ndarray,
    x2: np.ndarray,
    y2: np.ndarray,
    scaled_areas: np.ndarray,
) -> np.ndarray:
    """(len(rows), len(cols)) bool: IoU(box_r, box_c) > t, from ``scaled_areas`` = area*t/(1+t)."""
    cx1, cy1, cx2, cy2 = x1[cols], y1[cols], x2[cols], y2[cols]
    w = np.minimum(x2[rows, None], cx2) - np.maximum(x1[rows, None], cx1)
    h = np.minimum(y2[rows, None], cy2) - np.maximum(y1[rows, None], cy1)
    np.maximum(w, 0, out=w)  # clipping one side is enough: h < 0 makes inter <= 0, never "over"
    inter = np.multiply(w, h, out=w)
    threshold = np.add(scaled_areas[rows, None], scaled_areas[cols], out=h)
    return inter > threshold


def _greedy_in_block(over: np.ndarray) -> np.ndarray:
    """Greedy keep mask of a score-sorted block from its (b, b) overlap matrix.

    Box j is kept iff no kept box before it overlaps it. Iterating that rule from "all kept"
    fixes at least one more leading position per round and usually settles in a few rounds;
    long suppression chains fall back to the plain sequential pass.
    """
    suppresses = np.triu(over, 1)  # [i, j]: i before j and overlapping
    weights = suppresses.astype(np.float32)
    keep = np.ones(over.shape[0], dtype=bool)
    for _ in range(_FIXED_POINT_ROUNDS):
        new = (keep.astype(np.float32) @ weights) == 0
        if np.array_equal(new, keep):
            return keep
        keep = new
    keep = np.ones(over.shape[0], dtype=bool)
    for i in range(over.shape[0]):
        if keep[i]:
            keep[i + 1 :] &= ~suppresses[i, i + 1 :]
    return keep


def postprocess(
    raw: np.ndarray,
    letterbox: Letterbox,
    *,
    conf_threshold: float = DEFAULT_CONF_THRESHOLD,
    iou_threshold: float = DEFAULT_IOU_THRESHOLD,
    max_det: int = DEFAULT_MAX_DET,
    num_classes: int | None = None,
) -> Detections:
    """Decode, NMS, cap at ``max_det``, map to source pixels: the detections of one image."""
    candidates = decode(raw, conf_threshold=conf_threshold, num_classes=num_classes)
    if len(candidates) > MAX_NMS_CANDIDATES:
        top = np.argsort(-candidates.confidence, kind="stable")[:MAX_NMS_CANDIDATES]
        candidates = candidates[top]
    keep = nms(
        candidates.xyxy,
        candidates.confidence,
        iou_threshold,
        class_id=candidates.class_id,
        max_det=max_det,
    )
    kept = candidates[keep]
    return Detections(
        xyxy=letterbox.to_source(kept.xyxy), confidence=kept.confidence, class_id=kept.class_id
    )
