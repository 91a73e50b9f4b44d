#!/usr/bin/env python3
"""Make the INT8 variant of a YOLOv8 ONNX model with ONNX Runtime static quantization.

What was measured to work on AVX2 CPUs without VNNI (issue 3): QDQ format, per-channel weights,
uint8 activations / int8 weights, ``reduce_range=True`` (without it uint8 saturation tripled the
detections), and the decode tail of the head (DFL softmax, class sigmoid, box arithmetic, output
concat) left in fp32: quantizing the output concat puts boxes (hundreds of pixels) and scores
(0..1) on one scale and every score becomes 0. The first convolution (3 input channels, read from
the image) also stays fp32: its INT8 kernel took 3.0 ms against 1.5 ms in fp32 on this CPU
(per-node profile, benchmarks/results/int8-variants.md); every other convolution is 1.4-2.3x
faster in INT8.

Calibration frames are generated tag images letterboxed exactly as at inference (the same
``Detector.preprocess``), from a seed used neither for training nor for testing.

    python scripts/quantize_model.py models/scratch-yolov8n.onnx models/scratch-yolov8n-int8.onnx
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

CALIBRATION_SEED = 7_000_001  # never used for training (seeds < 1e6) or testing (9_000_000+)
FP32_OPS: tuple[str, ...] = ()  # operator types kept in fp32 by default (measured: see --keep-fp32)


def tail_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the detection head's decode tail: every /model.<last>/ node outside cv2/cv3."""
    heads = sorted(
        {
            n.name.split("/")[1]
            for n in model.graph.node
            if n.name.count("/") > 1 and n.name.split("/")[1].startswith("model.")
        },
        key=lambda s: int(s.split(".")[1]),
    )
    head = heads[-1]
    return [
        n.name
        for n in model.graph.node
        if n.name.startswith(f"/{head}/") and "/cv2." not in n.name and "/cv3." not in n.name
    ]


def input_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the Conv nodes that read a graph input (the image) directly."""
    inputs = {i.name for i in model.graph.input}
    return [n.name for n in model.graph.node if n.op_type == "Conv" and n.input[0] in inputs]


def calibration_tensors(model_path: Path, count: int) -> Iterator[dict[str, object]]:
    from inspector.detector import Detector
    from inspector.synth import generate

    detector = Detector.from_path(model_path)
    input_name = detector.runtime.input_name if hasattr(detector, "runtime") else "images"
    for index in range(count):
        sample = generate(CALIBRATION_SEED, index)
        tensor, _ = detector.preprocess(sample.image)
        yield {input_name: tensor}


def quantize(
    fp32: Path,
    output: Path,
    *,
    calibration_images: int = 64,
    method: str = "minmax",
    keep_fp32_ops: tuple[str, ...] = FP32_OPS,
    quantize_input_conv: bool = False,
) -> int:
    """Write the INT8 model; returns how many nodes were left in fp32 (decode tail, the input
    convolution unless ``quantize_input_conv``, and ``keep_fp32_ops``)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = calibration_tensors(fp32, calibration_images)

        def get_next(self):  # type: ignore[no-untyped-def]
            return next(self._it, None)

    src = onnx.load(str(fp32))
    exclude = tail_nodes(src) + [n.name for n in src.graph.node if n.op_type in keep_fp32_ops]
    if not quantize_input_conv:
        exclude += [name for name in input_convs(src) if name not in exclude]
    calibrate_method = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(output),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
            calibrate_method=calibrate_method,
        )

    # Keep the fp32 model's metadata (class names, our name/version) on the INT8 file.
    dst = onnx.load(str(output))
    meta = {p.key: p.value for p in src.metadata_props}
    meta["inspector_model_name"] = meta.get("inspector_model_name", fp32.stem) + "-int8"
    del dst.metadata_props[:]
    for key, value in meta.items():
        dst.metadata_props.add(key=key, value=value)
    onnx.save(dst, str(output))
    return len(exclude)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("fp32", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--calibration-images", type=int, default=64)
    p.add_argument("--method", choices=["minmax", "percentile", "entropy"], default="minmax")
    p.add_argument(
        "--keep-fp32",
        nargs="*",
        default=list(FP32_OPS),
        metavar="OP",
        help=f"operator types left in fp32 besides the decode tail (default: {' '.join(FP32_OPS)})",
    )
    p.add_argument(
        "--quantize-input-conv",
        action="store_true",
        help="quantize the first convolution too (slower on AVX2 without VNNI: measured)",
    )
    args = p.parse_args(argv)
    kept = quantize(
        args.fp32,
        args.output,
        calibration_images=args.calibration_images,
        method=args.method,
        keep_fp32_ops=tuple(args.keep_fp32),
        quantize_input_conv=args.quantize_input_conv,
    )
    print(
        f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB); "
        f"{kept} nodes kept in fp32"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
