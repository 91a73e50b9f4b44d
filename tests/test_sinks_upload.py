"""S3 uploads: key templates, the upload sink's custody, and the StreamManager uploader against
the StreamManager emulator with the real stream_manager client (in-process)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from inspector.greengrass.clients import stream_manager_client
from inspector.greengrass.streams import S3Uploader, UploadTask
from inspector.sinks.upload import UploadSink, object_key, user_metadata
from inspector.testing.streammanager import StreamManagerEmulator

pytestmark = pytest.mark.timeout(60)
SHA = "c" * 64


def result(name: str = "tag 01.JPG", device: str = "line-1", verdict: str = "defect",
           ndet: int = 2) -> dict[str, Any]:
    return {
        "schema": "inspector.result/1",
        "image": {"name": name, "width": 10, "height": 10, "sha256": SHA},
        "model": {"name": "scratch", "version": "1.2.0", "sha256": "d" * 64},
        "time": "2026-11-25T19:22:48.123Z",
        "verdict": verdict,
        "detections": [{"class_id": 0, "label": "scratch", "confidence": 0.9,
                        "box": [0, 0, 1, 1]}] * ndet,
        "timings_ms": {},
        "device": device,
    }


@pytest.mark.parametrize(("template", "res", "expected"), [
    ("inspector/{device}/{date}/{stem}-{sha256}{suffix}", result(),
     f"inspector/line-1/2026-11-25/tag_01-{SHA}.jpg"),
    ("{date}/{time}/{name}", result(), "2026-11-25/192248/tag_01.JPG"),
    ("/{device}/{name}", result(), "line-1/tag_01.JPG"),  # no leading slash
    ("a/../{name}", result(), "a/tag_01.JPG"),  # no ..
    ("{device}/{name}", result(device="../../etc"), "____etc/tag_01.JPG"),  # values flat
    ("{device}/{name}", result(name="..", device="."), f"_-{SHA}"),
    ("{verdict}//{stem}", result(name="süß.png"), "defect/s__"),
    ("a/{stem}{suffix}", result(name="v1..2.PNG"), "a/v1_2.png"),
    ("x/{name}", result(name="a#b?c{d}.png"), "x/a_b_c_d_.png"),
])
def test_object_key_is_sanitised(template: str, res: dict[str, Any], expected: str) -> None:
    key = object_key(template, res)
    assert key == expected
    assert not key.startswith("/") and ".." not in key


def test_user_metadata() -> None:
    meta = user_metadata(result(ndet=3))
    assert meta["verdict"] == "defect" and meta["detections"] == "3"
    assert meta["model-version"] == "1.2.0" and meta["image-sha256"] == SHA


class FakeUploader:
    def __init__(self) -> None:
        self.max_retries = 0
        self.retry_window_s = 0.0
        self.uploaded = self.retried = self.failed = 0
        self.tasks: list[UploadTask] = []

    def pending(self) -> int:
        return len(self.tasks)

    def submit(self, path: Path, bucket: str, key: str, metadata: dict[str, str],
               on_done: Callable[[bool, str], None], *, deadline: float | None = None
               ) -> UploadTask:
        self.tasks.append(UploadTask(path, bucket, key, metadata, on_done, deadline=deadline))
        return self.tasks[-1]


class RecordingHold:
    def __init__(self) -> None:
        self.releases: list[tuple[str, bool, str]] = []

    def release(self, sink: str, *, ok: bool = True, reason: str = "") -> None:
        self.releases.append((sink, ok, reason))


def test_sink_claims_only_defects_with_a_bucket(tmp_path: Path) -> None:
    from inspector.sinks.base import Delivery

    uploader = FakeUploader()
    sink = UploadSink(uploader, bucket="b", key_template="{name}", max_retries=4)
    assert uploader.max_retries == 4
    defect = Delivery(result(), None, tmp_path / "x.jpg")  # type: ignore[arg-type]
    passed = Delivery(result(verdict="pass"), None, tmp_path / "y.jpg")  # type: ignore[arg-type]
    assert sink.claims_image(defect) and not sink.claims_image(passed)
    sink.bucket = ""
    assert not sink.claims_image(defect)


def test_sink_releases_the_hold_with_the_outcome(tmp_path: Path) -> None:
    from inspector.sinks.base import Delivery

    uploader = FakeUploader()
    sink = UploadSink(uploader, bucket="b", key_template="k/{name}")
    hold = RecordingHold()
    sink.send(Delivery(result(name="a.jpg"), None, tmp_path / "a.jpg", hold))  # type: ignore[arg-type]
    assert sink.resume_hold(result(name="b.jpg"), tmp_path / "b.jpg", hold)
    first, second = uploader.tasks
    assert (first.bucket, first.key, first.path) == ("b", "k/a.jpg", tmp_path / "a.jpg")
    first.on_done(True, "")
    second.on_done(False, "Failure: denied")
    assert hold.releases == [("s3", True, ""), ("s3", False, "upload failed: Failure: denied")]


# --- the uploader against the StreamManager emulator -----------------------------------------

class Outcomes:
    def __init__(self) -> None:
        self.done: dict[str, tuple[bool, str]] = {}
        self.lock = threading.Lock()

    def callback(self, name: str) -> Callable[[bool, str], None]:
        def done(ok: bool, reason: str) -> None:
            with self.lock:
                self.done[name] = (ok, reason)
        return done


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def make_uploader(**kwargs: Any) -> S3Uploader:
    kwargs.setdefault("retry_base_s", 0.05)
    kwargs.setdefault("reconnect_max_s", 0.3)
    return S3Uploader(lambda: stream_manager_client(request_timeout_s=3), **kwargs).start()


UploadArgs = tuple[Path, str, str, dict[str, str], Callable[[bool, str], None]]


def task(tmp_path: Path, name: str, outcomes: Outcomes) -> UploadArgs:
    """``S3Uploader.submit``'s arguments for a new file ``name``."""
    path = tmp_path / name
    path.write_bytes(name.encode() * 10)
    return path, "bucket-a", f"k/{name}", {"verdict": "defect"}, outcomes.callback(name)


