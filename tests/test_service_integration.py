"""``inspector run`` as a real subprocess on a temp directory, with a tiny real ONNX model.

Each test fails if an image is lost: every file written must end with a result line (or in the
failed folder with its reason), and the watch directory must be empty of images afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bad_images import (
    Case,
    encode,
    gradient,
    ignored_files,
    write_atomically,
    write_bad_inputs,
    write_unreadable,
)
from inspector.errors import ModelError
from inspector.service import build_service, load_detector
from inspector.settings import Settings
from inspector.sinks.base import Delivery, Sink
from inspector.types import Size, Thresholds
from onnx_factory import constant_head_model, head_tensor, write_model

BURST = 500
SMALL = (240, 320)  # height, width of burst images


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = head_tensor([(48.0, 32.0, 20.0, 10.0, 0.9)])  # one box: every image is a "defect"
    model = constant_head_model(raw, input_size=Size(64, 96), name="tiny", version="1")
    return write_model(tmp_path_factory.mktemp("model") / "tiny.onnx", model)


class ServiceProcess:
    """The service as Greengrass runs it: a process, stopped with SIGTERM."""

    def __init__(self, tmp_path: Path, model: Path, *extra: str,
                 prefix: tuple[str, ...] = ()) -> None:
        self.watch = tmp_path / "watch"
        self.watch.mkdir(exist_ok=True)
        self.results = tmp_path / "results.jsonl"
        self.state = self.watch / ".inspector"
        self.logs: list[Path] = []
        self.tmp_path = tmp_path
        self.args = [
            *prefix, sys.executable, "-m", "inspector", "--log-level", "INFO", "run",
            "--watch", str(self.watch), "--results", str(self.results), "--model", str(model),
            "--device", "line-1", "--set", "StableSeconds=0.3",
            "--set", "AllowUnverifiedModel=true", *extra,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        log = self.tmp_path / f"service-{len(self.logs)}.log"
        self.logs.append(log)
        env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", None)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(self.args, stdout=out, stderr=subprocess.STDOUT, env=env)
        wait_until(lambda: "inspecting " in self.log_text() or self.proc.poll() is not None,
                   timeout=60, what="service start")
        assert self.proc.poll() is None, self.log_text()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        assert self.proc is not None
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=timeout)
        self.stop_seconds = time.monotonic() - t0
        return rc

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        return "".join(p.read_text(encoding="utf-8", errors="replace") for p in self.logs
                       if p.exists())

    def lines(self) -> list[dict[str, Any]]:
        if not self.results.exists():
            return []
        text = self.results.read_text(encoding="utf-8")
        # polled while the service appends: a line still being written (a read can see part of
        # another process's write) is left for the next look; only whole lines count
        text = text[:text.rfind("\n") + 1]
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def names(self) -> Counter[str]:
        return Counter(r["image"]["name"] for r in self.lines())

    def wait_results(self, n: int, timeout: float = 60.0) -> None:
        wait_until(lambda: len(self.lines()) >= n or not self.alive(), timeout=timeout,
                   what=f"{n} results")
        assert self.alive(), self.log_text()[-3000:]

    def images_left(self) -> list[str]:
        return sorted(p.name for p in self.watch.iterdir() if not p.name.startswith("."))

    def done(self) -> list[str]:
        folder = self.state / "done"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def kill(self) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def service_factory(tmp_path: Path, model_path: Path):
    started: list[ServiceProcess] = []

    def make(*extra: str, prefix: tuple[str, ...] = ()) -> ServiceProcess:
        service = ServiceProcess(tmp_path, model_path, *extra, prefix=prefix)
        started.append(service)
        return service

    yield make
    for service in started:
        service.kill()


def wait_until(condition: Callable[[], bool], *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def jpeg(seed: int, size: tuple[int, int] = SMALL) -> bytes:
    return encode(gradient(*size, seed), ".jpg")


def test_images_dropped_one_by_one(service_factory):
    service = service_factory().start()
    for n in range(5):
        write_atomically(service.watch / f"one_{n}.jpg", jpeg(n))
        service.wait_results(n + 1)
    assert service.stop() == 0
    assert service.names() == Counter({f"one_{n}.jpg": 1 for n in range(5)})
    assert service.done() == [f"one_{n}.jpg" for n in range(5)]
    assert service.images_left() == []
    result = service.lines()[0]
    assert result["device"] == "line-1" and result["repeat"] is False
    assert result["image"]["sha256"] == hashlib.sha256(jpeg(0)).hexdigest()
    log = service.log_text()
    assert "one_0.jpg: defect, 1 detection(s)" in log and "total" in log
    assert "SIGTERM received" in log


def test_burst_of_500(service_factory):
    service = service_factory().start()
    payloads = [jpeg(n) for n in range(BURST)]
    for n, data in enumerate(payloads):
        path = service.watch / f"burst_{n:03d}.jpg"
        if n % 2:
            write_atomically(path, data)  # temp name, then rename
        else:
            path.write_bytes(data)  # written in place: the close event says it is complete
    service.wait_results(BURST, timeout=120)
    assert service.stop() == 0
    names = service.names()
    assert names == Counter({f"burst_{n:03d}.jpg": 1 for n in range(BURST)})
    shas = {r["image"]["name"]: r["image"]["sha256"] for r in service.lines()}
    assert all(shas[f"burst_{n:03d}.jpg"] == hashlib.sha256(d).hexdigest()
               for n, d in enumerate(payloads))
    assert len(service.done()) == BURST and service.images_left() == []


def test_slow_writer_is_never_read_before_complete(service_factory):
    service = service_factory().start()
    data = jpeg(42, (480, 640))
    chunks = [data[i : i + len(data) // 8 + 1] for i in range(0, len(data), len(data) // 8 + 1)]
    path = service.watch / "slow.jpg"
    with open(path, "wb") as fh:  # one open file written over ~2.4 s, a long pause midway
        for n, chunk in enumerate(chunks):
            fh.write(chunk)
            fh.flush()
            time.sleep(0.8 if n == 3 else 0.2)
            assert service.lines() == []
    service.wait_results(1)
    assert service.stop() == 0
    [result] = service.lines()
    assert result["image"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert list((service.state / "failed").iterdir()) == []


def test_images_present_before_start_are_inspected_oldest_first(service_factory):
    service = service_factory()
    now = time.time()
    order = [7, 2, 9, 0, 5, 1, 8, 3, 6, 4]
    for rank, n in enumerate(order):
        path = service.watch / f"old_{n}.jpg"
        path.write_bytes(jpeg(n))
        os.utime(path, (now - 600 + rank, now - 600 + rank))
    service.start()
    service.wait_results(10)
    assert service.stop() == 0
    assert [r["image"]["name"] for r in service.lines()] == [f"old_{n}.jpg" for n in order]
    assert service.images_left() == []


def without_root_file_powers() -> tuple[tuple[str, ...], bool]:
    """A command prefix under which a mode-000 file cannot be read, and whether there is one.

    Root reads anything; with CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH dropped it cannot."""
    if os.geteuid() != 0:
        return (), True
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return (), False
    return (setpriv, "--bounding-set=-dac_override,-dac_read_search"), True


def test_every_bad_input_is_logged_and_the_service_goes_on(service_factory, tmp_path: Path):
    prefix, unreadable = without_root_file_powers()
    service = service_factory(prefix=prefix)
    before = write_bad_inputs(service.watch, tmp_path / "outside")  # half found by the scan ...
    service.start()
    later = tmp_path / "later"
    later.mkdir()
    after = write_bad_inputs(later, tmp_path / "outside2")  # ... half arriving while it runs
    renamed = {}
    for name in after:
        new = f"late {name}"
        os.rename(later / name, service.watch / new)
        renamed[new] = after[name]
    cases = {**before, **renamed}
    ignored = ignored_files(service.watch)
    if unreadable:
        write_unreadable(service.watch / "locked.jpg")
    fd = os.open(service.watch / "vanishing.jpg", os.O_WRONLY | os.O_CREAT)
    os.write(fd, jpeg(1))
    os.close(fd)
    os.unlink(service.watch / "vanishing.jpg")
    expected_ok = {n for n, c in cases.items() if c.expect == "processed"}
    expected_failed = {n for n, c in cases.items() if c.expect == "failed"} | (
        {"locked.jpg"} if unreadable else set())
    failed_dir = service.state / "failed"

    def settled() -> bool:
        names = set(service.names())
        failed = {p.name for p in failed_dir.iterdir()} if failed_dir.exists() else set()
        return expected_ok <= names and all(n in failed for n in expected_failed)

    wait_until(lambda: settled() or not service.alive(), timeout=60, what="every input settled")
    assert service.alive(), service.log_text()[-3000:]
    # nothing else may turn up: an image dropped now is inspected after anything still queued
    write_atomically(service.watch / "zz-marker.jpg", jpeg(7))
    wait_until(lambda: "zz-marker.jpg" in service.names(), timeout=60, what="the marker")
    assert service.stop() == 0
    expected_ok.add("zz-marker.jpg")
    cases["zz-marker.jpg"] = Case("zz-marker.jpg", "processed", upright=Size(*SMALL))

    results = {r["image"]["name"]: r for r in service.lines()}
    assert set(results) == expected_ok
    assert service.names() == Counter({n: 1 for n in expected_ok})
    for name in expected_ok:
        upright = cases[name].upright
        assert upright is not None
        got = results[name]["image"]
        assert (got["height"], got["width"]) == (upright.height, upright.width), name
    log = service.log_text()
    for name in expected_failed:
        reason = (failed_dir / f"{name}.reason.txt").read_text(encoding="utf-8").lower()
        want = cases[name].reason if name in cases else "permission denied"
        assert want in reason, (name, reason)
        shown = name.replace("\n", "\\n")
        assert f"{shown}: failed: " in log, name
    assert (tmp_path / "outside" / "elsewhere.jpg").exists()  # the link target was not touched
    left = sorted(p.name for p in service.watch.iterdir() if p.name != ".inspector")
    assert left == sorted(p.name for p in ignored)
    assert sorted(service.done()) == sorted(expected_ok)


def _drop(watch: Path, names: list[str]) -> threading.Thread:
    def run() -> None:
        for n, name in enumerate(names):
            write_atomically(watch / name, jpeg(1000 + n))
            time.sleep(0.01)  # a camera, not a copy: the burst outlasts the SIGTERM

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_sigterm_mid_burst_then_restart_keeps_one_result_per_image(service_factory):
    names = [f"cut_{n:03d}.jpg" for n in range(150)]
    service = service_factory("--set", "QueueSize=4").start()
    writer = _drop(service.watch, names)
    service.wait_results(20)
    assert service.stop() == 0
    assert service.stop_seconds < 15  # Greengrass kills a component that takes longer
    writer.join()
    first = len(service.lines())
    assert first < len(names), "the burst ended before SIGTERM: nothing was tested"
    assert "finishing the image in flight" in service.log_text()

    service.start()
    service.wait_results(len(names), timeout=90)
    assert service.stop() == 0
    assert service.names() == Counter({name: 1 for name in names})
    assert not any(r["repeat"] for r in service.lines())
    assert sorted(service.done()) == names and service.images_left() == []


def test_crash_mid_burst_then_restart_marks_repeats_and_loses_nothing(service_factory):
    names = [f"crash_{n:03d}.jpg" for n in range(150)]
    service = service_factory("--set", "QueueSize=4").start()
    writer = _drop(service.watch, names)
    service.wait_results(30)
    service.stop(signal.SIGKILL)
    writer.join()

    service.start()
    service.wait_results(len(names), timeout=90)
    wait_until(lambda: service.images_left() == [], timeout=30, what="watch dir empty")
    assert service.stop() == 0
    by_name: dict[str, list[dict[str, Any]]] = {}
    for result in service.lines():
        by_name.setdefault(result["image"]["name"], []).append(result)
    assert set(by_name) == set(names)
    for name, results in by_name.items():
        # a second line only for an image in flight at the crash, and it says so
        assert [r["repeat"] for r in results[1:]] == [True] * (len(results) - 1), name
        assert len({r["image"]["sha256"] for r in results}) == 1
    assert sum(len(r) > 1 for r in by_name.values()) <= 8  # at most what was in flight
    assert sorted(service.done()) == names


def test_drain_mode_processes_what_is_there_and_exits(tmp_path: Path, model_path: Path):
    watch = tmp_path / "in"
    watch.mkdir()
    for n in range(6):
        (watch / f"d_{n}.png").write_bytes(encode(gradient(50, 70, n), ".png"))
    (watch / "bad.jpg").write_bytes(b"")
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "inspector", "run", "--once", "--watch", str(watch),
         "--model", str(model_path), "--set", "StableSeconds=0", "--set", "ProcessedAction=delete",
         "--set", "AllowUnverifiedModel=true"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = (watch / ".inspector" / "results.jsonl").read_text().splitlines()
    assert len(results) == 6
    assert sorted(p.name for p in watch.iterdir()) == [".inspector"]
    assert (watch / ".inspector" / "failed" / "bad.jpg.reason.txt").exists()
    assert "stopped (drained)" in done.stdout


def test_bad_settings_and_missing_model_exit_nonzero(tmp_path: Path):
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    base = [sys.executable, "-m", "inspector", "run", "--watch", str(tmp_path)]
    bad = subprocess.run([*base, "--conf", "3", "--set", "Nope=1"], capture_output=True,
                         text=True, env=env, timeout=60)
    assert bad.returncode == 2
    assert "ConfidenceThreshold" in bad.stderr and "Nope" in bad.stderr
    env.pop("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", None)
    nowhere = subprocess.run([sys.executable, "-m", "inspector", "run"], capture_output=True,
                             text=True, env=env, timeout=60)
    assert nowhere.returncode == 2 and "--watch" in nowhere.stderr
    # a ModelPath that does not exist is a bad setting (the settings model refuses it, as the
    # Greengrass validation hook does); a file that is there but not a model is exit 3
    missing = subprocess.run([*base, "--model", str(tmp_path / "none.onnx")],
                             capture_output=True, text=True, env=env, timeout=60)
    assert missing.returncode == 2
    assert "ModelPath" in missing.stderr and "none.onnx" in missing.stderr
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    unverified = subprocess.run([*base, "--model", str(broken)],
                                capture_output=True, text=True, env=env, timeout=60)
    assert unverified.returncode == 2 and "ModelSha256" in unverified.stderr  # no digest
    unusable = subprocess.run([*base, "--model", str(broken), "--set", "AllowUnverifiedModel=true"],
                              capture_output=True, text=True, env=env, timeout=60)
    assert unusable.returncode == 3
    assert "broken.onnx" in unusable.stdout + unusable.stderr


def test_demo_generates_inspects_and_shows_a_table(tmp_path: Path, model_path: Path):
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    folder = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "inspector", "demo", "--dir", str(folder), "--count", "3",
         "--model", str(model_path)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    table = done.stdout
    assert "image" in table and "verdict" in table and "ms" in table
    assert sum(line.startswith("tag_00") for line in table.splitlines()) == 3
    assert "3 image(s): 3 defect, 0 pass" in table
    # the tiny model flags everything: right exactly where the generator drew scratches
    from inspector.synth import generate

    right = sum(len(generate(7, index).boxes_xyxy) > 0 for index in range(3))
    assert any(line.startswith("image") and line.endswith("drawn") for line in table.splitlines())
    assert f"verdict right (vs scratches drawn) on {right} of 3 image(s)" in table
    assert str(folder / ".inspector" / "results.jsonl") in table
    assert len(list((folder / ".inspector" / "outbox").glob("*.annotated.jpg"))) == 3
    again = subprocess.run(
        [sys.executable, "-m", "inspector", "demo", "--dir", str(folder)],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert again.returncode == 2 and "not empty" in again.stderr


def test_demo_without_a_bundled_model_says_so(tmp_path: Path):
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "INSPECTOR_MODELS_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "inspector", "demo", "--dir", str(tmp_path / "d"), "--count", "1"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 3
    assert "no bundled model" in done.stderr and "--model" in done.stderr


# --- in process: the seam the Greengrass side drives (its own sinks, live settings) -----------


class RecordingSink(Sink):
    name = "recording"

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []
        self.settings: list[Settings] = []
        self.cond = threading.Condition()

    def send(self, delivery: Delivery) -> None:
        with self.cond:
            self.results.append(delivery.result)
            self.cond.notify_all()

    def reconfigure(self, settings: Any) -> None:
        self.settings.append(settings)

    def wait_for(self, n: int) -> list[dict[str, Any]]:
        with self.cond:
            assert self.cond.wait_for(lambda: len(self.results) >= n, timeout=20)
            return list(self.results)


def test_threshold_changes_keep_the_model_session(tmp_path: Path, model_path: Path):
    """ConfidenceThreshold, IouThreshold and MaxDetections reach post-processing as one value;
    none of them loads the model again. A session setting does."""
    loads: list[Settings] = []

    def factory(settings: Settings) -> Any:
        loads.append(settings)
        return load_detector(settings)

    (tmp_path / "in").mkdir()
    settings = Settings.from_mapping({"ImageDirectory": str(tmp_path / "in"),
                                      "ModelPath": str(model_path), "AllowUnverifiedModel": True})
    service = build_service(settings, sinks=[RecordingSink()], detector_factory=factory)
    before: Any = service.pipeline.detector
    assert service.apply_settings(settings.replace(MaxDetections=1)) == frozenset()
    assert service.apply_settings(settings.replace(MaxDetections=1, IouThreshold=0.5,
                                                   ConfidenceThreshold=0.9)) == frozenset()
    after: Any = service.pipeline.detector
    assert len(loads) == 1 and after.runtime is before.runtime
    assert after.thresholds == Thresholds(conf=0.9, iou=0.5, max_det=1)
    service.apply_settings(settings.replace(MaxDetections=1, IntraOpThreads=1))
    assert len(loads) == 2 and service.pipeline.detector.thresholds.max_det == 1


def test_live_settings_apply_between_images(tmp_path: Path, model_path: Path):
    other = write_model(tmp_path / "other.onnx", constant_head_model(
        head_tensor([(48.0, 32.0, 20.0, 10.0, 0.5)]), input_size=Size(96, 96), name="other",
        version="2"))
    watch = tmp_path / "in"
    watch.mkdir()
    settings = Settings.from_mapping({"ImageDirectory": str(watch), "ModelPath": str(model_path),
                                      "AllowUnverifiedModel": True,
                                      "StableSeconds": 0.2, "DeviceName": "gg-thing"})
    sink = RecordingSink()
    service = build_service(settings, sinks=[sink])
    runner = threading.Thread(target=service.run)
    runner.start()
    try:
        write_atomically(watch / "a.jpg", jpeg(1))
        assert sink.wait_for(1)[0]["verdict"] == "defect"

        assert service.apply_settings(settings.replace(ConfidenceThreshold=0.95)) == frozenset()
        write_atomically(watch / "b.jpg", jpeg(2))
        assert sink.wait_for(2)[1]["verdict"] == "pass"

        newer = settings.replace(ModelPath=str(other), PublishResultsOnTopic="plant/x",
                                 QueueSize=3)
        assert service.apply_settings(newer) == {"QueueSize"}
        assert sink.settings[-1] is newer
        write_atomically(watch / "c.jpg", jpeg(3))
        result = sink.wait_for(3)[2]
        assert result["model"]["name"] == "other" and result["verdict"] == "defect"

        broken = tmp_path / "broken.onnx"
        broken.write_bytes(b"not a model")
        with pytest.raises(ModelError):
            service.apply_settings(newer.replace(ModelPath=str(broken)))
        assert service.settings is newer  # unchanged after the failure
        write_atomically(watch / "d.jpg", jpeg(4))
        assert sink.wait_for(4)[3]["model"]["name"] == "other"
        metrics = service.metrics()
        assert metrics["processed"] == 4 and metrics["device"] == "gg-thing"
        json.dumps(metrics)
    finally:
        service.request_stop()
        runner.join(timeout=15)
    assert not runner.is_alive()
    assert all(r["device"] == "gg-thing" for r in sink.results)


def test_the_service_shortens_the_gil_switch_interval(tmp_path: Path, model_path: Path):
    """The pipeline's threads hand the GIL over every GIL_SWITCH_INTERVAL_S at most, not the
    interpreter's 5 ms (inference workers waiting for it leave their cores idle)."""
    import sys

    from inspector.service import GIL_SWITCH_INTERVAL_S

    (tmp_path / "in").mkdir()
    settings = Settings.from_mapping({"ImageDirectory": str(tmp_path / "in"),
                                      "ModelPath": str(model_path), "AllowUnverifiedModel": True})
    before = sys.getswitchinterval()
    try:
        sys.setswitchinterval(0.005)
        build_service(settings, sinks=[RecordingSink()])
        assert sys.getswitchinterval() == pytest.approx(GIL_SWITCH_INTERVAL_S)
        assert GIL_SWITCH_INTERVAL_S < 0.005
    finally:
        sys.setswitchinterval(before)
