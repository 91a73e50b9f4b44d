"""Review uploads (``inspector.sinks.review``): selection, limits, the standalone review folder,
and the Greengrass path against the StreamManager emulator (real client, real service, real
ONNX model whose score is the image's brightest pixel / 255)."""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from jsonschema import Draft202012Validator

from inspector.greengrass.clients import stream_manager_client
from inspector.greengrass.streams import S3Uploader
from inspector.result import load_schema
from inspector.service import RunReport, build_service
from inspector.settings import Settings, resolve_paths
from inspector.sinks.local import JsonlSink
from inspector.sinks.review import (
    REVIEW_DATA_STREAM,
    REVIEW_STATUS_STREAM,
    HourlyBudget,
    ReviewSink,
    select,
)
from inspector.testing.streammanager import StreamManagerEmulator
from inspector.types import Detections, ImageInfo, Inspection, ModelInfo, Size
from onnx_factory import max_pixel_model, write_model

INPUT = Size(64, 96)
THRESHOLD = 0.6  # with UncertainBand 0.15: uncertain when 0.45 <= best < 0.6 (best = level/255)
UNCERTAIN, PASS, DEFECT = 140, 40, 255  # best 0.549, 0.157, 1.0
THING = "line-7"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "max.onnx", max_pixel_model(INPUT))


def write_png(folder: Path, name: str, level: int, *, noise: bool = False) -> bytes:
    """An image exactly the model input's size (no letterbox padding): its best confidence is
    exactly level / 255 (with ``noise``: random levels 0..level, the brightest being level)."""
    if noise:
        rng = np.random.default_rng(len(name))
        pixels = rng.integers(0, level + 1, (INPUT.height, INPUT.width, 3), dtype=np.uint8)
        pixels[0, 0] = level
    else:
        pixels = np.full((INPUT.height, INPUT.width, 3), level, np.uint8)
    ok, data = cv2.imencode(".png", pixels)
    assert ok
    (folder / name).write_bytes(data.tobytes())
    return data.tobytes()


def settings_for(tmp_path: Path, model_path: Path, **extra: Any) -> Settings:
    watch = tmp_path / "watch"
    watch.mkdir(exist_ok=True)
    return Settings.from_mapping({
        "ImageDirectory": str(watch), "ModelPath": str(model_path), "AllowUnverifiedModel": True,
        "ConfidenceThreshold": THRESHOLD, "StableSeconds": 0.0, "DeviceName": THING,
        "UncertainUpload": True, **extra})


def drain(settings: Settings, sinks: list[Any] | None) -> RunReport:
    return build_service(settings, sinks=sinks, drain=True).run()


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.02)


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def results_of(path: Path) -> dict[str, dict[str, Any]]:
    lines = path.read_text("utf-8").splitlines()
    return {r["image"]["name"]: r for r in map(json.loads, lines)}


# --- the pieces ----------------------------------------------------------------------------

def test_hourly_budget_limits_count_and_bytes_over_a_sliding_hour() -> None:
    now = [0.0]
    budget = HourlyBudget(3, 1000, clock=lambda: now[0])
    assert budget.take(400) and budget.take(400)
    assert not budget.take(300)  # 1100 bytes within the hour
    now[0] = 5.0
    assert budget.take(200)  # 1000: fits exactly
    now[0] = 10.0
    assert not budget.take(0)  # a fourth within the hour
    now[0] = 3600.0  # the first two left the window (taken at 0), the third (at 5) not yet
    assert budget.take(700)
    assert not budget.take(200)  # 200 + 700 + 200 > 1000
    budget.max_count, budget.max_bytes = 10, 10_000  # a live change applies at once
    assert budget.take(5000)


def inspection(best: float | None, *, defect: bool = False) -> Inspection:
    boxes = Detections(np.array([[1, 1, 5, 5]], np.float32), np.array([0.9], np.float32),
                       np.array([0])) if defect else Detections(best_score=best)
    return Inspection(
        image=ImageInfo("a.png", Size(10, 10), "0" * 64),
        model=ModelInfo("m", "1", "0" * 64, ("scratch",), Size(10, 10)),
        detections=boxes, conf_threshold=THRESHOLD, timings_ms={}, time_utc="2026-12-01T00:00:00Z")


