#!/usr/bin/env python3
"""Evaluate models with OUR pipeline (read_image -> Detector), not Ultralytics', on one or more
test sets: ``domain`` (the docs/data-spec.md rendering the models were trained on) and ``ood`` (the
out-of-distribution rendering of ``inspector.synth.config``, never used for training).

Each set is generated from a seed never used for training (domain 9_000_000, ood 9_700_000),
written to disk as JPEG/PNG exactly as the generator chooses, and read back through
``read_image``, so the figures include compression and the real decode path.

    python scripts/evaluate.py --count 300 --set domain ood --out models/eval.json \
        --models models/scratch-yolov8n.onnx models/scratch-yolov8n-int8.onnx

Writes JSON and a markdown report (same name, .md) and prints the report. Box recall is broken
down by scratch length and width at the 640 px model input, image size, contrast and (ood) stroke
profile and metal texture, at IoU 0.5 and at IoU 0.1 (found, but placed loosely).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

TEST_SEED = 9_000_000
OOD_SEED = 9_700_000
SET_SEEDS = {"domain": TEST_SEED, "ood": OOD_SEED}
METRICS = ("map50", "map50_95", "precision", "recall", "recall_iou10", "image_recall",
           "image_precision")
LOOSE_IOU = 0.1
LENGTH_EDGES = ((40.0, "<40"), (100.0, "40-100"), (float("inf"), ">100"))
WIDTH_EDGES = ((1.0, "<1.0"), (1.5, "1.0-1.5"), (2.5, "1.5-2.5"), (float("inf"), ">=2.5"))


def build_test_set(
    directory: Path, count: int, seed: int, set_name: str = "domain"
) -> list[tuple[Path, Any, dict[str, list[str]]]]:
    from tqdm import tqdm

    from inspector.synth import generate, profile, write_image

    config = profile(set_name)
    directory.mkdir(parents=True, exist_ok=True)
    items = []
    for index in tqdm(range(count), desc=f"{set_name} images", unit="img"):
        sample = generate(seed, index, config)
        path = write_image(sample, directory / f"test_{index:05d}")
        items.append((path, sample.boxes_xyxy, box_groups(sample.meta)))
    return items


def _bucket(value: float, edges: tuple[tuple[float, str], ...]) -> str:
    return next(name for edge, name in edges if value < edge)


def box_groups(meta: dict) -> dict[str, list[str]]:
    """Labels of each ground-truth box for the recall breakdown: contrast kind, image size, the
    stroke length and width once the frame is letterboxed to 640 (where thin and short scratches
    get lost), and, for renderings beyond data-spec.md, the stroke profile and metal texture."""
    size = meta["size"]
    shrink = 640 / max(size["width"], size["height"])
    scratches = meta["scratches"]
    groups = {
        "contrast": [s["kind"] for s in scratches],
        "image_size": [f"{size['width']}x{size['height']}" for _ in scratches],
        "length_px_at_640": [_bucket(s["length_px"] * shrink, LENGTH_EDGES) for s in scratches],
        "width_px_at_640": [_bucket(s["width_px"] * shrink, WIDTH_EDGES) for s in scratches],
    }
    if "rendering" in meta:
        groups["stroke_profile"] = [str(s.get("profile", "groove")) for s in scratches]
        texture = str(meta["tag"].get("texture", "brushed"))
        groups["texture"] = [texture for _ in scratches]
    return groups


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
    names = list(items[0][2]) if items else []
    everything = [["all"] * len(gt) for _, gt, _ in items]
    report["recall_iou10"] = (
        recall_by_group(evals, everything, conf, LOOSE_IOU).get("all", {}).get("recall", 0.0)
    )
    for key, iou in (("recall_by", 0.5), ("recall_by_iou10", LOOSE_IOU)):
        report[key] = {
            name: recall_by_group(evals, [groups[name] for _, _, groups in items], conf, iou)
            for name in names
        }
    return report


def comparison_row(fp32: dict, int8: dict) -> dict:
    speedup = fp32["session_ms_median"] / int8["session_ms_median"]
    return {
        "model": f"{int8['model']} vs {fp32['model']}",
        **{k: round(int8[k] - fp32[k], 4) for k in METRICS},
        "images": "",
        "gt_boxes": "",
        "session_ms_median": f"speed-up {speedup:.2f}x",
    }


def markdown(rows: list[dict], set_name: str | None = None) -> str:
    """The summary table of one set, then recall by each grouping, every model side by side."""
    cols = ["model", "images", "gt_boxes", *METRICS, "session_ms_median"]
    lines = []
    if set_name:
        lines += [f"Test set `{set_name}`:", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    models = [r for r in rows if "recall_by" in r]
    if not models:
        return "\n".join(lines)
    conf = models[0]["conf_threshold"]
    for name, table in models[0]["recall_by"].items():
        header = ["| " + name + " | boxes"]
        for r in models:
            header.append(f" {r['model']} IoU 0.5 | {r['model']} IoU {LOOSE_IOU}")
        lines += ["", f"Box recall by {name} (conf {conf}):", ""]
        lines += [" |".join(header) + " |", "|" + "---|" * (2 + 2 * len(models))]
        for label, v in sorted(table.items(), key=lambda kv: _label_order(kv[0])):
            cells = [f"| {label} | {v['boxes']}"]
            for r in models:
                strict = r["recall_by"][name][label]["recall"]
                loose = r["recall_by_iou10"][name][label]["recall"]
                cells.append(f" {strict} | {loose}")
            lines.append(" |".join(cells) + " |")
    return "\n".join(lines)


def _label_order(label: str) -> tuple[int, str]:
    """Buckets in their numeric order (<40 before 40-100), other labels alphabetically."""
    buckets = [name for _, name in LENGTH_EDGES + WIDTH_EDGES]
    return (buckets.index(label), "") if label in buckets else (len(buckets), label)


def side_by_side(sets: dict[str, dict]) -> str:
    """One table: each model's headline metrics on every set, and OOD minus domain."""
    cols = ["map50", "map50_95", "recall", "recall_iou10", "image_recall", "image_precision"]
    lines = ["| model | set | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 2)]
    by_model: dict[str, dict[str, dict]] = {}
    for set_name, block in sets.items():
        for r in block["results"]:
            if "recall_by" in r:
                by_model.setdefault(r["model"], {})[set_name] = r
    for model, per_set in by_model.items():
        for set_name, r in per_set.items():
            lines.append(f"| {model} | {set_name} | " + " | ".join(str(r[c]) for c in cols) + " |")
        if "domain" in per_set and "ood" in per_set:
            gap = [round(per_set["ood"][c] - per_set["domain"][c], 4) for c in cols]
            lines.append(f"| {model} | ood - domain | " + " | ".join(map(str, gap)) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models", type=Path, nargs="+", required=True)
    p.add_argument("--count", type=int, default=300, help="images per set")
    p.add_argument("--set", dest="sets", nargs="+", choices=sorted(SET_SEEDS), default=["domain"],
                   help="test sets to evaluate on (default: domain)")
    p.add_argument("--seed", type=int, default=TEST_SEED, help="seed of the domain set")
    p.add_argument("--ood-seed", type=int, default=OOD_SEED, help="seed of the ood set")
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--images", type=Path,
                   help="keep the test images here, one folder per set (default: a temp dir)")
    p.add_argument("--out", type=Path, help="write JSON here (and the report beside it as .md)")
    args = p.parse_args(argv)
    seeds = {"domain": args.seed, "ood": args.ood_seed}
    if min(seeds[s] for s in args.sets) < 9_000_000:
        print("test seeds start at 9_000_000 so that they never overlap training", file=sys.stderr)
        return 2
    if args.count <= 0:
        print("--count must be > 0", file=sys.stderr)
        return 2
    missing = [str(m) for m in args.models if not m.is_file()]
    if missing:
        print(f"model file(s) not found: {', '.join(missing)}", file=sys.stderr)
        return 2

    started = time.time()
    sets: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.images or Path(tmp)
        for set_name in dict.fromkeys(args.sets):
            items = build_test_set(root / set_name, args.count, seeds[set_name], set_name)
            rows = [evaluate_model(m, items, args.threads, args.conf) for m in args.models]
            # models given as fp32, INT8 pairs: each pair's difference and speed-up
            if len(rows) % 2 == 0:
                rows += [comparison_row(rows[k], rows[k + 1]) for k in range(0, len(rows), 2)]
            sets[set_name] = {"seed": seeds[set_name], "count": args.count, "results": rows}
    parts = [markdown(block["results"], name) for name, block in sets.items()]
    if len(sets) > 1:
        parts.insert(0, "Side by side (IoU 0.5 unless named; conf "
                     f"{args.conf}):\n\n" + side_by_side(sets))
    command = "python scripts/evaluate.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    seeds_used = ", ".join(f"{name} {block['seed']}" for name, block in sets.items())
    header = (
        f"# Held-out evaluation by our own pipeline (read_image -> Detector)\n\n"
        f"`{command}`\n\n"
        f"{args.count} images per set (seeds: {seeds_used}); conf {args.conf} for P/R and "
        f"verdicts, 0.001 for the AP curve; {args.threads} threads; "
        f"{round(time.time() - started)} s wall. `domain` is the data-spec.md rendering the models "
        "were trained on, `ood` the out-of-distribution rendering (docs/model-loop.md). "
        "Recall columns: box recall at IoU 0.5 and at IoU 0.1 (found, but placed loosely)."
    )
    report = "\n\n".join([header, *parts])
    print(report)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        first = "domain" if "domain" in sets else next(iter(sets))
        doc = {
            # the top level keeps the layout write_manifest.py and older readers know
            "set": first,
            "seed": sets[first]["seed"],
            "count": args.count,
            "conf_threshold": args.conf,
            "threads": args.threads,
            "wall_s": round(time.time() - started, 1),
            "results": sets[first]["results"],
            "sets": sets,
            "command": command,
        }
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
        args.out.with_suffix(".md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
