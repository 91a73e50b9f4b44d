#!/usr/bin/env python3
"""Write ``models/manifest.json`` for the bundled models (read by ``inspector.models``).

It records, for each ONNX file: sha256, input size and classes read from the file itself, the
data sets it was trained on (their ``synth.json``), the training record
(``inspector_train.json`` of each stage) and the held-out metrics from ``scripts/evaluate.py``.

    python scripts/write_manifest.py --models-dir models --version 1.0.0 \
        --fp32 scratch-yolov8n.onnx --int8 scratch-yolov8n-int8.onnx \
        --data data/trainA/synth.json data/trainB/synth.json \
        --training runs/crops320/inspector_train.json --eval models/eval.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def describe(path: Path) -> dict[str, Any]:
    from inspector.detector import Detector
    from inspector.integrity import sha256_file

    model = Detector.from_path(path).model
    return {
        "name": model.name,
        "version": model.version,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "input_size": {"height": model.input_size.height, "width": model.input_size.width},
        "classes": list(model.class_names),
    }


def eval_row(evaluation: dict[str, Any] | None, file: str) -> dict[str, Any]:
    """The metrics of ``file``: the first (in-distribution) set's at the top level, as always,
    and every other set evaluate.py ran (``ood``) under its own name."""
    if not evaluation:
        return {}
    out: dict[str, Any] = {}
    for row in evaluation.get("results", []):
        if row.get("model") == file:
            keep = {k: v for k, v in row.items() if k != "model"}
            test_set = {k: evaluation[k] for k in ("seed", "count", "conf_threshold")}
            out = {"test_set": {"set": evaluation.get("set", "domain"), **test_set}, **keep}
            break
    if not out:
        return {}
    for name, block in (evaluation.get("sets") or {}).items():
        if name == evaluation.get("set", "domain"):
            continue
        for row in block.get("results", []):
            if row.get("model") == file:
                out[name] = {
                    "test_set": {"set": name, "seed": block.get("seed"),
                                 "count": block.get("count")},
                    **{k: v for k, v in row.items() if k != "model"},
                }
    return out


def training_summary(stages: list[dict[str, Any]]) -> dict[str, Any]:
    """Epochs and hours over every stage, then the stages' own records."""
    epochs = []
    for stage in stages:
        count = stage.get("epochs_run")
        results = Path(str(stage.get("best", ""))).parent.parent / "results.csv"
        if count is None and results.exists():  # records written before train.py counted them
            count = max(0, len(results.read_text().strip().splitlines()) - 1)
        epochs.append(count)
    hours_by_device: dict[str, float] = {}
    for stage in stages:
        args = stage.get("args") or {}
        device = str(args.get("device", "cpu"))
        key = "cpu" if device == "cpu" else str(stage.get("gpu") or f"cuda:{device}")
        hours_by_device[key] = hours_by_device.get(key, 0.0) + float(stage.get("wall_s", 0)) / 3600
    return {
        "epochs": sum(epochs) if None not in epochs else None,
        "hours": round(sum(float(s.get("wall_s", 0)) for s in stages) / 3600, 2),
        "hours_by_device": {k: round(v, 2) for k, v in hours_by_device.items()},
        "stages": stages,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--models-dir", type=Path, default=Path("models"))
    p.add_argument("--version", required=True)
    p.add_argument("--fp32", required=True, help="file name inside --models-dir")
    p.add_argument("--int8", help="file name inside --models-dir")
    p.add_argument("--data", type=Path, nargs="*", default=[], help="synth.json of each data set")
    p.add_argument(
        "--training",
        type=Path,
        nargs="*",
        default=[],
        help="inspector_train.json of each training stage, in order",
    )
    p.add_argument("--eval", type=Path, help="JSON written by scripts/evaluate.py")
    p.add_argument("--notes", default="", help="free text kept in the manifest")
    args = p.parse_args(argv)

    data = [json.loads(f.read_text()) for f in args.data]
    training = [json.loads(f.read_text()) for f in args.training]
    evaluation = json.loads(args.eval.read_text()) if args.eval else None
    models = []
    for file, precision in ((args.fp32, "fp32"), (args.int8, "int8")):
        if not file:
            continue
        entry = {"file": file, "precision": precision, **describe(args.models_dir / file)}
        entry["version"] = args.version
        entry["data"] = {"sets": data}
        entry["training"] = training_summary(training)
        entry["metrics"] = eval_row(evaluation, file)
        models.append(entry)
    manifest = {
        "schema": "inspector.models/1",
        "default": args.fp32,
        "notes": args.notes,
        "models": models,
    }
    out = args.models_dir / "manifest.json"
    out.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out} ({len(models)} models)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
