"""Detection quality metrics: box matching, average precision, image-level verdict rates.

Pure numpy, no I/O, so ``scripts/evaluate.py`` and the tests share one definition. AP is COCO's:
detections of all images ranked by confidence, each matched greedily to the best still-unmatched
ground-truth box of its image with IoU >= t, precision made monotone, then averaged at 101 recall
points. mAP50-95 averages that over t = 0.50, 0.55, ..., 0.95.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

IOU_THRESHOLDS = np.round(np.arange(0.5, 0.96, 0.05), 2)  # (10,)


@dataclass(frozen=True)
class ImageEval:
    """One image: ground truth and predictions, both xyxy in the same pixels."""

    gt_xyxy: np.ndarray  # (g, 4) float
    pred_xyxy: np.ndarray  # (p, 4) float
    pred_confidence: np.ndarray  # (p,) float


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (n, 4) with every box in ``b`` (m, 4): (n, m)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def match_image(image: ImageEval, iou_thresholds: np.ndarray = IOU_THRESHOLDS) -> np.ndarray:
    """True-positive flags (p, t) for each prediction at each IoU threshold.

    Predictions are taken in descending confidence; each claims the unmatched ground-truth box
    with the highest IoU, if that IoU reaches the threshold.
    """
    p = len(image.pred_confidence)
    tp = np.zeros((p, len(iou_thresholds)), dtype=bool)
    if p == 0 or len(image.gt_xyxy) == 0:
        return tp
    ious = box_iou(image.pred_xyxy, image.gt_xyxy)  # (p, g)
    order = np.argsort(-np.asarray(image.pred_confidence), kind="stable")
    for k, t in enumerate(iou_thresholds):
        taken = np.zeros(ious.shape[1], dtype=bool)
        for i in order:
            candidates = np.where(taken, -1.0, ious[i])
            j = int(np.argmax(candidates))
            if candidates[j] >= t:
                taken[j] = True
                tp[i, k] = True
    return tp


def found_ground_truth(image: ImageEval, conf_threshold: float, iou: float = 0.5) -> np.ndarray:
    """Which ground-truth boxes (g,) a prediction at ``conf_threshold`` or above matched at ``iou``.

    Same greedy rule as :func:`match_image`, restricted to the predictions a user would see, so
    recall can be broken down by any property of the ground truth (contrast, width, image size).
    """
    g = len(image.gt_xyxy)
    confidence = np.asarray(image.pred_confidence, np.float64)
    keep = confidence >= conf_threshold
    if g == 0 or not np.any(keep):
        return np.zeros(g, dtype=bool)
    ious = box_iou(np.asarray(image.pred_xyxy)[keep], image.gt_xyxy)
    found = np.zeros(g, dtype=bool)
    for i in np.argsort(-confidence[keep], kind="stable"):
        candidates = np.where(found, -1.0, ious[i])
        j = int(np.argmax(candidates))
        if candidates[j] >= iou:
            found[j] = True
    return found


def recall_by_group(
    images: Sequence[ImageEval],
    groups: Sequence[Sequence[str]],
    conf_threshold: float = 0.25,
    iou: float = 0.5,
) -> dict[str, dict[str, float | int]]:
    """Box recall per label: ``groups[i][j]`` labels ground-truth box j of image i."""
    totals: dict[str, list[int]] = {}
    for image, labels in zip(images, groups, strict=True):
        if len(labels) != len(image.gt_xyxy):
            raise ValueError(f"{len(labels)} labels for {len(image.gt_xyxy)} ground-truth boxes")
        for label, hit in zip(labels, found_ground_truth(image, conf_threshold, iou), strict=True):
            count = totals.setdefault(label, [0, 0])
            count[0] += 1
            count[1] += int(hit)
    return {
        label: {"boxes": n, "found": k, "recall": round(k / n, 4)}
        for label, (n, k) in sorted(totals.items())
    }


def average_precision(tp: np.ndarray, confidence: np.ndarray, n_gt: int) -> float:
    """COCO 101-point AP of one ranked list (tp: (p,) bool, confidence: (p,))."""
    if n_gt == 0:
        return float("nan")
    if len(tp) == 0:
        return 0.0
    order = np.argsort(-confidence, kind="stable")
    hits = tp[order].astype(np.float64)
    cum_tp = np.cumsum(hits)
    cum_fp = np.cumsum(1.0 - hits)
    recall = cum_tp / n_gt
    precision = cum_tp / (cum_tp + cum_fp)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]  # best precision at recall >= r
    points = np.linspace(0, 1, 101)
    idx = np.searchsorted(recall, points, side="left")
    sampled = np.where(idx < len(envelope), envelope[np.minimum(idx, len(envelope) - 1)], 0.0)
    return float(sampled.mean())


@dataclass(frozen=True)
class Report:
    images: int
    gt_boxes: int
    map50: float
    map50_95: float
    precision: float  # box level at conf_threshold, IoU 0.5
    recall: float
    image_recall: float  # defect images flagged / defect images
    image_precision: float  # flagged images that are defect images / flagged images
    conf_threshold: float

    def as_dict(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def evaluate(images: Sequence[ImageEval], conf_threshold: float = 0.25) -> Report:
    """Box mAP over all predictions, box P/R and image-level verdict rates at ``conf_threshold``."""
    tps = [match_image(im) for im in images]
    conf = np.concatenate(
        [np.asarray(im.pred_confidence, np.float64) for im in images] or [np.zeros(0)]
    )
    tp = np.concatenate(tps) if tps else np.zeros((0, len(IOU_THRESHOLDS)), bool)
    n_gt = int(sum(len(im.gt_xyxy) for im in images))
    aps = [average_precision(tp[:, k], conf, n_gt) for k in range(len(IOU_THRESHOLDS))]

    above = conf >= conf_threshold
    tp50 = int(np.sum(tp[above, 0]))
    n_pred = int(np.sum(above))
    precision = tp50 / n_pred if n_pred else 0.0
    recall = tp50 / n_gt if n_gt else 0.0

    is_defect = np.array([len(im.gt_xyxy) > 0 for im in images])
    flagged = np.array(
        [bool(np.any(np.asarray(im.pred_confidence) >= conf_threshold)) for im in images]
    )
    hit = int(np.sum(is_defect & flagged))
    image_recall = hit / int(np.sum(is_defect)) if np.any(is_defect) else 0.0
    image_precision = hit / int(np.sum(flagged)) if np.any(flagged) else 0.0
    return Report(
        images=len(images),
        gt_boxes=n_gt,
        map50=aps[0],
        map50_95=float(np.mean(aps)),
        precision=precision,
        recall=recall,
        image_recall=image_recall,
        image_precision=image_precision,
        conf_threshold=conf_threshold,
    )


GATE_METRICS = ("map50", "image_recall")


def gate(
    candidate: Mapping[str, Mapping[str, float]],
    current: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str] = GATE_METRICS,
    tolerance: float = 0.0,
) -> list[str]:
    """Why ``candidate`` must not replace ``current``: one line per set and metric it is worse on.

    Both map a test-set name (``domain``, ``ood``, ``holdout``...) to that set's report
    (:meth:`Report.as_dict`). Worse means lower by more than ``tolerance``; a set or metric that
    only one side has is a reason too (the comparison would be incomplete). An empty list means
    the candidate is at least as good on every set.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    reasons: list[str] = []
    for set_name in sorted(set(candidate) | set(current)):
        if set_name not in candidate or set_name not in current:
            reasons.append(f"{set_name}: evaluated for only one of the two models")
            continue
        for metric in metrics:
            new, old = candidate[set_name].get(metric), current[set_name].get(metric)
            if new is None or old is None:
                reasons.append(f"{set_name}: {metric} missing")
            elif float(new) < float(old) - tolerance:
                reasons.append(
                    f"{set_name}: {metric} {float(new):.4f} < current {float(old):.4f}"
                    + (f" - tolerance {tolerance}" if tolerance else "")
                )
    return reasons
