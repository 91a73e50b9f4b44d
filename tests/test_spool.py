"""The bounded on-disk spool of unacknowledged messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspector.errors import SpoolFull
from inspector.greengrass.spool import Spool


def test_oldest_first_and_removed_on_ack(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool")
    ids = [spool.put({"n": n}).id for n in range(3)]
    assert [e.record["n"] for e in spool.pending()] == [0, 1, 2]
    spool.remove(ids[1])
    assert [e.record["n"] for e in spool.pending()] == [0, 2]
    assert len(spool) == 2
    assert [e.record["n"] for e in spool.pending(limit=1)] == [0]


def test_survives_a_restart_and_keeps_numbering(tmp_path: Path) -> None:
    first = Spool(tmp_path / "spool")
    for n in range(3):
        first.put({"n": n})
    first.remove(first.pending()[0].id)
    second = Spool(tmp_path / "spool")
    assert [e.record["n"] for e in second.pending()] == [1, 2]
    new = second.put({"n": 3})
    assert new.id > max(e.id for e in second.pending()[:-1])
    assert [e.record["n"] for e in second.pending()] == [1, 2, 3]


def test_bounded_refuses_when_full(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", max_items=2)
    spool.put({"n": 0})
    spool.put({"n": 1})
    with pytest.raises(SpoolFull, match="full"):
        spool.put({"n": 2})
    spool.remove(spool.pending()[0].id)
    spool.put({"n": 2})
    assert [e.record["n"] for e in spool.pending()] == [1, 2]


def test_torn_and_unreadable_files_are_dropped(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    (folder / "000000000001.json").write_text('{"n": 1}')
    (folder / "000000000002.json").write_text('{"n": ')  # corrupt
    (folder / "000000000003.json.part").write_text("{")  # torn before its rename
    (folder / "notes.txt").write_text("not mine")
    spool = Spool(folder)
    assert [e.record for e in spool.pending()] == [{"n": 1}]
    assert len(spool) == 1
    assert not (folder / "000000000003.json.part").exists()
    assert (folder / "notes.txt").exists()


def test_bounded_by_bytes_too_counted_across_restarts(tmp_path: Path) -> None:
    message = {"payload": "x" * 90}  # 104 bytes of JSON
    spool = Spool(tmp_path / "spool", max_bytes=250)
    spool.put(message)
    spool.put(message)
    assert spool.bytes == 208
    with pytest.raises(SpoolFull, match=r"2 messages, 208 bytes .* 250 bytes"):
        spool.put(message)
    spool.put({"n": 1})  # a small one still fits
    # the sizes of what an earlier run left are read from disk
    again = Spool(tmp_path / "spool", max_bytes=250)
    assert again.bytes == 208 + len('{"n":1}')
    with pytest.raises(SpoolFull):
        again.put(message)
    again.remove(again.pending()[0].id)
    assert again.bytes == 104 + len('{"n":1}')
    again.put(message)


def test_dead_letter_appends_a_line_and_leaves_the_spool(tmp_path: Path) -> None:
    import json

    spool = Spool(tmp_path / "spool")
    entry = spool.put({"target": "iotcore", "topic": "t/1", "payload": '{"a":1}', "image": "x.jpg"})
    spool.put({"target": "iotcore", "topic": "t/1", "payload": "{}", "image": "y.jpg"})
    where = spool.dead_letter(entry, error="UnauthorizedError: no", when="2026-12-01T00:00:00Z")
    assert where == tmp_path / "spool" / "dead-letter.jsonl"
    assert [json.loads(x) for x in where.read_text().splitlines()] == [{
        "image": "x.jpg", "target": "iotcore", "topic": "t/1", "error": "UnauthorizedError: no",
        "time": "2026-12-01T00:00:00Z", "payload": '{"a":1}'}]
    assert [e.record["image"] for e in spool.pending()] == ["y.jpg"]
    assert len(Spool(tmp_path / "spool")) == 1  # the dead-letter file is not a message
