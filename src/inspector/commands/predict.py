"""``inspector predict``: inspect image files or directories once and print the results.

Like ``yolo predict``: one line per image (``image 3/300 path 1280x960: 2 scratches, defect,
61 ms``), then a speed summary and where annotated copies went. stdout carries only results (the
per-image lines, or with ``--json`` one JSON object per line: a schema v1 result, or
``{"image": PATH, "error": REASON}`` for an image that could not be inspected); logs, errors,
progress and the summary go to stderr, and ``--json`` into a pipe drops the progress and the
summary (errors stay). Exit status: 0 every image inspected, 1 some failed, 2 usage error or
nothing usable (no model, no image). A reader that goes away (``| head``) ends the run quietly.
"""

from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspector.cli import logs_to_stderr
from inspector.commands.argtypes import positive_int, unit_interval

HELP = "inspect images (files or directories) with the model and print one result per image"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "images",
        nargs="+",
        type=Path,
        metavar="IMAGE_OR_DIR",
        help="image files, directories whose image files are inspected (not recursive), or "
        "quoted glob patterns ('shots/**/*.jpg'); only the extensions `inspector run` "
        "inspects by default (jpg, jpeg, png, bmp, tif, tiff)",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=None,
        help="ONNX model file (default: the bundled default model; $INSPECTOR_MODELS_DIR "
        "names another folder holding a manifest.json and its models)",
    )
    parser.add_argument(
        "--conf",
        type=unit_interval,
        default=0.25,
        metavar="C",
        help="confidence threshold, 0..1 (default 0.25)",
    )
    parser.add_argument(
        "--iou",
        type=unit_interval,
        default=0.7,
        metavar="I",
        help="NMS IoU threshold, 0..1 (default 0.7)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one result-schema v1 JSON object per line, or {image, error} for an image "
        "that failed (progress on stderr; none when stdout is a pipe)",
    )
    parser.add_argument(
        "--save",
        type=Path,
        default=None,
        metavar="DIR",
        help="write annotated copies (boxes, label, confidence) into DIR; a name already "
        "there gets a -2, -3 ... suffix (nothing is overwritten)",
    )
    parser.add_argument(
        "--threads",
        type=positive_int,
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
    """0 when every image was inspected, 1 when any failed, 2 when nothing was usable (no model,
    no image among the arguments)."""
    from inspector.detector import Detector
    from inspector.errors import InspectorError
    from inspector.models import default_model_path
    from inspector.types import Thresholds

    logs_to_stderr()
    out = _Output(json_lines=args.json, quiet=args.json and not sys.stdout.isatty())
    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    try:
        model_path = args.model if args.model is not None else default_model_path()
        detector = Detector.from_path(
            model_path,
            providers=providers,
            intra_op_threads=args.threads,
            thresholds=Thresholds(conf=args.conf, iou=args.iou),
        )
    except InspectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    inputs = list(_expand(args.images, _allowed_suffixes(), out.note))
    if not inputs:
        print("error: no image files in " + " ".join(map(str, args.images)), file=sys.stderr)
        return 2
    saver = _Saver(args.save, out.note) if args.save is not None else None
    try:
        stats = _predict(detector, inputs, out, saver)
    except BrokenPipeError:
        # the reader went away (``| head``): stop quietly, and keep the interpreter's flush of
        # stdout at exit from raising again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    if not out.quiet:
        for line in stats.summary(detector, saver):
            print(line, file=sys.stderr)
    return 1 if stats.failed else 0


class _Saver:
    """Annotated copies in one folder. A name already there (the same name from another input
    folder, or an earlier run's file) gets a ``-2``, ``-3`` ... suffix: nothing is overwritten."""

    def __init__(self, folder: Path, note: Callable[[str], None]) -> None:
        self.folder = folder
        self.note = note
        self.written = 0

    def save(self, source: Path, bgr: Any, inspection: Any, class_names: Any) -> str | None:
        import cv2

        from inspector.annotate import annotate

        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / source.name
        n = 1
        while target.exists():
            n += 1
            target = self.folder / f"{source.stem}-{n}{source.suffix}"
        drawn = annotate(bgr, inspection.detections, class_names)
        if not cv2.imwrite(str(target), drawn):
            return f"{target}: cannot write the annotated copy"
        if n > 1:
            self.note(f"{source}: saved as {target} ({source.name} is taken)")
        self.written += 1
        return None


@dataclass
class _Stats:
    inspected: int = 0
    failed: int = 0
    defects: int = 0
    started: float = field(default_factory=time.perf_counter)
    totals_ms: dict[str, float] = field(default_factory=dict)

    def add(self, timings_ms: dict[str, float], verdict: str) -> None:
        self.inspected += 1
        self.defects += verdict == "defect"
        for stage, ms in timings_ms.items():
            self.totals_ms[stage] = self.totals_ms.get(stage, 0.0) + ms

    def summary(self, detector: Any, saver: _Saver | None) -> list[str]:
        lines = []
        if self.inspected:
            per = {k: v / self.inspected for k, v in self.totals_ms.items()}
            size = detector.model.input_size
            lines.append(
                f"Speed: {per.get('decode', 0.0):.1f} ms decode, "
                f"{per.get('preprocess', 0.0):.1f} ms preprocess, "
                f"{per.get('inference', 0.0):.1f} ms inference, "
                f"{per.get('postprocess', 0.0):.1f} ms postprocess per image "
                f"at shape (1, 3, {size.height}, {size.width})"
            )
        lines.append(
            f"{self.inspected + self.failed} image(s): {self.defects} defect, "
            f"{self.inspected - self.defects} pass, {self.failed} failed, "
            f"in {time.perf_counter() - self.started:.1f} s"
        )
        if saver is not None and saver.written:
            lines.append(f"Results saved to {saver.folder}")
        return lines


class _Output:
    """Results on stdout, the rest on stderr; ``quiet`` drops the progress, never errors."""

    def __init__(self, *, json_lines: bool, quiet: bool) -> None:
        self.json_lines = json_lines
        self.quiet = quiet

    def result(self, number: str, path: Path, result: dict[str, Any]) -> None:
        from inspector.result import to_json

        line = f"image {number} {path} {_described(result)}"
        if self.json_lines:
            print(to_json(result), flush=True)
            if not self.quiet:
                print(line, file=sys.stderr, flush=True)
        else:
            print(line, flush=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)

    def failure(self, number: str, path: Path, reason: str) -> None:
        print(f"image {number} {path}: error: {reason}", file=sys.stderr, flush=True)
        if self.json_lines:
            print(json.dumps({"image": str(path), "error": reason}), flush=True)


def _predict(detector: Any, inputs: list[_Input], out: _Output, saver: _Saver | None) -> _Stats:
    from inspector.errors import ImageError
    from inspector.imageio import read_image
    from inspector.result import to_result

    stats = _Stats()
    max_pixels = _default_setting("MaxImagePixels")
    for index, item in enumerate(inputs, start=1):
        number = f"{index}/{len(inputs)}"
        if item.refused:
            stats.failed += 1
            out.failure(number, item.path, item.refused)
            continue
        try:
            # reduced JPEG decode unless the full frame is needed to draw on
            fit = None if saver is not None else detector.model.input_size
            image = read_image(item.path, max_pixels=max_pixels, fit=fit)
        except ImageError as exc:
            stats.failed += 1
            out.failure(number, item.path, exc.reason)
            continue
        inspection = detector.inspect(image)
        result = to_result(inspection)
        stats.add(inspection.timings_ms, result["verdict"])
        out.result(number, item.path, result)
        if saver is not None:
            problem = saver.save(item.path, image.bgr, inspection, detector.model.class_names)
            if problem:
                stats.failed += 1
                print(f"error: {problem}", file=sys.stderr)
    return stats


@dataclass(frozen=True)
class _Input:
    path: Path
    refused: str = ""  # why it is not inspected (what ``inspector run`` would refuse)


def _expand(
    paths: Sequence[Path], allowed: frozenset[str], note: Callable[[str], None]
) -> Iterator[_Input]:
    """Files as given (quoted glob patterns expanded); a directory's image files in name order.

    What ``inspector run`` refuses is refused here too: a file whose extension is not in the
    default ``Extensions``. A directory's other files are passed over (a log line counts them);
    a file named explicitly, or matched by a pattern, gets an error record.
    """
    for path in paths:
        text = str(path)
        if not path.exists() and glob.has_magic(text):
            matches = sorted(glob.glob(os.path.expanduser(text), recursive=True))
            if not matches:
                yield _Input(path, "no file matches this pattern")
            for match in matches:
                found = Path(match)
                if found.is_dir():
                    yield from _expand([found], allowed, note)
                else:
                    yield _explicit(found, allowed)
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            other = [p.name for p in files if p.suffix.lower() not in allowed]
            if other:
                shown = ", ".join(other[:5]) + (" ..." if len(other) > 5 else "")
                note(f"{path}: passed over {len(other)} file(s) with other extensions: {shown}")
            yield from (_Input(p) for p in files if p.suffix.lower() in allowed)
        else:
            yield _explicit(path, allowed)  # read_image says what is wrong (missing ...)


def _explicit(path: Path, allowed: frozenset[str]) -> _Input:
    if path.suffix.lower() in allowed or not path.exists() or path.is_dir():
        return _Input(path)
    extensions = ", ".join(sorted(e.lstrip(".") for e in allowed))
    return _Input(path, f"extension {path.suffix or '(none)'} is not one of the inspected "
                        f"Extensions ({extensions}); `inspector run` would pass it over too")


def _allowed_suffixes() -> frozenset[str]:
    from inspector.sources import suffixes

    return suffixes(_default_setting("Extensions"))


def _default_setting(key: str) -> Any:
    """The settings model's default, so that predict refuses what ``inspector run`` refuses."""
    from inspector.settings import Settings

    return Settings.model_fields[key].default


def _described(result: dict[str, Any]) -> str:
    """``1280x960: 2 scratches, defect, 61 ms``"""
    image = result["image"]
    counts: dict[str, int] = {}
    for detection in result["detections"]:
        counts[detection["label"]] = counts.get(detection["label"], 0) + 1
    found = ", ".join(f"{n} {_plural(label, n)}" for label, n in counts.items())
    return (f"{image['width']}x{image['height']}: {found or 'no detections'}, "
            f"{result['verdict']}, {result['timings_ms']['total']:.0f} ms")


def _plural(label: str, n: int) -> str:
    if n == 1:
        return label
    return label + ("es" if label.endswith(("s", "x", "z", "ch", "sh")) else "s")
