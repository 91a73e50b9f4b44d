import numpy as np
import pytest

from inspector.evaluation import (
    ImageEval,
    average_precision,
    box_iou,
    evaluate,
    found_ground_truth,
    gate,
    match_image,
    recall_by_group,
)


def img(gt, pred, conf):
    return ImageEval(
        np.array(gt, float).reshape(-1, 4),
        np.array(pred, float).reshape(-1, 4),
        np.array(conf, float),
    )


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0]])


def test_perfect_predictions_score_one():
    ims = [img([[0, 0, 10, 10]], [[0, 0, 10, 10]], [0.9]), img([], [], [])]
    r = evaluate(ims)
    assert r.map50 == pytest.approx(1.0)
    assert r.map50_95 == pytest.approx(1.0)
    assert (r.precision, r.recall, r.image_recall, r.image_precision) == (1.0, 1.0, 1.0, 1.0)


def test_duplicate_detection_is_a_false_positive():
    tp = match_image(img([[0, 0, 10, 10]], [[0, 0, 10, 10], [0, 0, 10, 10]], [0.9, 0.8]))
    assert tp[:, 0].tolist() == [True, False]


def test_higher_confidence_claims_the_box_first():
    tp = match_image(img([[0, 0, 10, 10]], [[1, 0, 11, 10], [0, 0, 10, 10]], [0.5, 0.9]))
    assert tp[:, 0].tolist() == [False, True]


def test_ap_of_ranked_list():
    # ranks: TP, FP, TP with 2 ground truths: precision envelope 1.0 up to r=0.5, 2/3 to r=1.0
    ap = average_precision(np.array([True, False, True]), np.array([0.9, 0.8, 0.7]), 2)
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert ap == pytest.approx(expected)


def test_missed_box_and_false_alarm_image():
    ims = [img([[0, 0, 10, 10]], [], []), img([], [[0, 0, 5, 5]], [0.6])]
    r = evaluate(ims)
    assert r.map50 == 0.0
    assert r.image_recall == 0.0 and r.image_precision == 0.0


def test_conf_threshold_splits_precision_and_image_rates():
    ims = [img([[0, 0, 10, 10]], [[0, 0, 10, 10]], [0.2])]
    r = evaluate(ims, conf_threshold=0.25)
    assert r.map50 == pytest.approx(1.0)  # AP ignores the threshold
    assert r.recall == 0.0 and r.image_recall == 0.0


def test_found_ground_truth_ignores_low_confidence_and_duplicates():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]], float)
    pred = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [50, 50, 52, 52]], float)
    image = ImageEval(gt, pred, np.array([0.9, 0.8, 0.1, 0.9]))
    # box 0 found (its duplicate claims nothing), box 1 only below the threshold, box 2 IoU 0.04
    assert found_ground_truth(image, 0.25).tolist() == [True, False, False]
    assert found_ground_truth(image, 0.05).tolist() == [True, True, False]
    assert found_ground_truth(image, 0.05, iou=0.03).tolist() == [True, True, True]


def test_recall_by_group_counts_each_label():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    images = [
        ImageEval(gt, gt[:1], np.array([0.9])),
        ImageEval(gt[:1], np.zeros((0, 4)), np.zeros(0)),
        ImageEval(np.zeros((0, 4)), gt, np.array([0.9, 0.9])),
    ]
    table = recall_by_group(images, [["faint", "dark"], ["faint"], []])
    assert table == {
        "dark": {"boxes": 1, "found": 0, "recall": 0.0},
        "faint": {"boxes": 2, "found": 1, "recall": 0.5},
    }
    with pytest.raises(ValueError, match="1 labels for 2"):
        recall_by_group(images[:1], [["faint"]])


def test_gate_passes_a_candidate_at_least_as_good_everywhere():
    current = {"domain": {"map50": 0.93, "image_recall": 0.99}, "ood": {"map50": 0.56,
                                                                       "image_recall": 0.91}}
    better = {"domain": {"map50": 0.93, "image_recall": 0.995}, "ood": {"map50": 0.80,
                                                                       "image_recall": 0.97}}
    assert gate(better, current) == []


def test_gate_names_every_set_and_metric_that_got_worse():
    current = {"domain": {"map50": 0.93, "image_recall": 0.99}, "ood": {"map50": 0.56,
                                                                       "image_recall": 0.91}}
    # better on OOD but worse in distribution: refused all the same
    trade = {"domain": {"map50": 0.90, "image_recall": 0.99}, "ood": {"map50": 0.80,
                                                                      "image_recall": 0.90}}
    assert gate(trade, current) == [
        "domain: map50 0.9000 < current 0.9300",
        "ood: image_recall 0.9000 < current 0.9100",
    ]
    assert gate(trade, current, tolerance=0.05) == []
    assert gate(trade, current, metrics=["image_recall"], tolerance=0.005) == [
        "ood: image_recall 0.9000 < current 0.9100 - tolerance 0.005"
    ]


def test_gate_refuses_an_incomplete_comparison():
    current = {"domain": {"map50": 0.9}, "holdout": {"map50": 0.5}}
    assert gate({"domain": {"map50": 0.95}}, current, metrics=["map50"]) == [
        "holdout: evaluated for only one of the two models"
    ]
    assert gate({"domain": {}}, {"domain": {"map50": 0.9}}, metrics=["map50"]) == [
        "domain: map50 missing"
    ]
    with pytest.raises(ValueError, match="tolerance"):
        gate(current, current, tolerance=-0.1)
