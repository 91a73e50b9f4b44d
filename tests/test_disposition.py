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
