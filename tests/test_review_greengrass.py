"""Review uploads and drift signals of ``inspector run`` under Greengrass: the component as a
subprocess against both emulators (real awsiotsdk and stream_manager clients), the model scoring
each image by its brightest pixel (helpers from test_greengrass_service)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inspector.sinks.review import REVIEW_DATA_STREAM
from inspector.testing.fixtures import Greengrass, running_greengrass
from onnx_factory import write_model
from test_greengrass_service import (
    COMPONENT,
    THING,
    Component,
    brightness_model,
    wait_until,
    write_image,
)

UNCERTAIN, AUDIT, DEFECT = 140, 40, 255  # best confidence 0.549 (band 0.45..0.6), 0.157, 1.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def greengrass(tmp_path: Path) -> Iterator[tuple[Greengrass, Path]]:
    model = write_model(tmp_path / "model" / "bright.onnx", brightness_model())
    watch = tmp_path / "watch"
    watch.mkdir()
    config = {
        "ImageDirectory": str(watch), "ModelPath": str(model), "AllowUnverifiedModel": True,
        "ConfidenceThreshold": 0.6, "StableSeconds": 0.2, "ProcessedAction": "delete",
        "UploadBucket": "line-bucket", "MetricsIntervalSeconds": 0.5,
        "UncertainUpload": True, "UncertainBand": 0.15, "AuditSampleRate": 1.0,
        "ReviewPrefix": "review/",
    }
    with running_greengrass(tmp_path, config=config, component_name=COMPONENT,
                            thing_name=THING) as gg:
        yield gg, watch


def metrics(gg: Greengrass) -> list[dict[str, Any]]:
    return [m.json() for m in list(gg.nucleus.published) if m.topic == "inspector/metrics"]


def results(gg: Greengrass) -> dict[str, dict[str, Any]]:
    return {r["image"]["name"]: r for r in (m.json() for m in list(gg.nucleus.published)
                                             if m.topic == "inspector/results")}


def review_objects(gg: Greengrass) -> dict[str, Any]:
    return {u.key: u for u in list(gg.stream_manager.uploads)
            if u.status == "Success" and u.stream_name == REVIEW_DATA_STREAM}


def test_review_uploads_and_drift_signals_under_greengrass(
    greengrass: tuple[Greengrass, Path], tmp_path: Path
) -> None:
    gg, watch = greengrass
    component = Component(gg, tmp_path).start()
    try:
        levels = {"mid-a.png": UNCERTAIN, "mid-b.png": UNCERTAIN, "dark.png": AUDIT,
                  "bright.png": DEFECT}
        images = {name: write_image(watch, name, level) for name, level in levels.items()}
        wait_until(lambda: len(review_objects(gg)) == 6, 30, "three review uploads")
        wait_until(lambda: sum((m.get("drift") or {}).get("images", 0) for m in metrics(gg))
                   == 4, 30, "the four images in the metrics' drift signals")
        wait_until(lambda: sum((m.get("review") or {}).get("uploaded", 0) for m in metrics(gg))
                   == 3, 30, "the review uploads counted")
    finally:
        assert component.stop() == 0, component.log_text()
    published = results(gg)
    objects = review_objects(gg)
    for name, reason in (("mid-a.png", "uncertain"), ("mid-b.png", "uncertain"),
                         ("dark.png", "audit")):
        result = published[name]
        key = (f"review/{reason}/{THING}/{result['time'][:10]}/"
               f"{Path(name).stem}-{result['image']['sha256']}.png")
        assert objects[key].path is not None and objects[key].path.read_bytes() == images[name]
        document = objects[key + ".json"].path
        assert document is not None and json.loads(document.read_text("utf-8")) == result
        assert objects[key].user_metadata["review-reason"] == reason
    assert published["dark.png"]["best_confidence"] == round(AUDIT / 255, 4)
    defect_uploads = [u.key for u in gg.stream_manager.uploads if u.stream_name !=
                      REVIEW_DATA_STREAM and u.status == "Success"]
    assert len(defect_uploads) == 1 and "bright" in defect_uploads[0]  # the defect path as ever
    review_folder = watch / ".inspector" / "review"
    assert not [p for p in review_folder.rglob("*") if p.is_file()]  # copies gone after Success

    messages = [m for m in metrics(gg) if m.get("drift")]
    histogram = [sum(m["drift"]["confidence_histogram"][b] for m in messages) for b in range(10)]
    assert histogram == [0, 1, 0, 0, 0, 2, 0, 0, 0, 1]  # 0.157, 2 x 0.549, 1.0
    assert sum(m["drift"]["defects"] for m in messages) == 1
    assert sum(m["drift"]["uncertain"] for m in messages) == 2
    for m in messages:
        drift = m["drift"]
        if drift["images"]:
            assert drift["defect_rate"] == round(drift["defects"] / drift["images"], 4)
            assert AUDIT <= drift["brightness"]["p10"] <= drift["brightness"]["p90"] <= DEFECT
            assert drift["contrast"]["p90"] == 0.0  # flat images
        else:
            assert drift["defect_rate"] is None and drift["brightness"] is None
    counted = {k: sum(m["review"][k] for m in messages) for k in ("uncertain", "audit",
                                                                   "skipped_limit", "failed")}
    assert counted == {"uncertain": 2, "audit": 1, "skipped_limit": 0, "failed": 0}
    assert metrics(gg)[-1]["sinks"]["review"]["uploaded"] == 3
