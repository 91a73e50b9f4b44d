#!/usr/bin/env python3
"""Recover trainable Ultralytics weights (.pt) from an exported scratch-yolov8n ONNX file.

The .pt files behind model 1.2.0 were not kept, only its ONNX export. The export fused every
Conv+BatchNorm pair into one convolution with a bias, but kept the parameter names
(``model.0.conv.weight``, ``model.0.conv.bias``, ...). So a YOLOv8n built from ``yolov8n.yaml``
(one class) takes the fused weights into its convolutions and each BatchNorm becomes
"add the fused bias": weight 1, bias = fused bias, running mean 0, running variance 1 - eps.
In eval mode the rebuilt network computes what the ONNX file computes (checked here on a
random input before anything is written).

Training mode is another matter: there a BatchNorm normalises by the statistics of the batch,
so "mean 0, variance 1" BatchNorms turn the rebuilt network into a different function at the
first training step (measured: a fine-tune from such weights lost 0.06 in-distribution mAP50
in 8 epochs). ``--calibrate`` fixes that: the fused network runs over real training images,
each convolution's output statistics (per channel mean m and variance v, over images and
pixels, as a BatchNorm in training sees them) are recorded, and its BatchNorm gets
running mean m, running variance v, weight sqrt(v + eps) and bias (fused bias + m). In eval
mode that is still exactly "add the fused bias"; in training mode, on batches like those
images, the BatchNorm now computes nearly the same thing, so fine-tuning starts from the
ONNX model's function, not from a disturbed copy of it. The training-mode difference before and
after calibration is printed.

Needs the ``train`` extra (torch, ultralytics):

    python scripts/onnx_to_weights.py models/scratch-yolov8n.onnx models/scratch-yolov8n.pt \
        --calibrate data/domain640/images/train data/robust640/images/train
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


def calibration_images(folders: list[Path], count: int, seed: int = 0) -> np.ndarray:
    """(N, 3, 640, 640) float32 RGB 0..1 model inputs, letterboxed as the service does."""
    import cv2

    from inspector.preprocess import preprocess
    from inspector.types import Size

    files = sorted(f for folder in folders for f in folder.iterdir()
                   if f.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not files:
        raise ValueError(f"no images in {', '.join(map(str, folders))}")
    rng = np.random.default_rng(seed)
    picked = [files[i] for i in rng.permutation(len(files))[:count]]
    batch = []
    for f in picked:
        image = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if image is None:
            raise ValueError(f"{f}: cannot be decoded")
        batch.append(preprocess(image, Size(640, 640))[0][0])
    return np.stack(batch)


def calibrate(model, images: np.ndarray, chunk: int = 8) -> int:  # type: ignore[no-untyped-def]
    """Give every Conv's BatchNorm the statistics its convolution's output has on ``images``
    (see the module docstring); the eval-mode function is unchanged. Returns how many."""
    import torch
    from ultralytics.nn.modules.conv import Conv

    convs = {name: m for name, m in model.named_modules() if isinstance(m, Conv)}
    sums: dict[str, list] = {name: [0.0, 0.0, 0] for name in convs}  # sum, sum of squares, n

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(_module, _inputs, output) -> None:  # type: ignore[no-untyped-def]
            z = output.double()
            acc = sums[name]
            acc[0] = acc[0] + z.sum(dim=(0, 2, 3))
            acc[1] = acc[1] + (z * z).sum(dim=(0, 2, 3))
            acc[2] += z.shape[0] * z.shape[2] * z.shape[3]
        return record

    handles = [m.conv.register_forward_hook(hook(name)) for name, m in convs.items()]
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, len(images), chunk):
                model(torch.from_numpy(images[start:start + chunk]))
    finally:
        for handle in handles:
            handle.remove()
    with torch.no_grad():
        for name, module in convs.items():
            total, squares, n = sums[name]
            mean = total / n
            var = (squares / n - mean * mean).clamp(min=0.0)
            bn = module.bn
            fused_bias = bn.bias.double() - bn.weight.double() * bn.running_mean.double() \
                / torch.sqrt(bn.running_var.double() + bn.eps)  # what the BN adds now
            bn.running_mean.copy_(mean.float())
            bn.running_var.copy_(var.float())
            bn.weight.copy_(torch.sqrt(var + bn.eps).float())
            bn.bias.copy_((fused_bias + mean).float())
    return len(convs)


def train_mode_difference(model, images: np.ndarray) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Largest output difference, train-mode BatchNorms (batch statistics) vs eval mode, on
    one batch of ``images``: how far the first training step's network is from the model's."""
    import torch

    x = torch.from_numpy(images[:8])
    model.eval()
    with torch.no_grad():
        expected = model(x)
        expected = expected[0] if isinstance(expected, (list, tuple)) else expected
        saved = {}
        for name, m in model.named_modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                saved[name] = (m.running_mean.clone(), m.running_var.clone(), m.momentum)
                m.momentum = 0.0  # batch statistics used, running ones left as they are
                m.train()
        got = model(x)
        got = got[0] if isinstance(got, (list, tuple)) else got
        for name, m in model.named_modules():
            if name in saved:
                m.running_mean.copy_(saved[name][0])
                m.running_var.copy_(saved[name][1])
                m.momentum = saved[name][2]
    model.eval()
    # boxes (640 px) and scores (0..1) differ in scale: the score rows, mean and largest
    diff = (got[:, 4:] - expected[:, 4:]).abs()
    return float(diff.mean()), float(diff.max())


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
    p.add_argument("--calibrate", type=Path, nargs="+", metavar="DIR",
                   help="image folders (training images) to calibrate the BatchNorms on")
    p.add_argument("--calibrate-count", type=int, default=64,
                   help="how many images of those folders (default 64)")
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
    if args.calibrate:
        try:
            images = calibration_images(args.calibrate, args.calibrate_count)
        except (ValueError, OSError) as exc:
            print(f"onnx_to_weights: {exc}", file=sys.stderr)
            return 2
        before = train_mode_difference(model, images)
        n = calibrate(model, images)
        after = train_mode_difference(model, images)
        print(f"calibrated {n} BatchNorms on {len(images)} images; score difference, training "
              f"vs eval mode (mean / largest): {before[0]:.4f} / {before[1]:.3f} before, "
              f"{after[0]:.4f} / {after[1]:.3f} after")
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
