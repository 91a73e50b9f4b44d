#!/usr/bin/env python3
"""Export trained weights to the ONNX file the device runs (``train`` extra; never on a device).

Static 1x3xHxW input, simplified graph, and metadata: Ultralytics writes ``names``, ``stride``
and ``imgsz``; we add ``inspector_model_name`` and ``inspector_model_version`` so every result
can say which model made it.

    python scripts/export_model.py runs/scratch640/weights/best.pt models/scratch-yolov8n.onnx \
        --imgsz 640 --name scratch-yolov8n --version 1.0.0
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("weights", type=Path, help="Ultralytics .pt checkpoint (best.pt)")
    p.add_argument("output", type=Path, help="where to write the .onnx file")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--name", default="scratch-yolov8n")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--opset", type=int, default=17)
    args = p.parse_args(argv)

    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ.setdefault(
        "YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "inspector-yolo-config")
    )
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

    import onnx
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        # Ultralytics writes the .onnx beside the weights: work on a copy.
        weights = Path(tmp) / "model.pt"
        shutil.copy2(args.weights, weights)
        exported = YOLO(str(weights)).export(
            format="onnx",
            imgsz=args.imgsz,
            dynamic=False,
            simplify=True,
            opset=args.opset,
            half=False,
            nms=False,
            batch=1,
        )
        model = onnx.load(str(exported))

    meta = {p.key: p.value for p in model.metadata_props}
    meta["inspector_model_name"] = args.name
    meta["inspector_model_version"] = args.version
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(model)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.output))
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB); metadata: {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
