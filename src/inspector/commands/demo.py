"""``inspector demo``: generate sample tag images, inspect them with the bundled model, show it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any, TextIO

from inspector.commands.argtypes import positive_int
from inspector.errors import ConfigError, ModelError, ModelNotFoundError

logger = logging.getLogger(__name__)

HELP = "generate sample tag images, run the service on them once, show the results"
NEEDS = ("inspector.synth",)  # the image generator: not shipped in the device's code artifact
EXTRA = "test"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, metavar="DIR",
                        help="folder for the sample images (new or empty; default: a temp dir)")
    parser.add_argument("--count", type=positive_int, default=12, metavar="N",
                        help="number of sample images, at least 1 (default 12)")
    parser.add_argument("--seed", type=int, default=7, help="synthetic image seed (default 7)")
    parser.add_argument("--model", metavar="MODEL.onnx",
                        help="model to use instead of the bundled one")
    parser.add_argument("--conf", type=float, metavar="X", help="ConfidenceThreshold")
    parser.add_argument("--no-run", action="store_true",
                        help="only write the sample images into --dir (e.g. a folder a running "
                             "service watches); --dir may then hold other files")


def run(args: argparse.Namespace) -> int:
    from inspector.service import build_service
    from inspector.settings import Settings, resolve_paths
    from inspector.synth import generate, write_image

    folder = args.dir or Path(tempfile.mkdtemp(prefix="inspector-demo-"))
    if args.no_run:
        return _write_samples(folder, args.count, args.seed)
    if folder.exists() and any(folder.iterdir()):
        sys.stderr.write(f"inspector demo: {folder} is not empty; give a new or empty --dir\n")
        return 2
    folder.mkdir(parents=True, exist_ok=True)
    mapping: dict[str, Any] = {"ImageDirectory": str(folder), "StableSeconds": 0.0}
    if args.model:
        mapping["ModelPath"] = args.model
        mapping["AllowUnverifiedModel"] = True  # the file named on this command line
    if args.conf is not None:
        mapping["ConfidenceThreshold"] = args.conf
    try:
        settings = Settings.from_mapping(mapping)
    except ConfigError as exc:
        sys.stderr.write(f"inspector demo: {exc}\n")
        return 2
    paths = resolve_paths(settings)
    logger.info("writing %d sample image(s) to %s", args.count, folder)
    drawn: dict[str, int] = {}  # image name -> scratches the generator drew (the truth)
    for index in range(args.count):
        sample = generate(args.seed, index)
        drawn[write_image(sample, folder / f"tag_{index:03d}").name] = len(sample.boxes_xyxy)
    try:
        service = build_service(settings, drain=True)
    except ModelNotFoundError as exc:
        sys.stderr.write(
            f"inspector demo: no bundled model in this installation ({exc}).\n"
            "Train and export one (see scripts/), or give --model MODEL.onnx.\n"
        )
        return 3
    except ModelError as exc:
        sys.stderr.write(f"inspector demo: cannot load the model: {exc}\n")
        return 3
    service.install_signal_handlers()
    service.run()
    sys.stdout.write("\n")
    write_table(sys.stdout, _read_results(paths.results), drawn)
    where = [
        ("results", paths.results),
        ("flagged + annotated", paths.outbox),
        ("inspected images", paths.done),
        ("failed images", paths.failed),
    ]
    sys.stdout.write("\n" + "".join(f"{label + ':':<21}{path}\n" for label, path in where))
    return 0


def _write_samples(folder: Path, count: int, seed: int) -> int:
    """Write the sample images only, each complete before it appears (rename into place), so a
    service watching ``folder`` never sees a half-written file."""
    import os

    from inspector.synth import generate, write_image

    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo-", dir=folder))
    try:
        for index in range(count):
            written = write_image(generate(seed, index), staging / f"tag_{index:03d}")
            os.replace(written, folder / written.name)
            sys.stdout.write(f"{folder / written.name}\n")
    finally:
        for leftover in staging.iterdir():
            leftover.unlink()
        staging.rmdir()
    return 0


def _read_results(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_table(
    out: TextIO, results: list[dict[str, Any]], drawn: dict[str, int] | None = None
) -> None:
    """One row per result; with ``drawn`` (name -> scratches drawn) also the truth and a score."""
    drawn = drawn or {}
    header = ("image", "verdict", "detections", "ms") + (("drawn",) if drawn else ())
    rows = [header]
    right = 0
    for result in sorted(results, key=lambda r: str(_get(r, "image", "name"))):
        name = str(_get(result, "image", "name"))
        timings = result.get("timings_ms") or {}
        row: tuple[str, ...] = (
            name,
            str(result.get("verdict", "?")),
            str(len(result.get("detections") or [])),
            f"{float(timings.get('total', 0.0)):.1f}",
        )
        if drawn:
            row += (str(drawn.get(name, "?")),)
            right += (drawn.get(name, 0) > 0) == (result.get("verdict") == "defect")
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for n, row in enumerate(rows):
        out.write("  ".join(cell.ljust(w) if i < 2 else cell.rjust(w)
                            for i, (cell, w) in enumerate(zip(row, widths, strict=True))) + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")
    defects = sum(1 for r in results if r.get("verdict") == "defect")
    out.write(f"{len(results)} image(s): {defects} defect, {len(results) - defects} pass\n")
    if drawn:
        out.write(f"verdict right (vs scratches drawn) on {right} of {len(results)} image(s)\n")


def _get(result: dict[str, Any], *keys: str) -> Any:
    value: Any = result
    for key in keys:
        value = value.get(key) if isinstance(value, dict) else None
    return value
