"""Decode and NMS tables from hand-made YOLOv8 head tensors, and agreement with cv2.dnn.NMSBoxes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from inspector.postprocess import box_iou, decode, head_layout, nms, postprocess
from inspector.preprocess import letterbox_geometry
from inspector.types import (
    Detections,
    ImageInfo,
    Inspection,
    ModelInfo,
    Size,
    Thresholds,
    confident,
)


def head(*rows: tuple[float, ...], num_classes: int = 1) -> np.ndarray:
    """(1, 4+nc, N) from rows of (cx, cy, w, h, score_0, ..., score_nc-1)."""
    raw = np.zeros((1, 4 + num_classes, len(rows)), dtype=np.float32)
    for n, row in enumerate(rows):
        assert len(row) == 4 + num_classes
        raw[0, :, n] = row
    return raw


def kept(raw: np.ndarray, *, conf=0.25, iou=0.7, max_det=300) -> list[tuple]:
    """Run the post-processing with an identity letterbox; rows of (x1, y1, x2, y2, conf, cls)."""
    identity = letterbox_geometry(Size(1000, 1000), Size(1000, 1000))
    det = postprocess(raw, identity, Thresholds(conf, iou, max_det))
    return [
        (*(round(float(v), 3) for v in box), round(float(c), 3), int(k))
        for box, c, k in zip(det.xyxy, det.confidence, det.class_id, strict=True)
    ]


A = (100, 100, 40, 20)  # cx, cy, w, h -> xyxy 80 90 120 110
A_SHIFTED = (104, 100, 40, 20)  # IoU with A = 36*20 / (2*800 - 720) = 0.818
A_HALF = (120, 100, 40, 20)  # IoU with A = 20*20 / (1600 - 400) = 1/3
A_TOUCHING = (140, 100, 40, 20)  # shares the edge x = 120: IoU 0

TABLE = [
    ("empty", head(), {}, []),
    ("single", head((*A, 0.9)), {}, [(80, 90, 120, 110, 0.9, 0)]),
    ("below conf", head((*A, 0.2)), {}, []),
    ("at conf is dropped (score > conf)", head((*A, 0.25)), {}, []),
    (
        "same-class overlap suppressed",
        head((*A, 0.8), (*A_SHIFTED, 0.9)),
        {},
        [(84, 90, 124, 110, 0.9, 0)],
    ),
    (
        "same-class below iou kept",
        head((*A, 0.8), (*A_HALF, 0.9)),
        {},
        [(100, 90, 140, 110, 0.9, 0), (80, 90, 120, 110, 0.8, 0)],
    ),
    (
        "cross-class overlap kept",
        head((*A, 0.8, 0.1), (*A_SHIFTED, 0.1, 0.9), num_classes=2),
        {},
        [(84, 90, 124, 110, 0.9, 1), (80, 90, 120, 110, 0.8, 0)],
    ),
    (
        "tie: the earlier candidate wins",
        head((*A, 0.9), (*A, 0.9)),
        {},
        [(80, 90, 120, 110, 0.9, 0)],
    ),
    (
        "tie in class scores picks the first class",
        head((*A, 0.6, 0.6), num_classes=2),
        {},
        [(80, 90, 120, 110, 0.6, 0)],
    ),
    (
        "conf 0 keeps any positive score",
        head((*A, 0.001), (*A_TOUCHING, 0.0)),
        {"conf": 0.0},
        [(80, 90, 120, 110, 0.001, 0)],
    ),
    ("conf 1 keeps nothing", head((*A, 1.0)), {"conf": 1.0}, []),
    (
        "non-finite boxes and scores are dropped",
        head((np.nan, 100, 40, 20, 0.9), (100, 100, np.inf, 20, 0.9), (*A, np.nan), (*A, 0.5)),
        {},
        [(80, 90, 120, 110, 0.5, 0)],
    ),
    (
        "iou 0 suppresses any overlap",
        head((*A, 0.9), (*A_HALF, 0.8)),
        {"iou": 0.0},
        [(80, 90, 120, 110, 0.9, 0)],
    ),
    (
        "iou 0 keeps boxes that only touch",
        head((*A, 0.9), (*A_TOUCHING, 0.8)),
        {"iou": 0.0},
        [(80, 90, 120, 110, 0.9, 0), (120, 90, 160, 110, 0.8, 0)],
    ),
    (
        "iou 1 suppresses nothing, not even duplicates",
        head((*A, 0.9), (*A, 0.8)),
        {"iou": 1.0},
        [(80, 90, 120, 110, 0.9, 0), (80, 90, 120, 110, 0.8, 0)],
    ),
    (
        "max_det keeps the best",
        head((*A, 0.5), (300, 300, 10, 10, 0.9), (500, 500, 10, 10, 0.7)),
        {"max_det": 2},
        [(295, 295, 305, 305, 0.9, 0), (495, 495, 505, 505, 0.7, 0)],
    ),
    (
        "suppressed box does not suppress in turn",
        # B overlaps A (kept, higher) and C; C only overlaps B: greedy keeps A and C
        head((100, 100, 40, 20, 0.9), (110, 100, 40, 20, 0.8), (120, 100, 40, 20, 0.7)),
        {"iou": 0.5},
        [(80, 90, 120, 110, 0.9, 0), (100, 90, 140, 110, 0.7, 0)],
    ),
]


@pytest.mark.parametrize(
    ("raw", "options", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_decode_and_nms_table(raw, options, expected):
    assert kept(raw, **options) == [pytest.approx(row) for row in expected]


@pytest.mark.parametrize(
    ("raw", "options", "expected"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_transposed_head_gives_the_same(raw, options, expected):
    assert kept(np.ascontiguousarray(raw.transpose(0, 2, 1)), **options) == kept(raw, **options)


def test_decode_converts_cxcywh_to_xyxy_and_takes_the_best_class():
    det = decode(head((50, 60, 10, 30, 0.3, 0.7, 0.1), num_classes=3), conf_threshold=0.5)
    np.testing.assert_allclose(det.xyxy, [[45, 45, 55, 75]])
    np.testing.assert_allclose(det.confidence, [0.7])
    assert det.class_id.tolist() == [1]


def test_boxes_come_back_in_source_pixels():
    box = letterbox_geometry(Size(960, 1280), Size(640, 640))  # scale 0.5, 80 px bands
    det = postprocess(head((320, 320, 100, 50, 0.9)), box)
    np.testing.assert_allclose(det.xyxy, [[540, 430, 740, 530]])


@pytest.mark.parametrize(
    ("shape", "num_classes", "layout"),
    [
        ((1, 5, 8400), None, "channels_first"),
        ((1, 8400, 5), None, "channels_last"),
        ((1, 5, 3), 1, "channels_first"),  # fewer anchors than channels: needs num_classes
        ((1, 3, 5), 1, "channels_last"),
        ((1, 84, 8400), 80, "channels_first"),
    ],
)
def test_head_layout(shape, num_classes, layout):
    assert head_layout(shape, num_classes) == layout


@pytest.mark.parametrize(
    ("shape", "num_classes"),
    [
        ((1, 10), None),
        ((1, 3, 4), None),
        ((2, 5, 100), None),
        ((1, 6, 100), 1),
        ((1, 5, 8400, 1), None),
    ],
)
def test_head_layout_rejects_what_is_not_a_detection_head(shape, num_classes):
    with pytest.raises(ValueError, match="expected"):
        head_layout(shape, num_classes)


@pytest.mark.parametrize(
    ("box", "boxes", "expected"),
    [
        ([0, 0, 10, 10], [[0, 0, 10, 10]], [1.0]),
        ([0, 0, 10, 10], [[5, 0, 15, 10]], [1 / 3]),
        ([0, 0, 10, 10], [[10, 0, 20, 10]], [0.0]),
        ([0, 0, 10, 10], [[20, 20, 30, 30]], [0.0]),
        ([0, 0, 0, 0], [[0, 0, 0, 0]], [0.0]),  # empty boxes: 0, not nan
    ],
)
def test_box_iou(box, boxes, expected):
    np.testing.assert_allclose(
        box_iou(np.array(box, np.float32), np.array(boxes, np.float32)), expected, rtol=1e-6
    )


def test_nms_of_nothing():
    assert nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32)).tolist() == []


def random_boxes(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Clustered boxes (as a detector emits them) mixed with scattered ones."""
    clusters = rng.integers(1, 8)
    centres = rng.uniform(40, 600, (clusters, 2))
    sizes = rng.uniform(8, 150, (clusters, 2))
    which = rng.integers(0, clusters, n)
    centre = centres[which] + rng.normal(0, 6, (n, 2))
    size = sizes[which] * rng.uniform(0.7, 1.3, (n, 2))
    scattered = rng.uniform(0, 1, n) < 0.3
    centre[scattered] = rng.uniform(0, 640, (int(scattered.sum()), 2))
    xyxy = np.concatenate([centre - size / 2, centre + size / 2], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    return xyxy, scores


@pytest.mark.parametrize("seed", range(200))
def test_nms_keeps_what_cv2_keeps(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    xyxy, scores = random_boxes(rng, n)
    conf = float(rng.choice([0.0, 0.25, 0.5]))
    iou = float(rng.choice([0.3, 0.45, 0.5, 0.7]))
    # cv2 wants (x, y, w, h) and filters with score > score_threshold itself
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    expected = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), conf, iou)
    candidates = np.flatnonzero(scores > conf)
    ours = candidates[nms(xyxy[candidates], scores[candidates], iou)]
    assert ours.tolist() == np.asarray(expected).reshape(-1).tolist()


