#!/usr/bin/env python3
"""Evaluate bundled models with OUR pipeline (read_image -> Detector), not Ultralytics'.

The test set is generated from a seed never used for training (9_000_000 and up), written to
disk as JPEG/PNG exactly as the generator chooses, and read back through ``read_image``, so the
figures include compression and the real decode path.

    python scripts/evaluate.py --count 300 --out benchmarks/results/eval.json \
        --models models/scratch-yolov8n.onnx models/scratch-yolov8n-int8.onnx

Writes JSON and a markdown table (same name, .md) and prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

TEST_SEED = 9_000_000
METRICS = ("map50", "map50_95", "precision", "recall", "image_recall", "image_precision")


def build_test_set(directory: Path, count: int, seed: int) -> list[tuple[Path, object]]:
    from tqdm import tqdm

    from inspector.synth import generate, write_image

    items = []
    for index in tqdm(range(count), desc="test images", unit="img"):
        sample = generate(seed, index)
        path = write_image(sample, directory / f"test_{index:05d}")
        items.append((path, sample.boxes_xyxy, box_groups(sample.meta)))
    return items


def box_groups(meta: dict) -> dict[str, list[str]]:
    """Labels of each ground-truth box for the recall breakdown: contrast kind, image size, and
    the stroke width once the frame is letterboxed to 640 (where thin scratches get lost)."""
    size = meta["size"]
    shrink = 640 / max(size["width"], size["height"])
    edges = [(1.0, "<1.0"), (1.5, "1.0-1.5"), (2.5, "1.5-2.5"), (float("inf"), ">=2.5")]
    scratches = meta["scratches"]
    return {
        "contrast": [s["kind"] for s in scratches],
        "image_size": [f"{size['width']}x{size['height']}" for _ in scratches],
        "width_px_at_640": [
            next(name for edge, name in edges if s["width_px"] * shrink < edge) for s in scratches
        ],
    }


def evaluate_model(model: Path, items, threads: int, conf: float) -> dict:
    import numpy as np
    from tqdm import tqdm

    from inspector.detector import Detector
    from inspector.evaluation import ImageEval, evaluate, recall_by_group
    from inspector.imageio import read_image
    from inspector.types import Thresholds

    # conf 0.001 for the full precision/recall curve; P/R/verdicts are then taken at ``conf``.
    detector = Detector.from_path(model, intra_op_threads=threads,
                                  thresholds=Thresholds(conf=0.001))
    evals, session_ms = [], []
    for path, gt, _ in tqdm(items, desc=model.name, unit="img"):
        inspection = detector.inspect(read_image(path))
        d = inspection.detections
        evals.append(ImageEval(np.asarray(gt, float).reshape(-1, 4), d.xyxy, d.confidence))
        session_ms.append(inspection.timings_ms["inference"])
    report = evaluate(evals, conf_threshold=conf).as_dict()
    report["model"] = model.name
    report["session_ms_median"] = round(float(np.median(session_ms)), 2)
    report["recall_by"] = {
        name: recall_by_group(evals, [groups[name] for _, _, groups in items], conf)
        for name in items[0][2]
    }
    return report


def markdown(rows: list[dict]) -> str:
    cols = ["model", "images", "gt_boxes", *METRICS, "session_ms_median"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    for r in rows:
        for name, table in r.get("recall_by", {}).items():
            title = f"Box recall of {r['model']} by {name} (IoU 0.5, conf {r['conf_threshold']}):"
            lines += ["", title, ""]
            lines += ["| " + name + " | boxes | found | recall |", "|---|---|---|---|"]
            lines += [
                f"| {label} | {v['boxes']} | {v['found']} | {v['recall']} |"
                for label, v in table.items()
            ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=Path, nargs="+", required=True)
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--seed", type=int, default=TEST_SEED)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=Path, help="keep the test images here (default: a temp dir)")
    p.add_argument("--out", type=Path, help="write JSON here (and the table beside it as .md)")
    args = p.parse_args(argv)
    if args.seed < 9_000_000:
        print("test seeds start at 9_000_000 so that they never overlap training", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp:
        directory = args.images or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        started = time.time()
        items = build_test_set(directory, args.count, args.seed)
        rows = [evaluate_model(m, items, args.threads, args.conf) for m in args.models]
    if len(rows) == 2:
        fp32, int8 = rows
        speedup = fp32["session_ms_median"] / int8["session_ms_median"]
        rows.append(
            {
                "model": f"{int8['model']} vs {fp32['model']}",
                **{k: round(int8[k] - fp32[k], 4) for k in METRICS},
                "images": "",
                "gt_boxes": "",
                "session_ms_median": f"speed-up {speedup:.2f}x",
            }
        )
    table = markdown(rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "seed": args.seed,
            "count": args.count,
            "conf_threshold": args.conf,
            "threads": args.threads,
            "wall_s": round(time.time() - started, 1),
            "results": rows,
        }
        args.out.write_text(json.dumps(doc, indent=2))
        args.out.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
