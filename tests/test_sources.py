"""The directory watcher on real files: which names, when a file is complete, order, pressure."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from inspector.sources import DirectorySource, FileFilter, admit, shown

EXTS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff")


class Collector:
    """A ``submit`` callback recording paths (and their size when handed on)."""

    def __init__(self, source: DirectorySource | None = None, *, settle: bool = True) -> None:
        self.source = source
        self.settle = settle
        self.paths: list[Path] = []
        self.sizes: dict[Path, int] = {}
        self.cond = threading.Condition()
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, path: Path) -> bool:
        self.gate.wait()
        with self.cond:
            self.paths.append(path)
            self.sizes[path] = path.stat().st_size if path.exists() else -1
            self.cond.notify_all()
        if self.settle and self.source is not None:
            self.source.settled(path)
        return True

    def wait_for(self, n: int, timeout: float = 10.0) -> list[Path]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.paths) >= n, timeout=timeout)
            return list(self.paths)


def make_source(root: Path, *, watch: bool = True, stable_s: float = 0.3,
                recursive: bool = False) -> DirectorySource:
    ff = FileFilter(root, extensions=EXTS, recursive=recursive, ignored=[root / ".inspector"])
    return DirectorySource(root, ff, watch=watch, stable_s=stable_s, poll_s=0.02)


@pytest.mark.parametrize(
    ("rel", "recursive", "accepted"),
    [
        ("a.jpg", False, True),
        ("B.JPEG", False, True),
        ("c.tiff", False, True),
        ("with space ü.png", False, True),
        ("new\nline.jpg", False, True),
        (".hidden.jpg", False, False),
        ("x.jpg.part", False, False),
        ("x.tmp", False, False),
        ("x.jpg~", False, False),
        ("notes.txt", False, False),
        ("x.gif", False, False),
        ("sub/a.jpg", False, False),
        ("sub/a.jpg", True, True),
        (".inspector/done/a.jpg", True, False),
        ("own/a.jpg", True, False),
        (".cache/a.jpg", True, False),
    ],
)
def test_file_filter(tmp_path: Path, rel: str, recursive: bool, accepted: bool):
    ff = FileFilter(tmp_path, extensions=EXTS, recursive=recursive, ignored=[tmp_path / "own"])
    assert ff.accepts(tmp_path / rel) is accepted
    assert not ff.accepts(tmp_path.parent / "elsewhere.jpg")


def test_admit(tmp_path: Path):
    root = tmp_path / "watch"
    root.mkdir()
    (root / "ok.jpg").write_bytes(b"x")
    (root / "dir.jpg").mkdir()
    (tmp_path / "outside.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "outside.jpg", root / "out.jpg")
    os.symlink(root / "ok.jpg", root / "in.jpg")
    os.symlink(root / "nothing.jpg", root / "dangling.jpg")
    assert admit(root / "ok.jpg", root).ok
    assert admit(root / "in.jpg", root).ok
    assert "directory" in admit(root / "dir.jpg", root).reason
    assert "outside the watch directory" in admit(root / "out.jpg", root).reason
    assert "dangling" in admit(root / "dangling.jpg", root).reason
    gone = admit(root / "gone.jpg", root)
    assert gone.vanished and not gone.ok


def test_shown_escapes_newlines():
    assert shown("a\nb.jpg") == "a\\nb.jpg"
    assert shown("ü b.jpg") == "ü b.jpg"


def test_startup_scan_hands_on_oldest_first(tmp_path: Path):
    now = time.time()
    for n, name in enumerate(["c.jpg", "a.jpg", "b.png"]):
        path = tmp_path / name
        path.write_bytes(b"data")
        os.utime(path, (now - 100 + n, now - 100 + n))  # c oldest, then a, then b
    (tmp_path / ".hidden.jpg").write_bytes(b"data")
    (tmp_path / "skip.txt").write_bytes(b"data")
    source = make_source(tmp_path, watch=False)
    got = Collector(source)
    source.start(got)
    try:
        assert [p.name for p in got.wait_for(3)] == ["c.jpg", "a.jpg", "b.png"]
        deadline = time.monotonic() + 5
        while not source.idle() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert source.idle()
    finally:
        source.stop()


def test_close_after_write_is_picked_up_and_a_slow_writer_is_never_read_early(tmp_path: Path):
    source = make_source(tmp_path, stable_s=30.0)  # only events can make it this fast
    got = Collector(source)
    source.start(got)
    try:
        path = tmp_path / "slow.jpg"
        with open(path, "wb") as fh:
            for _ in range(10):  # 2 s of writing, pauses longer than a poll
                fh.write(b"\xab" * 1000)
                fh.flush()
                time.sleep(0.2)
                assert got.paths == []
        assert got.wait_for(1) == [path]
        assert got.sizes[path] == 10_000
    finally:
        source.stop()


def test_rename_into_place_is_picked_up_once(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "watch"
    root.mkdir()
    source = make_source(root, stable_s=30.0)
    got = Collector(source)
    source.start(got)
    try:
        (root / "cam.jpg.part").write_bytes(b"z" * 500)
        os.replace(root / "cam.jpg.part", root / "cam.jpg")
        (outside / "other.jpg").write_bytes(b"y" * 10)
        os.replace(outside / "other.jpg", root / "other.jpg")
        paths = got.wait_for(2)
        assert sorted(p.name for p in paths) == ["cam.jpg", "other.jpg"]
        time.sleep(0.3)
        assert len(got.paths) == 2
    finally:
        source.stop()


def test_files_without_events_need_the_quiet_period(tmp_path: Path):
    path = tmp_path / "fresh.jpg"
    path.write_bytes(b"abc")  # written just now, before the service started
    source = make_source(tmp_path, stable_s=0.6)
    got = Collector(source)
    t0 = time.monotonic()
    source.start(got)
    try:
        assert got.wait_for(1) == [path]
        assert time.monotonic() - t0 >= 0.4
    finally:
        source.stop()


def test_back_pressure_loses_nothing(tmp_path: Path):
    source = make_source(tmp_path, stable_s=30.0)
    got = Collector(source)
    got.gate.clear()  # the pipeline is "full": submit blocks
    source.start(got)
    try:
        for n in range(40):
            (tmp_path / f"img_{n:03d}.jpg").write_bytes(b"q" * 100)
        time.sleep(0.3)
        assert got.paths == []
        got.gate.set()
        paths = got.wait_for(40)
        assert sorted(p.name for p in paths) == [f"img_{n:03d}.jpg" for n in range(40)]
        assert len(set(paths)) == 40
    finally:
        source.stop()


def test_deleted_before_read_is_skipped_and_retry_hands_it_on_again(tmp_path: Path):
    source = make_source(tmp_path, stable_s=0.2)
    got = Collector(source, settle=False)
    source.start(got)
    try:
        doomed = tmp_path / "doomed.jpg"
        fd = os.open(doomed, os.O_WRONLY | os.O_CREAT)
        os.write(fd, b"abc")
        os.unlink(doomed)  # gone before it was even closed
        os.close(fd)
        keep = tmp_path / "keep.jpg"
        keep.write_bytes(b"abc")
        assert got.wait_for(1) == [keep]
        source.retry(keep)
        assert got.wait_for(2) == [keep, keep]
        source.settled(keep)
        keep.unlink()
        time.sleep(0.3)
        assert source.idle()
    finally:
        source.stop()


def test_recursive_watch_ignores_the_state_folder(tmp_path: Path):
    (tmp_path / ".inspector" / "done").mkdir(parents=True)
    source = make_source(tmp_path, recursive=True, stable_s=30.0)
    got = Collector(source)
    source.start(got)
    try:
        (tmp_path / "line1").mkdir()
        time.sleep(0.2)  # the new folder gets its own watch
        (tmp_path / "line1" / "a.jpg").write_bytes(b"a")
        (tmp_path / ".inspector" / "done" / "b.jpg").write_bytes(b"b")
        assert [p.name for p in got.wait_for(1)] == ["a.jpg"]
        time.sleep(0.3)
        assert len(got.paths) == 1
    finally:
        source.stop()


def test_rescan_finds_files_whose_events_were_lost(tmp_path: Path):
    ff = FileFilter(tmp_path, extensions=EXTS)
    source = DirectorySource(tmp_path, ff, stable_s=0.1, poll_s=0.02, rescan_s=0.3)
    got = Collector(source)
    source.start(got)
    try:
        assert source._observer is not None
        source._observer.unschedule_all()  # from now on no events arrive
        time.sleep(0.1)
        (tmp_path / "silent.jpg").write_bytes(b"abc")
        assert [p.name for p in got.wait_for(1, timeout=5)] == ["silent.jpg"]
    finally:
        source.stop()
