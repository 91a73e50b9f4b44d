"""Result schema v1: to_result against the shipped JSON Schema, rounding, optional keys."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import pytest

from inspector.result import load_schema, to_json, to_result
from inspector.types import Detections, ImageInfo, Inspection, ModelInfo, Size

SHA_IMAGE = "a" * 64
SHA_MODEL = "b" * 64


def inspection(detections: Detections | None = None, conf: float = 0.25) -> Inspection:
    return Inspection(
        image=ImageInfo(name="tag_0001.jpg", size=Size(height=960, width=1280), sha256=SHA_IMAGE),
        model=ModelInfo(
            name="scratch-yolov8n",
            version="1.0.0",
            sha256=SHA_MODEL,
            class_names=("scratch",),
            input_size=Size(640, 640),
        ),
        detections=detections if detections is not None else Detections.empty(),
        conf_threshold=conf,
        timings_ms={
            "decode": 4.123456,
            "preprocess": 1.005,
            "inference": 35.6789,
            "postprocess": 0.1234,
            "total": 40.931,
        },
        time_utc="2026-11-25T19:22:48.123Z",
    )


TWO = Detections(
    xyxy=np.array([[600.04, 300.06, 680.123, 340.99], [10, 20, 30, 40]], np.float32),
    confidence=np.array([0.912345, 0.3], np.float32),
    class_id=np.array([0, 3]),
)


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_result_matches_the_schema_and_rounds(validator):
    result = to_result(inspection(TWO))
    validator.validate(result)
    assert result["schema"] == "inspector.result/1"
    assert result["image"] == {
        "name": "tag_0001.jpg",
        "width": 1280,
        "height": 960,
        "sha256": SHA_IMAGE,
    }
    assert result["model"] == {"name": "scratch-yolov8n", "version": "1.0.0", "sha256": SHA_MODEL}
    assert result["time"] == "2026-11-25T19:22:48.123Z"
    assert result["verdict"] == "defect"
    first, second = result["detections"]
    assert first == {
        "class_id": 0,
        "label": "scratch",
        "confidence": 0.9123,
        "box": [600.0, 300.1, 680.1, 341.0],
    }
    assert second["label"] == "3"  # an id the model has no name for
    assert result["timings_ms"] == {
        "decode": 4.12,
        "preprocess": 1.0,
        "inference": 35.68,
        "postprocess": 0.12,
        "total": 40.93,
    }
    assert json.loads(to_json(result)) == result
    assert "\n" not in to_json(result)


def test_no_detections_is_a_pass(validator):
    result = to_result(inspection())
    validator.validate(result)
    assert (result["verdict"], result["detections"]) == ("pass", [])


def test_optional_keys_the_service_adds(validator):
    result = to_result(
        inspection(TWO),
        device="line-3-camera",
        repeat=True,
        detections_truncated=True,
        detections_total=2,
    )
    validator.validate(result)
    assert result["device"] == "line-3-camera"
    assert (result["repeat"], result["detections_truncated"], result["detections_total"]) == (
        True,
        True,
        2,
    )
    assert "device" not in to_result(inspection())


def test_unknown_extra_keys_are_refused():
    with pytest.raises(TypeError, match="colour"):
        to_result(inspection(), colour="red")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda r: r.update(extra=1),
        lambda r: r["image"].update(path="/tmp/x.jpg"),
        lambda r: r.update(verdict="maybe"),
        lambda r: r["detections"].append({"class_id": 0, "label": "x", "confidence": 2, "box": []}),
        lambda r: r["timings_ms"].pop("total"),
        lambda r: r.update(schema="inspector.result/2"),
        lambda r: r.update(time="yesterday"),
    ],
)
def test_schema_rejects_what_v1_does_not_allow(validator, mutate):
    result = to_result(inspection(TWO))
    mutate(result)
    with pytest.raises(jsonschema.ValidationError):
        validator.validate(result)


def test_end_to_end_result_validates(validator, tiny_model_path, tmp_path):
    import cv2

    from inspector.detector import Detector
    from inspector.imageio import read_image

    image_path = tmp_path / "wide.png"
    cv2.imwrite(str(image_path), np.full((960, 1280, 3), 80, np.uint8))
    result = to_result(Detector.from_path(tiny_model_path).inspect(read_image(image_path)))
    validator.validate(result)
    assert result["detections"][0]["box"] == [600.0, 300.0, 680.0, 340.0]
    assert result["model"]["name"] == "tiny"
