"""The composition root of ``inspector run``: picks the concrete source, detector and sinks.

    service = build_service(settings)                # standalone sinks unless told otherwise
    service.install_signal_handlers()                # SIGTERM/SIGINT -> graceful stop
    service.run()                                    # until stopped (or drained, drain=True)

The Greengrass side plugs in here: it builds ``Settings`` from the component configuration,
hands ``build_service`` its own sinks (``sinks=...``) and calls ``service.apply_settings(new)``
when the configuration changes; thresholds, topics and the model are applied between two images.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from inspector.disposition import Disposer, Journal
from inspector.pipeline import DetectorLike, Pipeline, PipelineStats, ReadImage, ToResult
from inspector.settings import LIVE_KEYS, ServicePaths, Settings, resolve_paths
from inspector.sinks.base import Sink
from inspector.sources import DirectorySource, FileFilter, Source, shown

logger = logging.getLogger(__name__)

GREENGRASS_SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
DetectorFactory = Callable[[Settings], DetectorLike]

# Settings whose change means a new detector (new session); thresholds alone reuse the session.
_MODEL_KEYS = frozenset(
    {"ModelPath", "ModelSha256", "ModelPrecision", "AllowUnverifiedModel", "MaxDetections",
     "ExecutionProviders", "IntraOpThreads", "InterOpThreads"}
)
_THRESHOLD_KEYS = frozenset({"ConfidenceThreshold", "IouThreshold"})


def is_greengrass(environ: Mapping[str, str]) -> bool:
    return bool(environ.get(GREENGRASS_SOCKET_ENV))


def device_name(settings: Settings, environ: Mapping[str, str]) -> str:
    return settings.DeviceName or environ.get("AWS_IOT_THING_NAME") or socket.gethostname()


def load_detector(settings: Settings, environ: Mapping[str, str] | None = None) -> DetectorLike:
    """The detector the settings name: ModelPath (checked against ModelSha256, or refused without
    one unless AllowUnverifiedModel), else the model component's file of ModelPrecision
    (``$INSPECTOR_MODEL_DIR/model.json``, checked against its sha256; results name the component
    version), else the bundled default of ModelPrecision."""
    from inspector.detector import Detector
    from inspector.errors import ModelIntegrityError
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
            expected = _manifest_sha256(path)
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
    else:
        from inspector.models import default_model_path

        path = default_model_path(precision=settings.ModelPrecision)
    detector: DetectorLike = Detector.from_path(
        path,
        providers=settings.ExecutionProviders,
        intra_op_threads=settings.IntraOpThreads or None,
        inter_op_threads=settings.InterOpThreads or None,
        conf_threshold=settings.ConfidenceThreshold,
        iou_threshold=settings.IouThreshold,
        max_det=settings.MaxDetections,
        name=name,
        version=version,
        expected_sha256=expected,  # checked on the very bytes the session is made from
    )
    return detector


def _manifest_sha256(path: Path) -> str:
    """The sha256 a models manifest.json in the same folder (the bundled models') declares for
    ``path``; "" when there is none."""
    from inspector.errors import ModelError
    from inspector.models import MANIFEST_NAME, load_manifest

    if not (path.parent / MANIFEST_NAME).is_file():
        return ""
    try:
        entry = load_manifest(path.parent).entry(path.name)
    except ModelError as exc:
        logger.warning("cannot use %s to verify %s: %s", MANIFEST_NAME, path, exc)
        return ""
    if entry is None:
        return ""
    logger.info("model %s: verifying against %s", path, path.parent / MANIFEST_NAME)
    return entry.sha256


def standalone_sinks(settings: Settings, paths: ServicePaths) -> list[Sink]:
    from inspector.sinks.local import ConsoleSink, JsonlSink, OutboxSink

    return [
        JsonlSink(paths.results),
        OutboxSink(paths.outbox, annotate=settings.AnnotateOutbox),
        ConsoleSink(),
    ]


@dataclass(frozen=True)
class RunReport:
    stats: PipelineStats
    seconds: float
    stopped_by: str  # "signal", "drained", "request"


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
    ) -> None:
        self.settings = settings
        self.paths = resolve_paths(settings)
        self.drain = drain
        self.sinks = list(sinks)
        self._detector_factory = detector_factory
        self._stop = threading.Event()
        self._stopped_by = "request"
        self._created = time.monotonic()
        self._settings_lock = threading.Lock()
        root = Path(os.path.abspath(self.paths.watch))
        self.source: Source = source or DirectorySource(
            root,
            FileFilter(
                root,
                extensions=settings.Extensions,
                recursive=settings.Recursive,
                ignored=self.paths.own_folders(),
            ),
            watch=not drain,
            stable_s=settings.StableSeconds,
            rescan_s=settings.RescanSeconds,
        )
        self.disposer = Disposer(
            root=root,
            done=self.paths.done,
            failed=self.paths.failed,
            held=self.paths.held,
            action=settings.ProcessedAction,
        )
        self.journal = Journal(self.paths.journal)
        self.pipeline = Pipeline(
            detector=detector,
            read_image=read_image,
            to_result=to_result,
            sinks=self.sinks,
            disposer=self.disposer,
            journal=self.journal,
            root=root,
            device=device or settings.DeviceName or socket.gethostname(),
            queue_size=settings.QueueSize,
            decode_workers=settings.DecodeWorkers,
            on_settled=self.source.settled,
            on_retry=self.source.retry,
        )

    @property
    def stats(self) -> PipelineStats:
        return self.pipeline.stats

    def metrics(self) -> dict[str, Any]:
        """A snapshot for the metrics topic (counts since start; JSON types only)."""
        s = self.pipeline.stats
        return {
            "device": self.pipeline.device,
            "uptime_s": round(time.monotonic() - self._created, 1),
            "processed": s.processed,
            "defects": s.defects,
            "failed": s.failed,
            "skipped": s.skipped,
            "repeats": s.repeats,
            "held": s.held,
            "retried": s.retried,
            "sink_errors": dict(s.sink_errors),
            "in_flight": self.pipeline.active(),
            "model": self.pipeline.detector.model.name,
        }

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

    def run(self) -> RunReport:
        """Inspect until stopped (or, with ``drain``, until the directory is empty)."""
        started = time.monotonic()
        if not self.paths.watch.is_dir():
            from inspector.errors import ConfigError

            raise ConfigError(
                f"ImageDirectory {self.paths.watch} does not exist or is not a directory",
                [("ImageDirectory", "not a directory")],
            )
        self.paths.state.mkdir(parents=True, exist_ok=True)
        self.disposer.prepare()
        self.journal.open()
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
        finally:
            self._shutdown()
        seconds = time.monotonic() - started
        return RunReport(self.pipeline.stats, seconds, self._stopped_by)

    def _shutdown(self) -> None:
        budget = self.settings.ShutdownSeconds
        t0 = time.monotonic()
        self.pipeline.stop(timeout=budget * 0.8)
        self.source.stop()
        self.journal.close()
        s = self.pipeline.stats
        logger.info(
            "stopped (%s) in %.2f s: %d processed (%d defect, %d repeat), %d failed, "
            "%d skipped, %d held",
            self._stopped_by, time.monotonic() - t0, s.processed, s.defects, s.repeats,
            s.failed, s.skipped, s.held,
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
            if changed & _MODEL_KEYS:
                if self._detector_factory is None:
                    raise RuntimeError("this service was built without a detector factory")
                self.pipeline.set_detector(self._detector_factory(new))
            elif changed & _THRESHOLD_KEYS:
                current: Any = self.pipeline.detector
                self.pipeline.set_detector(
                    current.with_thresholds(
                        conf_threshold=new.ConfidenceThreshold, iou_threshold=new.IouThreshold
                    )
                )
            if "DeviceName" in changed and new.DeviceName:
                self.pipeline.device = new.DeviceName
            for sink in self.sinks:
                try:
                    sink.reconfigure(new)
                except Exception:
                    logger.exception("sink %s: reconfigure failed", sink.name)
            self.settings = new
            restart = frozenset(changed - LIVE_KEYS)
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
) -> Service:
    """Load the model, pick the sinks, wire everything. Raises ModelError / ConfigError."""
    from inspector.imageio import read_image
    from inspector.result import to_result

    env = dict(os.environ if environ is None else environ)
    factory = detector_factory or (lambda s: load_detector(s, env))
    detector = factory(settings)
    paths = resolve_paths(settings)
    if sinks is None:
        if is_greengrass(env):
            logger.warning("Greengrass environment found but no Greengrass sinks were given; "
                           "using the standalone sinks")
        sinks = standalone_sinks(settings, paths)
    max_pixels = settings.MaxImagePixels

    def read(path: Path) -> Any:
        return read_image(path, max_pixels=max_pixels)

    return Service(
        settings,
        detector=detector,
        sinks=sinks,
        read_image=read,
        to_result=to_result,
        detector_factory=factory,
        drain=drain,
        device=device_name(settings, env),
    )