@pytest.mark.parametrize(("best", "defect", "expected"), [
    (0.59, False, "uncertain"),
    (0.45, False, "uncertain"),  # the band's lower edge is in
    (0.6, False, "uncertain"),  # equal to the threshold: no box counts, still a pass
    (0.44, False, None),
    (None, False, None),  # nothing scored at all: best 0
    (0.9, True, None),  # defects are uploaded by the defect uploader, not for review
])
def test_uncertain_is_a_pass_within_the_band(best: float | None, defect: bool,
                                            expected: str | None) -> None:
    rng = random.Random(0)
    assert select(inspection(best, defect=defect), band=0.15, audit_rate=0.0, rng=rng) == expected
    assert rng.random() == random.Random(0).random()  # no audit draw at rate 0


def test_audit_draws_once_per_other_pass_at_the_rate() -> None:
    rng = random.Random(5)
    reasons = [select(inspection(0.1), band=0.15, audit_rate=0.25, rng=rng) for _ in range(400)]
    reference = random.Random(5)
    assert reasons == ["audit" if reference.random() < 0.25 else None for _ in range(400)]
    assert 60 < reasons.count("audit") < 140
    everything = random.Random(1)
    assert all(select(inspection(0.0), band=0.15, audit_rate=1.0, rng=everything) == "audit"
               for _ in range(50))


# --- standalone: the review folder ---------------------------------------------------------

def test_standalone_keeps_uncertain_images_with_their_result_in_the_review_folder(
    tmp_path: Path, model_path: Path
) -> None:
    settings = settings_for(tmp_path, model_path)
    paths = resolve_paths(settings)
    images = {name: write_png(paths.watch, name, level) for name, level in
              (("mid.png", UNCERTAIN), ("dark.png", PASS), ("bright.png", DEFECT))}
    report = drain(settings, None)  # the standalone sinks
    assert report.stats.processed == 3
    assert sorted(p.name for p in paths.done.iterdir()) == sorted(images)  # custody unchanged
    results = results_of(paths.results)
    assert results["mid.png"]["best_confidence"] == round(UNCERTAIN / 255, 4)
    assert results["dark.png"]["best_confidence"] == round(PASS / 255, 4)  # no box passed
    assert results["bright.png"]["verdict"] == "defect"
    kept = files_under(paths.review)
    mid = results["mid.png"]
    stem = f"mid-{mid['image']['sha256']}.png"
    assert [p.relative_to(paths.review).as_posix() for p in kept] == [
        f"uncertain/{THING}/{mid['time'][:10]}/{stem}",
        f"uncertain/{THING}/{mid['time'][:10]}/{stem}.json",
    ]
    assert kept[0].read_bytes() == images["mid.png"]
    document = json.loads(kept[1].read_text("utf-8"))
    assert document == mid
    Draft202012Validator(load_schema()).validate(document)


def test_review_limits_skip_count_and_warn_once(
    tmp_path: Path, model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, model_path, ReviewMaxPerHour=2)
    paths = resolve_paths(settings)
    for n in range(5):
        write_png(paths.watch, f"mid{n}.png", UNCERTAIN - n)
    review = ReviewSink(paths.review, settings, thing=THING)
    caplog.set_level(logging.WARNING, "inspector.sinks.review")
    drain(settings, [JsonlSink(paths.results), review])
    assert len(files_under(paths.review)) == 4  # 2 images + 2 JSON
    assert review.status() == {"uncertain": 2, "skipped_limit": 3, "saved": 2}
    warnings = [r for r in caplog.records if "review limit" in r.getMessage()]
    assert len(warnings) == 1 and "ReviewMaxPerHour 2" in warnings[0].getMessage()
    assert len(list(paths.done.iterdir())) == 5


def test_the_megabytes_limit_counts_image_and_json_bytes(tmp_path: Path, model_path: Path) -> None:
    settings = settings_for(tmp_path, model_path)
    paths = resolve_paths(settings)
    sizes = [len(write_png(paths.watch, f"noisy{n}.png", UNCERTAIN, noise=True))
             for n in range(3)]
    assert min(sizes) > 15_000  # random pixels do not compress
    limit_mib = (max(sizes) * 1.5) / (1 << 20)  # room for one image and its JSON, not two
    settings = settings.replace(ReviewMaxMegabytesPerHour=limit_mib)
    review = ReviewSink(paths.review, settings, thing=THING)
    drain(settings, [JsonlSink(paths.results), review])
    assert review.status() == {"uncertain": 1, "skipped_limit": 2, "saved": 1}
    assert len(files_under(paths.review)) == 2


# --- Greengrass: through StreamManager -----------------------------------------------------

def review_uploader(**kwargs: Any) -> S3Uploader:
    """As the component builds it (inspector.greengrass.component), with short waits."""
    kwargs.setdefault("accept_within_s", 60.0)
    return S3Uploader(lambda: stream_manager_client(request_timeout_s=3), max_retries=0,
                      retry_window_s=0.0, data_stream=REVIEW_DATA_STREAM,
                      status_stream=REVIEW_STATUS_STREAM, log_failures=False,
                      reconnect_max_s=0.3, **kwargs).start()


