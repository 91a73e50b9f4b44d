"""The free-space check with an injected statvfs (the real ENOSPC path: tests/test_custody.py)."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

from inspector.diskspace import MIB, DiskGuard


def fake_statvfs(free: dict[str, int]):
    def statvfs(path: str) -> SimpleNamespace:
        fs = next(k for k in sorted(free, key=len, reverse=True) if path.startswith(k))
        return SimpleNamespace(f_bavail=free[fs] // 4096, f_frsize=4096, f_bsize=4096,
                               f_fsid=hash(fs))
    return statvfs


def test_each_file_system_is_checked_and_the_short_one_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    free = {str(tmp_path / "a"): 200 * MIB, str(tmp_path / "b"): 10 * MIB}
    guard = DiskGuard([tmp_path / "a" / "done", tmp_path / "b" / "results.jsonl"], 50 * MIB,
                      statvfs=fake_statvfs(free))
    problem = guard()
    assert problem is not None and "10.0 MiB free" in problem and "results.jsonl" in problem
    free[str(tmp_path / "b")] = 60 * MIB
    assert guard() is None
    guard.min_free_bytes = 0  # MinFreeMegabytes 0: no check
    free[str(tmp_path / "b")] = 0
    assert guard() is None


def test_real_statvfs_on_a_missing_path_checks_its_existing_parent(tmp_path: Path) -> None:
    guard = DiskGuard([tmp_path / "not" / "yet" / "there"], 1)
    assert guard() is None
    st = os.statvfs(tmp_path)
    huge = DiskGuard([tmp_path / "x"], (st.f_bavail + 10) * st.f_frsize * 2)
    assert "free on the file system of" in (huge() or "")
