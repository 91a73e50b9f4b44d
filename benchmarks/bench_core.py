#!/usr/bin/env python3
"""Time the inference core stage by stage, and our NMS against cv2.dnn.NMSBoxes.

    python benchmarks/bench_core.py --model models/scratch-yolov8n.onnx [--image tag.jpg]

Stages (medians over --repeats, all in one run): decode (read_image: read, sha256, checks,
cv2.imdecode), letterbox, tensor (NCHW float32), preprocess (the one-pass letterbox + tensor the
detector uses), session (ONNX Runtime), post (decode + NMS + inverse letterbox, on the model's
real output for that image). Then post-processing on a
synthetic (1, 5, 8400) head with detector-like candidates, and NMS alone at 10, 100 and 1,000
candidates against cv2.dnn.NMSBoxes with the same thresholds (cv2 is timed from the same numpy
xyxy boxes, so its xywh conversion counts; the kept sets are checked to be equal).

Without --model it uses the bundled default model; with neither it stops with a message.
Prints a table and writes the figures as JSON (--out).

Until the trained model exists, a stand-in with YOLOv8n-like compute and a real (1, 5, 8400)
head (random weights: its boxes mean nothing, its timings do) is made with the test factory:

    PYTHONPATH=tests python -c "from pathlib import Path; from onnx_factory import \
        conv_proxy_model, write_model; write_model(Path('/tmp/proxy.onnx'), conv_proxy_model())"
    python benchmarks/bench_core.py --model /tmp/proxy.onnx --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

import cv2
import numpy as np

from inspector.bench.nms import bench_nms, synthetic_head
from inspector.bench.timing import median_ms
from inspector.detector import Detector
from inspector.errors import InspectorError
from inspector.imageio import read_image
from inspector.models import default_model_path
from inspector.postprocess import postprocess
from inspector.preprocess import letterbox, letterbox_geometry, to_tensor
from inspector.types import Size

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_image(path: Path, rng: np.random.Generator) -> Path:
    """A 1280x960 JPEG shaped like docs/data-spec.md: dark belt, grey tag, a few bright strokes."""
    image = rng.normal(40, 6, (960, 1280, 3)).clip(0, 255).astype(np.uint8)
    cv2.rectangle(image, (320, 300), (960, 660), (170, 170, 170), cv2.FILLED)
    for _ in range(3):
        x, y = int(rng.integers(360, 900)), int(rng.integers(330, 620))
        cv2.line(image, (x, y), (x + 60, y + 25), (240, 240, 240), 3)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, help="ONNX model (default: the bundled one)")
    parser.add_argument("--image", type=Path, help="image to time (default: a synthetic JPEG)")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads")
    parser.add_argument("--iou", type=float, default=0.7)
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS / "bench_core.json",
        help="JSON output (default %(default)s)",
    )
    args = parser.parse_args(argv)

    try:
        model_path = args.model or default_model_path()
        detector = Detector.from_path(model_path, intra_op_threads=args.threads)
    except InspectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        image_path = args.image or synthetic_image(Path(tmp) / "tag.jpg", rng)
        image = read_image(image_path)
        target = detector.model.input_size
        padded, box = letterbox(image.bgr, target)
        tensor = to_tensor(padded)
        raw = detector.infer(tensor)
        stages = {
            "decode": median_ms(lambda: read_image(image_path), args.repeats),
            "letterbox": median_ms(lambda: letterbox(image.bgr, target), args.repeats),
            "tensor": median_ms(lambda: to_tensor(padded), args.repeats),
            "preprocess": median_ms(lambda: detector.preprocess(image.bgr), args.repeats),
            "session": median_ms(lambda: detector.infer(tensor), args.repeats),
            "post": median_ms(lambda: detector.postprocess(raw, box), args.repeats),
        }
    head = synthetic_head(rng)
    head_box = letterbox_geometry(Size(960, 1280), Size(640, 640))
    synthetic_post_ms = median_ms(lambda: postprocess(head, head_box), args.repeats)
    nms_rows = bench_nms(rng, args.repeats, args.iou)

    report: dict[str, Any] = {
        "model": str(model_path),
        "model_name": detector.model.name,
        "input_size": {"height": target.height, "width": target.width},
        "output_shape": list(np.shape(raw)),
        "image": {
            "name": image.info.name,
            "width": image.info.size.width,
            "height": image.info.size.height,
        },
        "repeats": args.repeats,
        "threads": args.threads,
        "machine": {
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
        "stages_ms": stages,
        "post_share_of_session": stages["post"] / stages["session"] if stages["session"] else None,
        "synthetic_head_post_ms": synthetic_post_ms,
        "nms": nms_rows,
    }
    print(
        f"model {report['model_name']} ({model_path}), input {target}, "
        f"output {report['output_shape']}, image {image.info.size}, "
        f"{args.repeats} repeats, medians"
    )
    print(f"{'stage':<10} {'ms':>9}")
    for name, ms in stages.items():
        print(f"{name:<10} {ms:>9.3f}")
    share = report["post_share_of_session"]
    print(f"post / session = {share:.2%}" if share is not None else "post / session = n/a")
    print(f"post on a synthetic (1, 5, 8400) head, 200 candidates: {synthetic_post_ms:.3f} ms")
    print()
    print("NMS: cv2 ms = from the same numpy xyxy (conversion timed); cv2 lists = from prebuilt")
    print("Python lists of xywh tuples (conversion not timed); ratio = ours / cv2")
    print(
        f"{'boxes':<10} {'n':>5} {'kept':>5} {'ours ms':>9} {'cv2 ms':>9} {'cv2 lists':>9} "
        f"{'ratio':>6} same"
    )
    for row in nms_rows:
        ratio = row["ours_ms"] / row["cv2_ms"] if row["cv2_ms"] else float("nan")
        print(
            f"{row['boxes']:<10} {row['candidates']:>5} {row['kept']:>5} "
            f"{row['ours_ms']:>9.3f} {row['cv2_ms']:>9.3f} {row['cv2_prebuilt_lists_ms']:>9.3f} "
            f"{ratio:>6.2f} {row['same_as_cv2']}"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
