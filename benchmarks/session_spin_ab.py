#!/usr/bin/env python3
"""A/B of the ONNX Runtime session settings behind the service's burst and single-image figures.

Two sessions on the same model, 2 intra-op threads each: "spin" (ONNX Runtime's defaults, as
the bench's raw session loop runs it) and "nospin" (no spinning threads, no memory pattern: what
runtime.OnnxRuntime sets when two inference workers share the session). For each, in rounds
whose order alternates: one run at a time 50 ms apart (a single image), two runs at once from
two threads (a burst with two workers), and runs back to back from one thread. Prints medians.

    .venv/bin/python benchmarks/session_spin_ab.py [models/scratch-yolov8n.onnx] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(data: bytes, spin: bool) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    options.enable_mem_pattern = spin
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def single_ms(s: ort.InferenceSession, feed: dict, n: int = 15) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        s.run(None, feed)
        times.append((time.perf_counter() - t0) * 1000.0)
        time.sleep(0.05)
    return statistics.median(times)


def images_per_s(s: ort.InferenceSession, feed: dict, workers: int, n: int = 30) -> float:
    taken = [0]
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if taken[0] >= n:
                    return
                taken[0] += 1
            s.run(None, feed)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=work) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="models/scratch-yolov8n.onnx")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    data = Path(args.model).read_bytes()
    sessions = {"spin": session(data, True), "nospin": session(data, False)}
    name = sessions["spin"].get_inputs()[0].name
    feed = {name: np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)}
    for s in sessions.values():
        s.run(None, feed)  # warm-up
    results: dict[str, dict[str, list[float]]] = {
        k: {"single ms": [], "2 at once img/s": [], "back to back img/s": []} for k in sessions}
    for r in range(args.rounds):
        for k in (list(sessions) if r % 2 == 0 else list(sessions)[::-1]):
            results[k]["single ms"].append(single_ms(sessions[k], feed))
            results[k]["2 at once img/s"].append(images_per_s(sessions[k], feed, 2))
            results[k]["back to back img/s"].append(images_per_s(sessions[k], feed, 1))
    for k, figures in results.items():
        print(k, {m: round(statistics.median(v), 1) for m, v in figures.items()})


if __name__ == "__main__":
    main()
