"""The inspection loop: decode -> letterbox -> infer -> decode boxes -> sinks -> disposition.

Three kinds of threads, joined by bounded queues so a full stage makes the previous one wait
(nothing is dropped):

    submit() -> [paths] -> decode workers (read, letterbox) -> [prepared] -> inference thread
             -> [outcomes] -> delivery thread (journal, sinks, disposition, one log line)

Decoding overlaps inference, so a burst runs at the model's own pace; sinks run off the inference
thread. Errors are isolated per image (the image is moved to the failed folder with the reason)
and per sink (logged; the other sinks still get the result).

On ``stop`` the image being inferred and every inspected image are delivered; images only queued
or decoded are left where they are (still in the watch directory) for the next run.
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
    held: int = 0
    retried: int = 0
    sink_errors: dict[str, int] = field(default_factory=dict)


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
                if item.inspection is not None:
                    self._deliver(item.path, item.inspection)
                else:
                    self._dispose_failure(item)
            except Exception:
                logger.exception("%s: delivery failed", shown(item.path.name))
            finally:
                self._settle_count()

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
        repeat = self.journal.is_repeat(image.name, image.sha256)
        result = self._to_result(inspection, device=self.device, repeat=repeat)
        self.journal.begin(image.name, image.sha256)
        probe = Delivery(result, inspection, path)
        claimers = [sink for sink in self.sinks if self._claims(sink, probe)]
        delivery = probe
        hold: _ImageHold | None = None
        if claimers:
            held_path = self.disposer.hold(path)
            hold = _ImageHold(self, held_path, image.name, image.sha256, [s.name for s in claimers])
            self.journal.hold(image.name, image.sha256, held_path, result)
            delivery = Delivery(result, inspection, held_path, hold)
        for sink in self.sinks:
            try:
                sink.send(delivery)
            except Exception as exc:
                self.stats.sink_errors[sink.name] = self.stats.sink_errors.get(sink.name, 0) + 1
                logger.error("%s: sink %s failed: %s", shown(image.name), sink.name, exc,
                             exc_info=not isinstance(exc, SinkError))
                if hold is not None and sink in claimers:
                    hold.release(sink.name, ok=False, reason=f"send failed: {exc}")
        self.stats.processed += 1
        self.stats.defects += inspection.verdict == "defect"
        self.stats.repeats += repeat
        if hold is not None:
            self.stats.held += 1
            where = "held"
            hold.arm()
        else:
            where = self._finish(path, image.name, image.sha256)
        self._log_line(inspection, repeat, where)
        self._on_settled(path)

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
            logger.error("%s: could not be moved: %s", shown(name), exc)
            where, state = "not moved", "error"
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
            logger.info("%s: held by an earlier run; %s", shown(rec.name),
                        "resumed" if hold.waiting() else "no sink resumed it, settling")
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
        self._maybe_settle()

    def _maybe_settle(self) -> None:
        with self._lock:
            if self._settled or not self._armed or self._waiting:
                return
            self._settled = True
            reason = "; ".join(self._failures)
        where = self._pipeline._finish(self.path, self.name, self.sha256, reason=reason)
        log = logger.warning if reason else logger.info
        log("%s: released by its sinks -> %s", shown(self.name), where)
