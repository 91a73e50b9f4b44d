"""One service per watch folder: the flock, and the pid of the holder in the refusal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from inspector.errors import FolderBusyError
from inspector.lock import FolderLock

HOLD = """
import sys, time
from inspector.lock import FolderLock
lock = FolderLock(sys.argv[1]); lock.acquire(); print("locked", flush=True); time.sleep(60)
"""


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path: Path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with pytest.raises(FolderBusyError) as caught:
            FolderLock(tmp_path).acquire()
        assert caught.value.pid == holder.pid
        assert str(tmp_path) in str(caught.value) and f"pid {holder.pid}" in str(caught.value)
        assert caught.value.errors[0][0] == "ImageDirectory"
    finally:
        holder.kill()
        holder.wait()
    lock = FolderLock(tmp_path)  # the kernel dropped the killed holder's lock: no stale file
    lock.acquire()
    assert lock.held
    lock.release()


def test_rearm_locks_a_replaced_folder(tmp_path: Path):
    folder = tmp_path / "watch"
    folder.mkdir()
    lock = FolderLock(folder)
    lock.acquire()
    folder.rmdir()
    folder.mkdir()
    lock.rearm()
    other = subprocess.run(
        [sys.executable, "-c",
         "import sys; from inspector.lock import FolderLock; FolderLock(sys.argv[1]).acquire()",
         str(folder)],
        capture_output=True, text=True, timeout=60,
    )
    assert other.returncode != 0 and "FolderBusyError" in other.stderr
    assert f"pid {__import__('os').getpid()}" in other.stderr
    lock.release()
