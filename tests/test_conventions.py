"""The shared conventions (conventions.py) and all-or-nothing files (durable.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tenacity import RetryCallState, Retrying, wait_exponential

from inspector.conventions import backoff, utc_now
from inspector.durable import copy_atomic, write_atomic


@pytest.mark.parametrize(("base", "cap"), [(0.5, 30.0), (0.2, 5.0), (0.05, 0.05)])
def test_backoff_is_what_tenacity_would_wait(base: float, cap: float) -> None:
    """The loops that wait on their own events use the same schedule as the tenacity retries."""
    wait = wait_exponential(multiplier=base, min=base, max=cap)
    for attempt in range(1, 15):
        state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
        state.attempt_number = attempt
        assert backoff(attempt, base, cap) == pytest.approx(wait(state))


def test_utc_now_has_milliseconds_and_a_z() -> None:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", utc_now())


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_a_failed_write_keeps_the_old_content_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()  # a folder where the file should go: the rename fails
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    with pytest.raises(OSError):
        copy_atomic(tmp_path / "missing.jpg", tmp_path / "b.jpg")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_copy_atomic_copies_the_bytes(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(b"\xff\xd8 image")
    copy_atomic(tmp_path / "a.jpg", tmp_path / "b.jpg")
    assert (tmp_path / "b.jpg").read_bytes() == b"\xff\xd8 image"
    assert not (tmp_path / ".b.jpg.part").exists()
