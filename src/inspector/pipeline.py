"""The inspection loop: decode -> letterbox -> infer -> decode boxes -> sinks -> disposition.

Three kinds of threads, joined by bounded queues so a full stage makes the previous one wait
(nothing is dropped):

    submit() -> [paths] -> decode workers (read, letterbox) -> [prepared] -> inference workers
             -> [outcomes] -> delivery thread (journal, sinks, disposition, one log line)

Inference workers share ONE detector (one session, weights loaded once): on a burst each runs its
own image, a single image gets every intra-op thread; results are handed on in the order the
images were taken (a worker done early waits for its turn). [prepared] holds the letterbox
content (uint8, at most 1.2 MiB at 640x640), neither the decoded frame (the outbox re-reads the
file) nor the 4.7 MiB float model input, which each inference worker fills right before its run
(``preprocess.content_tensor``) in a tensor of its own that it keeps from image to image (a new
one each time cost ~1,150 page faults): the memory bound is in docs/performance.md.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from inspector.conventions import shown, utc_now
from inspector.delivery import DeliveryDesk, Outcome, PipelineStats
from inspector.drift import grey_stats
from inspector.errors import ImageDecodeError, ImageError, ImageUnavailableError
from inspector.preprocess import content_tensor, fit_content
from inspector.sources import admit
from inspector.types import (
    Detections,
    ImageInfo,
    ImageStats,
    Inspection,
    Letterbox,
    ModelInfo,
    Size,
)

logger = logging.getLogger(__name__)


class DetectorLike(Protocol):
    """What the pipeline needs of ``inspector.detector.Detector``."""

    @property
    def model(self) -> ModelInfo: ...
    @property
    def conf_threshold(self) -> float: ...
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


class ReadImage(Protocol):
    """``imageio.read_image`` as the service binds it; ``fit``: the model input (reduced decode)."""

    def __call__(self, path: Path, *, fit: Size | None = None) -> DecodedLike: ...


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
class _Prepared:  # what inference needs of one image: the letterbox content, not the frame
    path: Path
    info: ImageInfo
    decode_ms: float
    content: np.ndarray  # (h, w, 3) uint8 at the letterbox size: <= 1.2 MiB at 640x640
    letterbox: Letterbox
    detector: DetectorLike
    preprocess_ms: float  # the content's part; the tensor's is added by the inference worker
    image_stats: ImageStats | None = None  # brightness/contrast of the decoded frame (drift)


_STOP = object()
_EMPTY = np.zeros((0, 0, 3), np.uint8)


class Pipeline:
    """Inspects the paths it is given; see the module docstring for the threads."""

    def __init__(
        self,
        *,
        detector: DetectorLike,
        read_image: ReadImage,
        desk: DeliveryDesk,
        root: Path,
        queue_size: int = 8,
        decode_workers: int = 1,
        inference_workers: int = 1,
    ) -> None:
        self._detector = detector
        self._read_image = read_image
        self.desk = desk  # delivery: the service's composition root builds it
        self.root = root
        self._stopping = desk.stopping
        self.sinks = desk.sinks
        self.stats: PipelineStats = desk.stats
        self.stall = desk.stall
        self.resume_held = desk.resume_held
        self._paths: queue.Queue[Path] = queue.Queue(maxsize=queue_size)
        self._inference_workers = max(1, inference_workers)
        self._prepared: queue.Queue[_Prepared] = queue.Queue(
            maxsize=max(2, decode_workers, self._inference_workers))
        self._outcomes: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._decode_workers = decode_workers
        self._threads: list[threading.Thread] = []
        self._active = 0  # submitted and not yet settled
        self._active_lock = threading.Condition()
        self._detector_lock = threading.Lock()
        self._take_lock, self._turn, self._tickets = threading.Lock(), threading.Condition(), [0, 0]
        self._worker = threading.local()  # each inference worker's model input, reused

    # --- control -------------------------------------------------------------------------------

    def start(self) -> None:
        for n in range(self._decode_workers):
            self._spawn(self._decode_loop, f"decode-{n}")
        for n in range(self._inference_workers):
            self._spawn(self._inference_loop, f"inference-{n}")
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

    @property
    def device(self) -> str:
        return self.desk.device

    @device.setter
    def device(self, device: str) -> None:
        self.desk.device = device

    @property
    def disk_paused(self) -> bool:
        return self.desk.disk_paused

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

    def _decode(self, path: Path) -> _Prepared | Outcome:
        admission = admit(path, self.root)
        if not admission.ok:
            return Outcome(path, reason=admission.reason, vanished=admission.vanished)
        before = _Stat.of(path)
        detector = self.detector
        try:
            decoded = self._read_image(path, fit=detector.model.input_size)
        except ImageError as exc:
            after = _Stat.of(path)
            if after is None and isinstance(exc, ImageUnavailableError):
                return Outcome(path, reason=f"vanished before it was read ({exc.reason})",
                                vanished=True)
            # a file that changed while it was read is still being written: not a bad image
            retry = isinstance(exc, ImageDecodeError) and after is not None and after != before
            return Outcome(path, reason=exc.reason, retry=retry)
        except Exception as exc:  # a bug or an unexpected library error: this image only
            logger.exception("%s: unexpected error while reading", shown(path.name))
            return Outcome(path, reason=f"unexpected error while reading: {exc!r}")
        t0 = time.perf_counter()
        try:
            content, letterbox = fit_content(decoded.bgr, detector.model.input_size,
                                             decoded.info.size)
        except Exception as exc:
            logger.exception("%s: preprocessing failed", shown(path.name))
            return Outcome(path, reason=f"preprocessing failed: {exc!r}")
        preprocess_ms = (time.perf_counter() - t0) * 1000.0
        try:  # the drift signals' brightness and contrast (about 0.1 ms on the reduced frame)
            stats: ImageStats | None = grey_stats(decoded.bgr)
        except Exception:
            logger.exception("%s: brightness statistics failed", shown(path.name))
            stats = None
        return _Prepared(path, decoded.info, float(decoded.decode_ms), content, letterbox,
                         detector, preprocess_ms, stats)

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
            with self._take_lock:  # tickets in the order the images are taken: [issued, next]
                try:
                    item = self._prepared.get(timeout=0.1)
                except queue.Empty:
                    continue
                ticket, self._tickets[0] = self._tickets[0], self._tickets[0] + 1
            outcome = self._infer(item)
            with self._turn:  # hand on in order; the earlier images are being inferred now
                self._turn.wait_for(lambda t=ticket: self._tickets[1] == t)  # type: ignore[misc]
                self._put(self._outcomes, outcome, force=True)  # inspected: always delivered
                self._tickets[1] += 1
                self._turn.notify_all()
        self._drain_abandoned(self._prepared)

    def _infer(self, item: _Prepared) -> Outcome:
        detector = self.detector
        if detector is not item.detector and detector.model.input_size != item.letterbox.target:
            again = self._decode(item.path)  # the model input changed: read and letterbox again
            if isinstance(again, Outcome):
                return again
            item = again
            detector = item.detector
        try:
            tp = time.perf_counter()
            tensor = content_tensor(item.content, item.letterbox,  # the float input, filled here
                                    out=getattr(self._worker, "tensor", None))
            self._worker.tensor = tensor
            item.content = _EMPTY  # the queue's copy is not needed any more
            t0 = time.perf_counter()
            raw = detector.infer(tensor)
            t1 = time.perf_counter()
            detections = detector.postprocess(raw, item.letterbox)
            t2 = time.perf_counter()
        except Exception as exc:
            logger.exception("%s: inference failed", shown(item.path.name))
            return Outcome(item.path, reason=f"inference failed: {exc!r}")
        timings = {"decode": item.decode_ms,
                   "preprocess": item.preprocess_ms + (t0 - tp) * 1000.0,
                   "inference": (t1 - t0) * 1000.0, "postprocess": (t2 - t1) * 1000.0}
        timings["total"] = sum(timings.values())
        inspection = Inspection(image=item.info, model=detector.model, detections=detections,
                                conf_threshold=detector.conf_threshold, timings_ms=timings,
                                time_utc=utc_now(), image_stats=item.image_stats)
        return Outcome(item.path, inspection=inspection)

    # --- delivery ------------------------------------------------------------------------------

    def _delivery_loop(self) -> None:
        while True:
            item = self._outcomes.get()
            if item is _STOP:
                return
            try:
                self.desk.handle(item)
            finally:
                self._settle_count()
