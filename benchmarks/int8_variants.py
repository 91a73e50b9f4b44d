#!/usr/bin/env python3
"""Which operators to leave in fp32 in the INT8 model: quantize one fp32 model several ways and
time every variant against the fp32 model in the same run (interleaved rounds, medians), plus
their detections on generated frames.

    python benchmarks/int8_variants.py models/scratch-yolov8n.onnx --threads 2 \
        --out benchmarks/results/int8-variants.md

A variant is a set of operator types kept in fp32 besides the decode tail, which
``scripts/quantize_model.py`` always keeps in fp32, and whether the input convolution (3 channels,
read from the image) is quantized too. The chosen settings are that script's defaults.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import quantize_model

# name -> (operator types kept in fp32, quantize the input convolution too)
VARIANTS: dict[str, tuple[tuple[str, ...], bool]] = {
    "default (input conv in fp32)": ((), False),
    "input conv quantized too": ((), True),
    "Resize in fp32": (("Resize",), False),
    "Resize, Concat in fp32": (("Resize", "Concat"), False),
    "SiLU (Sigmoid, Mul) in fp32": (("Sigmoid", "Mul"), False),
}


def session(path: Path, threads: int):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("fp32", type=Path)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--runs", type=int, default=10, help="timed runs per model per round")
    p.add_argument(
        "--frames", type=int, default=20, help="generated frames for the agreement check"
    )
    p.add_argument("--calibration-images", type=int, default=64)
    p.add_argument("--out", type=Path, help="write the markdown table here")
    args = p.parse_args(argv)

    from inspector.detector import Detector
    from inspector.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        paths = {"fp32": args.fp32}
        for name, (ops, input_conv) in VARIANTS.items():
            out = Path(tmp) / f"{len(paths)}.onnx"
            quantize_model.quantize(
                args.fp32,
                out,
                calibration_images=args.calibration_images,
                keep_fp32_ops=ops,
                quantize_input_conv=input_conv,
            )
            paths[name] = out
            print(f"quantized: {name}", file=sys.stderr)

        # Detections on held-out frames: count of scratches found at conf 0.25 per model.
        found = {}
        for name, path in paths.items():
            detector = Detector.from_path(path, intra_op_threads=args.threads)
            found[name] = []
            for i in range(args.frames):
                tensor, letterbox = detector.preprocess(generate(9_100_000, i).image)
                found[name].append(len(detector.postprocess(detector.infer(tensor), letterbox)))

        sessions = {name: session(path, args.threads) for name, path in paths.items()}
        # a real letterboxed frame, as the service feeds the session
        x, _ = Detector.from_path(args.fp32).preprocess(generate(9_100_000, 0).image)
        times: dict[str, list[float]] = {name: [] for name in sessions}
        # per round, each model's median against fp32's median of the same round: paired
        # ratios follow this shared VM's drift far less than one ratio of overall medians
        paired: dict[str, list[float]] = {name: [] for name in sessions}
        for s in sessions.values():
            for _ in range(3):
                s.run(None, {s.get_inputs()[0].name: x})
        order = list(sessions.items())
        for round_index in range(args.rounds):
            this_round: dict[str, float] = {}
            for name, s in order if round_index % 2 == 0 else order[::-1]:
                feed = {s.get_inputs()[0].name: x}
                runs = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    s.run(None, feed)
                    runs.append((time.perf_counter() - t0) * 1000)
                times[name] += runs
                this_round[name] = statistics.median(runs)
            for name, ms in this_round.items():
                paired[name].append(this_round["fp32"] / ms)

    base = statistics.median(times["fp32"])
    lines = [
        f"threads {args.threads}, {args.rounds} interleaved rounds x {args.runs} runs on a"
        " generated frame (order reversed every other round), medians; paired: the median over"
        " rounds of fp32's round median / the model's; detections at conf 0.25 on"
        f" {args.frames} generated frames (seed 9,100,000)",
        "",
        "| model | session ms | speed-up vs fp32 | paired speed-up | detections"
        " | frames differing from fp32 |",
        "|---|---|---|---|---|---|",
    ]
    for name, t in times.items():
        ms = statistics.median(t)
        pair = statistics.median(paired[name])
        differ = sum(a != b for a, b in zip(found[name], found["fp32"], strict=True))
        lines.append(
            f"| {name} | {ms:.1f} | {base / ms:.2f}x | {pair:.2f}x | {sum(found[name])}"
            f" | {differ} |"
        )
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