def test_nms_max_det_is_the_prefix_of_the_full_answer():
    xyxy, scores = random_boxes(np.random.default_rng(1), 500)
    full = nms(xyxy, scores, 0.5)
    assert nms(xyxy, scores, 0.5, max_det=7).tolist() == full[:7].tolist()


def test_class_aware_nms_equals_per_class_nms():
    rng = np.random.default_rng(3)
    xyxy, scores = random_boxes(rng, 300)
    class_id = rng.integers(0, 3, 300)
    together = set(nms(xyxy, scores, 0.5, class_id=class_id).tolist())
    per_class: set[int] = set()
    for k in range(3):
        idx = np.flatnonzero(class_id == k)
        per_class |= set(idx[nms(xyxy[idx], scores[idx], 0.5)].tolist())
    assert together == per_class


def test_nms_on_a_long_suppression_chain_matches_cv2():
    """Each box overlaps only its neighbours (IoU 0.25): greedy keeps every other one. The chain
    is longer than the fixed-point rounds allow, so the sequential fallback runs too."""
    n = 300
    x = np.arange(n, dtype=np.float32) * 6
    xyxy = np.stack([x, np.zeros(n), x + 10, np.full(n, 10)], axis=1).astype(np.float32)
    scores = np.linspace(1, 0.5, n, dtype=np.float32)
    xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
    for iou, kept in ((0.1, n // 2), (0.2, n // 2), (0.3, n)):
        expected = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, iou))
        ours = nms(xyxy, scores, iou)
        assert ours.tolist() == expected.reshape(-1).tolist()
        assert ours.size == kept


@pytest.mark.parametrize(("score", "counted"), [(0.5, False), (np.nextafter(np.float32(0.5),
                                                                             np.float32(1)), True)])
def test_one_confidence_rule_at_the_boundary_for_decode_and_verdict(score, counted):
    """A score equal to the threshold is not a detection, and the verdict agrees: both use
    ``types.confident`` (strictly above), so the verdict can never see a box decode dropped or
    call a box the result lists below its threshold."""
    raw = head((100, 100, 40, 20, float(score)))
    assert bool(kept(raw, conf=0.5)) is counted
    at_threshold = Detections(np.array([[1, 2, 3, 4]], np.float32),
                              np.array([score], np.float32), np.array([0]))
    inspection = Inspection(
        image=ImageInfo("a.jpg", Size(10, 10), "0" * 64),
        model=ModelInfo("m", "1", "0" * 64, ("scratch",), Size(640, 640)),
        detections=at_threshold, conf_threshold=0.5, timings_ms={}, time_utc="")
    assert inspection.verdict == ("defect" if counted else "pass")
    assert confident(np.float32(score), 0.5) == counted
