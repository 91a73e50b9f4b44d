"""Files written all-or-nothing: the bytes go to a hidden temporary sibling (``.<name>.part``), are
fsynced, renamed over the target, and the folder is fsynced, so after a crash or a power cut the
target holds either its old or its new content, never a torn one. A leftover ``.part`` is a write
that never finished (the spool removes them; the watcher ignores them)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    temp = _temp(path)
    try:
        with open(temp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
    except OSError:
        temp.unlink(missing_ok=True)  # a disk-full write must not keep the space it took
        raise
    fsync_dir(path.parent)


def copy_atomic(source: Path, target: Path) -> None:
    """``source``'s bytes to ``target``, all or nothing (as ``write_atomic``)."""
    temp = _temp(target)
    try:
        shutil.copyfile(source, temp)
        with open(temp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(temp, target)
    except OSError:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def deleted(fd: int) -> bool:
    """Whether the open file was deleted (or its folder removed) since it was opened: what is
    appended to it then is lost without a word."""
    try:
        return os.fstat(fd).st_nlink == 0
    except OSError:
        return True


def fsync_dir(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` survive a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp(path: Path) -> Path:
    return path.with_name(f".{path.name}.part")
