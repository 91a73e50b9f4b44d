#!/usr/bin/env python3
"""A/B of the ONNX Runtime session settings behind the service's burst and single-image figures.

Sessions on the same model, in this process, with glibc's mmap threshold fixed as the service
fixes it (``inspector.malloc``):

- ``raw``: ``InferenceSession(path)`` with only the intra-op threads set (the bench's reference);
- ``one worker``: what ``runtime.OnnxRuntime`` sets for InferenceWorkers 1: spinning threads
  that stop when the run returns (``session.force_spinning_stop``), memory pattern on;
- ``workers``: what it sets for InferenceWorkers > 1: no spinning, no memory pattern;
- ``1 thread``: one intra-op thread (frames in parallel need nothing more);
- ``... + shrink``: the same with the arena handed back after every run
  (``memory.enable_memory_arena_shrinkage``, what the service did before).

For each, in rounds whose order alternates: one run after an idle pause (a single image at a
camera's cadence, ``--gap``), runs back to back from one thread, two runs at once from two
threads (a burst with two workers). Prints medians.

    .venv/bin/python benchmarks/session_spin_ab.py [models/scratch-yolov8n.onnx] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from inspector.bench.inprocess import run_concurrently
from inspector.malloc import tune

CONFIGS = {  # name -> (intra-op threads, session config entries, memory pattern, shrink)
    "raw": (2, {}, True, False),
    "one worker": (2, {"session.force_spinning_stop": "1"}, True, False),
    "one worker + shrink": (2, {"session.force_spinning_stop": "1"}, True, True),
    "workers": (2, {"session.intra_op.allow_spinning": "0"}, False, False),
    "workers + shrink": (2, {"session.intra_op.allow_spinning": "0"}, False, True),
    "1 thread": (1, {}, False, False),
}


def session(data: bytes, threads: int, entries: dict[str, str], pattern: bool
            ) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    for key, value in entries.items():
        options.add_session_config_entry(key, value)
    options.enable_mem_pattern = pattern
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def after_pause_ms(run, gap_s: float, n: int = 12) -> float:
    times = []
    for _ in range(n):
        time.sleep(gap_s)
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def images_per_s(run, workers: int, n: int = 30) -> float:
    return n / run_concurrently(run, workers, n)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", default="models/scratch-yolov8n.onnx")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--gap", type=float, default=0.25, help="idle seconds before a single run")
    args = p.parse_args()
    tune({})
    data = Path(args.model).read_bytes()
    runs = {}
    for name, (threads, entries, pattern, shrink) in CONFIGS.items():
        s = session(data, threads, entries, pattern)
        options = ort.RunOptions()
        if shrink:
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        feed = {s.get_inputs()[0].name:
                np.random.default_rng(0).random((1, 3, 640, 640), dtype=np.float32)}
        runs[name] = lambda s=s, feed=feed, options=options: s.run(None, feed, options)
        runs[name]()  # warm-up
    figures = ("after a pause ms", "back to back img/s", "2 at once img/s")
    results: dict[str, dict[str, list[float]]] = {k: {f: [] for f in figures} for k in runs}
    for r in range(args.rounds):
        for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            results[k][figures[0]].append(after_pause_ms(runs[k], args.gap))
            results[k][figures[1]].append(images_per_s(runs[k], 1))
            results[k][figures[2]].append(images_per_s(runs[k], 2))
    print(f"{args.model}, {args.rounds} rounds, pause {args.gap} s (medians)")
    print("| session | " + " | ".join(figures) + " |")
    print("|---" * (len(figures) + 1) + "|")
    for k, values in results.items():
        print(f"| {k} | " + " | ".join(f"{statistics.median(v):.1f}" for v in values.values())
              + " |")


if __name__ == "__main__":
    main()
