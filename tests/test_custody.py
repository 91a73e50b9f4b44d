"""Custody under faults, standalone: ``inspector run`` as a subprocess on real files (issue 12).

Every test checks the same books: images in = results delivered + images kept visibly
undelivered, none lost, every second result of an image marked ``repeat: true``, and the
operator's signal (an ERROR line naming the image, the exit code, the stop line).

Read-only and full file systems are real: small tmpfs mounts (root only; skipped otherwise).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from bad_images import encode, gradient, write_atomically
from inspector.types import Size
from onnx_factory import constant_head_model, head_tensor, write_model

pytestmark = pytest.mark.timeout(120)
EXIT_CONFIG, EXIT_STALLED = 2, 6


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = head_tensor([(48.0, 32.0, 20.0, 10.0, 0.9)])  # every image is a "defect"
    model = constant_head_model(raw, input_size=Size(64, 96), name="tiny", version="1")
    return write_model(tmp_path_factory.mktemp("model") / "tiny.onnx", model)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def can_mount() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and sys.platform.startswith("linux")


@contextmanager
def tmpfs(folder: Path, size: str = "4m", *, ro: bool = False) -> Iterator[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if ro else "")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


class Run:
    """One ``inspector run`` process on ``watch``; results in ``results``."""

    def __init__(self, tmp_path: Path, model: Path, results: Path, *extra: str) -> None:
        self.tmp_path = tmp_path
        self.watch = tmp_path / "watch"
        self.watch.mkdir(exist_ok=True)
        self.results = results
        self.args = [sys.executable, "-m", "inspector", "--log-level", "INFO", "run",
                     "--watch", str(self.watch), "--results", str(results), "--model",
                     str(model), "--device", "line-1", "--set", "StableSeconds=0.2",
                     "--set", "AllowUnverifiedModel=true", *extra]
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> Run:
        log = self.tmp_path / f"run-{len(self.logs)}.log"
        self.logs.append(log)
        env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", None)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([*self.args, *extra], stdout=out,
                                         stderr=subprocess.STDOUT, env=env)
        return self

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"still running after {timeout} s:\n{self.log()[-4000:]}") from exc

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self, n: int = -1) -> str:
        return self.logs[n].read_text("utf-8", "replace") if self.logs else ""

    def last_line(self) -> str:
        return self.log().strip().splitlines()[-1]

    def lines(self) -> list[dict[str, Any]]:
        if not self.results.is_file():
            return []
        text = self.results.read_text("utf-8")
        text = text[:text.rfind("\n") + 1]  # polled while appended: whole lines only
        return [json.loads(x) for x in text.splitlines() if x]

    def left(self) -> list[str]:
        return sorted(p.name for p in self.watch.iterdir() if not p.name.startswith("."))

    def image(self, name: str, seed: int, size: tuple[int, int] = (60, 80)) -> None:
        write_atomically(self.watch / name, encode(gradient(*size, seed), ".png"))


@pytest.fixture
def runs(tmp_path: Path, model_path: Path) -> Iterator[Callable[..., Run]]:
    made: list[Run] = []

    def make(results: Path | None = None, *extra: str) -> Run:
        run = Run(tmp_path, model_path, results or tmp_path / "results.jsonl", *extra)
        made.append(run)
        return run

    yield make
    for run in made:
        run.kill()


def check_books(lines: list[dict[str, Any]], images: list[str], kept: list[str]) -> None:
    """Every image has a result or is kept; duplicates are repeats; nothing else appears."""
    names = Counter(r["image"]["name"] for r in lines)
    assert set(names) | set(kept) == set(images), (names, kept)
    first = Counter(r["image"]["name"] for r in lines if not r["repeat"])
    assert all(n == 1 for n in first.values()), first  # one non-repeat result per image at most


# --- 3. an unwritable results file: refused at start-up, nothing touched ----------------------

@pytest.mark.parametrize("kind", ["directory", "missing parent", "read-only mount"])
def test_unwritable_results_file_fails_at_start_before_any_image(
    runs: Callable[..., Run], tmp_path: Path, kind: str
) -> None:
    results = tmp_path / "results.jsonl"
    if kind == "directory":
        results.mkdir()
        reason = "it is a directory"
    elif kind == "missing parent":
        (tmp_path / "blocker").write_text("a file where the folder should be")
        results = tmp_path / "blocker" / "sub" / "results.jsonl"
        reason = "cannot create its folder"
    else:
        if not can_mount():
            pytest.skip("needs root to mount a read-only tmpfs")
        ro = tmp_path / "ro"
        ctx = tmpfs(ro, "1m", ro=True)
        ctx.__enter__()
        results = ro / "results.jsonl"
        reason = "Read-only file system"
    run = runs(results)
    run.image("a.png", 1)
    run.image("b.png", 2)
    try:
        assert run.start().wait() == EXIT_CONFIG
    finally:
        if kind == "read-only mount":
            ctx.__exit__(None, None, None)
    last = run.last_line()
    assert str(results) in last and reason in last, run.log()
    assert run.left() == ["a.png", "b.png"]  # not touched
    assert not (run.watch / ".inspector" / "done").exists()


# --- 1+3. results file becomes unwritable while running: kept, ERROR, exit 6 ----------------

def fill(folder: Path) -> Path:
    """Fill ``folder``'s file system to the last block; returns the filler file."""
    filler = folder / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


