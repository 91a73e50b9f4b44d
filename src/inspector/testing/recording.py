"""What the emulators share: waiting until something was recorded."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Recording:
    """Mixin: ``_changed`` is a Condition notified after every recorded event."""

    _changed: threading.Condition

    def wait_until(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        """Wait until ``predicate()`` (checked after every recorded event) holds."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return True
