"""``inspector predict``: inspect image files or directories once and print the results."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

HELP = "inspect images (files or directories) with the model and print one result per image"

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE_OR_DIR",
        help="image files, or directories whose image files are inspected (not recursive)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="ONNX model file (default: the bundled default model)",
    )
    parser.add_argument(
        "--conf",
        type=_unit_interval,
        default=0.25,
        metavar="C",
        help="confidence threshold, 0..1 (default 0.25)",
    )
    parser.add_argument(
        "--iou",
        type=_unit_interval,
        default=0.7,
        metavar="I",
        help="NMS IoU threshold, 0..1 (default 0.7)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one result-schema v1 JSON object per line (logs go to stderr)",
    )
    parser.add_argument(
        "--save",
        type=Path,
        default=None,
        metavar="DIR",
        help="write annotated copies (boxes, label, confidence) into DIR",
    )
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help="ONNX Runtime intra-op threads (default: its own choice)",
    )
    parser.add_argument(
        "--providers",
        default="CPUExecutionProvider",
        metavar="LIST",
        help="comma-separated ONNX Runtime execution providers (default CPUExecutionProvider)",
    )


def run(args: argparse.Namespace) -> int:
    """0 when every image was inspected, 1 when any failed, 2 when the model cannot be used."""
    import cv2

    from inspector.annotate import annotate
    from inspector.detector import Detector
    from inspector.errors import ImageError, InspectorError
    from inspector.imageio import read_image
    from inspector.models import default_model_path
    from inspector.result import to_json, to_result

    if args.json:
        _logs_to_stderr()
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    try:
        model_path = args.model if args.model is not None else default_model_path()
        detector = Detector.from_path(
            model_path,
            providers=providers,
            intra_op_threads=args.threads,
            conf_threshold=args.conf,
            iou_threshold=args.iou,
        )
    except InspectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.save is not None:
        args.save.mkdir(parents=True, exist_ok=True)

    failed = 0
    for path in _expand(args.images):
        try:
            image = read_image(path)
        except ImageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        inspection = detector.inspect(image)
        result = to_result(inspection)
        if args.json:
            print(to_json(result), flush=True)
        else:
            print(_summary(result), flush=True)
        if args.save is not None:
            target = args.save / path.name
            drawn = annotate(image.bgr, inspection.detections, detector.model.class_names)
            if not cv2.imwrite(str(target), drawn):
                print(f"error: {target}: cannot write the annotated copy", file=sys.stderr)
                failed += 1
    return 1 if failed else 0


def _expand(paths: Sequence[Path]) -> Iterator[Path]:
    """Files as given; a directory's image files (by suffix) in name order."""
    for path in paths:
        if path.is_dir() and path.suffix.lower() not in IMAGE_SUFFIXES:
            yield from sorted(
                p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            )
        else:
            yield path  # read_image reports what is wrong with it (missing, a directory ...)


def _summary(result: dict, shown: int = 5) -> str:
    """One human line per image: the verdict and the best ``shown`` detections."""
    image = result["image"]
    detections = result["detections"]
    found = ", ".join(f"{d['label']} {d['confidence']:.2f} {d['box']}" for d in detections[:shown])
    if len(detections) > shown:
        found += f", ... (+{len(detections) - shown} more)"
    return (
        f"{image['name']} {image['width']}x{image['height']}: {result['verdict']}, "
        f"{len(detections)} detection(s){': ' + found if found else ''} "
        f"({result['timings_ms']['total']:.1f} ms)"
    )


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {value}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _logs_to_stderr() -> None:
    """Keep stdout pure JSON lines: move the root logger's stdout handlers to stderr."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)