def test_uploads_succeed_with_streams_created_once(
    stream_manager: StreamManagerEmulator, tmp_path: Path
) -> None:
    outcomes = Outcomes()
    uploader = make_uploader()
    for n in range(5):
        uploader.submit(*task(tmp_path, f"i{n}.png", outcomes))
    wait_until(lambda: len(outcomes.done) == 5)
    assert all(ok for ok, _ in outcomes.done.values())
    for n in range(5):
        obj = tmp_path / "s3" / "bucket-a" / "k" / f"i{n}.png"
        assert obj.read_bytes() == (tmp_path / f"i{n}.png").read_bytes()
    stream_manager.restart(down_s=0.3)  # file-persisted streams survive; not created again
    uploader.submit(*task(tmp_path, "after.png", outcomes))
    wait_until(lambda: "after.png" in outcomes.done)
    assert outcomes.done["after.png"][0]
    creates = [r for op, r in stream_manager.requests if op == "CreateMessageStream"]
    assert len(creates) == 2
    assert uploader.uploaded == 6 and uploader.pending() == 0
    uploader.close()


def test_failure_retried_then_abandoned(
    stream_manager: StreamManagerEmulator, tmp_path: Path
) -> None:
    outcomes = Outcomes()
    stream_manager.fail_uploads = lambda d: "bad" in d.key
    uploader = make_uploader(max_retries=2)
    uploader.submit(*task(tmp_path, "bad.png", outcomes))
    uploader.submit(*task(tmp_path, "good.png", outcomes))
    wait_until(lambda: len(outcomes.done) == 2)
    assert outcomes.done["good.png"] == (True, "")
    ok, reason = outcomes.done["bad.png"]
    assert not ok and "3 time(s)" in reason and "injected upload failure" in reason
    assert [u.status for u in stream_manager.uploads if "bad" in u.key] == ["Failure"] * 3
    uploader.close()


def test_the_retry_window_runs_from_the_inspection_so_restarts_do_not_reset_it(
    stream_manager: StreamManagerEmulator, tmp_path: Path
) -> None:
    """A held image resumed after a restart keeps its original deadline: the result's time
    plus UploadRetryHours. Past it, the next failure is final (after UploadMaxRetries)."""
    from datetime import datetime, timedelta, timezone

    def at(hours_ago: float) -> str:
        when = datetime.now(timezone.utc) - timedelta(hours=hours_ago)
        return when.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    stream_manager.fail_uploads = lambda d: True
    uploader = make_uploader(max_retries=0)
    sink = UploadSink(uploader, bucket="bucket-a", key_template="k/{name}", max_retries=0,
                      retry_hours=1.0)
    assert uploader.retry_window_s == 3600.0
    old, new = RecordingHold(), RecordingHold()
    for name, hours_ago, hold in (("old.png", 1.5, old), ("new.png", 0.0, new)):
        (tmp_path / name).write_bytes(b"x")
        res = {**result(name=name), "time": at(hours_ago)}
        assert sink.resume_hold(res, tmp_path / name, hold)  # as after a restart
    wait_until(lambda: bool(old.releases))
    assert old.releases[0][1] is False and "upload failed 1 time(s)" in old.releases[0][2]
    wait_until(lambda: uploader.retried >= 2)  # new.png: still inside its window, retried
    assert new.releases == [] and uploader.failed == 1
    assert sink.status()["failed"] == 1 and sink.status()["retried"] >= 2
    uploader.close()


