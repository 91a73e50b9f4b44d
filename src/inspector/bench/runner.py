"""One benchmark run: every model x thread setting, measured in the same run so ratios hold.

    options = BenchOptions.full(models, out_dir=...)     # or .quick(...)
    report = run_bench(options)                          # the JSON document (a dict)

For each configuration: per-stage latency in this process, the raw session's throughput, then the
real service under the emulators (start-up, single images, a burst). Then the publish stage, our
NMS against OpenCV's, Ultralytics' predictor on the same files (when available), an optional
soak, and a cProfile of the per-image path. ``inspector.bench.report`` grades and writes it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import socket
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from inspector.bench import inprocess
from inspector.bench.images import ImagePool, make_pool
from inspector.bench.nms import bench_nms
from inspector.bench.timing import ratio, summarize
from inspector.types import Thresholds

logger = logging.getLogger(__name__)

SCHEMA = "inspector.bench/1"
IOU = 0.7
CONF = 0.25
THRESHOLDS = Thresholds(conf=CONF, iou=IOU)


@dataclass(frozen=True)
class ModelUnderTest:
    path: Path
    precision: str  # "fp32", "int8" or "unknown" (from the manifest, else the file name)
    label: str  # short name for tables: "<stem>"


@dataclass(frozen=True)
class BenchOptions:
    models: tuple[ModelUnderTest, ...]
    threads: tuple[int, ...] = (1, 2)
    quick: bool = False
    pool_images: int = 12
    stage_repeats: int = 30
    session_runs: int = 50
    burst: int = 200
    singles: int = 20  # single-image medians: 10 were at the mercy of a noisy neighbour
    nms_repeats: int = 50
    compare_images: int = 40
    profile_images: int = 20
    soak: int = 0
    soak_batch: int = 100
    service: bool = True
    ultralytics_python: Path | None = None
    out_dir: Path = Path("benchmarks/results")
    stem: str = ""
    work_dir: Path | None = None  # default: a temporary directory, removed afterwards

    @classmethod
    def full(cls, models: Sequence[ModelUnderTest], **overrides: Any) -> BenchOptions:
        return replace(cls(models=tuple(models)), **overrides)

    @classmethod
    def quick_run(cls, models: Sequence[ModelUnderTest], **overrides: Any) -> BenchOptions:
        small = cls(models=tuple(models), quick=True, pool_images=3, stage_repeats=5,
                    session_runs=10, burst=12, singles=2, nms_repeats=3, compare_images=6,
                    profile_images=3, soak_batch=10)
        return replace(small, **overrides)

    def steps(self) -> int:
        """Units of the progress bar: one per phase, one per image of bursts and the soak."""
        per_config = 3 + ((1 + self.singles + self.burst) if self.service else 0)
        memory = 1 if self.quick else len(self.models)
        return (len(self.models) * len(self.threads) * per_config + 3 + memory + len(self.models)
                + self.soak + (1 if self.service else 0))


Tick = Callable[[int], None]


def describe_models(paths: Sequence[Path]) -> list[ModelUnderTest]:
    """Precision from the bundled manifest when the file is listed there, else its name."""
    from inspector.errors import InspectorError
    from inspector.models import load_manifest

    out = []
    for path in paths:
        precision = "int8" if "int8" in path.name.lower() else "unknown"
        with contextlib.suppress(InspectorError):
            manifest = load_manifest(path.parent)
            entry = manifest.entry(path.name)
            if entry is not None:
                precision = entry.precision
        if precision == "unknown" and ("fp32" in path.name.lower() or "int8" not in path.name):
            precision = "fp32"
        out.append(ModelUnderTest(Path(path), precision, path.stem))
    return out


def bundled_models() -> tuple[list[Path], list[str]]:
    """The bundled fp32 and INT8 models (raises ModelNotFoundError when there is none)."""
    from inspector.errors import ModelNotFoundError
    from inspector.models import default_model_path

    paths = [default_model_path(precision="fp32")]
    notes = []
    try:
        paths.append(default_model_path(precision="int8"))
    except ModelNotFoundError as exc:
        notes.append(f"no bundled INT8 model ({exc}); INT8 not measured")
    return paths, notes


def run_bench(options: BenchOptions, tick: Tick = lambda n: None,
              phase: Callable[[str], None] = lambda text: None) -> dict[str, Any]:
    """Measure everything; the report document (``inspector.bench.report`` writes it)."""
    started = time.monotonic()
    started_utc = datetime.now(timezone.utc)
    notes: list[str] = []
    clock = _PhaseClock(phase)
    phase = clock.phase
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        notes.append(f"the machine was busy when the run started (load average {load:.2f} on "
                     f"{os.cpu_count()} CPUs): absolute figures are low and noisy; ratios "
                     "taken in this run hold better")

    with _work_dir(options.work_dir) as work:
        phase("generating images")
        pool = make_pool(work / "pool", options.pool_images, quick=options.quick)
        models = [_model_info(m) for m in options.models]
        configs = []
        for model in options.models:
            for threads in options.threads:
                configs.append(_bench_config(model, threads, pool, options, work, notes,
                                             tick, phase))
        phase("memory breakdown")
        memory = _memory(options, pool, tick)
        phase("publish stage")
        publish = _publish_stage(options, pool, work, notes)
        tick(1)
        phase("NMS vs OpenCV")
        nms_rows = bench_nms(np.random.default_rng(0), options.nms_repeats, IOU)
        for row in nms_rows:
            row["ours_over_cv2"] = ratio(row["ours_ms"], row["cv2_ms"])
        tick(1)
        comparison = _compare_ultralytics(options, pool, work, notes, tick, phase)
        soak = None
        if options.soak and options.service:
            phase(f"soak: {options.soak} images")
            soak = _soak(options, pool, work, notes, tick)
        phase("profile")
        profile = _profile(options, pool)
        tick(1)
        service_profile = None
        if options.service:
            phase("service profile")
            service_profile = _service_profile(options, pool, work, notes, tick)
        phase("")
    return {
        "schema": SCHEMA,
        "host": socket.gethostname(),
        "date": started_utc.strftime("%Y-%m-%d"),
        "started_utc": started_utc.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "duration_s": round(time.monotonic() - started, 1),
        "quick": options.quick,
        "machine": machine(),
        "options": _options_json(options),
        "models": models,
        "configs": configs,
        "publish_ms": publish,
        "memory": memory,
        "nms": nms_rows,
        "ultralytics": comparison,
        "soak": soak,
        "profile": profile,
        "service_profile": service_profile,
        "notes": notes,
        "phase_seconds": clock.seconds,
    }


class _PhaseClock:
    """Passes phase names on and keeps how long each took (to size the next run)."""

    def __init__(self, report: Callable[[str], None]) -> None:
        self.report = report
        self.seconds: dict[str, float] = {}
        self._name = ""
        self._since = time.monotonic()

    def phase(self, name: str) -> None:
        now = time.monotonic()
        if self._name:
            self.seconds[self._name] = round(now - self._since, 1)
        self._name, self._since = name, now
        if name:
            self.report(name)


def _bench_config(model: ModelUnderTest, threads: int, pool: ImagePool, options: BenchOptions,
                  work: Path, notes: list[str], tick: Tick, phase: Callable[[str], None]
                  ) -> dict[str, Any]:
    from inspector.detector import Detector

    name = f"{model.label} {threads}t"
    config: dict[str, Any] = {"model": model.label, "path": str(model.path),
                              "precision": model.precision, "threads": threads}
    phase(f"{name}: stages")
    detector = Detector.from_path(model.path, intra_op_threads=threads, thresholds=THRESHOLDS)
    config["stages_ms"] = inprocess.stage_latencies(detector, pool, options.stage_repeats)
    tick(1)
    phase(f"{name}: raw session")
    config["raw_session"] = inprocess.raw_session(model.path, threads, detector, pool,
                                                  options.session_runs)
    if threads == max(options.threads) and threads > 1:
        config["frames_in_parallel"] = inprocess.frames_in_parallel(
            model.path, threads, detector, pool, options.session_runs)
        config["frames_in_parallel_over_raw"] = ratio(
            config["frames_in_parallel"]["images_per_s"], config["raw_session"]["images_per_s"])
    tick(1)
    phase(f"{name}: detector loop")
    loop_paths = [pool.path(i) for i in range(max(options.compare_images // 2, 3))]
    config["detector_loop"] = inprocess.detector_loop(detector, loop_paths)
    tick(1)
    del detector
    config["service"] = None
    if options.service:
        config["service"] = _service_run(model, threads, pool, options, work / f"svc-{model.label}-"
                                         f"{threads}t", notes, tick, phase, name)
        burst = (config["service"] or {}).get("burst") or {}
        config["burst_over_raw"] = ratio(burst.get("images_per_s"),
                                         config["raw_session"]["images_per_s"])
        if threads == max(options.threads) and burst:
            # the other choice of InferenceWorkers: one worker per core sharing the session
            # (more images per second on a burst, slower single images)
            phase(f"{name}: one inference worker per core")
            per_core = _per_core_workers(model, threads, pool, options, work / f"svc-"
                                         f"{model.label}-{threads}t-per-core", notes)
            config["per_core_workers"] = per_core
            config["per_core_over_default"] = ratio((per_core or {}).get("images_per_s"),
                                                    burst.get("images_per_s"))
    return config


def _service_run(model: ModelUnderTest, threads: int, pool: ImagePool, options: BenchOptions,
                 work: Path, notes: list[str], tick: Tick, phase: Callable[[str], None],
                 name: str) -> dict[str, Any] | None:
    from inspector.bench import service

    phase(f"{name}: service start")
    try:
        with service.running(work, model.path, threads, pool.path(0)) as svc:
            out: dict[str, Any] = {"startup": svc.startup()}
            tick(1)
            phase(f"{name}: single images")
            singles = svc.single_latency(pool, options.singles)
            tick(len(singles))
            out["single_latency_ms"] = summarize([latency for latency, _, _ in singles])
            # what the image's own stages do not explain (watcher, queues, sinks, IPC), also by
            # the previous image's verdict: a held defect can delay the watcher's next events
            out["single_overhead_ms"] = summarize([lat - own for lat, own, _ in singles])
            out["single_overhead_ms_after"] = {
                verdict: summarize([lat - own for lat, own, v in singles if v == verdict])
                for verdict in sorted({v for _, _, v in singles})}
            phase(f"{name}: burst of {options.burst}")
            out["burst"] = svc.burst(pool, work / "staging", options.burst, "burst", tick)
            out["rss_peak_mb"] = service.mb(svc.rss.peak())
            return out
    except service.ServiceBenchError as exc:
        notes.append(f"{name}: service run failed: {exc}")
        logger.error("%s: service run failed: %s", name, exc)
        return {"error": str(exc)}


def _per_core_workers(model: ModelUnderTest, threads: int, pool: ImagePool,
                      options: BenchOptions, work: Path, notes: list[str]
                      ) -> dict[str, Any] | None:
    """A burst and single images with ``InferenceWorkers: 0`` (one per core)."""
    from inspector.bench import service

    try:
        with service.running(work, model.path, threads, pool.path(0), workers=0) as svc:
            svc.startup()
            singles = svc.single_latency(pool, options.singles)
            burst = svc.burst(pool, work / "staging", options.burst, "per-core")
            return {"workers": os.cpu_count() or 1, "images_per_s": burst.get("images_per_s"),
                    "rss_peak_mb": service.mb(svc.rss.peak()),
                    "single_latency_ms": summarize([latency for latency, _, _ in singles])}
    except service.ServiceBenchError as exc:
        notes.append(f"{model.label}: one-worker-per-core run failed: {exc}")
        return {"error": str(exc)}


def _memory(options: BenchOptions, pool: ImagePool, tick: Tick) -> list[dict[str, Any]]:
    from inspector.bench.memory import memory_breakdown

    out = []
    # a subprocess per model that imports everything step by step: a quick run does one
    for model in options.models[:1] if options.quick else options.models:
        threads = max(options.threads)
        out.append({"model": model.label, "threads": threads,
                    "steps": memory_breakdown(model.path, threads, pool.path(0))})
        tick(1)
    return out


def _publish_stage(options: BenchOptions, pool: ImagePool, work: Path, notes: list[str]
                   ) -> dict[str, Any] | None:
    from inspector.bench.service import publish_ms
    from inspector.detector import Detector
    from inspector.imageio import read_image
    from inspector.result import to_result

    detector = Detector.from_path(options.models[0].path, thresholds=THRESHOLDS)
    inspection = detector.inspect(read_image(pool.path(0)))
    result = to_result(inspection, device="bench")
    try:
        return summarize(publish_ms(inspection, result, options.stage_repeats, work / "publish"))
    except Exception as exc:  # the other figures are still worth having
        notes.append(f"publish stage not measured: {exc!r}")
        return None


def _compare_ultralytics(options: BenchOptions, pool: ImagePool, work: Path, notes: list[str],
                         tick: Tick, phase: Callable[[str], None]) -> dict[str, Any]:
    from inspector.bench.reference import find_interpreter, run_ultralytics
    from inspector.detector import Detector

    python, why = find_interpreter(options.ultralytics_python)
    if python is None:
        notes.append(f"Ultralytics comparison skipped: {why}")
        tick(len(options.models))
        return {"status": "skipped", "note": why, "runs": []}
    paths = [pool.path(i) for i in range(options.compare_images)]
    runs = []
    for model in options.models:
        phase(f"{model.label}: Ultralytics predictor")
        detector = Detector.from_path(model.path, thresholds=THRESHOLDS)
        size = detector.model.input_size
        ours = inprocess.detector_loop(detector, paths)
        del detector
        theirs = run_ultralytics(python, model.path, paths, (size.height, size.width),
                                 work / f"ultralytics-{model.label}", conf=CONF, iou=IOU)
        if "error" in theirs:
            notes.append(f"{model.label}: Ultralytics' predictor failed: {theirs['error']}")
        runs.append({
            "model": model.label, "precision": model.precision, "images": len(paths),
            "ours_loop": ours, "theirs": theirs,
            "ours_loop_over_theirs": ratio(ours["images_per_s"], theirs.get("images_per_s")),
        })
        tick(1)
    return {"status": "ran", "note": why, "runs": runs}


def _soak(options: BenchOptions, pool: ImagePool, work: Path, notes: list[str], tick: Tick
          ) -> dict[str, Any] | None:
    from inspector.bench import service

    # standalone with the default settings: the outbox gets an annotated copy of every image
    # (AnnotateOutbox), the threads are ONNX Runtime's default, InferenceWorkers one per core
    model = options.models[0]
    try:
        with service.running_standalone(work / "soak", model.path, pool.path(0)) as svc:
            startup = svc.startup()
            out = svc.soak(pool, work / "soak" / "staging", options.soak, options.soak_batch,
                           tick)
            return {"model": model.label, "threads": "default", "mode": "standalone, "
                    "AnnotateOutbox on", "startup": startup, **out}
    except service.ServiceBenchError as exc:
        notes.append(f"soak failed: {exc}")
        return {"error": str(exc)}


def _service_profile(options: BenchOptions, pool: ImagePool, work: Path, notes: list[str],
                     tick: Tick) -> dict[str, Any] | None:
    """A separate service run (cProfile slows Python code down) with a profiled burst."""
    from inspector.bench import service

    model, threads = options.models[0], max(options.threads)
    count = max(options.burst // 2, 10)
    folder = work / "svc-profile"
    try:
        with service.running(folder, model.path, threads, pool.path(0),
                             profile_to=folder / "service.prof") as svc:
            svc.startup()
            out = svc.profile_burst(pool, folder / "staging", count, folder / "service.prof")
            return {"model": model.label, "threads": threads, **out}
    except service.ServiceBenchError as exc:
        notes.append(f"service profile failed: {exc}")
        return {"error": str(exc)}
    finally:
        tick(1)


def _profile(options: BenchOptions, pool: ImagePool) -> dict[str, Any]:
    from inspector.detector import Detector

    model, threads = options.models[0], max(options.threads)
    detector = Detector.from_path(model.path, intra_op_threads=threads, thresholds=THRESHOLDS)
    out = inprocess.profile_image_path(detector, pool, options.profile_images)
    return {"model": model.label, "threads": threads, **out}


def _model_info(model: ModelUnderTest) -> dict[str, Any]:
    from inspector.detector import Detector

    detector = Detector.from_path(model.path)
    info = detector.model
    return {
        "label": model.label, "path": str(model.path), "precision": model.precision,
        "name": info.name, "version": info.version, "sha256": info.sha256,
        "input_size": {"height": info.input_size.height, "width": info.input_size.width},
        "size_mb": round(model.path.stat().st_size / 2**20, 2),
    }


def machine() -> dict[str, Any]:
    import cv2
    import onnxruntime

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "onnxruntime": onnxruntime.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _options_json(options: BenchOptions) -> dict[str, Any]:
    data = asdict(options)
    data["models"] = [str(m.path) for m in options.models]
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


@contextlib.contextmanager
def _work_dir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    # short: the nucleus' socket path must fit a Unix socket name
    with tempfile.TemporaryDirectory(prefix="ibench-", dir="/tmp") as tmp:
        yield Path(tmp)


__all__ = ["BenchOptions", "ModelUnderTest", "bundled_models", "describe_models", "run_bench"]
