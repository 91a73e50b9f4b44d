"""The composition root of ``inspector run``: picks the concrete source, detector and sinks.

    service = build_service(settings)                # standalone sinks unless told otherwise
    service.install_signal_handlers()                # SIGTERM/SIGINT -> graceful stop
    service.run()                                    # until stopped (or drained, drain=True)

The Greengrass side plugs in here: it builds ``Settings`` from the component configuration,
hands ``build_service`` its own sinks (``sinks=...``) and calls ``service.apply_settings(new)``
when the configuration changes; thresholds, topics and the model are applied between two images.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from inspector.conventions import shown
from inspector.delivery import DeliveryDesk, PipelineStats, ToResult
from inspector.diskspace import MIB, DiskGuard
from inspector.disposition import Disposer, Journal
from inspector.errors import ConfigError, ModelIntegrityError, SinkError
from inspector.housekeeping import DAY_S, Housekeeper, Retention
from inspector.lock import FolderLock
from inspector.pipeline import DetectorLike, Pipeline, ReadImage
from inspector.settings import RELOAD_KEYS, RESTART_KEYS, ServicePaths, Settings, resolve_paths
from inspector.sinks.base import Sink
from inspector.sources import DirectorySource, FileFilter, Source, relative_name
from inspector.types import Size

logger = logging.getLogger(__name__)

# The pipeline's Python threads (watcher, decode worker, inference workers, delivery, the MQTT
# publisher, the IPC client's callbacks) each hold the GIL only briefly, but a thread that wants
# it back waits up to the interpreter's switch interval (5 ms by default) while another one runs
# Python code: an inference worker returning from ONNX Runtime, or about to enter it, leaves its
# cores idle meanwhile. Measured with 0.5 ms (benchmarks/ab_service.py, fp32, 2 threads, service
# burst, alternated rounds): 17.1 -> 19.8 img/s (4 rounds) and 18.8 -> 20.5 img/s (6 rounds).
GIL_SWITCH_INTERVAL_S = 0.0005

GREENGRASS_SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
DetectorFactory = Callable[[Settings], DetectorLike]


def is_greengrass(environ: Mapping[str, str]) -> bool:
    return bool(environ.get(GREENGRASS_SOCKET_ENV))


def device_name(settings: Settings, environ: Mapping[str, str]) -> str:
    return settings.DeviceName or environ.get("AWS_IOT_THING_NAME") or socket.gethostname()


def inference_workers(settings: Settings) -> int:
    """How many threads run the model at once: InferenceWorkers, 0 = one per CPU core."""
    return settings.InferenceWorkers or os.cpu_count() or 1


def load_detector(settings: Settings, environ: Mapping[str, str] | None = None) -> DetectorLike:
    """The detector the settings name: ModelPath (checked against ModelSha256, or refused without
    one unless AllowUnverifiedModel), else the model component's file of ModelPrecision
    (``$INSPECTOR_MODEL_DIR/model.json``, checked against its sha256; results name the component
    version), else the bundled default of ModelPrecision (checked against its manifest)."""
    from inspector.detector import Detector
    from inspector.integrity import model_from_environment

    env = os.environ if environ is None else environ
    expected = settings.ModelSha256
    name = version = None
    if settings.ModelPath:
        path = Path(settings.ModelPath).expanduser()
        if settings.ModelPrecision != "fp32":
            logger.warning("ModelPrecision %s is ignored: ModelPath names the file (%s)",
                           settings.ModelPrecision, path)
        if not expected:
            from inspector.models import manifest_sha256

            expected = manifest_sha256(path)
            if expected:
                logger.info("model %s: verifying against the manifest.json beside it", path)
        if not expected:
            if not settings.AllowUnverifiedModel:
                raise ModelIntegrityError(
                    path, "ModelPath is set without ModelSha256 (and no manifest.json beside it "
                    "lists it): refusing to load a model that cannot be verified. Set "
                    "ModelSha256 to the file's sha256 (sha256sum FILE), or "
                    "AllowUnverifiedModel: true to load it unchecked")
            logger.warning("model %s is loaded UNVERIFIED (ModelPath without ModelSha256, "
                           "AllowUnverifiedModel is true): any file at that path is run", path)
    elif (ref := model_from_environment(env, settings.ModelPrecision)) is not None:
        path, expected = ref.path, expected or ref.sha256
        if ref.version:  # from model.json: results name the model component version
            name, version = ref.name or None, ref.version
            logger.info("model component %s %s: %s file %s", ref.component or "?", ref.version,
                        ref.precision, ref.path.name)
    else:  # the bundled default: checked against the sha256 its manifest declares
        from inspector.models import default_model

        path, declared = default_model(precision=settings.ModelPrecision)
        expected = expected or declared
    detector: DetectorLike = Detector.from_path(
        path,
        providers=settings.ExecutionProviders,
        intra_op_threads=settings.IntraOpThreads or None,
        inter_op_threads=settings.InterOpThreads or None,
        thresholds=settings.thresholds,
        name=name,
        version=version,
        expected_sha256=expected,  # checked on the very bytes the session is made from
        concurrent_runs=inference_workers(settings),
    )
    return detector


def standalone_sinks(settings: Settings, paths: ServicePaths) -> list[Sink]:
    from inspector.drift import DriftSink
    from inspector.sinks.local import ConsoleSink, JsonlSink, OutboxSink
    from inspector.sinks.review import ReviewSink

    return [
        JsonlSink(paths.results),
        OutboxSink(paths.outbox, annotate=settings.AnnotateOutbox),
        ReviewSink(paths.review, settings),  # UncertainUpload: kept in ReviewDirectory
        DriftSink(settings.UncertainBand),  # logged every MetricsIntervalSeconds (log_drift)
        ConsoleSink(),
    ]


EXIT_STALLED = 6  # results could not be made durable for SinkStallSeconds (images kept)


@dataclass(frozen=True)
class RunReport:
    stats: PipelineStats
    seconds: float
    stopped_by: str  # "signal", "drained", "request", "stalled"
    stall: str = ""  # when stopped_by == "stalled": what could not be made durable

    def exit_message(self, watch: Path) -> str:
        """The last line of a stalled run (exit code ``EXIT_STALLED``)."""
        return (f"exiting with code {EXIT_STALLED}: results could not be made durable ("
                f"{self.stall}); {self.stats.kept} inspected image(s) kept undelivered in "
                f"{shown(watch)}, {self.stats.held_now} still held; nothing was moved to done "
                "without its result")


class Service:
    """A running inspection service: source -> pipeline -> sinks, with a graceful stop."""

    def __init__(
        self,
        settings: Settings,
        *,
        detector: DetectorLike,
        sinks: Sequence[Sink],
        read_image: ReadImage,
        to_result: ToResult,
        detector_factory: DetectorFactory | None = None,
        source: Source | None = None,
        drain: bool = False,
        device: str = "",
        paths: ServicePaths | None = None,
    ) -> None:
        self.settings = settings
        self.paths = paths or resolve_paths(settings)
        self.drain = drain
        self.sinks = list(sinks)
        # standalone: the drift signals (a DriftSink among the sinks) are logged every
        # MetricsIntervalSeconds; under Greengrass the metrics message takes them instead
        self.log_drift = False
        self._drift_due = 0.0
        self._detector_factory = detector_factory
        self._stop = threading.Event()
        self._stopped_by = "request"
        self._created = time.monotonic()
        self._settings_lock = threading.Lock()
        root = Path(os.path.abspath(self.paths.watch))
        self.root = root
        self.lock = FolderLock(root)
        self.source: Source = source or DirectorySource(
            root,
            FileFilter(
                root,
                extensions=settings.Extensions,
                recursive=settings.Recursive,
                ignored=(*self.paths.own_folders(), self.paths.results),
            ),
            watch=not drain,
            stable_s=settings.StableSeconds,
            rescan_s=settings.RescanSeconds,
            on_root_back=self._watch_folder_back,
        )
        self.disposer = Disposer(
            root=root,
            done=self.paths.done,
            failed=self.paths.failed,
            held=self.paths.held,
            action=settings.ProcessedAction,
        )
        self.journal = Journal(
            self.paths.journal, max_bytes=int(settings.JournalMaxMegabytes * MIB)
        )
        self.housekeeper = Housekeeper(
            lambda: self.retention(), lambda: self.settings.HousekeepingSeconds
        )
        self.disk_guard = DiskGuard(
            [self.paths.done, self.paths.results, self.paths.state / "spool", self.paths.state],
            int(settings.MinFreeMegabytes * MIB),
        )
        self._stall = ""
        desk = DeliveryDesk(
            to_result=to_result,
            sinks=self.sinks,
            disposer=self.disposer,
            journal=self.journal,
            device=device or settings.DeviceName or socket.gethostname(),
            on_settled=self.source.settled,
            on_retry=self.source.retry,
            space_check=self.disk_guard,
        )
        self.pipeline = Pipeline(
            detector=detector,
            read_image=read_image,
            desk=desk,
            root=root,
            queue_size=settings.QueueSize,
            decode_workers=settings.DecodeWorkers,
            inference_workers=inference_workers(settings),
        )

    @property
    def stats(self) -> PipelineStats:
        return self.pipeline.stats

    def retention(self) -> list[Retention]:
        """What housekeeping keeps, from the current settings (they may change live)."""
        s, paths = self.settings, self.paths
        # never removed: undelivered (held) and uninspectable (failed) images, the service's own
        # files, and the watch folder's own images should a retention folder hold it
        # (``trim`` makes the paths absolute; the folder is here, to compare it with the root)
        keep = (paths.failed, paths.held, paths.journal, paths.results, paths.state / "spool")
        out = []
        for label, where, days, megabytes in (
            ("done", paths.done, s.DoneRetentionDays, s.DoneMaxMegabytes),
            ("outbox", paths.outbox, s.OutboxRetentionDays, s.OutboxMaxMegabytes),
            ("review", paths.review, s.ReviewRetentionDays, s.ReviewMaxMegabytes),
        ):
            folder = Path(os.path.abspath(where))
            guard = (*keep, self.root) if folder in self.root.parents else keep
            out.append(Retention(label, folder, days * DAY_S, int(megabytes * MIB), guard))
        return out

    def skipped(self) -> int:
        """Images skipped: vanished before reading (pipeline) or refused by extension (source)."""
        return self.pipeline.stats.skipped + self.source.skipped()

    def _watch_folder_back(self) -> None:
        """The watch folder returned (maybe as a new folder): lock it and make our folders."""
        self.lock.rearm()
        self.disposer.prepare()

    def metrics(self) -> dict[str, Any]:
        """A snapshot for the metrics topic (counts since start; JSON types only)."""
        s = self.pipeline.stats
        stalled_s, stall = self.pipeline.stall()
        return {
            "device": self.pipeline.device,
            "uptime_s": round(time.monotonic() - self._created, 1),
            "processed": s.processed,
            "defects": s.defects,
            "failed": s.failed,
            "skipped": self.skipped(),
            "repeats": s.repeats,
            "held": s.held,
            "held_now": s.held_now,
            "kept": s.kept,
            "retried": s.retried,
            "delivery_retries": s.delivery_retries,
            "sink_errors": dict(s.sink_errors),
            "stalled_s": round(stalled_s, 1),
            "stall": stall,
            "disk_paused": self.pipeline.disk_paused,
            "disk_pauses": s.disk_pauses,
            "sinks": self.sink_status(),
            "in_flight": self.pipeline.active(),
            "model": self.pipeline.detector.model.name,
        }

    def sink_status(self) -> dict[str, dict[str, int]]:
        out = {}
        for sink in self.sinks:
            try:
                status = sink.status()
            except Exception:
                logger.exception("sink %s: status failed", sink.name)
                continue
            if status:
                out[sink.name] = dict(status)
        return out

    def request_stop(self, why: str = "request") -> None:
        self._stopped_by = why
        self._stop.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM (Greengrass stopping the component) and SIGINT stop gracefully."""

        def handler(signum: int, frame: FrameType | None) -> None:
            logger.info("%s received: finishing the image in flight",
                        signal.Signals(signum).name)
            self.request_stop("signal")

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def check_watch(self) -> None:
        """Raise ConfigError unless ImageDirectory is a directory (checked before anything)."""
        if not self.paths.watch.is_dir():
            raise ConfigError(
                f"ImageDirectory {self.paths.watch} does not exist or is not a directory",
                [("ImageDirectory", "not a directory")],
            )

    def run(self) -> RunReport:
        """Inspect until stopped (or, with ``drain``, until the directory is empty)."""
        started = time.monotonic()
        self.check_watch()
        self.lock.acquire()  # FolderBusyError (a ConfigError: exit 2) when another has it
        try:
            self.preflight()
            self.paths.state.mkdir(parents=True, exist_ok=True)
            self.disposer.prepare()
            self.journal.open()
        except BaseException:
            self.lock.release()
            raise
        self.housekeeper.start()
        self.pipeline.start()
        self.pipeline.resume_held()
        self.source.start(self.pipeline.submit)
        logger.info(
            "inspecting %s (%s) with model %s; results: %s",
            shown(self.paths.watch),
            "drain" if self.drain else "watching",
            self.pipeline.detector.model.name,
            ", ".join(sink.name for sink in self.sinks),
        )
        try:
            while not self._stop.wait(timeout=0.1):
                if self.drain and self.source.idle() and self.pipeline.idle():
                    self._stopped_by = "drained"
                    break
                self._maybe_log_drift()
                stalled_s, what = self.pipeline.stall()
                if stalled_s >= self.settings.SinkStallSeconds:
                    self._stopped_by, self._stall = "stalled", what
                    logger.error("results not durable for %.0f s (SinkStallSeconds %g): %s; "
                                 "stopping, the images are kept", stalled_s,
                                 self.settings.SinkStallSeconds, what)
                    break
        finally:
            self._shutdown()
        seconds = time.monotonic() - started
        return RunReport(self.pipeline.stats, seconds, self._stopped_by, self._stall)

    def _maybe_log_drift(self, *, final: bool = False) -> None:
        """Standalone: one INFO line with the drift signals of the interval (when it saw
        images), the metrics message's ``drift`` object, every MetricsIntervalSeconds."""
        interval = self.settings.MetricsIntervalSeconds
        if not self.log_drift or interval <= 0:
            return
        now = time.monotonic()
        if not self._drift_due:
            self._drift_due = now + interval
        if now < self._drift_due and not final:
            return
        self._drift_due = now + interval
        from inspector.drift import DriftSink

        for sink in self.sinks:
            if isinstance(sink, DriftSink):
                summary = sink.take()
                if summary["images"]:
                    logger.info("drift signals since the last line: %s",
                                json.dumps(summary, separators=(",", ":")))

    def preflight(self) -> None:
        """Before any image is touched: every sink can deliver at all (ConfigError, naming the
        file and the reason, when not: a results file that is a directory or read-only)."""
        problems = []
        for sink in self.sinks:
            try:
                sink.preflight()
            except SinkError as exc:
                problems.append((sink.name, str(exc)))
        if problems:
            raise ConfigError(
                "cannot deliver results: " + "; ".join(f"{m}" for _, m in problems), problems
            )

    def _shutdown(self) -> None:
        budget = self.settings.ShutdownSeconds
        t0 = time.monotonic()
        self.pipeline.stop(timeout=budget * 0.8)
        self._maybe_log_drift(final=True)
        self.source.stop()
        self.housekeeper.stop(timeout=1.0)
        self.journal.close()
        self.lock.release()
        s = self.pipeline.stats
        sinks = "; ".join(
            f"{name}: " + ", ".join(f"{v} {k}" for k, v in status.items())
            for name, status in self.sink_status().items()
        )
        log = logger.warning if (s.kept or self._stopped_by == "stalled") else logger.info
        log(
            "stopped (%s) in %.2f s: %d processed (%d defect, %d repeat), %d failed, "
            "%d skipped, %d still held (%d held in all), %d kept undelivered%s",
            self._stopped_by, time.monotonic() - t0, s.processed, s.defects, s.repeats,
            s.failed, self.skipped(), s.held_now, s.held, s.kept, f"; {sinks}" if sinks else "",
        )

    def apply_settings(self, new: Settings) -> frozenset[str]:
        """Apply a configuration change between two images.

        Returns the changed keys that need a restart to take effect (logged; not applied).
        Raises ``ModelError`` (the old detector stays) when a new model cannot be loaded.
        """
        with self._settings_lock:
            old = self.settings
            changed = old.changed_keys(new)
            if not changed:
                return frozenset()
            if changed & RELOAD_KEYS:  # a new session (its thresholds from ``new``)
                if self._detector_factory is None:
                    raise RuntimeError("this service was built without a detector factory")
                self.pipeline.set_detector(self._detector_factory(new))
            elif new.thresholds != old.thresholds:  # the same session
                current: Any = self.pipeline.detector
                self.pipeline.set_detector(current.with_thresholds(new.thresholds))
            if "MinFreeMegabytes" in changed:
                self.disk_guard.min_free_bytes = int(new.MinFreeMegabytes * MIB)
            if "JournalMaxMegabytes" in changed:
                self.journal.max_bytes = int(new.JournalMaxMegabytes * MIB)
            if "DeviceName" in changed and new.DeviceName:
                self.pipeline.device = new.DeviceName
            for sink in self.sinks:
                try:
                    sink.reconfigure(new)
                except Exception:
                    logger.exception("sink %s: reconfigure failed", sink.name)
            self.settings = new
            restart = changed & RESTART_KEYS
            logger.info("settings changed: %s", ", ".join(sorted(changed)))
            if restart:
                logger.warning("restart needed for: %s", ", ".join(sorted(restart)))
            return restart