def test_stream_manager_down_then_back(
    stream_manager: StreamManagerEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="inspector.greengrass.streams")
    outcomes = Outcomes()
    stream_manager.stop()
    uploader = make_uploader()
    for n in range(3):
        uploader.submit(*task(tmp_path, f"w{n}.png", outcomes))
    # two connection attempts failed: nothing may be reported done (or failed) meanwhile
    wait_until(lambda: caplog.text.count("cannot reach StreamManager") >= 2)
    assert not outcomes.done and uploader.pending() == 3
    stream_manager.start()
    wait_until(lambda: len(outcomes.done) == 3)
    assert all(ok for ok, _ in outcomes.done.values())
    uploader.close()


def test_streams_deleted_under_it_are_created_again_and_uploads_reissued(
    stream_manager: StreamManagerEmulator, tmp_path: Path
) -> None:
    from stream_manager import StreamManagerClient

    outcomes = Outcomes()
    uploader = make_uploader(max_retries=2)  # the cancelled export counts as one failure
    uploader.submit(*task(tmp_path, "first.png", outcomes))
    wait_until(lambda: "first.png" in outcomes.done)
    stream_manager.slow_upload_s = 1.0
    uploader.submit(*task(tmp_path, "cut.png", outcomes))
    wait_until(lambda: stream_manager.pending_exports() == 1)
    other = StreamManagerClient()
    other.delete_message_stream("InspectorDefectImages")  # cancels the export in progress
    other.delete_message_stream("InspectorDefectImagesStatus")
    other.close()
    stream_manager.slow_upload_s = 0.0
    wait_until(lambda: "cut.png" in outcomes.done)
    assert outcomes.done["cut.png"] == (True, "")
    assert (tmp_path / "s3" / "bucket-a" / "k" / "cut.png").exists()
    uploader.close()


def test_vanished_file_is_reported_not_uploaded(
    stream_manager: StreamManagerEmulator, tmp_path: Path
) -> None:
    outcomes = Outcomes()
    uploader = make_uploader()
    gone = task(tmp_path, "gone.png", outcomes)
    gone[0].unlink()
    uploader.submit(*gone)
    wait_until(lambda: "gone.png" in outcomes.done)
    assert outcomes.done["gone.png"][0] is False and "vanished" in outcomes.done["gone.png"][1]
    uploader.close()


def test_an_upload_without_status_is_reissued_and_reported_once(
    stream_manager: StreamManagerEmulator, tmp_path: Path
) -> None:
    outcomes = Outcomes()
    calls: list[bool] = []
    stream_manager.slow_upload_s = 0.8
    uploader = make_uploader(status_timeout_s=0.3)
    *slow, done = task(tmp_path, "slow.png", outcomes)

    def counted(ok: bool, reason: str) -> None:
        calls.append(ok)
        done(ok, reason)

    uploader.submit(*slow, counted)
    wait_until(lambda: "slow.png" in outcomes.done)
    stream_manager.slow_upload_s = 0.0
    wait_until(lambda: stream_manager.pending_exports() == 0)
    # the second export's status comes before a later upload's in the status stream: once that
    # one is reported, the duplicate success has been read too
    uploader.submit(*task(tmp_path, "later.png", outcomes))
    wait_until(lambda: "later.png" in outcomes.done)
    assert calls == [True]  # the key written twice, the image released once
    assert len([u for u in stream_manager.uploads if u.key == "k/slow.png"]) >= 2
    uploader.close()


def test_a_long_queue_is_not_mistaken_for_a_stall(
    stream_manager: StreamManagerEmulator, tmp_path: Path
) -> None:
    outcomes = Outcomes()
    stream_manager.slow_upload_s = 0.15  # exported one after the other: the last waits ~0.9 s
    uploader = make_uploader(status_timeout_s=0.4)
    for n in range(6):
        uploader.submit(*task(tmp_path, f"q{n}.png", outcomes))
    wait_until(lambda: len(outcomes.done) == 6)
    assert all(ok for ok, _ in outcomes.done.values())
    keys = [u.key for u in stream_manager.uploads]
    assert sorted(keys) == sorted(f"k/q{n}.png" for n in range(6))  # each exactly once
    uploader.close()
