"""One service per watch folder: an exclusive ``flock`` on the folder itself.

Two services on one folder would both inspect every image (issue 12, fault 9). The lock is taken
on the watch folder's own directory inode, so it holds whatever StateDirectory each service is
given, is dropped by the kernel when the process dies (even by kill -9: no stale lock file to
clean up), and needs no write access to the folder. Where the kernel says who holds it
(``/proc/locks`` on Linux) the refusal names the other process's pid.

``flock`` locks are advisory and local to one machine: two hosts sharing a folder over NFS are
not kept apart by it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from pathlib import Path

from inspector.errors import FolderBusyError

logger = logging.getLogger(__name__)


class FolderLock:
    """An exclusive lock on a folder, held from ``acquire`` until ``release``."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(os.path.abspath(folder))
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Lock the folder; FolderBusyError when another process has it."""
        fd = os.open(self.folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            pid = holder_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderBusyError(self.folder, pid) from exc
            raise
        self.release()
        self._fd = fd

    def rearm(self) -> None:
        """The folder was replaced by a new one of the same name: lock the new one.

        Logs (does not raise) when another service took the new folder meanwhile.
        """
        self.release()
        try:
            self.acquire()
        except FolderBusyError as exc:
            logger.error("%s", exc)
        except OSError as exc:
            logger.error("cannot lock %s again: %s", self.folder, exc.strerror or exc)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor drops the flock


def holder_pid(fd: int) -> int | None:
    """The pid holding a flock on the file open as ``fd``, from /proc/locks (Linux); None when
    it cannot be told (another OS, another pid namespace)."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 18574 fe:00:2154395 0 EOF"; "->" marks a waiter
        fields = line.split()
        if "->" in fields or len(fields) < 6 or fields[1] != "FLOCK":
            continue
        if fields[5] == device and fields[4].isdigit() and int(fields[4]) != os.getpid():
            return int(fields[4])
    return None
