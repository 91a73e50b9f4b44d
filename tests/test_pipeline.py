"""The pipeline with the real detector (a tiny ONNX model), real files and real sinks seams."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest

from bad_images import encode, gradient, write_atomically
from inspector.delivery import DeliveryDesk
from inspector.detector import Detector
from inspector.disposition import Disposer, Journal
from inspector.errors import ImageDecodeError, SinkError
from inspector.imageio import read_image
from inspector.pipeline import Pipeline
from inspector.result import load_schema, to_json, to_result
from inspector.sinks.base import Delivery, Hold, Sink
from inspector.sources import ListSource
from inspector.types import Size, Thresholds
from onnx_factory import constant_head_model, head_tensor, write_model


class RecordingSink(Sink):
    def __init__(self, name: str = "recording") -> None:
        self.name = name
        self.deliveries: list[Delivery] = []
        self.closed = False

    def send(self, delivery: Delivery) -> None:
        assert delivery.image_path.exists()
        self.deliveries.append(delivery)

    def close(self, timeout_s: float = 5.0) -> None:
        self.closed = True


class FailingSink(Sink):
    """Fails its first ``failures`` sends (all of them by default), then delivers."""

    name = "failing"

    def __init__(self, failures: int = 10**9) -> None:
        self.failures = failures
        self.calls = 0
        self.delivered: list[str] = []

    def send(self, delivery: Delivery) -> None:
        self.calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise SinkError("the broker is down")
        self.delivered.append(delivery.inspection.image.name)


class ClaimingSink(Sink):
    """Holds every defect image, like the S3 upload sink; the test releases."""

    name = "uploader"

    def __init__(self) -> None:
        self.holds: list[tuple[Path, Hold]] = []
        self.resumed: list[tuple[dict[str, Any], Path]] = []

    def claims_image(self, delivery: Delivery) -> bool:
        return delivery.inspection.verdict == "defect"

    def send(self, delivery: Delivery) -> None:
        if delivery.hold is not None:
            self.holds.append((delivery.image_path, delivery.hold))

    def resume_hold(self, result: dict[str, Any], image_path: Path, hold: Hold) -> bool:
        self.resumed.append((result, image_path))
        self.holds.append((image_path, hold))
        return True


@pytest.fixture(scope="module")
def detector(tmp_path_factory: pytest.TempPathFactory) -> Detector:
    raw = head_tensor([(48.0, 32.0, 20.0, 10.0, 0.9)])  # one box, conf 0.9
    model = constant_head_model(raw, input_size=Size(64, 96), name="tiny", version="1")
    path = write_model(tmp_path_factory.mktemp("m") / "tiny.onnx", model)
    return Detector.from_path(path)


class Harness:
    def __init__(self, tmp_path: Path, detector: Any, sinks: list[Sink], *,
                 action: str = "move", read: Any = None, **pipeline_kwargs: Any) -> None:
        self.root = tmp_path / "watch"
        self.root.mkdir(parents=True, exist_ok=True)
        state = self.root / ".inspector"
        self.disposer = Disposer(root=self.root, done=state / "done", failed=state / "failed",
                                 held=state / "held", action=action)  # type: ignore[arg-type]
        self.disposer.prepare()
        self.journal = Journal(state / "journal.jsonl")
        self.journal.open()
        self.sinks = sinks
        self.retried: list[Path] = []
        self.settled: list[Path] = []
        desk = DeliveryDesk(
            to_result=to_result,
            sinks=sinks,
            disposer=self.disposer,
            journal=self.journal,
            device="test-device",
            on_settled=self.settled.append,
            on_retry=self.retried.append,
            retry_base_s=0.01,
            retry_max_s=0.05,
        )
        self.pipeline = Pipeline(
            detector=detector,
            read_image=read or (lambda p, fit=None: read_image(p, max_pixels=10_000_000, fit=fit)),
            desk=desk,
            root=self.root,
            queue_size=4,
            **pipeline_kwargs,
        )

    def run(self, paths: list[Path], *, stop: bool = True) -> ListSource:
        source = ListSource(paths)
        self.pipeline.start()
        source.start(self.pipeline.submit)
        deadline = time.monotonic() + 30
        while len(self.settled) + len(self.retried) < len(paths) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.pipeline.wait_idle(timeout=10)
        if stop:
            self.stop()
        return source

    def stop(self) -> None:
        self.pipeline.stop(timeout=5)
        self.journal.close()

    def image(self, name: str, seed: int = 0, size: tuple[int, int] = (60, 80)) -> Path:
        path = self.root / name
        write_atomically(path, encode(gradient(*size, seed), Path(name).suffix or ".jpg"))
        return path


def test_good_and_bad_images_each_end_in_one_known_state(tmp_path: Path, detector: Detector):
    sink = RecordingSink()
    h = Harness(tmp_path, detector, [sink])
    good = [h.image(f"ok_{n}.jpg", seed=n) for n in range(5)]
    bad = h.root / "bad.jpg"
    bad.write_bytes(b"not a picture")
    folder = h.root / "dir.jpg"
    folder.mkdir()
    vanished = h.root / "never-there.jpg"
    h.run([*good, bad, folder, vanished])
    assert sorted(d.inspection.image.name for d in sink.deliveries) == [p.name for p in good]
    assert all(d.result["device"] == "test-device" for d in sink.deliveries)
    assert all(d.result["repeat"] is False for d in sink.deliveries)
    done = h.disposer.done_dir
    assert sorted(p.name for p in done.iterdir()) == [p.name for p in good]
    failed = h.disposer.failed_dir
    assert (failed / "bad.jpg").exists() and (failed / "dir.jpg").is_dir()
    assert "not an image" in (failed / "bad.jpg.reason.txt").read_text()
    assert "directory" in (failed / "dir.jpg.reason.txt").read_text()
    assert not any(p.exists() for p in [*good, bad, folder])
    assert h.pipeline.stats.processed == 5 and h.pipeline.stats.failed == 2
    assert h.pipeline.stats.skipped == 1
    assert sorted(h.settled) == sorted([*good, bad, folder, vanished])
    assert sink.closed


def test_a_sink_that_recovers_gets_every_result_once_and_nothing_is_done_before(
    tmp_path: Path, detector: Detector, caplog: pytest.LogCaptureFixture
):
    sink = RecordingSink()
    failing = FailingSink(failures=4)
    h = Harness(tmp_path, detector, [failing, sink])
    paths = [h.image(f"img_{n}.png", seed=n) for n in range(3)]
    h.run(paths)
    # the working sink got each result exactly once; the failing one was retried until it took it
    assert sorted(d.inspection.image.name for d in sink.deliveries) == [p.name for p in paths]
    assert sorted(failing.delivered) == [p.name for p in paths]
    assert h.pipeline.stats.sink_errors == {"failing": 4}
    assert h.pipeline.stats.delivery_retries == 4 and h.pipeline.stats.kept == 0
    assert len(list(h.disposer.done_dir.iterdir())) == 3
    assert h.pipeline.stall() == (0.0, "")
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors and all("img_0.png" in m and "the broker is down" in m for m in errors)


def test_a_sink_that_never_recovers_keeps_the_images_not_done(
    tmp_path: Path, detector: Detector, caplog: pytest.LogCaptureFixture
):
    """The custody rule: no image reaches done before every sink made its result durable."""
    sink = RecordingSink()
    failing = FailingSink()
    h = Harness(tmp_path, detector, [sink, failing])
    paths = [h.image(f"img_{n}.png", seed=n) for n in range(3)]
    source = ListSource(paths)
    h.pipeline.start()
    source.start(h.pipeline.submit)
    deadline = time.monotonic() + 20
    while (h.pipeline.stall()[0] <= 0 or failing.calls < 3) and time.monotonic() < deadline:
        time.sleep(0.01)
    seconds, what = h.pipeline.stall()
    assert seconds > 0 and "img_0.png" in what and "the broker is down" in what
    assert not list(h.disposer.done_dir.iterdir())  # nothing done while the sink fails
    h.stop()
    # stopping: every inspected image was tried once more and kept where it was
    assert all(p.exists() for p in paths)
    assert not list(h.disposer.done_dir.iterdir())
    delivered = [d.inspection.image.name for d in sink.deliveries]
    assert len(delivered) == len(set(delivered))  # never twice to the working sink
    assert h.pipeline.stats.kept == len(delivered) >= 1
    reopened = Journal(h.journal.path)
    reopened.open()
    assert all(reopened.is_repeat(name, d.inspection.image.sha256)
               for name, d in zip(delivered, sink.deliveries, strict=True))
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("img_0.png" in m and "sink failing" in m for m in errors)


def test_detections_come_back_in_source_pixels(tmp_path: Path, detector: Detector):
    sink = RecordingSink()
    h = Harness(tmp_path, detector, [sink])
    h.run([h.image("wide.jpg", size=(120, 360))])  # 3:1 into 64x96 (2:3): padded top/bottom
    inspection = sink.deliveries[0].inspection
    assert inspection.verdict == "defect"
    assert inspection.image.size == Size(120, 360)
    # box centre (48, 32) of the 96x64 input is the centre of the image
    x1, y1, x2, y2 = inspection.detections.xyxy[0]
    assert abs((x1 + x2) / 2 - 180) < 1 and abs((y1 + y2) / 2 - 60) < 1
    assert set(inspection.timings_ms) == {"decode", "preprocess", "inference", "postprocess",
                                          "total"}


def test_held_images_wait_for_their_release(tmp_path: Path, detector: Detector):
    uploader = ClaimingSink()
    h = Harness(tmp_path, detector, [uploader, RecordingSink()])
    paths = [h.image(f"img_{n}.jpg", seed=n) for n in range(2)]
    h.run(paths, stop=False)
    assert len(uploader.holds) == 2
    held = sorted(p.name for p in h.disposer.held_dir.iterdir())
    assert held == ["img_0.jpg", "img_1.jpg"] and not any(p.exists() for p in paths)
    assert (h.pipeline.stats.held_now, h.pipeline.stats.held) == (2, 2)
    (_path0, hold0), (_path1, hold1) = sorted(uploader.holds)
    hold0.release("uploader", ok=True)
    hold0.release("uploader", ok=True)  # twice: ignored
    assert (h.pipeline.stats.held_now, h.pipeline.stats.held) == (1, 2)  # still held, ever held
    hold1.release("uploader", ok=False, reason="S3 said 403")
    assert (h.pipeline.stats.held_now, h.pipeline.stats.failed) == (0, 1)
    assert (h.disposer.done_dir / "img_0.jpg").exists()
    assert "S3 said 403" in (h.disposer.failed_dir / "img_1.jpg.reason.txt").read_text()
    assert list(h.disposer.held_dir.iterdir()) == []
    h.stop()


def test_restart_marks_repeats_and_resumes_held_images(tmp_path: Path, detector: Detector):
    first = Harness(tmp_path, detector, [RecordingSink()])
    again = first.image("again.jpg", seed=1)
    sha = read_image(again).info.sha256
    first.journal.begin("again.jpg", sha)  # "crashed" after delivering, before moving
    held = first.image("held.jpg", seed=2)
    held_path = first.disposer.hold(held)
    first.journal.begin("held.jpg", "f" * 64)
    first.journal.hold("held.jpg", "f" * 64, held_path, {"verdict": "defect"})
    first.journal.close()

    uploader = ClaimingSink()
    sink = RecordingSink()
    h = Harness(tmp_path, detector, [uploader, sink])
    h.pipeline.resume_held()
    assert uploader.resumed == [({"verdict": "defect"}, held_path)]
    h.run([again], stop=False)
    assert [d.result["repeat"] for d in sink.deliveries] == [True]
    assert h.pipeline.stats.repeats == 1
    for _path, hold in list(uploader.holds):
        hold.release("uploader")
    h.stop()
    assert (h.disposer.done_dir / "held.jpg").exists()
    assert (h.disposer.done_dir / "again.jpg").exists()
    # the journal keeps nothing open once everything settled
    reopened = Journal(h.journal.path)
    reopened.open()
    assert not reopened.is_repeat("again.jpg", sha) and reopened.held() == []
    reopened.close()


def test_held_image_nobody_resumes_is_settled(tmp_path: Path, detector: Detector):
    h = Harness(tmp_path, detector, [RecordingSink()])
    held = h.disposer.hold(h.image("orphan.jpg"))
    assert held.exists()
    h.pipeline.resume_held()
    assert (h.disposer.done_dir / "orphan.jpg").exists()
    h.stop()


def test_delete_action_and_name_clashes(tmp_path: Path, detector: Detector):
    h = Harness(tmp_path, detector, [RecordingSink()], action="delete")
    path = h.image("a.jpg")
    h.run([path])
    assert not path.exists() and list(h.disposer.done_dir.iterdir()) == []

    h2 = Harness(tmp_path / "two", detector, [RecordingSink()])
    (h2.disposer.done_dir / "a.jpg").write_bytes(b"an older a.jpg")
    h2.run([h2.image("a.jpg")])
    assert sorted(p.name for p in h2.disposer.done_dir.iterdir()) == ["a-1.jpg", "a.jpg"]


def test_new_thresholds_apply_from_the_next_image(tmp_path: Path, detector: Detector):
    sink = RecordingSink()
    h = Harness(tmp_path, detector, [sink])
    h.pipeline.set_detector(detector.with_thresholds(Thresholds(conf=0.95)))
    h.run([h.image("quiet.jpg")])
    assert sink.deliveries[0].inspection.verdict == "pass"
    assert sink.deliveries[0].inspection.conf_threshold == 0.95


def test_a_file_changing_while_read_is_retried_not_failed(tmp_path: Path, detector: Detector):
    def growing(path: Path, fit: Any = None) -> Any:
        with open(path, "ab") as fh:  # the writer is still appending
            fh.write(b"\0" * 10)
        raise ImageDecodeError(path, "truncated JPEG")

    h = Harness(tmp_path, detector, [RecordingSink()], read=growing)
    path = h.image("growing.jpg")
    h.run([path])
    assert h.retried == [path] and path.exists()
    assert list(h.disposer.failed_dir.iterdir()) == []


def test_stop_finishes_inspected_images_and_leaves_the_rest(tmp_path: Path, detector: Detector):
    gate = threading.Event()

    def slow_read(path: Path, fit: Any = None) -> Any:
        if path.name != "img_00.jpg":
            gate.wait(5)
        return read_image(path)

    sink = RecordingSink()
    h = Harness(tmp_path, detector, [sink], read=slow_read)
    paths = [h.image(f"img_{n:02d}.jpg", seed=n) for n in range(10)]
    source = ListSource(paths)
    h.pipeline.start()
    source.start(h.pipeline.submit)
    deadline = time.monotonic() + 10
    while not sink.deliveries and time.monotonic() < deadline:
        time.sleep(0.01)
    threading.Timer(0.2, gate.set).start()
    h.stop()
    delivered = {d.inspection.image.name for d in sink.deliveries}
    remaining = {p.name for p in paths if p.exists()}
    done = {p.name for p in h.disposer.done_dir.iterdir()}
    assert "img_00.jpg" in delivered
    assert delivered == done
    assert delivered | remaining == {p.name for p in paths}
    assert not delivered & remaining


def test_results_are_strict_json_even_from_a_model_that_outputs_nan(tmp_path: Path):
    """A broken model's NaN/inf boxes never reach a result: strict JSON (allow_nan=False, as
    the sinks write it) and the schema hold, the finite box is kept."""
    nan, inf = float("nan"), float("inf")
    raw = head_tensor([(nan, 32.0, 20.0, 10.0, 0.9), (48.0, inf, 20.0, 10.0, 0.8),
                       (48.0, 32.0, 20.0, 10.0, 0.7)])
    path = write_model(tmp_path / "nan.onnx", constant_head_model(raw, input_size=Size(64, 96)))
    sink = RecordingSink()
    h = Harness(tmp_path, Detector.from_path(path), [sink])
    gray = h.root / "gray.png"
    write_atomically(gray, encode(cv2.cvtColor(gradient(50, 70), cv2.COLOR_BGR2GRAY), ".png"))
    h.run([gray])
    result = json.loads(to_json(sink.deliveries[0].result))  # raises ValueError on NaN
    jsonschema.validate(result, load_schema())
    assert result["device"] == "test-device"
    assert [d["confidence"] for d in result["detections"]] == [pytest.approx(0.7, abs=1e-3)]
    assert np.isfinite(sink.deliveries[0].inspection.timings_ms["total"])
