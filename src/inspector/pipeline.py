"""The inspection loop: decode -> letterbox -> infer -> decode boxes -> sinks -> disposition.

Three kinds of threads, joined by bounded queues so a full stage makes the previous one wait
(nothing is dropped):

    submit() -> [paths] -> decode workers (read, letterbox) -> [prepared] -> inference thread
             -> [outcomes] -> delivery thread (journal, sinks, disposition, one log line)

Decoding overlaps inference, so a burst runs at the model's own pace; sinks run off the inference
thread. Errors are isolated per image (the image is moved to the failed folder with the reason).

Custody, enforced here and only here (the delivery step): an image moves to done only after every
sink has made its result durable (``Sink.send`` returned: JSONL written and fsynced, MQTT
spooled and fsynced, upload accepted by StreamManager through the hold). A sink that fails keeps
the image where it is: only the failed sinks are tried again, with exponential backoff, on the
delivery thread, so the bounded queues fill and intake stops instead of piling up. Every failure
is counted (``sink_errors``), logged as an ERROR naming the image and the cause (again when the
cause changes, and once a minute while it lasts); ``stall()`` says for how long nothing could be
made durable, and the service stops (exit code / component state ERRORED) after
``SinkStallSeconds``. A move to done that fails is retried the same way; the journal entry stays
open meanwhile, so the image is marked ``repeat`` if it is inspected again, in this run or the
next. Before delivering, ``space_check`` (free disk space) is asked; while it reports a problem
the delivery thread waits (one ERROR when the pause starts, one line when it ends).

On ``stop`` the image being inferred and every inspected image are delivered; an image whose
result cannot be made durable during the stop is kept (left in the watch directory, or held),
counted in ``stats.kept``; images only queued or decoded are left where they are for the next run.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inspector.disposition import Disposer, Journal, utc_now
from inspector.errors import ImageDecodeError, ImageError, ImageUnavailableError, SinkError
from inspector.sinks.base import Delivery, Sink
from inspector.sources import admit, shown
from inspector.types import Detections, ImageInfo, Inspection, Letterbox, ModelInfo

logger = logging.getLogger(__name__)


class DetectorLike(Protocol):
    """What the pipeline needs of ``inspector.detector.Detector``."""

    @property
    def model(self) -> ModelInfo: ...
    @property
    def conf_threshold(self) -> float: ...
    def preprocess(self, bgr: np.ndarray) -> tuple[np.ndarray, Letterbox]: ...
    def infer(self, tensor: np.ndarray) -> Any: ...
    def postprocess(self, raw: Any, letterbox: Letterbox) -> Detections: ...


class DecodedLike(Protocol):
    """What the pipeline needs of ``inspector.imageio.DecodedImage``."""

    @property
    def bgr(self) -> np.ndarray: ...
    @property
    def info(self) -> ImageInfo: ...
    @property
    def decode_ms(self) -> float: ...


ReadImage = Callable[[Path], DecodedLike]
ToResult = Callable[..., dict[str, Any]]  # inspector.result.to_result(inspection, **extra)


@dataclass(frozen=True)
class _Stat:
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> _Stat | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_size, st.st_mtime_ns)


@dataclass
class _Prepared:
    path: Path
    decoded: DecodedLike
    tensor: np.ndarray
    letterbox: Letterbox
    detector: DetectorLike
    preprocess_ms: float


@dataclass
class _Outcome:
    path: Path
    inspection: Inspection | None = None
    reason: str = ""
    vanished: bool = False
    retry: bool = False


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


SpaceCheck = Callable[[], "str | None"]  # a description of the shortage, None when fine


_STOP = object()


class Pipeline:
    """Inspects the paths it is given; see the module docstring for the threads."""

    def __init__(
        self,
        *,
        detector: DetectorLike,
        read_image: ReadImage,
        to_result: ToResult,
        sinks: Sequence[Sink],
        disposer: Disposer,
        journal: Journal,
        root: Path,
        device: str,
        queue_size: int = 8,
        decode_workers: int = 1,
        on_settled: Callable[[Path], None] = lambda path: None,
        on_retry: Callable[[Path], None] = lambda path: None,
        space_check: SpaceCheck = lambda: None,
        retry_base_s: float = 0.5,
        retry_max_s: float = 30.0,
    ) -> None:
        self._detector = detector
        self._read_image = read_image
        self._to_result = to_result
        self.sinks = list(sinks)
        self.disposer = disposer
        self.journal = journal
        self.root = root
        self.device = device
        self._on_settled = on_settled
        self._on_retry = on_retry
        self._space_check = space_check
        self.retry_base_s = retry_base_s
        self.retry_max_s = retry_max_s
        self._stats_lock = threading.Lock()
        self._stall_since: float | None = None  # since when nothing could be made durable
        self._stall_what = ""
        self.disk_paused = False
        self._paths: queue.Queue[Path] = queue.Queue(maxsize=queue_size)
        self._prepared: queue.Queue[_Prepared] = queue.Queue(maxsize=max(2, decode_workers))
        self._outcomes: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._decode_workers = decode_workers
        self._stopping = threading.Event()
        self._inference_done = threading.Event()
        self._threads: list[threading.Thread] = []
        self._active = 0  # submitted and not yet settled
        self._active_lock = threading.Condition()
        self._detector_lock = threading.Lock()
        self.stats = PipelineStats()

    # --- control -------------------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self._decode_workers):
            self._spawn(self._decode_loop, f"decode-{n}")
        self._spawn(self._inference_loop, "inference")
        self._spawn(self._delivery_loop, "delivery")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def submit(self, path: Path) -> bool:
        """Queue one image; blocks while the pipeline is full. False once stopping."""
        with self._active_lock:
            self._active += 1
        while not self._stopping.is_set():
            try:
                self._paths.put(path, timeout=0.1)
                return True
            except queue.Full:
                continue
        self._settle_count()
        return False

    def idle(self) -> bool:
        with self._active_lock:
            return self._active == 0

    def active(self) -> int:
        """Images submitted and not yet settled (queued, decoding, inferring, delivering)."""
        with self._active_lock:
            return self._active

    def wait_idle(self, timeout: float | None = None) -> bool:
        with self._active_lock:
            return self._active_lock.wait_for(lambda: self._active == 0, timeout=timeout)

    def stall(self) -> tuple[float, str]:
        """(seconds the current image's result has not been made durable, what fails)."""
        with self._stats_lock:
            if self._stall_since is None:
                return 0.0, ""
            return time.monotonic() - self._stall_since, self._stall_what

    def _count(self, name: str, n: int = 1) -> None:
        with self._stats_lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def set_detector(self, detector: DetectorLike) -> None:
        """Swap the detector (new thresholds or model); takes effect from the next image."""
        with self._detector_lock:
            self._detector = detector

    @property
    def detector(self) -> DetectorLike:
        with self._detector_lock:
            return self._detector

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the image being inferred, deliver everything inspected, leave the rest."""
        deadline = time.monotonic() + timeout
        self._stopping.set()
        for thread in self._threads:
            if thread.name != "delivery":
                thread.join(timeout=max(0.1, deadline - time.monotonic()))
        self._put(self._outcomes, _STOP, force=True)
        for thread in self._threads:
            if thread.name == "delivery":
                thread.join(timeout=max(0.1, deadline - time.monotonic()))
        for sink in self.sinks:
            try:
                sink.close(timeout_s=max(0.5, deadline - time.monotonic()))
            except Exception:
                logger.exception("sink %s: close failed", sink.name)

    def _put(self, q: queue.Queue[Any], item: Any, *, force: bool = False) -> bool:
        while force or not self._stopping.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _settle_count(self) -> None:
        with self._active_lock:
            self._active -= 1
            self._active_lock.notify_all()

    def _abandon(self, path: Path) -> None:
        """Stopping: the image stays in the watch directory for the next run."""
        logger.debug("%s: left for the next run", shown(path.name))
        self._settle_count()

    # --- decode workers ------------------------------------------------------------------------

    def _decode_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                path = self._paths.get(timeout=0.1)
            except queue.Empty:
                continue
            if self._stopping.is_set():
                self._abandon(path)
                break
            outcome = self._decode(path)
            if isinstance(outcome, _Prepared):
                if not self._put(self._prepared, outcome):
                    self._abandon(path)
            elif not self._put(self._outcomes, outcome):
                self._abandon(path)
        self._drain_abandoned(self._paths)

    def _decode(self, path: Path) -> _Prepared | _Outcome:
        admission = admit(path, self.root)
        if not admission.ok:
            return _Outcome(path, reason=admission.reason, vanished=admission.vanished)
        before = _Stat.of(path)
        try:
            decoded = self._read_image(path)
        except ImageError as exc:
            after = _Stat.of(path)
            if after is None and isinstance(exc, ImageUnavailableError):
                return _Outcome(path, reason=f"vanished before it was read ({exc.reason})",
                                vanished=True)
            # a file that changed while it was read is still being written: not a bad image
            retry = isinstance(exc, ImageDecodeError) and after is not None and after != before
            return _Outcome(path, reason=exc.reason, retry=retry)
        except Exception as exc:  # a bug or an unexpected library error: this image only
            logger.exception("%s: unexpected error while reading", shown(path.name))
            return _Outcome(path, reason=f"unexpected error while reading: {exc!r}")
        detector = self.detector
        t0 = time.perf_counter()
        try:
            tensor, letterbox = detector.preprocess(decoded.bgr)
        except Exception as exc:
            logger.exception("%s: preprocessing failed", shown(path.name))
            return _Outcome(path, reason=f"preprocessing failed: {exc!r}")
        return _Prepared(
            path, decoded, tensor, letterbox, detector, (time.perf_counter() - t0) * 1000.0
        )

    def _drain_abandoned(self, q: queue.Queue[Any]) -> None:
        while True:
            try:
                item = q.get_nowait()
            except queue.Empty:
                return
            self._abandon(item if isinstance(item, Path) else item.path)

    # --- inference -----------------------------------------------------------------------------

    def _inference_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                item = self._prepared.get(timeout=0.1)
            except queue.Empty:
                continue
            outcome = self._infer(item)
            self._put(self._outcomes, outcome, force=True)  # inspected: always delivered
        self._drain_abandoned(self._prepared)
        self._inference_done.set()

    def _infer(self, item: _Prepared) -> _Outcome:
        detector = self.detector
        tensor, letterbox, pre_ms = item.tensor, item.letterbox, item.preprocess_ms
        if detector is not item.detector and detector.model.input_size != letterbox.target:
            t0 = time.perf_counter()  # the model changed under this image: letterbox again
            tensor, letterbox = detector.preprocess(item.decoded.bgr)
            pre_ms = (time.perf_counter() - t0) * 1000.0
        try:
            t0 = time.perf_counter()
            raw = detector.infer(tensor)
            t1 = time.perf_counter()
            detections = detector.postprocess(raw, letterbox)
            t2 = time.perf_counter()
        except Exception as exc:
            logger.exception("%s: inference failed", shown(item.path.name))
            return _Outcome(item.path, reason=f"inference failed: {exc!r}")
        timings = {
            "decode": float(item.decoded.decode_ms),
            "preprocess": pre_ms,
            "inference": (t1 - t0) * 1000.0,
            "postprocess": (t2 - t1) * 1000.0,
        }
        timings["total"] = sum(timings.values())
        inspection = Inspection(
            image=item.decoded.info,
            model=detector.model,
            detections=detections,
            conf_threshold=detector.conf_threshold,
            timings_ms=timings,
            time_utc=utc_now(),
        )
        return _Outcome(item.path, inspection=inspection)

    # --- delivery ------------------------------------------------------------------------------

    def _delivery_loop(self) -> None:
        while True:
            item = self._outcomes.get()
            if item is _STOP:
                return
            try:
                if item.inspection is None:
                    self._dispose_failure(item)
                elif self._wait_for_space():
                    self._deliver(item.path, item.inspection)
                else:
                    self._count("kept")
                    logger.warning("%s: not delivered (stopping while disk space is short); left "
                                   "in place for the next run", shown(item.path.name))
            except Exception:
                logger.exception("%s: delivery failed", shown(item.path.name))
            finally:
                self._settle_count()

    def _backoff(self, attempt: int) -> float:
        return min(self.retry_max_s, self.retry_base_s * 2 ** max(0, attempt - 1))

    def _wait_for_space(self) -> bool:
        """Wait while ``space_check`` reports a shortage; False when stopping meanwhile."""
        problem = self._space_check()
        if problem is None:
            return True
        self.disk_paused = True
        self._count("disk_pauses")
        logger.error("disk space low: %s; intake paused (images stay where they are) until "
                     "space returns", problem)
        attempt = 0
        while problem is not None:
            attempt += 1
            if self._stopping.wait(self._backoff(attempt)):
                self.disk_paused = False
                return False
            problem = self._space_check()
        self.disk_paused = False
        logger.warning("disk space available again; intake resumed")
        return True

    def _dispose_failure(self, item: _Outcome) -> None:
        name = shown(item.path.name)
        if item.vanished:
            self.stats.skipped += 1
            logger.warning("%s: skipped: %s", name, item.reason)
            self._on_settled(item.path)
            return
        if item.retry:
            self.stats.retried += 1
            logger.info("%s: changed while being read (%s); will read it again", name, item.reason)
            self._on_retry(item.path)
            return
        try:
            target = self.disposer.fail(item.path, item.reason)
        except FileNotFoundError:
            self.stats.skipped += 1
            logger.warning("%s: skipped: vanished (%s)", name, item.reason)
        except OSError as exc:
            self.stats.failed += 1
            logger.error("%s: failed: %s; and could not be moved: %s", name, item.reason, exc)
        else:
            self.stats.failed += 1
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
            self._count("kept")
            logger.warning("%s: not delivered (stopping, journal not writable); left in place",
                           name)
            self._on_settled(path)
            return
        probe = Delivery(result, inspection, path)
        claimers = [sink for sink in self.sinks if self._claims(sink, probe)]
        others = [sink for sink in self.sinks if sink not in claimers]
        # 1. the sinks that need only the result, with the image still in the watch directory
        delivered = self._send_durably(others, probe, name)
        hold: _ImageHold | None = None
        if delivered and claimers:
            # 2. the sinks that read the image later: held until they release it
            held_path = self._retry_io(name, "could not be held", lambda: self.disposer.hold(path))
            if held_path is None:
                delivered = False
            else:
                hold = _ImageHold(self, held_path, image.name, image.sha256,
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
            self._count("kept")
            where = "KEPT, result not delivered to every sink (left in place; repeat next time)"
        elif hold is not None:
            self._count("held")
            where = "held"
            hold.arm()
        else:
            where = self._finish_now(path, image.name, image.sha256)
        self._log_line(inspection, repeat, where)
        self._on_settled(path)

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
            if not retry or self._stopping.is_set():
                if not self._stopping.is_set():
                    self._unstalled()  # given up on (the caller settles the image): no stall
                return False
            attempt += 1
            self._count("delivery_retries")
            if self._stopping.wait(self._backoff(attempt)):
                # stopping: one last try each, then the image is kept
                pending = [s for s, _ in failed]
                retry = False
                continue
            pending = [s for s, _ in failed]
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
                if self._stopping.is_set():
                    return None
                attempt += 1
                self._count("delivery_retries")
                self._stopping.wait(self._backoff(attempt))
                continue
            if attempt:
                logger.warning("%s: %s no more: done after %d retr%s", name, what, attempt,
                               "y" if attempt == 1 else "ies")
            self._unstalled()
            return value

    def _stalled(self, what: str) -> None:
        with self._stats_lock:
            if self._stall_since is None:
                self._stall_since = time.monotonic()
            self._stall_what = what

    def _unstalled(self) -> None:
        with self._stats_lock:
            self._stall_since = None
            self._stall_what = ""

    def _finish_now(self, path: Path, name: str, sha256: str) -> str:
        """Move a delivered image to done (retried); left in place, journal open, if stopping."""
        shown_name = shown(name)

        def move() -> str:
            target = self.disposer.done(path)
            return "deleted" if target is None else "done"

        try:
            where = self._retry_io(shown_name, "could not be moved to done", move)
        except FileNotFoundError:
            where = "vanished"
        if where is None:
            self._count("kept")
            # no journal end: seen again (this run or the next) it is marked repeat
            return "delivered, NOT moved (left in place; repeat if seen again)"
        self.journal.end(name, sha256, "done" if where != "vanished" else "vanished")
        return where

    def _claims(self, sink: Sink, probe: Delivery) -> bool:
        try:
            return bool(sink.claims_image(probe))
        except Exception:
            logger.exception("sink %s: claims_image failed; not holding for it", sink.name)
            return False

    def _finish(self, path: Path, name: str, sha256: str, *, reason: str = "") -> str:
        """Settle an inspected image: done (or deleted), or failed when a holder gave up."""
        try:
            if reason:
                target: Path | None = self.disposer.fail(path, reason)
                where, state = f"failed ({reason})", "failed"
            else:
                target = self.disposer.done(path)
                where, state = ("deleted" if target is None else "done"), "done"
        except FileNotFoundError:
            where, state = "vanished", "vanished"
        except OSError as exc:
            # the journal entry stays open: the next run finds the image held and resumes it
            logger.error("%s: could not be moved: %s; it stays where it is", shown(name), exc)
            return f"NOT moved ({exc})"
        if state == "failed":
            self._count("failed")
        self.journal.end(name, sha256, state)
        return where

    def resume_held(self) -> None:
        """Images a previous run held for upload: offered to the sinks, else settled as done."""
        records = {rec.path: rec for rec in self.journal.held()}
        for path in self.disposer.held_files():
            rec = records.get(path)
            if rec is None:
                logger.warning("%s: held by an earlier run, no journal entry; settling it",
                               shown(path.name))
                self.disposer.done(path)
                continue
            hold = _ImageHold(self, path, rec.name, rec.sha256, [])
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

    def _log_line(self, inspection: Inspection, repeat: bool, where: str) -> None:
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


class _ImageHold:
    """Custody of one held image; settled when every claiming sink has released it."""

    def __init__(
        self, pipeline: Pipeline, path: Path, name: str, sha256: str, sinks: Sequence[str]
    ) -> None:
        self._pipeline = pipeline
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
                self._pipeline._count("held_now")
        self._maybe_settle()

    def _maybe_settle(self) -> None:
        with self._lock:
            if self._settled or not self._armed or self._waiting:
                return
            self._settled = True
            reason = "; ".join(self._failures)
        where = self._pipeline._finish(self.path, self.name, self.sha256, reason=reason)
        if self._counted and not where.startswith("NOT moved"):  # else it is still held
            self._pipeline._count("held_now", -1)
        log = logger.warning if reason else logger.info
        log("%s: released by its sinks -> %s", shown(self.name), where)
