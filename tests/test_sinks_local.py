"""Standalone sinks on real files: JSONL lines valid against schema v1, outbox copies, totals."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from bad_images import encode, gradient
from inspector.errors import SinkError
from inspector.result import load_schema, to_result
from inspector.sinks.base import Delivery
from inspector.sinks.local import ConsoleSink, JsonlSink, OutboxSink
from inspector.types import Detections, ImageInfo, Inspection, ModelInfo, Size

MODEL = ModelInfo("tiny", "1", "0" * 64, ("scratch",), Size(64, 96))


def delivery(tmp_path: Path, name: str, *, defect: bool, seed: int = 0) -> Delivery:
    path = tmp_path / name
    path.write_bytes(encode(gradient(60, 80, seed), ".jpg"))
    boxes = np.array([[10, 10, 40, 30]], np.float32) if defect else np.zeros((0, 4), np.float32)
    detections = Detections(boxes, np.full(len(boxes), 0.8, np.float32),
                            np.zeros(len(boxes), np.int64))
    inspection = Inspection(
        image=ImageInfo(name, Size(60, 80), f"{seed:064x}"),
        model=MODEL,
        detections=detections,
        conf_threshold=0.25,
        timings_ms={"decode": 1.0, "preprocess": 1.0, "inference": 2.0, "postprocess": 0.5,
                    "total": 4.5},
        time_utc="2026-11-25T19:00:00.000Z",
    )
    return Delivery(to_result(inspection, device="dev-1", repeat=False), inspection, path)


def test_jsonl_appends_one_valid_line_per_result(tmp_path: Path):
    results = tmp_path / "out" / "results.jsonl"
    sink = JsonlSink(results)
    for n in range(3):
        sink.send(delivery(tmp_path, f"ü {n}\n.jpg", defect=n == 1, seed=n))
    sink.close()
    sink.send(delivery(tmp_path, "after-close.jpg", defect=False, seed=9))  # reopens
    sink.close()
    lines = results.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 4
    schema = load_schema()
    for line in lines:
        result = json.loads(line)
        jsonschema.validate(result, schema)
        assert result["device"] == "dev-1"
    assert [json.loads(x)["verdict"] for x in lines] == ["pass", "defect", "pass", "pass"]


def test_jsonl_failure_is_a_sink_error(tmp_path: Path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    sink = JsonlSink(tmp_path / "blocker" / "results.jsonl")
    with pytest.raises(SinkError, match="cannot append"):
        sink.send(delivery(tmp_path, "a.jpg", defect=False))


def test_outbox_copies_flagged_images_only(tmp_path: Path):
    outbox = tmp_path / "outbox"
    sink = OutboxSink(outbox)
    sink.send(delivery(tmp_path, "ok.jpg", defect=False))
    assert not outbox.exists()
    d = delivery(tmp_path, "bad tag.jpg", defect=True, seed=5)
    sink.send(d)
    stem = f"bad tag-{d.inspection.image.sha256[:12]}"
    assert (outbox / f"{stem}.jpg").read_bytes() == d.image_path.read_bytes()
    assert json.loads((outbox / f"{stem}.json").read_text())["verdict"] == "defect"
    assert (outbox / f"{stem}.annotated.jpg").stat().st_size > 0
    assert not [p for p in outbox.iterdir() if p.name.startswith(".")]


def test_outbox_without_annotation_and_missing_image(tmp_path: Path):
    sink = OutboxSink(tmp_path / "outbox", annotate=False)
    d = delivery(tmp_path, "x.jpg", defect=True)
    sink.send(d)
    assert not list((tmp_path / "outbox").glob("*.annotated.jpg"))
    d.image_path.unlink()
    with pytest.raises(SinkError, match="outbox"):
        sink.send(d)


def test_console_summary(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    sink = ConsoleSink()
    sink.send(delivery(tmp_path, "a.jpg", defect=True))
    sink.send(delivery(tmp_path, "b.jpg", defect=False))
    with caplog.at_level(logging.INFO, logger="inspector.sinks.local"):
        sink.close()
    assert "2 image(s) inspected: 1 defect, 1 pass, 0 repeat(s)" in caplog.text


def test_jsonl_results_file_deleted_under_the_sink_is_started_again(tmp_path: Path):
    import shutil

    images = tmp_path / "images"
    images.mkdir()
    state = tmp_path / "watch" / ".inspector"
    sink = JsonlSink(state / "results.jsonl")
    sink.send(delivery(images, "a.jpg", defect=False, seed=1))
    shutil.rmtree(tmp_path / "watch")  # the watch folder removed, the state folder with it
    (tmp_path / "watch").mkdir()
    sink.send(delivery(images, "b.jpg", defect=False, seed=2))
    sink.close()
    lines = (state / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["image"]["name"] for line in lines] == ["b.jpg"]


def test_outbox_names_keep_subfolders_apart(tmp_path: Path):
    images = tmp_path / "images"
    (images / "line1").mkdir(parents=True)
    (images / "line2").mkdir(parents=True)
    sink = OutboxSink(tmp_path / "outbox", annotate=False)
    sink.send(delivery(images, "line1/a.jpg", defect=True, seed=3))
    sink.send(delivery(images, "line2/a.jpg", defect=True, seed=3))  # same bytes, same name
    names = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    sha = f"{3:064x}"[:12]
    assert names == [f"line1__a-{sha}.jpg", f"line1__a-{sha}.json",
                     f"line2__a-{sha}.jpg", f"line2__a-{sha}.json"]


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_outbox_annotated_copy_of_a_large_image_is_capped_with_its_box_scaled(
    tmp_path: Path, suffix: str
):
    """A 2448x2048 frame: the annotated copy has its longer side between ANNOTATED_SIDE and
    twice that (a JPEG decoded at 1/2, a PNG shrunk), and the red box is drawn where the
    detection is, in the copy's pixels; the original is copied whole."""
    import cv2

    from inspector.sinks.local import ANNOTATED_SIDE

    height, width = 2048, 2448
    path = tmp_path / f"big{suffix}"
    path.write_bytes(encode(np.full((height, width, 3), 40, np.uint8), suffix))
    box = np.array([[800, 600, 1600, 1400]], np.float32)
    detections = Detections(box, np.array([0.9], np.float32), np.zeros(1, np.int64))
    inspection = Inspection(
        image=ImageInfo(path.name, Size(height, width), "b" * 64), model=MODEL,
        detections=detections, conf_threshold=0.25, timings_ms={"total": 1.0},
        time_utc="2026-11-25T19:00:00.000Z")
    sink = OutboxSink(tmp_path / "outbox")
    sink.send(Delivery(to_result(inspection, device="d"), inspection, path))
    [copy] = (tmp_path / "outbox").glob("*.annotated.jpg")
    drawn = cv2.imread(str(copy))
    h, w = drawn.shape[:2]
    assert ANNOTATED_SIDE <= max(h, w) <= 2 * ANNOTATED_SIDE and abs(w / h - width / height) < 0.01
    sx, sy = w / width, h / height
    red = (drawn[:, :, 2] > 150) & (drawn[:, :, 1] < 100)
    ys, xs = np.nonzero(red)
    # the box's outline (the label sits above it) spans the scaled detection
    assert abs(xs.min() - 800 * sx) <= 4 and abs(xs.max() - 1600 * sx) <= 4
    assert abs(ys.max() - 1400 * sy) <= 4
    original = tmp_path / "outbox" / f"big-{'b' * 12}{suffix}"
    assert original.read_bytes() == path.read_bytes()
