"""The delivery room: journal, sinks, disposition and the one log line per image.

Custody, enforced here and only here (``DeliveryDesk._finish`` is the one place an inspected
image is moved to done): an image moves to done only after every sink has made its result durable
(``Sink.send`` returned: JSONL written and fsynced, MQTT spooled and fsynced, upload accepted by
StreamManager through the hold). A sink that fails keeps the image where it is: only the failed
sinks are tried again, with exponential backoff, on the delivery thread, so the pipeline's bounded
queues fill and intake stops instead of piling up. Every failure is counted (``sink_errors``),
logged as an ERROR naming the image and the cause (again when the cause changes, and once a minute
while it lasts); ``stall()`` says for how long nothing could be made durable, and the service stops
(exit code / component state ERRORED) after ``SinkStallSeconds``. A move to done that fails is
retried the same way; the journal entry stays open meanwhile, so the image is marked ``repeat`` if
it is inspected again, in this run or the next. Before delivering, ``space_check`` (free disk
space) is asked; while it reports a problem the delivery thread waits (one ERROR when the pause
starts, one line when it ends).

A sink that reads the image after ``send`` returned (an S3 upload) claims it: the image is moved
to the held folder and settled by ``ImageHold`` when every claiming sink has released it, on
whichever thread releases last.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspector.conventions import backoff, shown
from inspector.disposition import Disposer, Journal
from inspector.errors import SinkError
from inspector.sinks.base import Delivery, Sink
from inspector.types import Inspection

logger = logging.getLogger(__name__)

ToResult = Callable[..., dict[str, Any]]  # inspector.result.to_result(inspection, **extra)
SpaceCheck = Callable[[], "str | None"]  # a description of the shortage, None when fine


@dataclass
class PipelineStats:
    processed: int = 0
    defects: int = 0
    failed: int = 0
    skipped: int = 0
    repeats: int = 0
    held: int = 0  # images ever held for a sink (cumulative)
    held_now: int = 0  # images still held
    retried: int = 0
    kept: int = 0  # inspected, result not made durable by every sink: left in place at stop
    delivery_retries: int = 0  # sink sends and moves tried again
    disk_pauses: int = 0
    sink_errors: dict[str, int] = field(default_factory=dict)


@dataclass
class Outcome:
    """What the earlier stages made of one image: an inspection, or why there is none."""

    path: Path
    inspection: Inspection | None = None
    reason: str = ""
    vanished: bool = False  # gone before it could be read: skipped, not failed
    retry: bool = False  # changed while being read: read again later


class DeliveryDesk:
    """Delivers outcomes one at a time (the pipeline's delivery thread) and settles held images
    (on the thread of the sink that releases them last)."""

    def __init__(
        self,
        *,
        to_result: ToResult,
        sinks: Sequence[Sink],
        disposer: Disposer,
        journal: Journal,
        device: str,
        on_settled: Callable[[Path], None] = lambda path: None,
        on_retry: Callable[[Path], None] = lambda path: None,
        space_check: SpaceCheck = lambda: None,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        self._to_result = to_result
        self.sinks = list(sinks)
        self.disposer = disposer
        self.journal = journal
        self.device = device
        self.stopping = threading.Event()  # set by the pipeline's stop: retries end
        self._on_settled = on_settled
        self._on_retry = on_retry
        self._space_check = space_check
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._stats_lock = threading.Lock()
        self._stall_since: float | None = None  # since when nothing could be made durable
        self._stall_what = ""
        self.disk_paused = False
        self.stats = PipelineStats()

    # --- reporting -----------------------------------------------------------------------------

    def stall(self) -> tuple[float, str]:
        """(seconds the current image's result has not been made durable, what fails)."""
        with self._stats_lock:
            if self._stall_since is None:
                return 0.0, ""
            return time.monotonic() - self._stall_since, self._stall_what

    def count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def _stalled(self, what: str) -> None:
        with self._stats_lock:
            if self._stall_since is None:
                self._stall_since = time.monotonic()
            self._stall_what = what

    def _unstalled(self) -> None:
        with self._stats_lock:
            self._stall_since = None
            self._stall_what = ""

    def _backoff(self, attempt: int) -> float:
        return backoff(attempt, self.retry_base_s, self.retry_max_s)

    # --- one outcome ---------------------------------------------------------------------------

    def handle(self, item: Outcome) -> None:
        """Deliver one outcome; never raises (an unexpected error is logged, naming the image)."""
        try:
            if item.inspection is None:
                self._dispose_failure(item)
            elif self._wait_for_space():
                self._deliver(item.path, item.inspection)
            else:
                self.count("kept")
                logger.warning("%s: not delivered (stopping while disk space is short); left "
                               "in place for the next run", shown(item.path.name))
        except Exception:
            logger.exception("%s: delivery failed", shown(item.path.name))

    def _wait_for_space(self) -> bool:
        """Wait while ``space_check`` reports a shortage; False when stopping meanwhile."""
        problem = self._space_check()
        if problem is None:
            return True
        self.disk_paused = True
        self.count("disk_pauses")
        logger.error("disk space low: %s; intake paused (images stay where they are) until "
                     "space returns", problem)
        attempt = 0
        while problem is not None:
            attempt += 1
            if self.stopping.wait(self._backoff(attempt)):
                self.disk_paused = False
                return False
            problem = self._space_check()
        self.disk_paused = False
        logger.warning("disk space available again; intake resumed")
        return True

    def _dispose_failure(self, item: Outcome) -> None:
        name = shown(item.path.name)
        if item.vanished:
            self.count("skipped")
            logger.warning("%s: skipped: %s", name, item.reason)
            self._on_settled(item.path)
            return
        if item.retry:
            self.count("retried")
            logger.info("%s: changed while being read (%s); will read it again", name, item.reason)
            self._on_retry(item.path)
            return
        try:
            target = self.disposer.fail(item.path, item.reason)
        except FileNotFoundError:
            self.count("skipped")
            logger.warning("%s: skipped: vanished (%s)", name, item.reason)
        except OSError as exc:
            self.count("failed")
            logger.error("%s: failed: %s; and could not be moved: %s", name, item.reason, exc)
        else:
            self.count("failed")
            logger.warning("%s: failed: %s -> %s", name, item.reason, shown(target))
        self._on_settled(item.path)

    def _deliver(self, path: Path, inspection: Inspection) -> None:
        image = inspection.image
        name = shown(image.name)
        repeat = self.journal.is_repeat(image.name, image.sha256)
        result = self._to_result(inspection, device=self.device, repeat=repeat)

        def begin() -> bool:
            self.journal.begin(image.name, image.sha256)
            return True

        if self._retry_io(name, "journal not writable", begin) is None:
            self.count("kept")
            logger.warning("%s: not delivered (stopping, journal not writable); left in place",
                           name)
            self._on_settled(path)
            return
        probe = Delivery(result, inspection, path)
        claimers = [sink for sink in self.sinks if self._claims(sink, probe)]
        others = [sink for sink in self.sinks if sink not in claimers]
        # 1. the sinks that need only the result, with the image still in the watch directory
        delivered = self._send_durably(others, probe, name)
        hold: ImageHold | None = None
        if delivered and claimers:
            # 2. the sinks that read the image later: held until they release it
            held_path = self._retry_io(name, "could not be held", lambda: self.disposer.hold(path))
            if held_path is None:
                delivered = False
            else:
                hold = ImageHold(self, held_path, image.name, image.sha256,
                                 [s.name for s in claimers])
                self.journal.hold(image.name, image.sha256, held_path, result)
                delivery = Delivery(result, inspection, held_path, hold, probe.progress)
                for sink in claimers:  # a claimer's failure releases its hold (failed/)
                    if not self._send_durably([sink], delivery, name, retry=False):
                        hold.release(sink.name, ok=False, reason="send failed")
        with self._stats_lock:
            self.stats.processed += 1
            self.stats.defects += inspection.verdict == "defect"
            self.stats.repeats += repeat
        if not delivered:
            self.count("kept")
            where = "KEPT, result not delivered to every sink (left in place; repeat next time)"
        elif hold is not None:
            self.count("held")
            where = "held"
            hold.arm()
        else:
            where = self._finish(path, image.name, image.sha256, retry=True)
        log_line(inspection, repeat, where)
        self._on_settled(path)

    def _claims(self, sink: Sink, probe: Delivery) -> bool:
        try:
            return bool(sink.claims_image(probe))
        except Exception:
            logger.exception("sink %s: claims_image failed; not holding for it", sink.name)
            return False

    def _send_durably(self, sinks: Sequence[Sink], delivery: Delivery, name: str, *,
                      retry: bool = True) -> bool:
        """Send to every sink; the failed ones again, with backoff, until they succeed (True)
        or the pipeline stops (False: the result is not durable for some sink)."""
        pending = list(sinks)
        attempt, reported, last_report = 0, "", 0.0
        while pending:
            failed: list[tuple[Sink, Exception]] = []
            for sink in pending:
                try:
                    sink.send(delivery)
                except Exception as exc:
                    failed.append((sink, exc))
                    with self._stats_lock:
                        errors = self.stats.sink_errors
                        errors[sink.name] = errors.get(sink.name, 0) + 1
                    if not isinstance(exc, SinkError):
                        logger.exception("%s: sink %s: unexpected error", name, sink.name)
            if not failed:
                break
            causes = "; ".join(f"sink {s.name}: {exc}" for s, exc in failed)
            self._stalled(f"{name}: {causes}")
            now = time.monotonic()
            if causes != reported or now - last_report >= 60.0:
                stalled_for, _ = self.stall()
                logger.error("%s: result not durable (%s); the image is kept and the sink "
                             "retried%s", name, causes,
                             f" (failing for {stalled_for:.0f} s)" if stalled_for >= 1 else "")
                reported, last_report = causes, now
            if not retry or self.stopping.is_set():
                if not self.stopping.is_set():
                    self._unstalled()  # given up on (the caller settles the image): no stall
                return False
            attempt += 1
            self.count("delivery_retries")
            pending = [s for s, _ in failed]
            if self.stopping.wait(self._backoff(attempt)):
                retry = False  # stopping: one last try each, then the image is kept
        if attempt:
            logger.warning("%s: result delivered after %d retr%s", name, attempt,
                           "y" if attempt == 1 else "ies")
        self._unstalled()
        return True

    def _retry_io(self, name: str, what: str, action: Callable[[], Any]) -> Any:
        """``action()`` (a move), retried with backoff on OSError until it works or stopping
        (None). FileNotFoundError is not retried: it propagates."""
        attempt, reported = 0, ""
        while True:
            try:
                value = action()
            except FileNotFoundError:
                raise
            except OSError as exc:
                cause = f"{what}: {exc}"
                self._stalled(f"{name}: {cause}")
                if cause != reported:
                    logger.error("%s: %s; the image is kept where it is and this is retried", name,
                                 cause)
                    reported = cause
                if self.stopping.is_set():
                    return None
                attempt += 1
                self.count("delivery_retries")
                self.stopping.wait(self._backoff(attempt))
                continue
            if attempt:
                logger.warning("%s: %s no more: done after %d retr%s", name, what, attempt,
                               "y" if attempt == 1 else "ies")
            self._unstalled()
            return value

    # --- custody -------------------------------------------------------------------------------

    def _finish(self, path: Path, name: str, sha256: str | None, *, reason: str = "",
                retry: bool = False) -> str:
        """THE custody rule, the only place an inspected image goes to done (or is deleted).

        Called only once every sink has made the image's result durable: by ``_deliver`` when
        no sink holds the image, by ``ImageHold`` when every claiming sink has released it
        (``reason`` then says why one gave up: the image goes to failed). ``retry`` (the
        delivery thread) retries a failed move with backoff until stopping; otherwise (a sink's
        thread) a failed move is logged once. Either way the journal entry stays open while
        the image is not moved, so seen again it is marked repeat (and a held one is resumed by
        the next run). ``sha256`` None: an image with no journal entry (nothing to close)."""
        shown_name = shown(name)

        def move() -> tuple[str, str]:
            if reason:
                self.disposer.fail(path, reason)
                return f"failed ({reason})", "failed"
            target = self.disposer.done(path)
            return ("deleted" if target is None else "done"), "done"

        try:
            if retry:
                moved = self._retry_io(shown_name, "could not be moved to done", move)
            else:
                moved = move()
        except FileNotFoundError:
            moved = ("vanished", "vanished")
        except OSError as exc:
            logger.error("%s: could not be moved: %s; it stays where it is", shown_name, exc)
            return f"NOT moved ({exc})"
        if moved is None:
            self.count("kept")
            # no journal end: seen again (this run or the next) it is marked repeat
            return "delivered, NOT moved (left in place; repeat if seen again)"
        where, state = moved
        if state == "failed":
            self.count("failed")
        if sha256 is not None:
            self.journal.end(name, sha256, state)
        return where

    def settle_held(self, hold: ImageHold, reason: str) -> str:
        """Every sink that claimed ``hold`` has released it: settle the image."""
        return self._finish(hold.path, hold.name, hold.sha256, reason=reason)

    def resume_held(self) -> None:
        """Images a previous run held for upload: offered to the sinks, else settled as done."""
        records = {rec.path: rec for rec in self.journal.held()}
        for path in self.disposer.held_files():
            rec = records.get(path)
            if rec is None:  # held, then the run ended before the journal said so
                where = self._finish(path, path.name, None)
                logger.warning("%s: held by an earlier run, no journal entry; settled -> %s",
                               shown(path.name), where)
                continue
            hold = ImageHold(self, path, rec.name, rec.sha256, [])
            for sink in self.sinks:
                try:
                    if sink.resume_hold(rec.result, path, hold):
                        hold.claim(sink.name)
                except Exception:
                    logger.exception("sink %s: resume_hold failed", sink.name)
            resumed = hold.waiting()
            logger.info("%s: held by an earlier run; %s", shown(rec.name),
                        "resumed" if resumed else "no sink resumed it, settling")
            hold.arm()


def log_line(inspection: Inspection, repeat: bool, where: str) -> None:
    """The one INFO line per inspected image."""
    t = inspection.timings_ms
    logger.info(
        "%s: %s, %d detection(s)%s; ms decode %.1f, preprocess %.1f, inference %.1f, "
        "postprocess %.1f, total %.1f -> %s",
        shown(inspection.image.name),
        inspection.verdict,
        len(inspection.detections),
        " (repeat)" if repeat else "",
        t.get("decode", 0.0),
        t.get("preprocess", 0.0),
        t.get("inference", 0.0),
        t.get("postprocess", 0.0),
        t.get("total", 0.0),
        where,
    )


class ImageHold:
    """Custody of one held image; settled when every claiming sink has released it."""

    def __init__(
        self, desk: DeliveryDesk, path: Path, name: str, sha256: str, sinks: Sequence[str]
    ) -> None:
        self._desk = desk
        self.path = path
        self.name = name
        self.sha256 = sha256
        self._waiting = set(sinks)
        self._failures: list[str] = []
        self._armed = False  # settle only after the delivery thread has finished with it
        self._counted = False
        self._settled = False
        self._lock = threading.Lock()

    def release(self, sink: str, *, ok: bool = True, reason: str = "") -> None:
        with self._lock:
            if sink not in self._waiting:
                return
            self._waiting.discard(sink)
            if not ok:
                self._failures.append(f"{sink}: {reason or 'failed'}")
        self._maybe_settle()

    def claim(self, sink: str) -> None:
        with self._lock:
            self._waiting.add(sink)

    def waiting(self) -> bool:
        with self._lock:
            return bool(self._waiting)

    def arm(self) -> None:
        with self._lock:
            self._armed = True
            self._counted = bool(self._waiting) and not self._settled
            if self._counted:  # still needed by a sink: counted as held until settled
                self._desk.count("held_now")
        self._maybe_settle()

    def _maybe_settle(self) -> None:
        with self._lock:
            if self._settled or not self._armed or self._waiting:
                return
            self._settled = True
            reason = "; ".join(self._failures)
        where = self._desk.settle_held(self, reason)
        if self._counted and not where.startswith("NOT moved"):  # else it is still held
            self._desk.count("held_now", -1)
        log = logger.warning if reason else logger.info
        log("%s: released by its sinks -> %s", shown(self.name), where)