def test_review_images_and_their_json_are_uploaded_under_the_prefix(
    tmp_path: Path, model_path: Path, stream_manager: StreamManagerEmulator
) -> None:
    settings = settings_for(tmp_path, model_path, UploadBucket="review-bucket",
                            ReviewPrefix="field/review/", AuditSampleRate=1.0)
    paths = resolve_paths(settings)
    images = {name: write_png(paths.watch, name, level) for name, level in
              (("mid.png", UNCERTAIN), ("dark.png", PASS), ("bright.png", DEFECT))}
    uploader = review_uploader()
    review = ReviewSink(paths.review, settings, uploader=uploader, thing=THING)
    try:
        drain(settings, [JsonlSink(paths.results), review])
        wait_until(lambda: review.status().get("uploaded") == 2, what="two review uploads")
    finally:
        uploader.close()
    results = results_of(paths.results)
    s3 = tmp_path / "s3" / "review-bucket"
    for name, reason in (("mid.png", "uncertain"), ("dark.png", "audit")):
        result = results[name]
        key = (f"field/review/{reason}/{THING}/{result['time'][:10]}/"
               f"{Path(name).stem}-{result['image']['sha256']}.png")
        assert (s3 / key).read_bytes() == images[name]
        assert json.loads((s3 / f"{key}.json").read_text("utf-8")) == result
        meta = json.loads((tmp_path / "s3" / ".metadata" / "review-bucket" / f"{key}.json")
                          .read_text("utf-8"))
        assert meta["review-reason"] == reason
        assert meta["best-confidence"] == f"{result['best_confidence']:.4f}"
    assert len(files_under(s3)) == 4  # the defect is not a review image
    assert files_under(paths.review) == []  # the copies go once StreamManager reports Success
    assert sorted(p.name for p in paths.done.iterdir()) == sorted(images)
    assert review.take() == {"uncertain": 1, "audit": 1, "skipped_limit": 0, "failed": 0,
                             "uploaded": 2, "saved": 0}
    assert review.take()["uploaded"] == 0  # per interval
    creates = [r for op, r in stream_manager.requests if op == "CreateMessageStream"]
    assert {r.definition.name for r in creates} == {REVIEW_DATA_STREAM, REVIEW_STATUS_STREAM}


