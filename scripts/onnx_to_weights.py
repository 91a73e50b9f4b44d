#!/usr/bin/env python3
"""Recover trainable Ultralytics weights (.pt) from an exported scratch-yolov8n ONNX file.

The .pt files behind model 1.2.0 were not kept, only its ONNX export. The export fused every
Conv+BatchNorm pair into one convolution with a bias, but kept the parameter names
(``model.0.conv.weight``, ``model.0.conv.bias``, ...). So a YOLOv8n built from ``yolov8n.yaml``
(one class) takes the fused weights into its convolutions and each BatchNorm becomes
"add the fused bias": weight 1, bias = fused bias, running mean 0, running variance 1 - eps.
In eval mode the rebuilt network computes what the ONNX file computes (checked here on a
random input before anything is written); in training the BatchNorm statistics are learnt anew,
so fine-tuning starts from 1.2.0's features instead of from nothing.

Needs the ``train`` extra (torch, ultralytics):

    python scripts/onnx_to_weights.py models/scratch-yolov8n.onnx models/scratch-yolov8n.pt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

MAX_ABS_DIFF = 1e-2  # on outputs in 640 px input coordinates and 0..1 scores


def rebuild(onnx_path: Path):  # type: ignore[no-untyped-def]
    """(DetectionModel in eval mode, how many tensors were filled) from the ONNX file."""
    import onnx
    import torch
    from onnx import numpy_helper
    from ultralytics.nn.modules.conv import Conv
    from ultralytics.nn.tasks import DetectionModel

    graph = onnx.load(str(onnx_path)).graph
    weights = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    model = DetectionModel("yolov8n.yaml", nc=1, verbose=False)
    model.names = {0: "scratch"}
    filled = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, Conv):
                w, b = weights.get(f"{name}.conv.weight"), weights.get(f"{name}.conv.bias")
                if w is None or b is None:
                    raise ValueError(f"{onnx_path}: no fused weights for {name}")
                module.conv.weight.copy_(torch.from_numpy(w.copy()))
                bn = module.bn
                bn.weight.fill_(1.0)
                bn.bias.copy_(torch.from_numpy(b.copy()))
                bn.running_mean.zero_()
                bn.running_var.fill_(1.0 - bn.eps)
                filled += 2
            elif isinstance(module, torch.nn.Conv2d) and module.bias is not None:
                w, b = weights.get(f"{name}.weight"), weights.get(f"{name}.bias")
                if w is None or b is None:
                    if ".dfl." in name:  # the fixed DFL projection (0..15), not learnt
                        continue
                    raise ValueError(f"{onnx_path}: no weights for {name}")
                module.weight.copy_(torch.from_numpy(w.copy()))
                module.bias.copy_(torch.from_numpy(b.copy()))
                filled += 2
    model.eval()
    return model, filled


def check(model, onnx_path: Path, seed: int = 0) -> float:  # type: ignore[no-untyped-def]
    """Largest difference between the rebuilt model and the ONNX file on one random image."""
    import onnxruntime as ort
    import torch

    x = np.random.default_rng(seed).random((1, 3, 640, 640), dtype=np.float32)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {session.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x))
    got = got[0] if isinstance(got, (list, tuple)) else got
    return float(np.max(np.abs(got.numpy() - expected)))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("onnx", type=Path, help="an fp32 export of scratch-yolov8n (not the INT8 one)")
    p.add_argument("output", type=Path, help="where to write the .pt checkpoint")
    args = p.parse_args(argv)
    import datetime

    import torch
    import ultralytics

    if not args.onnx.is_file():
        print(f"onnx_to_weights: no such file {args.onnx}", file=sys.stderr)
        return 2
    try:
        model, filled = rebuild(args.onnx)
    except ValueError as exc:
        print(f"onnx_to_weights: {exc}", file=sys.stderr)
        return 2
    diff = check(model, args.onnx)
    print(f"rebuilt {filled} tensors; largest output difference to {args.onnx.name}: {diff:.2e}")
    if diff > MAX_ABS_DIFF:
        print(f"onnx_to_weights: the rebuilt model differs from {args.onnx} by {diff} "
              f"(> {MAX_ABS_DIFF}); nothing written", file=sys.stderr)
        return 1
    model.args = {"task": "detect", "imgsz": 640, "model": "yolov8n.yaml"}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({
        "model": model,
        "train_args": dict(model.args),
        "epoch": -1,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "version": ultralytics.__version__,
        "recovered_from": str(args.onnx),
    }, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
