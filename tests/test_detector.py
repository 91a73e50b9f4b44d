"""The detector end to end through real tiny ONNX models, and with a fake runtime."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.detector import Detector, parse_class_names
from inspector.errors import ModelError
from inspector.imageio import read_image
from inspector.types import Size, Thresholds
from onnx_factory import (
    FakeRuntime,
    constant_head_model,
    head_tensor,
    ultralytics_metadata,
    write_model,
)


def image_file(tmp_path: Path, height: int, width: int) -> Path:
    path = tmp_path / f"tag_{width}x{height}.png"
    cv2.imwrite(str(path), np.full((height, width, 3), 90, dtype=np.uint8))
    return path


@pytest.mark.parametrize(
    ("height", "width", "expected"),
    [
        # landscape 1280x960: scale 0.5, 80 px bands top and bottom
        (960, 1280, [600, 300, 680, 340]),
        # portrait 960x1280: scale 0.5, 80 px bands left and right
        (1280, 960, [440, 460, 520, 500]),
    ],
)
def test_end_to_end_boxes_in_source_pixels(tmp_path, tiny_model_path, height, width, expected):
    detector = Detector.from_path(tiny_model_path)
    inspection = detector.inspect(read_image(image_file(tmp_path, height, width)))
    det = inspection.detections
    assert len(det) == 1  # the 0.6 duplicate is suppressed, the 0.1 one filtered
    np.testing.assert_allclose(det.xyxy, [expected], atol=1e-3)
    np.testing.assert_allclose(det.confidence, [0.9], rtol=1e-6)
    assert det.class_id.tolist() == [0]
    assert inspection.verdict == "defect"
    assert inspection.image.size == Size(height, width)


def test_end_to_end_on_a_non_square_model_input(tmp_path):
    # input 384 high x 640 wide; 1280x960 image: scale 0.4, 512 wide, 64 px bands left and right
    raw = head_tensor([(320, 192, 40, 20, 0.8)], channels_last=True)
    path = write_model(tmp_path / "wide.onnx", constant_head_model(raw, input_size=Size(384, 640)))
    detector = Detector.from_path(path)
    det = detector.inspect(read_image(image_file(tmp_path, 960, 1280))).detections
    # x: (300 - 64) / 0.4 = 590, (340 - 64) / 0.4 = 690; y: 182 / 0.4 = 455, 202 / 0.4 = 505
    np.testing.assert_allclose(det.xyxy, [[590, 455, 690, 505]], atol=1e-3)


def test_model_info_from_the_file(tiny_model_path):
    detector = Detector.from_path(tiny_model_path)
    info = detector.model
    assert (info.name, info.version) == ("tiny", "1.2.3")
    assert info.class_names == ("scratch",)
    assert info.input_size == Size(640, 640)
    assert info.sha256 == hashlib.sha256(tiny_model_path.read_bytes()).hexdigest()


def test_name_and_version_fall_back_to_stem_and_zero(tmp_path):
    raw = head_tensor([(1, 2, 3, 4, 0.5)])
    path = write_model(tmp_path / "plain-model.onnx", constant_head_model(raw))
    info = Detector.from_path(path).model
    assert (info.name, info.version) == ("plain-model", "0")
    assert Detector.from_path(path, name="n", version="v").model.name == "n"


def test_class_names_fall_back_to_configuration_then_generic():
    raw = head_tensor([(1, 2, 3, 4, 0.1, 0.2)], num_classes=2)
    no_names = FakeRuntime(raw, metadata={})
    assert Detector(no_names, class_names=["a", "b"]).model.class_names == ("a", "b")
    assert Detector(no_names).model.class_names == ("class0", "class1")
    named = FakeRuntime(raw, names={0: "x", 1: "y"})
    assert Detector(named, class_names=["a", "b"]).model.class_names == ("x", "y")


def test_class_names_that_do_not_fit_the_head_are_a_model_error():
    raw = head_tensor([(1, 2, 3, 4, 0.1, 0.2)], num_classes=2)  # (1, 6, 1)
    with pytest.raises(ModelError, match="does not fit"):
        Detector(FakeRuntime(raw, names={0: "scratch"}))


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("{0: 'scratch'}", ("scratch",)),
        ("{1: 'dent', 0: 'scratch'}", ("scratch", "dent")),
        ("['a', 'b']", ("a", "b")),
        ("{1: 'gap'}", None),
        ("__import__('os').system('true')", None),
        ("", None),
        ("{0: 'unterminated", None),
    ],
)
def test_parse_class_names(text, names):
    assert parse_class_names({"names": text}) == names


def test_inspect_timings_and_time(tiny_model_path, tmp_path):
    detector = Detector.from_path(tiny_model_path)
    image = read_image(image_file(tmp_path, 480, 640))
    inspection = detector.inspect(image)
    timings = inspection.timings_ms
    assert set(timings) == {"decode", "preprocess", "inference", "postprocess", "total"}
    assert timings["decode"] == image.decode_ms
    parts = sum(v for k, v in timings.items() if k != "total")
    assert timings["total"] == pytest.approx(parts)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", inspection.time_utc)


def test_fake_runtime_sees_the_letterboxed_tensor(tmp_path):
    fake = FakeRuntime(head_tensor([]), input_size=Size(320, 320))
    detector = Detector(fake)
    inspection = detector.inspect(read_image(image_file(tmp_path, 100, 200)))
    (tensor,) = fake.calls
    assert tensor.shape == (1, 3, 320, 320)
    assert tensor[0, 0, 0, 0] == pytest.approx(114 / 255)  # top band
    assert tensor[0, 0, 160, 160] == pytest.approx(90 / 255)  # image content
    assert len(inspection.detections) == 0
    assert inspection.verdict == "pass"


def test_with_thresholds_shares_the_session_and_leaves_the_original(tiny_model_path, tmp_path):
    detector = Detector.from_path(tiny_model_path)
    strict = detector.with_thresholds(Thresholds(conf=0.95))
    assert strict.runtime is detector.runtime
    assert strict.thresholds == Thresholds(0.95, 0.7, 300) and strict.conf_threshold == 0.95
    image = read_image(image_file(tmp_path, 480, 640))
    assert strict.inspect(image).verdict == "pass"
    assert detector.inspect(image).verdict == "defect"
    loose = detector.with_thresholds(Thresholds(conf=0.5, iou=0.99))
    assert len(loose.inspect(image).detections) == 2  # the duplicate (IoU 0.9) survives


@pytest.mark.parametrize("kwargs", [{"conf": 1.5}, {"iou": -0.1}, {"max_det": 0}])
def test_thresholds_are_range_checked(kwargs):
    with pytest.raises(ValueError, match="must be"):
        Thresholds(**kwargs)


def test_fake_runtime_metadata_defaults_to_ultralytics():
    fake = FakeRuntime(head_tensor([]))
    assert fake.metadata == ultralytics_metadata(input_size=Size(640, 640))


def test_inspect_from_several_threads_at_once(tiny_model_path, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    detector = Detector.from_path(tiny_model_path, intra_op_threads=1)
    images = [
        read_image(image_file(tmp_path, 960, 1280)),
        read_image(image_file(tmp_path, 1280, 960)),
    ]
    with ThreadPoolExecutor(max_workers=4) as pool:
        boxes = list(pool.map(lambda i: detector.inspect(images[i % 2]).detections.xyxy, range(16)))
    for i, xyxy in enumerate(boxes):
        expected = [600, 300, 680, 340] if i % 2 == 0 else [440, 460, 520, 500]
        np.testing.assert_allclose(xyxy, [expected], atol=1e-3)
