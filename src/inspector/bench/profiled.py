"""Run ``inspector`` with cProfile in every thread; SIGUSR1 starts the window, exit ends it.

    python -m inspector.bench.profiled OUT.prof run [run options]

Every thread started after this module has a profiler of its own (``threading.setprofile`` hook);
the main thread too. SIGUSR1 clears what was collected so far (start-up, model load), so the
profile covers from the signal to the process' exit (a burst, then the SIGTERM shutdown). At
exit the profiles are merged into one pstats file. cProfile measures wall time per thread, so
blocking waits show up; ``inspector.bench.inprocess.top_functions`` leaves them out.
"""

from __future__ import annotations

import atexit
import cProfile
import pstats
import signal
import sys
import threading
from typing import Any

_profiles: list[cProfile.Profile] = []
_lock = threading.Lock()


def _start_in_this_thread(*_: Any) -> None:
    profile = cProfile.Profile()
    with _lock:
        _profiles.append(profile)
    profile.enable()  # replaces this hook for the rest of the thread


def _clear(*_: Any) -> None:
    with _lock:
        for profile in _profiles:
            profile.clear()


def _dump(path: str) -> None:
    with _lock:
        profiles = list(_profiles)
    for profile in profiles:
        profile.disable()  # only stops the calling thread's; the others are snapshotted
    stats: pstats.Stats | None = None
    for profile in profiles:
        try:
            stats = pstats.Stats(profile) if stats is None else stats.add(profile)
        except TypeError:  # a profiler that collected nothing
            continue
    if stats is not None:
        stats.dump_stats(path)


def main() -> int:
    out, argv = sys.argv[1], sys.argv[2:]
    signal.signal(signal.SIGUSR1, _clear)
    threading.setprofile(_start_in_this_thread)
    atexit.register(_dump, out)
    _start_in_this_thread()
    from inspector.cli import main as cli_main

    return int(cli_main(argv))


if __name__ == "__main__":
    sys.exit(main())