def build_service(
    settings: Settings,
    *,
    sinks: Sequence[Sink] | None = None,
    drain: bool = False,
    environ: Mapping[str, str] | None = None,
    detector_factory: DetectorFactory | None = None,
    paths: ServicePaths | None = None,
) -> Service:
    """Load the model, pick the sinks, wire everything. Raises ModelError / ConfigError.
    ``paths``: ``resolve_paths(settings)`` when the caller has it already."""
    from inspector import malloc
    from inspector.imageio import read_image
    from inspector.result import to_result

    env = dict(os.environ if environ is None else environ)
    malloc.tune(env)  # before the model and the first images: see inspector.malloc
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    factory = detector_factory or (lambda s: load_detector(s, env))
    detector = factory(settings)
    paths = paths or resolve_paths(settings)
    standalone = sinks is None
    if sinks is None:
        if is_greengrass(env):
            logger.warning("Greengrass environment found but no Greengrass sinks were given; "
                           "using the standalone sinks")
        sinks = standalone_sinks(settings, paths)
    max_pixels = settings.MaxImagePixels
    root = Path(os.path.abspath(paths.watch))

    def read(path: Path, *, fit: Size | None = None) -> Any:
        # results name an image by its path below the watch folder (line2/a.jpg in recursive
        # mode), so same-named files in two subfolders stay two images (journal, outbox too)
        return read_image(path, max_pixels=max_pixels, name=relative_name(root, path), fit=fit)

    service = Service(
        settings,
        detector=detector,
        sinks=sinks,
        read_image=read,
        to_result=to_result,
        detector_factory=factory,
        drain=drain,
        device=device_name(settings, env),
        paths=paths,
    )
    service.log_drift = standalone  # the Greengrass metrics message takes them otherwise
    return service
