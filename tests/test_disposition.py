import os

import pytest

from inspector.disposition import _replace


def test_a_file_is_linked_into_place_then_unlinked(tmp_path):
    # No rename: watchdog would hold back later events up to 0.5 s after an IN_MOVED_FROM.
    source, target = tmp_path / "a.jpg", tmp_path / "done" / "a.jpg"
    target.parent.mkdir()
    source.write_bytes(b"image")
    inode = source.stat().st_ino
    _replace(source, target)
    assert not source.exists()
    assert target.read_bytes() == b"image" and target.stat().st_ino == inode
    assert target.stat().st_nlink == 1


def test_an_existing_target_is_never_overwritten(tmp_path):
    source, target = tmp_path / "a.jpg", tmp_path / "b.jpg"
    source.write_bytes(b"new")
    target.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        _replace(source, target)
    assert source.read_bytes() == b"new" and target.read_bytes() == b"old"


def test_a_directory_named_like_an_image_is_renamed(tmp_path):
    source, target = tmp_path / "dir.jpg", tmp_path / "failed" / "dir.jpg"
    source.mkdir()
    (source / "inner").write_text("x")
    target.parent.mkdir()
    _replace(source, target)
    assert not source.exists() and (target / "inner").read_text() == "x"
    assert os.path.isdir(target)


def test_an_image_begun_and_not_ended_is_a_repeat_in_the_same_run_and_the_next(tmp_path):
    """Its result went to a sink but it never reached done (move failed, or kept): inspected
    again it must say repeat, now and after a restart; once ended it is new again."""
    from inspector.disposition import Journal

    journal = Journal(tmp_path / "journal.jsonl")
    journal.open()
    assert not journal.is_repeat("a.jpg", "s1")
    journal.begin("a.jpg", "s1")
    assert journal.is_repeat("a.jpg", "s1")  # same run
    journal.begin("b.jpg", "s2")
    journal.end("b.jpg", "s2", "done")
    assert not journal.is_repeat("b.jpg", "s2")
    journal.close()
    again = Journal(tmp_path / "journal.jsonl")
    again.open()
    assert again.is_repeat("a.jpg", "s1") and not again.is_repeat("b.jpg", "s2")  # next run
    again.close()


def test_a_failed_cross_device_copy_leaves_no_partial_file(tmp_path, monkeypatch):
    import errno
    import shutil

    import inspector.disposition as disposition

    source = tmp_path / "a.jpg"
    source.write_bytes(b"x" * 1000)
    target = tmp_path / "done" / "a.jpg"
    target.parent.mkdir()

    def no_link(*args):
        raise OSError(errno.EXDEV, "cross-device link")

    def half_copy(src, dst, follow_symlinks=True):
        with open(dst, "wb") as fh:
            fh.write(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disposition.os, "link", no_link)
    monkeypatch.setattr(disposition.os, "replace", no_link)
    monkeypatch.setattr(shutil, "copy2", half_copy)
    with pytest.raises(OSError, match="No space"):
        _replace(source, target)
    assert source.exists() and sorted(p.name for p in target.parent.iterdir()) == []