def test_a_dead_stream_manager_does_not_hold_up_the_images_and_review_copies_are_dropped(
    tmp_path: Path, model_path: Path, stream_manager: StreamManagerEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream_manager.stop()  # nothing listens on its port
    settings = settings_for(tmp_path, model_path, UploadBucket="review-bucket")
    paths = resolve_paths(settings)
    for n in range(3):
        write_png(paths.watch, f"mid{n}.png", UNCERTAIN)
    uploader = review_uploader(accept_within_s=3600.0)
    review = ReviewSink(paths.review, settings, uploader=uploader, thing=THING)
    caplog.set_level(logging.WARNING, "inspector.sinks.review")
    try:
        report = drain(settings, [JsonlSink(paths.results), review])
        # every image delivered and moved to done while all six review files still wait
        assert report.stats.processed == 3 and report.stats.kept == 0
        assert len(list(paths.done.iterdir())) == 3 and not list(paths.watch.glob("*.png"))
        assert uploader.pending() == 6 and len(files_under(paths.review)) == 6
        uploader.accept_within_s = 0.2  # StreamManager never comes: given up, not kept forever
        wait_until(lambda: review.status().get("failed") == 3, what="three dropped")
        assert uploader.pending() == 0
        wait_until(lambda: files_under(paths.review) == [], what="the copies removed")
    finally:
        uploader.close()
    dropped = [r for r in caplog.records if "review upload (uncertain) dropped" in r.getMessage()]
    assert len(dropped) == 1 and "did not accept it" in dropped[0].getMessage()
    assert "2 more" not in dropped[0].getMessage()  # the first of the hour; the rest are DEBUG


def test_no_upload_bucket_drops_counted_and_warned_once(
    tmp_path: Path, model_path: Path, stream_manager: StreamManagerEmulator,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(tmp_path, model_path)
    paths = resolve_paths(settings)
    for n in range(2):
        write_png(paths.watch, f"mid{n}.png", UNCERTAIN)
    uploader = review_uploader()
    review = ReviewSink(paths.review, settings, uploader=uploader, thing=THING)
    caplog.set_level(logging.WARNING, "inspector.sinks.review")
    try:
        drain(settings, [JsonlSink(paths.results), review])
    finally:
        uploader.close()
    assert review.status() == {"failed": 2, "pending": 0}
    assert len([r for r in caplog.records if "UploadBucket is empty" in r.getMessage()]) == 1
    assert files_under(paths.review) == [] and stream_manager.requests == []
    assert len(os.listdir(paths.done)) == 2


def test_the_review_folder_feeds_retrain_from_review(tmp_path: Path, model_path: Path) -> None:
    """The loop's hand-over: the review layout (nested folders, a .json beside each image) with
    the YOLO labels a labelling tool exports beside the images is what the retrain script reads."""
    from script_loader import load_script

    retrain = load_script("scripts/retrain_from_review.py")
    settings = settings_for(tmp_path, model_path, AuditSampleRate=1.0)
    paths = resolve_paths(settings)
    write_png(paths.watch, "mid.png", UNCERTAIN)
    write_png(paths.watch, "dark.png", PASS)
    drain(settings, None)
    images = [p for p in files_under(paths.review) if p.suffix == ".png"]
    assert {p.relative_to(paths.review).parts[0] for p in images} == {"uncertain", "audit"}
    for image in images:  # the reviewer's verdict: a scratch on the uncertain one
        label = "0 0.5 0.5 0.2 0.1\n" if "uncertain" in image.parts else ""
        image.with_suffix(".txt").write_text(label)
    good, problems = retrain.collect(paths.review)
    assert problems == []
    assert sorted(item.image for item in good) == sorted(images)
    assert {len(item.boxes) for item in good} == {0, 1}


def test_review_settings_apply_live(tmp_path: Path, model_path: Path) -> None:
    settings = settings_for(tmp_path, model_path)
    paths = resolve_paths(settings)
    review = ReviewSink(paths.review, settings, thing=THING)
    service = build_service(settings, sinks=[JsonlSink(paths.results), review], drain=True)
    assert service.apply_settings(settings.replace(
        UncertainUpload=False, UncertainBand=0.3, AuditSampleRate=0.5, ReviewPrefix="r/",
        ReviewMaxPerHour=5, ReviewMaxMegabytesPerHour=2.0, UploadBucket="b")) == frozenset()
    assert (review.enabled, review.band, review.audit_rate, review.prefix, review.bucket) == (
        False, 0.3, 0.5, "r/", "b")
    write_png(paths.watch, "mid.png", UNCERTAIN)
    service.run()
    assert files_under(paths.review) == [] and review.status() == {}  # switched off: nothing
    assert service.apply_settings(settings.replace(ReviewDirectory="elsewhere")) == {
        "ReviewDirectory"}  # the folder needs a restart


def test_a_cause_warns_once_an_hour_with_the_count_in_between(
    caplog: pytest.LogCaptureFixture
) -> None:
    from inspector.sinks.review import _Warnings

    now = [0.0]
    warnings = _Warnings(lambda: now[0])
    caplog.set_level(logging.DEBUG, "inspector.sinks.review")
    for t in (0.0, 10.0, 20.0, 3600.0, 3700.0):
        now[0] = t
        warnings.warn("limit", "%s skipped", f"img{t:.0f}")
    warnings.warn("bucket", "other cause")
    loud = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert loud == ["img0 skipped", "img3600 skipped (2 more since the last such warning)",
                    "other cause"]
    assert len([r for r in caplog.records if r.levelno == logging.DEBUG]) == 3


def test_housekeeping_bounds_the_review_folder(tmp_path: Path, model_path: Path) -> None:
    from inspector.housekeeping import trim

    settings = settings_for(tmp_path, model_path, ReviewRetentionDays=1.0,
                            ReviewMaxMegabytes=0.01)
    paths = resolve_paths(settings)
    service = build_service(settings, sinks=[JsonlSink(paths.results)], drain=True)
    (retention,) = [r for r in service.retention() if r.label == "review"]
    assert retention.folder == paths.review.absolute()
    old = paths.review / "uncertain" / THING / "2026-11-01" / "old.png"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"x" * 100)
    os.utime(old, (time.time() - 2 * 86_400,) * 2)
    big = [paths.review / "audit" / THING / "2026-12-01" / f"b{n}.png" for n in range(3)]
    big[0].parent.mkdir(parents=True)
    for n, path in enumerate(big):
        path.write_bytes(b"y" * 4096)
        os.utime(path, (time.time() - 100 + n,) * 2)
    done = trim(retention)
    assert not old.exists() and done.by_age == 1
    assert [p.exists() for p in big] == [False, True, True]  # 10 KiB cap: the oldest goes
