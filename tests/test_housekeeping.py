"""Retention on real files with old mtimes: age, size cap, oldest first, what is never touched."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import pytest

from inspector.housekeeping import DAY_S, Housekeeper, Retention, trim


def put(path: Path, size: int, age_days: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    when = time.time() - age_days * DAY_S
    os.utime(path, (when, when))
    return path


def test_age_limit_removes_only_older_files(tmp_path: Path):
    done = tmp_path / "done"
    old = [put(done / f"old{n}.jpg", 100, 10 + n) for n in range(3)]
    young = [put(done / f"young{n}.jpg", 100, 1) for n in range(2)]
    result = trim(Retention("done", done, max_age_s=7 * DAY_S))
    assert (result.removed_files, result.removed_bytes, result.by_age) == (3, 300, 3)
    assert not any(p.exists() for p in old) and all(p.exists() for p in young)
    assert (result.kept_files, result.kept_bytes) == (2, 200)


def test_size_cap_removes_oldest_first(tmp_path: Path):
    done = tmp_path / "done"
    files = [put(done / "line1" / f"{n}.jpg", 1000, 5 - n) for n in range(5)]  # 0 is oldest
    result = trim(Retention("done", done, max_bytes=2500))
    assert (result.removed_files, result.by_size, result.kept_bytes) == (3, 3, 2000)
    assert [p.exists() for p in files] == [False, False, False, True, True]


def test_held_failed_and_own_files_are_never_removed(tmp_path: Path):
    # a done folder set to the state folder itself: failed/ and held/ and the journal inside it
    state = tmp_path / "state"
    held = put(state / "held" / "a.jpg", 1000, 400)
    failed = put(state / "failed" / "b.jpg", 1000, 400)
    journal = put(state / "journal.jsonl", 1000, 400)
    done = put(state / "c.jpg", 1000, 400)
    result = trim(Retention("done", state, max_age_s=DAY_S, max_bytes=1,
                            protected=(state / "held", state / "failed", journal)))
    assert result.removed_files == 1 and not done.exists()
    assert held.exists() and failed.exists() and journal.exists()


def test_zero_means_no_limit(tmp_path: Path):
    put(tmp_path / "done" / "a.jpg", 10, 10_000)
    assert trim(Retention("done", tmp_path / "done")).removed_files == 0
    assert trim(Retention("done", tmp_path / "missing", max_age_s=1)).removed_files == 0


def test_housekeeper_logs_each_pass_with_count_and_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    done, outbox = tmp_path / "done", tmp_path / "outbox"
    for n in range(4):
        put(done / f"{n}.jpg", 2 * 1024 * 1024, 30)
    put(outbox / "x-123.jpg", 100, 1)
    policies = [Retention("done", done, max_age_s=7 * DAY_S),
                Retention("outbox", outbox, max_age_s=7 * DAY_S)]
    keeper = Housekeeper(lambda: policies, lambda: 3600.0)
    with caplog.at_level(logging.INFO, logger="inspector.housekeeping"):
        keeper.start()  # the first pass runs at once
        deadline = time.monotonic() + 10
        while keeper.passes == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        keeper.stop()
    assert keeper.passes == 1 and keeper.removed_files == 4
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1  # nothing removed from the outbox: no line for it
    assert "done" in lines[0] and "removed 4 file(s), 8.0 MiB" in lines[0]
    assert "4 older than 7 day(s)" in lines[0]
    assert (outbox / "x-123.jpg").exists()
