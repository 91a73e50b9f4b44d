"""Where the service's memory goes: RSS of a fresh process after each import and step.

``memory_breakdown`` runs ``python -m inspector.bench.memory MODEL THREADS IMAGE`` and reads one
JSON list back: [{"step", "rss_mb", "delta_mb"}, ...] in the order the service gets there
(interpreter, numpy, OpenCV, ONNX Runtime, the Greengrass SDKs, inspector's own modules, the
model's session, the first image, twenty more).
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

STEPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("numpy", ("numpy",)),
    ("OpenCV", ("cv2",)),
    ("ONNX Runtime", ("onnxruntime",)),
    ("Greengrass IPC SDK (awsiot)", ("awsiot.greengrasscoreipc.clientv2",)),
    ("StreamManager SDK", ("stream_manager",)),
    ("inspector (service, settings, watcher, Greengrass side)",
     ("inspector.service", "inspector.greengrass.component", "inspector.detector",
      "inspector.runtime", "inspector.imageio")),
)


def main(argv: list[str] | None = None) -> int:
    import psutil

    args = sys.argv[1:] if argv is None else argv
    model, threads, image = Path(args[0]), int(args[1]), Path(args[2])
    process = psutil.Process()
    rows: list[dict[str, Any]] = []

    def note(step: str) -> None:
        rss = process.memory_info().rss / 2**20
        previous = rows[-1]["rss_mb"] if rows else 0.0
        rows.append({"step": step, "rss_mb": round(rss, 1), "delta_mb": round(rss - previous, 1)})

    note("Python interpreter (+ psutil)")
    for step, modules in STEPS:
        for name in modules:
            importlib.import_module(name)
        note(step)
    import os

    from inspector import malloc
    from inspector.detector import Detector
    from inspector.imageio import read_image

    malloc.tune()  # as the service does before loading the model
    # as the service loads it: one run in flight per core (InferenceWorkers 0)
    detector = Detector.from_path(model, intra_op_threads=threads,
                                  concurrent_runs=os.cpu_count() or 1)
    note("model loaded (session + warm-up run)")
    fit = detector.model.input_size  # the service's reduced JPEG decode
    detector.inspect(read_image(image, fit=fit))
    note("first image inspected")
    for _ in range(20):
        detector.inspect(read_image(image, fit=fit))
    note("20 more images")
    print(json.dumps(rows))
    return 0


def memory_breakdown(model: Path, threads: int, image: Path, timeout_s: float = 120
                     ) -> list[dict[str, Any]] | dict[str, str]:
    """The rows, or {"error": ...}."""
    done = subprocess.run(
        [sys.executable, "-m", "inspector.bench.memory", str(model), str(threads), str(image)],
        capture_output=True, text=True, timeout=timeout_s,
    )
    if done.returncode != 0:
        return {"error": "\n".join(done.stderr.strip().splitlines()[-5:])}
    rows: list[dict[str, Any]] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


if __name__ == "__main__":
    sys.exit(main())
