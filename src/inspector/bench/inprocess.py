"""What the model and the core cost in this process: per-stage latency, raw session throughput,
the sequential detector loop, and a cProfile of the per-image path."""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inspector.bench.images import ImagePool
from inspector.bench.timing import summarize

# The stages of one image, in the order the service runs them ("letterbox" + "tensor" is the
# two-step path; the service runs the equivalent one-pass "preprocess").
STAGES = ("decode", "letterbox", "tensor", "preprocess", "inference", "postprocess")
SERVICE_PATH = ("decode", "preprocess", "inference", "postprocess")  # the pipeline's names


def stage_latencies(
    detector: Any, pool: ImagePool, repeats: int, warmup: int = 2
) -> dict[str, Any]:
    """Each stage timed on every image (cycling through the pool); medians and p95."""
    from inspector.imageio import read_image
    from inspector.preprocess import letterbox, to_tensor

    target = detector.model.input_size
    samples: dict[str, list[float]] = {stage: [] for stage in STAGES}
    samples["total"] = []
    for i in range(warmup + repeats):
        path = pool.path(i)
        t0 = time.perf_counter()
        image = read_image(path, fit=target)  # as the service reads (reduced JPEG decode)
        t1 = time.perf_counter()
        padded, _ = letterbox(image.bgr, target, image.info.size)
        t2 = time.perf_counter()
        to_tensor(padded)
        t3 = time.perf_counter()
        tensor, box = detector.preprocess(image.bgr, image.info.size)
        t4 = time.perf_counter()
        raw = detector.infer(tensor)
        t5 = time.perf_counter()
        detector.postprocess(raw, box)
        t6 = time.perf_counter()
        if i < warmup:
            continue
        times = dict(zip(STAGES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5),
                         strict=True))
        for stage, seconds in times.items():
            samples[stage].append(seconds * 1000)
        samples["total"].append(sum(times[s] for s in SERVICE_PATH) * 1000)
    return {stage: summarize(values) for stage, values in samples.items()}


def raw_session(model_path: Path, threads: int, detector: Any, pool: ImagePool, runs: int,
                warmup: int = 3) -> dict[str, Any]:
    """The raw session loop as a user writes it: ``onnxruntime.InferenceSession(path)`` with
    only ``intra_op_num_threads`` set (ONNX Runtime's defaults otherwise: spinning threads,
    memory pattern, arena), run back to back on one letterboxed image: images per second.
    The goals' reference, so it does not depend on how the service sets up its own session
    (``detector`` only prepares the input)."""
    session, feed = _plain_session(model_path, threads, detector, pool, warmup)
    times = []
    start = time.perf_counter()
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000)
    seconds = time.perf_counter() - start
    return {"runs": runs, "seconds": round(seconds, 3),
            "images_per_s": round(runs / seconds, 3), "session_ms": summarize(times)}


def frames_in_parallel(model_path: Path, workers: int, detector: Any, pool: ImagePool,
                       runs: int, warmup: int = 2) -> dict[str, Any]:
    """The most any frames-in-parallel design can get from the session on this machine:
    ``workers`` threads running whole frames at once on ONE plain session with one intra-op
    thread each, with nothing else to do (no decoding, no sinks): images per second."""
    session, feed = _plain_session(model_path, 1, detector, pool, warmup)
    seconds = run_concurrently(lambda: session.run(None, feed), workers, runs)
    return {"workers": workers, "runs": runs, "seconds": round(seconds, 3),
            "images_per_s": round(runs / seconds, 3)}


def run_concurrently(run: Callable[[], Any], workers: int, runs: int) -> float:
    """Seconds for ``runs`` calls of ``run`` made by ``workers`` threads at once."""
    import threading

    left = [runs]
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            run()

    threads = [threading.Thread(target=work, name=f"run-{n}") for n in range(workers)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def _plain_session(model_path: Path, threads: int, detector: Any, pool: ImagePool, warmup: int
                   ) -> tuple[Any, dict[str, Any]]:
    """A session with ONNX Runtime's defaults but ``threads``, warmed up, and its input feed:
    the pool's first image letterboxed by ``detector``."""
    import onnxruntime as ort

    from inspector.imageio import read_image

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    tensor, _ = detector.preprocess(read_image(pool.path(0)).bgr)
    feed = {session.get_inputs()[0].name: tensor}
    for _ in range(warmup):
        session.run(None, feed)
    return session, feed


def detector_loop(detector: Any, paths: Sequence[Path], warmup: int = 3) -> dict[str, Any]:
    """File -> detections, one image after another (read, pre, session, post): what a plain
    Python loop around the detector does, comparable with Ultralytics' predictor."""
    from inspector.imageio import read_image

    fit = detector.model.input_size  # as the service and ``inspector predict`` read
    for path in paths[:warmup]:
        detector.inspect(read_image(path, fit=fit))
    start = time.perf_counter()
    for path in paths:
        detector.inspect(read_image(path, fit=fit))
    seconds = time.perf_counter() - start
    return {"images": len(paths), "seconds": round(seconds, 3),
            "images_per_s": round(len(paths) / seconds, 3)}


def profile_image_path(detector: Any, pool: ImagePool, images: int, top: int = 15
                       ) -> dict[str, Any]:
    """cProfile of the service's per-image work, run sequentially in this process (the service
    spreads it over threads, which cProfile cannot follow): the top functions by own time."""
    from inspector.imageio import read_image
    from inspector.result import to_json, to_result
    from inspector.sinks.mqtt import fit_payload

    def one(i: int) -> None:
        image = read_image(pool.path(i), fit=detector.model.input_size)
        result = to_result(detector.inspect(image), device="bench")
        fit_payload(result)
        to_json(result)

    one(0)
    profiler = cProfile.Profile()
    profiler.enable()
    for i in range(images):
        one(i)
    profiler.disable()
    return {"images": images, "top": top_functions(profiler, top)}


# Calls that block a thread (cProfile counts wall time per thread): an idle thread's waits are
# not work, so they are left out of a multi-threaded profile's top list and its shares.
BLOCKING = (
    "'acquire' of '_thread.", "time.sleep", "select.epoll", "select.poll", "select.select",
    "posix.read>", "'recv' of '_socket", "'recv_into' of '_socket", "'get' of '_queue.",
)


def top_functions(profiler: cProfile.Profile | pstats.Stats, top: int, *,
                  skip_blocking: bool = False) -> list[dict[str, Any]]:
    """The ``top`` functions by own time, with their share of all (non-blocking) own time."""
    stats = profiler if isinstance(profiler, pstats.Stats) else pstats.Stats(
        profiler, stream=io.StringIO())
    items = list(stats.stats.items())  # type: ignore[attr-defined]
    if skip_blocking:
        items = [kv for kv in items if not any(b in _where(*kv[0]) for b in BLOCKING)]
    total = sum(v[2] for _, v in items)
    rows = []
    entries = sorted(items, key=lambda kv: kv[1][2], reverse=True)[:top]
    for (filename, line, name), (_cc, calls, tottime, cumtime, _callers) in entries:
        rows.append({
            "function": _where(filename, line, name),
            "calls": int(calls),
            "own_s": round(tottime, 4),
            "cumulative_s": round(cumtime, 4),
            "own_share": round(tottime / total, 4) if total else None,
        })
    return rows


def _where(filename: str, line: int, name: str) -> str:
    if filename == "~":
        return name  # a C function: "<method 'run' of ...>"
    parts = Path(filename).parts
    short = "/".join(parts[-2:]) if len(parts) >= 2 else filename
    return f"{short}:{line}({name})"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - start
