"""Component updates: let a deployment restart the service only once no image is in flight.

    deferrer = UpdateDeferrer(ipc, in_flight=service.pipeline.active).start()

A deployment whose componentUpdatePolicy is NOTIFY_COMPONENTS (the default) sends every
component subscribed with SubscribeToComponentUpdates a PreComponentUpdateEvent before it stops or
restarts anything, and waits (up to the policy's timeoutInSeconds, 60 s by default) for each one's
DeferComponentUpdate. This component answers:

- images in flight (submitted, not yet delivered and settled): defer, ``recheck_ms`` later the
  nucleus asks again (the message says how many images);
- nothing in flight: DeferComponentUpdate with recheckAfterMs 0, which lets the update go at once
  (a component that does not answer would hold the deployment for the whole timeout).

After ``max_defer_s`` of deferring one deployment (images arriving without a pause) the update is
let go anyway, with a warning: the SIGTERM that follows still finishes the image being inferred
and delivers what was inspected (ShutdownSeconds), and images not yet read stay in the folder for
the next start. PostComponentUpdateEvent (the update ran, or will not) is logged.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from inspector.errors import IpcError

logger = logging.getLogger(__name__)

RECHECK_MS = 2000
MAX_DEFER_S = 300.0


class UpdateIpc(Protocol):
    """What the deferrer needs of ``inspector.greengrass.ipc.IpcClient``."""

    def subscribe_to_component_updates(
        self, on_event: Callable[[str, str, bool], None]) -> None: ...
    def defer_component_update(
        self, deployment_id: str, *, recheck_after_ms: int, message: str = "") -> None: ...


class UpdateDeferrer:
    """See the module docstring. Counts ``deferred`` answers and ``released`` updates."""

    def __init__(
        self,
        ipc: UpdateIpc,
        in_flight: Callable[[], int],
        *,
        recheck_ms: int = RECHECK_MS,
        max_defer_s: float = MAX_DEFER_S,
    ) -> None:
        self.ipc = ipc
        self.in_flight = in_flight
        self.recheck_ms = recheck_ms
        self.max_defer_s = max_defer_s
        self.deferred = 0
        self.released = 0
        self._first_seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self) -> UpdateDeferrer:
        self.ipc.subscribe_to_component_updates(self._on_event)
        return self

    def _on_event(self, kind: str, deployment_id: str, ggc_restarting: bool) -> None:

        if kind == "post":
            with self._lock:
                self._first_seen.pop(deployment_id, None)
            logger.info("deployment %s: component update done", deployment_id)
            return
        if kind != "pre":
            return
        count = self.in_flight()
        with self._lock:
            first = self._first_seen.setdefault(deployment_id, time.monotonic())
        waited = time.monotonic() - first
        if count > 0 and waited < self.max_defer_s:
            recheck, message = self.recheck_ms, f"{count} image(s) in flight"
            logger.info("deployment %s: deferring the update %d ms: %s", deployment_id,
                        recheck, message)
        else:
            recheck, message = 0, "no image in flight" if count == 0 else (
                f"{count} image(s) still in flight after {waited:.1f} s of deferring")
            log = logger.warning if count else logger.info
            log("deployment %s: letting the update go%s (%s)", deployment_id,
                " (the nucleus restarts the core)" if ggc_restarting else "", message)
        with self._lock:  # counted before answering: the nucleus may act on it at once
            if recheck:
                self.deferred += 1
            else:
                self.released += 1
        try:
            self.ipc.defer_component_update(deployment_id, recheck_after_ms=recheck,
                                            message=message)
        except IpcError as exc:
            # e.g. answered too late: the nucleus went ahead without us (a ServiceError)
            logger.error("deployment %s: cannot answer the component update: %s",
                         deployment_id, exc)
