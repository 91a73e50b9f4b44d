"""Watcher faults of issue 12 (5-9) and issue 16 item 6, each on a real ``inspector run``
subprocess with real folders: the folder removed while running, chunked and corrupt files,
recursive subfolders, a second service on the same folder, other extensions, retention."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from inspector.types import Size
from onnx_factory import constant_head_model, head_tensor, write_model
from test_service_integration import ServiceProcess, wait_until


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = head_tensor([(48.0, 32.0, 20.0, 10.0, 0.9)])  # one box: every image is a "defect"
    onnx = constant_head_model(raw, input_size=Size(64, 96), name="tiny", version="1")
    return write_model(tmp_path_factory.mktemp("model") / "tiny.onnx", onnx)


@pytest.fixture
def services(tmp_path: Path, model: Path):
    started: list[ServiceProcess] = []

    def make(*extra: str) -> ServiceProcess:
        service = ServiceProcess(tmp_path, model, "--set", "RescanSeconds=600", *extra)
        started.append(service)
        return service

    yield make
    for service in started:
        service.kill()


def photo(seed: int, height: int = 240, width: int = 320) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.dstack([xx * 255 // width, yy * 255 // height, (xx + yy) % 256])
    noisy = (image + rng.integers(-20, 20, image.shape)).clip(0, 255).astype(np.uint8)
    ok, buffer = cv2.imencode(".jpg", noisy)
    assert ok
    return buffer.tobytes()


def failed_reasons(service: ServiceProcess) -> dict[str, str]:
    folder = service.state / "failed"
    return {p.name.removesuffix(".reason.txt"): p.read_text() for p in folder.rglob("*.reason.txt")}


def test_watch_folder_removed_and_recreated_while_running(services):
    service = services().start()
    (service.watch / "first.jpg").write_bytes(photo(1))
    service.wait_results(1)
    journal = service.state / "journal.jsonl"
    wait_until(lambda: '"op": "end"' in journal.read_text(), timeout=20, what="first.jpg settled")
    shutil.rmtree(service.watch)  # the state folder (journal, done) goes with it
    wait_until(lambda: "has vanished" in service.log_text(), timeout=20, what="the ERROR line")
    time.sleep(1.5)  # more checks while it is gone: still one ERROR
    service.watch.mkdir()
    (service.watch / "second.jpg").write_bytes(photo(2))  # RescanSeconds=600: only the re-arm
    service.wait_results(2, timeout=20)
    (service.watch / "third.jpg").write_bytes(photo(3))  # and events again after it
    service.wait_results(3, timeout=20)
    assert service.stop() == 0
    log = service.log_text()
    assert log.count("ERROR") == 1 and f"watch folder {service.watch} has vanished" in log
    assert "is back; watching it again" in log
    assert service.names() == Counter({"first.jpg": 1, "second.jpg": 1, "third.jpg": 1})
    assert service.done() == ["second.jpg", "third.jpg"]
    assert service.images_left() == []
    # the journal was written again in the recreated state folder, not into the deleted file
    assert "journal" in log and "was deleted" in log
    assert '"op": "end", "name": "third.jpg"' in journal.read_text()


def test_completeness_recursive_names_extensions_and_summary(services, tmp_path: Path):
    service = services("--recursive").start()
    watch = service.watch
    # a camera that reopens its file for each of 10 chunks, with pauses
    data = photo(10)
    step = len(data) // 10 + 1
    for n, offset in enumerate(range(0, len(data), step)):
        with open(watch / "chunked.jpg", "ab") as fh:
            fh.write(data[offset : offset + step])
        time.sleep(0.5 if n % 4 == 3 else 0.1)  # some pauses longer than StableSeconds=0.3
    # a JPEG with its middle overwritten; a PNG cut short; a .webp
    damaged = bytearray(photo(11))
    middle = len(damaged) // 2
    damaged[middle - 1500 : middle + 1500] = np.random.default_rng(5).bytes(3000)
    (watch / "damaged.jpg").write_bytes(bytes(damaged))
    _, png = cv2.imencode(".png", np.full((60, 80, 3), 7, np.uint8))
    (watch / "cut.png").write_bytes(png.tobytes()[:-20])
    (watch / "photo.webp").write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 ")
    # same-named files in two new subfolders, written at once (before their watches)
    for line in ("line1", "line2"):
        (watch / line).mkdir()
        (watch / line / "a.jpg").write_bytes(photo(20 + int(line[-1])))
    service.wait_results(3)
    wait_until(lambda: set(failed_reasons(service)) == {"damaged.jpg", "cut.png"}, timeout=30,
               what="the two bad files in failed/")
    assert service.stop() == 0
    names = service.names()
    assert names == Counter({"chunked.jpg": 1, "line1/a.jpg": 1, "line2/a.jpg": 1})
    [chunked] = [r for r in service.lines() if r["image"]["name"] == "chunked.jpg"]
    assert chunked["image"]["width"] == 320 and chunked["image"]["height"] == 240
    reasons = failed_reasons(service)
    assert reasons["damaged.jpg"].startswith("corrupt JPEG data")
    assert reasons["cut.png"].startswith("incomplete (no PNG end chunk IEND)")
    done = sorted(p.relative_to(service.state / "done").as_posix()
                  for p in (service.state / "done").rglob("*.jpg"))
    assert done == ["chunked.jpg", "line1/a.jpg", "line2/a.jpg"]
    log = service.log_text()
    assert log.count("photo.webp: skipped: extension .webp not in Extensions") == 1
    assert ", 2 failed, 1 skipped," in log  # the stop summary counts the .webp
    assert sorted(os.listdir(watch)) == [".inspector", "line1", "line2", "photo.webp"]


def test_a_second_service_on_the_same_folder_refuses_to_start(services, tmp_path: Path, model):
    first = services().start()
    assert first.proc is not None
    second = subprocess.run(
        [sys.executable, "-m", "inspector", "run", "--watch", str(first.watch), "--model",
         str(model), "--results", str(tmp_path / "second.jsonl"),
         "--set", "AllowUnverifiedModel=true"],
        capture_output=True, text=True, timeout=60,
    )
    assert second.returncode == 2
    assert f"ImageDirectory {first.watch} is already being inspected" in second.stderr
    assert f"pid {first.proc.pid}" in second.stderr
    (first.watch / "one.jpg").write_bytes(photo(1))
    first.wait_results(1)
    assert first.stop() == 0
    assert not (tmp_path / "second.jsonl").exists()


def test_retention_trims_done_at_start_up_and_logs_it(services):
    service = services("--set", "DoneRetentionDays=1", "--set", "DoneMaxMegabytes=1")
    done = service.state / "done"
    done.mkdir(parents=True)
    old = time.time() - 3 * 86_400
    for n in range(3):  # three from an earlier run, three days old
        path = done / f"old{n}.jpg"
        path.write_bytes(b"x" * 1000)
        os.utime(path, (old, old))
    for n in range(3):  # 3 x 0.5 MiB of recent ones: over the 1 MiB cap
        path = done / f"big{n}.jpg"
        path.write_bytes(b"y" * (512 * 1024))
        os.utime(path, (time.time() - 100 + n, time.time() - 100 + n))
    (service.state / "failed").mkdir()
    (service.state / "failed" / "bad.jpg").write_bytes(b"z")
    os.utime(service.state / "failed" / "bad.jpg", (old, old))
    service.start()
    wait_until(lambda: "housekeeping: done" in service.log_text(), timeout=20, what="a pass")
    assert service.stop(signal.SIGINT) == 0
    assert sorted(p.name for p in done.iterdir()) == ["big1.jpg", "big2.jpg"]
    assert (service.state / "failed" / "bad.jpg").exists()  # never by retention
    line = next(x for x in service.log_text().splitlines() if "housekeeping: done" in x)
    assert "removed 4 file(s)" in line and "3 older than 1 day(s)" in line
    assert "1 over the 1 MiB cap" in line
