"""Three small conventions every layer follows, kept once: how a time is written (``utc_now``), how
a file name goes into a log line (``shown``), and how long the n-th retry waits (``backoff``).
No inspector imports: any module may use it."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path


def utc_now() -> str:
    """Now as ISO-8601 UTC with milliseconds: 2026-11-25T19:22:48.123Z."""
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def shown(path: Path | str) -> str:
    """A file name fit for a one-line log message (newlines and other controls escaped)."""
    text = str(path)
    if text.isprintable():
        return text
    return repr(text)[1:-1]


def backoff(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): ``base_s`` doubled each time, at most
    ``max_s`` (what tenacity's ``wait_exponential(multiplier=base_s, min=base_s, max=max_s)``
    gives, for loops that wait on their own events rather than inside tenacity)."""
    return min(max_s, base_s * 2 ** max(0, attempt - 1))
