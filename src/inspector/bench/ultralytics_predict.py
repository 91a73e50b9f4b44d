"""Ultralytics' predictor on an ONNX file and a list of images: the reference a user would run.

Runs under another interpreter (one with ultralytics and torch), so it imports nothing from
inspector. ``inspector.bench.reference`` starts it as::

    PYTHON ultralytics_predict.py --model m.onnx --images list.txt --imgsz H W --out out.json

and reads the JSON: images, seconds, images_per_s, the median (and p95) wall ms of one
``predict(path)`` call, Ultralytics' own per-image speed (ms).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--images", required=True, help="text file: one image path a line")
    parser.add_argument("--imgsz", type=int, nargs=2, required=True, metavar=("H", "W"))
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    t_import = time.perf_counter()
    import ultralytics
    from ultralytics import YOLO

    import_s = time.perf_counter() - t_import
    paths = [line.strip() for line in Path(args.images).read_text().splitlines() if line.strip()]
    model = YOLO(args.model, task="detect")
    options = {"imgsz": list(args.imgsz), "conf": args.conf, "iou": args.iou, "verbose": False,
               "device": "cpu", "save": False}
    for path in paths[: args.warmup]:
        model.predict(path, **options)
    speeds: dict[str, list[float]] = {"preprocess": [], "inference": [], "postprocess": []}
    detections = 0
    per_image: list[float] = []  # ms of each predict() call: file -> boxes, as a user times it
    start = time.perf_counter()
    for path in paths:
        t0 = time.perf_counter()
        for result in model.predict(path, **options):  # one call per file (a list would load
            detections += len(result.boxes)          # every image first)
            for key in speeds:
                if result.speed.get(key) is not None:
                    speeds[key].append(float(result.speed[key]))
        per_image.append((time.perf_counter() - t0) * 1000)
    seconds = time.perf_counter() - start
    report = {
        "ultralytics_version": ultralytics.__version__,
        "python": sys.version.split()[0],
        "import_s": round(import_s, 3),
        "images": len(paths),
        "seconds": round(seconds, 3),
        "images_per_s": round(len(paths) / seconds, 3) if seconds > 0 else None,
        "detections": detections,
        "ms_per_image_median": round(statistics.median(per_image), 3) if per_image else None,
        "ms_per_image_p95": (round(sorted(per_image)[int(0.95 * (len(per_image) - 1))], 3)
                             if per_image else None),
        "speed_ms_median": {k: round(statistics.median(v), 3) for k, v in speeds.items() if v},
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