def test_results_file_unwritable_while_running_keeps_images_and_exits_6(
    runs: Callable[..., Run], tmp_path: Path
) -> None:
    if not can_mount():
        pytest.skip("needs root to mount a tmpfs")
    with tmpfs(tmp_path / "res", "1m") as res:
        run = runs(res / "results.jsonl", "--set", "SinkStallSeconds=2",
                   "--set", "MinFreeMegabytes=0")
        run.start()
        wait_until(lambda: "inspecting " in run.log(), 60, "start")
        assert (res / "results.jsonl").is_file()  # opened at start-up (empty: no block yet)
        filler = fill(res)
        images = [f"b{i}.png" for i in range(4)]
        for i in range(4):
            run.image(f"b{i}.png", 10 + i)
        assert run.wait(60) == EXIT_STALLED
        log = run.log()
        # ERROR lines name the image and the cause; the last line says what happened
        assert any("ERROR" in line and "b0.png" in line and "No space left" in line
                   and "results.jsonl" in line for line in log.splitlines()), log
        last = run.last_line()
        assert f"exiting with code {EXIT_STALLED}" in last and "kept undelivered" in last, last
        assert "sink failed" not in log
        kept = run.left()
        assert kept == images  # nothing done without its result
        assert not list((run.watch / ".inspector" / "done").iterdir())
        assert run.lines() == []
        assert "still held" in log
        check_books(run.lines(), images, kept)
        # writable again: the kept images are delivered; the outbox had already taken them,
        # so their results say repeat
        filler.unlink()
        run.start("--once")
        assert run.wait(60) == 0, run.log()
        lines = run.lines()
        check_books(lines, images, [])
        assert run.left() == []
        assert all(r["repeat"] for r in lines if r["image"]["name"] in kept)


# --- 4. disk pressure: intake pauses, one ERROR per state change, no re-inspections -----------

def test_low_disk_space_pauses_intake_and_resumes(runs: Callable[..., Run], tmp_path: Path) -> None:
    if not can_mount():
        pytest.skip("needs root to mount a tmpfs")
    with tmpfs(tmp_path / "state", "4m") as state:
        filler = state / "filler.bin"
        filler.write_bytes(b"\0" * (3 * 2**20 + 512 * 1024))  # 0.5 MiB left: below 1 MiB
        run = runs(state / "results.jsonl", "--state-dir", str(state),
                   "--set", "MinFreeMegabytes=1", "--set", "RescanSeconds=0.5",
                   "--log-level", "DEBUG")
        run.start()
        wait_until(lambda: "inspecting " in run.log(), 60, "start")
        images = [f"d{i}.png" for i in range(5)]
        for i, name in enumerate(images):
            run.image(name, i)
        wait_until(lambda: "disk space low" in run.log(), 30, "pause")
        # three rescans during the pause: stuck images must not be inspected over and over
        rescans = run.log().count(": rescan ")
        wait_until(lambda: run.log().count(": rescan ") >= rescans + 3, 30, "three rescans")
        assert run.lines() == [] and run.left() == images
        filler.unlink()
        wait_until(lambda: len(run.lines()) == 5, 30, "results after space returned")
        assert run.stop() == 0
        log = run.log()
        assert log.count("disk space low") == 1 and log.count("intake resumed") == 1, log
        check_books(run.lines(), images, [])
        assert all(not r["repeat"] for r in run.lines())
        assert run.left() == []


