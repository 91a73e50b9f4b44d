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


def read_lines(path):
    import json

    return [json.loads(line) for line in path.read_text().splitlines()]


def test_journal_compacts_online_keeping_only_open_entries(tmp_path):
    from inspector.disposition import Journal

    journal = Journal(tmp_path / "state" / "journal.jsonl", max_bytes=4096)
    journal.open()
    journal.begin("held.jpg", "a" * 64)
    journal.hold("held.jpg", "a" * 64, tmp_path / "held.jpg", {"verdict": "defect"})
    for n in range(200):  # ~30 KB of settled images
        journal.begin(f"img{n}.jpg", f"{n:064d}")
        journal.end(f"img{n}.jpg", f"{n:064d}", "done")
    journal.begin("open.jpg", "b" * 64)
    assert journal.compactions >= 5
    assert journal.path.stat().st_size <= 4096
    records = read_lines(journal.path)
    assert len(records) < 60  # of 403 written
    assert {"held.jpg", "open.jpg"} <= {r["name"] for r in records}
    assert [r["op"] for r in records if r["name"] == "held.jpg"] == ["begin", "hold"]
    journal.close()
    again = Journal(journal.path)
    again.open()  # what a restart sees: the held image and the one in flight, as before
    assert again.is_repeat("open.jpg", "b" * 64) and again.is_repeat("held.jpg", "a" * 64)
    assert [h.name for h in again.held()] == ["held.jpg"]
    assert not again.is_repeat("img5.jpg", f"{5:064d}")
    again.close()


def test_a_lower_journal_bound_applies_at_the_next_record(tmp_path):
    """JournalMaxMegabytes is a live setting: lowering it compacts at the next record, not
    only after the file next reaches the bound it had when last compacted."""
    from inspector.disposition import Journal

    journal = Journal(tmp_path / "journal.jsonl", max_bytes=1024 * 1024)
    journal.open()
    for n in range(40):  # ~6 KB, far under 1 MiB
        journal.begin(f"img{n}.jpg", f"{n:064d}")
        journal.end(f"img{n}.jpg", f"{n:064d}", "done")
    assert journal.compactions == 0
    journal.max_bytes = 1024
    journal.begin("open.jpg", "b" * 64)
    assert journal.compactions == 1
    assert [r["name"] for r in read_lines(journal.path)] == ["open.jpg"]
    journal.close()


def test_journal_deleted_with_its_folder_is_written_again(tmp_path, caplog):
    import shutil

    from inspector.disposition import Journal

    state = tmp_path / "watch" / ".inspector"
    journal = Journal(state / "journal.jsonl")
    journal.open()
    journal.begin("a.jpg", "a" * 64)
    shutil.rmtree(tmp_path / "watch")  # the watch folder removed, the state folder inside it
    with pytest.raises(OSError):  # a begin not on disk: the pipeline keeps the image
        journal.begin("b.jpg", "b" * 64)
    assert not (tmp_path / "watch").exists()  # never re-created from here
    assert any("cannot be written" in r.getMessage() for r in caplog.records)
    (tmp_path / "watch").mkdir()  # back: the next record writes the file again, nothing lost
    journal.end("a.jpg", "a" * 64, "done")
    journal.begin("c.jpg", "c" * 64)
    assert [(r["op"], r["name"]) for r in read_lines(journal.path)] == [
        ("begin", "b.jpg"), ("begin", "c.jpg")
    ]
    state_file = journal.path
    state_file.unlink()  # the file alone deleted
    journal.begin("d.jpg", "d" * 64)
    assert [r["name"] for r in read_lines(state_file)] == ["b.jpg", "c.jpg", "d.jpg"]
    assert any("was deleted" in r.getMessage() for r in caplog.records)
    journal.close()


def test_disposer_creates_no_folders_for_a_vanished_image(tmp_path):
    from inspector.disposition import Disposer

    watch = tmp_path / "watch"
    state = watch / ".inspector"
    disposer = Disposer(root=watch, done=state / "done", failed=state / "failed",
                        held=state / "held")
    with pytest.raises(FileNotFoundError):
        disposer.done(watch / "gone.jpg")
    with pytest.raises(FileNotFoundError):
        disposer.fail(watch / "gone.jpg", "reason")
    assert not watch.exists()
