"""The directory watcher on real files: which names, when a file is complete, order, pressure."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from inspector.conventions import shown
from inspector.sources import DirectorySource, FileFilter, admit, relative_name

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
        self.calls = 0  # submit calls, blocked ones included

    def __call__(self, path: Path) -> bool:
        with self.cond:
            self.calls += 1
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


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


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


def test_a_slow_writer_is_never_read_early_and_handed_on_once_quiet(tmp_path: Path):
    source = make_source(tmp_path, stable_s=0.5)
    got = Collector(source)
    source.start(got)
    try:
        path = tmp_path / "slow.jpg"
        with open(path, "wb") as fh:
            for _ in range(10):  # 2 s of writing, pauses shorter than the quiet period
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
        # any second hand-on of those comes from events queued before this one: wait for it
        (outside / "third.jpg").write_bytes(b"x" * 10)
        os.replace(outside / "third.jpg", root / "third.jpg")
        assert [p.name for p in got.wait_for(3)][2:] == ["third.jpg"]
        assert wait_until(source.idle)
        assert sorted(p.name for p in got.paths) == ["cam.jpg", "other.jpg", "third.jpg"]
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
    source = make_source(tmp_path, stable_s=0.2)
    got = Collector(source)
    got.gate.clear()  # the pipeline is "full": submit blocks
    source.start(got)
    try:
        for n in range(40):
            (tmp_path / f"img_{n:03d}.jpg").write_bytes(b"q" * 100)
        assert wait_until(lambda: got.calls >= 1)  # the watcher is blocked handing one on
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
        assert wait_until(source.idle)
    finally:
        source.stop()


def test_recursive_watch_ignores_the_state_folder(tmp_path: Path):
    (tmp_path / ".inspector" / "done").mkdir(parents=True)
    source = make_source(tmp_path, recursive=True, stable_s=0.2)
    got = Collector(source)
    source.start(got)
    try:
        (tmp_path / ".inspector" / "done" / "b.jpg").write_bytes(b"b")
        (tmp_path / "line1").mkdir()
        (tmp_path / "line1" / "a.jpg").write_bytes(b"a")  # at once, maybe before its watch
        assert [p.name for p in got.wait_for(1)] == ["a.jpg"]  # found by events, not a rescan
        wait_until(source.idle)
        assert len(got.paths) == 1
    finally:
        source.stop()


def test_recursive_new_subfolders_are_scanned_at_once(tmp_path: Path):
    source = make_source(tmp_path, recursive=True, stable_s=0.1)  # rescan: every 60 s
    got = Collector(source)
    source.start(got)
    try:
        for n in range(10):  # the folder and its file created back to back, ten times
            folder = tmp_path / f"line{n}" / "deeper"
            folder.mkdir(parents=True)
            (folder / "a.jpg").write_bytes(b"a")
        paths = got.wait_for(10)
        assert sorted(relative_name(tmp_path, p) for p in paths) == [
            f"line{n}/deeper/a.jpg" for n in range(10)
        ]
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


def jpeg_bytes(height: int = 120, width: int = 160) -> bytes:
    import cv2
    import numpy as np

    rng = np.random.default_rng(3)
    ok, buffer = cv2.imencode(".jpg", rng.integers(0, 255, (height, width, 3), np.uint8))
    assert ok
    return buffer.tobytes()


def test_camera_reopening_its_file_per_chunk_is_handed_on_once_whole(tmp_path: Path):
    data = jpeg_bytes()
    source = make_source(tmp_path, stable_s=0.3)
    got = Collector(source)
    source.start(got)
    try:
        path = tmp_path / "cam.jpg"
        chunks = [data[i : i + len(data) // 9 + 1] for i in range(0, len(data), len(data) // 9 + 1)]
        assert len(chunks) >= 8
        for n, chunk in enumerate(chunks):
            with open(path, "ab") as fh:  # opened, written and closed once per chunk
                fh.write(chunk)
            time.sleep(0.5 if n % 3 == 2 else 0.1)  # some pauses longer than StableSeconds
            assert got.paths == [] or n == len(chunks) - 1
        assert got.wait_for(1) == [path]
        assert got.sizes[path] == len(data)
        assert wait_until(source.idle)
        assert got.paths == [path]
    finally:
        source.stop()


def test_late_events_of_a_write_already_read_do_not_hand_the_file_on_again(tmp_path: Path):
    """The watcher judges a file as it is now, which can be ahead of the events still queued
    (a loaded machine): the last chunk is read complete on the previous chunk's close, and its
    own events arrive afterwards. They must not hand the same file on a second time; a new
    write to that name is a new image."""
    data = jpeg_bytes()
    source = make_source(tmp_path, watch=False, stable_s=30.0)  # events injected in order
    got = Collector(source)
    source.start(got)
    try:
        path = tmp_path / "cam.jpg"
        path.write_bytes(data[: len(data) // 2])
        source.note(path, writing=True)
        source.note(path, writing=False)  # the first chunk's write and close
        with open(path, "ab") as fh:  # the last chunk, its events not delivered yet
            fh.write(data[len(data) // 2:])
        assert got.wait_for(1) == [path] and got.sizes[path] == len(data)
        source.note(path, writing=True)
        source.note(path, writing=False)  # now they arrive
        assert wait_until(source.idle)
        assert got.paths == [path]
        other = jpeg_bytes(100, 140)
        path.write_bytes(other)  # the camera writes the next frame under the same name
        source.note(path, writing=False)
        assert got.wait_for(2) == [path, path] and got.sizes[path] == len(other)
    finally:
        source.stop()


def test_a_closed_file_with_its_end_marker_needs_no_quiet_period(tmp_path: Path):
    """The usual camera write (open, write, close) costs no StableSeconds of latency; the same
    bytes without their end marker still wait for the quiet period."""
    source = make_source(tmp_path, stable_s=30.0)
    got = Collector(source)
    source.start(got)
    try:
        cut, whole = tmp_path / "cut.jpg", tmp_path / "whole.jpg"
        cut.write_bytes(jpeg_bytes()[:-500])
        whole.write_bytes(jpeg_bytes())
        assert got.wait_for(1, timeout=10) == [whole]  # well before 30 s
        assert got.wait_for(2, timeout=0.5) == [whole]  # the cut one waits
    finally:
        source.stop()


def test_a_file_without_its_end_marker_is_handed_on_only_after_the_long_wait(tmp_path: Path):
    source = make_source(tmp_path, stable_s=0.1)  # long wait: 10 x 0.1 s
    got = Collector(source)
    source.start(got)
    try:
        whole, cut = tmp_path / "whole.jpg", tmp_path / "cut.jpg"
        cut.write_bytes(jpeg_bytes()[:-500])
        whole.write_bytes(jpeg_bytes())
        assert got.wait_for(1) == [whole]
        assert got.wait_for(2) == [whole, cut]  # handed on: the reader will fail it
        assert time.time() - cut.stat().st_mtime >= source.fallback_s
    finally:
        source.stop()


def test_watch_folder_removed_is_reported_once_and_rearmed_when_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    import shutil

    root = tmp_path / "watch"
    root.mkdir()
    ff = FileFilter(root, extensions=EXTS)
    source = DirectorySource(root, ff, stable_s=0.1, poll_s=0.02, root_check_s=0.2)
    got = Collector(source)
    source.start(got)
    try:
        (root / "before.jpg").write_bytes(b"x")
        assert got.wait_for(1) == [root / "before.jpg"]
        shutil.rmtree(root)
        assert wait_until(lambda: source.root_missing)
        time.sleep(0.5)  # a few more checks while it is gone: still one ERROR
        errors = [r for r in caplog.records if r.levelname == "ERROR"]
        assert len(errors) == 1 and "vanished" in errors[0].getMessage()
        assert str(root) in errors[0].getMessage()
        root.mkdir()
        (root / "early.jpg").write_bytes(b"y")  # before the watch is armed again: the scan
        assert wait_until(lambda: not source.root_missing)
        (root / "after.jpg").write_bytes(b"z")  # after: an event (the rescan is 60 s away)
        assert sorted(p.name for p in got.wait_for(3)) == ["after.jpg", "before.jpg", "early.jpg"]
        assert any("is back" in r.getMessage() for r in caplog.records)
    finally:
        source.stop()


def test_watch_folder_replaced_between_two_checks_is_rearmed(tmp_path: Path):
    import shutil

    root = tmp_path / "watch"
    root.mkdir()
    ff = FileFilter(root, extensions=EXTS)
    source = DirectorySource(root, ff, stable_s=0.1, poll_s=0.02, root_check_s=0.2)
    got = Collector(source)
    source.start(got)
    try:
        old_observer = source._observer
        shutil.rmtree(root)
        root.mkdir()  # gone and back before the periodic check may have seen it
        assert wait_until(lambda: source._observer not in (None, old_observer))
        (root / "new.jpg").write_bytes(b"n")
        assert [p.name for p in got.wait_for(1)] == ["new.jpg"]
    finally:
        source.stop()


def test_other_extensions_are_logged_once_each_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    (tmp_path / "old.webp").write_bytes(b"w")  # there before the start
    ff = FileFilter(tmp_path, extensions=EXTS)
    source = DirectorySource(tmp_path, ff, stable_s=0.1, poll_s=0.02, rescan_s=0.2)
    got = Collector(source)
    source.start(got)
    try:
        (tmp_path / "new.webp").write_bytes(b"w")
        (tmp_path / "notes.txt").write_bytes(b"t")
        (tmp_path / "README").write_bytes(b"r")
        (tmp_path / "x.jpg.part").write_bytes(b"p")  # a camera's temporary name: not reported
        (tmp_path / "ok.jpg").write_bytes(b"j")
        assert got.wait_for(1) == [tmp_path / "ok.jpg"]
        assert wait_until(lambda: source.skipped() == 4)
        done = source.rescans
        assert wait_until(lambda: source.rescans >= done + 2)  # two more: nothing logged twice
        assert source.skipped() == 4
        lines = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert sorted(lines) == sorted([
            "old.webp: skipped: extension .webp not in Extensions "
            "(.bmp, .jpeg, .jpg, .png, .tif, .tiff)",
            "new.webp: skipped: extension .webp not in Extensions "
            "(.bmp, .jpeg, .jpg, .png, .tif, .tiff)",
            "notes.txt: skipped: extension .txt not in Extensions "
            "(.bmp, .jpeg, .jpg, .png, .tif, .tiff)",
            "README: skipped: no file extension, so not an image for Extensions",
        ])
    finally:
        source.stop()


def test_a_pause_right_after_the_exif_thumbnail_is_not_the_end(tmp_path: Path):
    import struct

    thumbnail = jpeg_bytes(8, 8)
    main = jpeg_bytes()
    app1 = b"\xff\xe1" + struct.pack(">H", len(thumbnail) + 2) + thumbnail
    data = main[:2] + app1 + main[2:]
    source = make_source(tmp_path, stable_s=0.2)
    got = Collector(source)
    source.start(got)
    try:
        path = tmp_path / "thumb.jpg"
        with open(path, "ab") as fh:
            fh.write(data[: 2 + len(app1)])  # ends with the thumbnail's FF D9
        # a complete file written after it: handed on after its own quiet period, by when the
        # first one's (begun earlier) has passed too
        (tmp_path / "control.jpg").write_bytes(main)
        assert [p.name for p in got.wait_for(1)] == ["control.jpg"]
        assert [p.name for p in got.paths] == ["control.jpg"]
        with open(path, "ab") as fh:
            fh.write(data[2 + len(app1) :])
        assert got.wait_for(2)[1] == path
        assert got.sizes[path] == len(data)
    finally:
        source.stop()