def test_disk_full_for_real_no_double_results_no_false_failures(
    runs: Callable[..., Run], tmp_path: Path
) -> None:
    """No free-space check (MinFreeMegabytes 0): writes hit ENOSPC for real. Images are kept
    and retried; when space returns each has exactly one result, none logged as failed."""
    if not can_mount():
        pytest.skip("needs root to mount a tmpfs")
    with tmpfs(tmp_path / "state", "2m") as state:
        run = runs(state / "results.jsonl", "--state-dir", str(state),
                   "--set", "MinFreeMegabytes=0", "--set", "AnnotateOutbox=false",
                   "--set", "SinkStallSeconds=600", "--set", "RescanSeconds=0.5",
                   "--log-level", "DEBUG")
        run.start()
        wait_until(lambda: "inspecting " in run.log(), 60, "start")
        filler = fill(state)
        images = [f"f{i}.png" for i in range(6)]
        for i, name in enumerate(images):
            run.image(name, i, size=(120, 160))
        wait_until(lambda: "No space left" in run.log(), 30, "ENOSPC")
        rescans = run.log().count(": rescan ")
        wait_until(lambda: run.log().count(": rescan ") >= rescans + 2, 30, "two rescans")
        assert run.left() == images  # nothing done or lost while the disk is full
        filler.unlink()
        wait_until(lambda: len(run.lines()) >= 6 and not run.left(), 60, "delivery")
        assert run.stop() == 0
        log = run.log()
        assert "sink failed" not in log
        lines = run.lines()
        check_books(lines, images, [])
        assert len(lines) == 6 and all(not r["repeat"] for r in lines)
        assert any("ERROR" in x and "f0.png" in x and "No space left" in x
                   for x in log.splitlines())


# --- 4. delivered but not movable to done: kept, and a repeat when inspected again ------------

def test_result_written_but_done_unwritable_is_a_repeat_next_time(
    runs: Callable[..., Run], tmp_path: Path
) -> None:
    if not can_mount():
        pytest.skip("needs root to mount a tmpfs")
    done = tmp_path / "done"
    with tmpfs(done, "2m", ro=True):
        run = runs(None, "--set", f"DoneDirectory={done}", "--set", "SinkStallSeconds=2",
                   "--set", "MinFreeMegabytes=0")
        images = ["m0.png", "m1.png"]
        for i, name in enumerate(images):
            run.image(name, i)
        run.start()
        assert run.wait(60) == EXIT_STALLED
        log = run.log()
        assert any("ERROR" in x and "m0.png" in x and "could not be moved to done" in x
                   and "Read-only" in x for x in log.splitlines()), log
        assert "sink failed" not in log and "result not durable" not in log  # it was written
        first = run.lines()
        assert [r["image"]["name"] for r in first] and all(not r["repeat"] for r in first)
        kept = run.left()
        assert kept == images  # written, not moved: still here, nothing lost
        subprocess.run(["mount", "-o", "remount,rw", str(done)], check=True)
        run.start("--once")
        assert run.wait(60) == 0, run.log()
        lines = run.lines()
        check_books(lines, images, [])
        again = lines[len(first):]
        delivered_before = {r["image"]["name"] for r in first}
        assert all(r["repeat"] for r in again if r["image"]["name"] in delivered_before)
        assert run.left() == [] and sorted(p.name for p in done.iterdir()) == images
