"""``inspector bench``: measure throughput, latency and memory here; write a report with plots."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path

from inspector.commands.argtypes import non_negative_int, positive_int

HELP = ("benchmark the component on this machine (models x threads: stages, session, service "
        "burst, latency, memory, NMS, Ultralytics) and write JSON + markdown + plots")

# the benchmark drives the service through the emulators on generated images: none of these
# modules is shipped in the device's code artifact
NEEDS = ("inspector.bench", "inspector.synth", "inspector.testing", "tqdm")
EXTRA = "test"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", nargs="+", type=Path, metavar="MODEL.onnx",
                        help="ONNX files to bench (default: the bundled fp32 and INT8 models)")
    parser.add_argument("--threads", nargs="+", type=positive_int, metavar="N",
                        help="intra-op thread settings (default: 1 and the CPU count, "
                        "at most 2 values)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run (CI): about 25 s on 2 cores instead of minutes; one "
                        "thread setting, 12-image bursts, memory breakdown of the first model "
                        "only; its figures are indicative only and its report is named "
                        "<host>-<date>-quick, never a full run's name")
    parser.add_argument("--burst", type=positive_int, metavar="N",
                        help="images dropped at once into the watched folder (default 200; "
                        "quick 12)")
    parser.add_argument("--singles", type=positive_int, metavar="N",
                        help="single images timed file-closed -> result (default 20)")
    parser.add_argument("--soak", type=non_negative_int, default=0, metavar="N",
                        help="also feed N images to one service and follow its RSS "
                        "(e.g. 2000; default 0 = no soak)")
    parser.add_argument("--ultralytics-python", type=Path, metavar="PYTHON",
                        help="interpreter with ultralytics (and torch) for the reference "
                        "predictor, e.g. /opt/train-venv/bin/python (default: this one if it "
                        "has ultralytics, else skipped)")
    parser.add_argument("--no-service", action="store_true",
                        help="skip the service runs (in-process figures only)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--out-dir", type=Path, default=Path("benchmarks/results"),
                        metavar="DIR", help="where the report goes (default %(default)s)")
    parser.add_argument("--stem", metavar="NAME",
                        help="file name stem of the report (default <host>-<UTC date>)")
    parser.add_argument("--work-dir", type=Path, metavar="DIR",
                        help="keep the images, service logs and emulator output here "
                        "(default: a temporary directory, removed)")


def run(args: argparse.Namespace) -> int:
    """0 when the report was written, 2 when there is nothing to bench or a model is unusable."""
    from tqdm import tqdm

    from inspector.bench.report import write_report
    from inspector.bench.runner import BenchOptions, bundled_models, describe_models, run_bench
    from inspector.errors import InspectorError

    notes: list[str] = []
    try:
        paths, notes = (list(args.models), []) if args.models else bundled_models()
    except InspectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"error: no such model file: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    if not args.no_service and importlib.util.find_spec("psutil") is None:
        print("error: psutil is needed to follow the service's memory: "
              "pip install 'inspector[bench]' (or give --no-service)", file=sys.stderr)
        return 2
    cpus = os.cpu_count() or 1
    default_threads = (min(cpus, 2),) if args.quick else (1, min(cpus, 2) if cpus > 1 else 1)
    threads = tuple(dict.fromkeys(args.threads or default_threads))
    overrides = {k: v for k, v in {
        "threads": threads, "burst": args.burst, "singles": args.singles, "soak": args.soak,
        "service": not args.no_service, "ultralytics_python": args.ultralytics_python,
        "work_dir": args.work_dir,
    }.items() if v is not None}
    models = describe_models(paths)
    options = (BenchOptions.quick_run(models, **overrides) if args.quick
               else BenchOptions.full(models, **overrides))
    stem = args.stem or default_stem(socket.gethostname(), datetime.now(timezone.utc),
                                     quick=args.quick)

    if getattr(args, "log_level", "INFO") != "DEBUG":
        # one line per image from the emulators and the detector would bury the progress bar
        for name in ("inspector", "awsiot"):
            logging.getLogger(name).setLevel(logging.WARNING)
    with tqdm(total=options.steps(), desc="bench", unit="step", file=sys.stderr,
              dynamic_ncols=True) as bar:
        try:
            doc = run_bench(options, tick=bar.update, phase=bar.set_description_str)
        except InspectorError as exc:
            bar.close()
            print(f"error: {exc}", file=sys.stderr)
            return 2
    doc["notes"][:0] = notes
    written = write_report(doc, args.out_dir, stem, plots=not args.no_plots)
    print(f"wrote {written['json']}")
    print(f"wrote {written['markdown']}")
    for png in written["plots"]:
        print(f"wrote {png}")
    caveat = "  [quick run: indicative only]" if args.quick else ""
    if args.quick:
        print("quick run: indicative only (few images, one thread setting); run without "
              "--quick for figures to compare")
    for goal in doc["goals"]:
        status = {True: "met", False: "MISSED", None: "n/a"}[goal["met"]]
        value = "-" if goal["value"] is None else f"{goal['value']:.3g}"
        missed = f"  {goal['shortfall']}" if goal["shortfall"] else ""
        print(f"{status:>6}  {goal['what']} ({goal['scope']}): {value} {goal['unit']} "
              f"(goal {goal['op']} {goal['goal']:g}){missed}{caveat}")
    return 0


def default_stem(host: str, when: datetime, *, quick: bool) -> str:
    """``<host>-<date>``; a quick run's ends in ``-quick`` so it never replaces a full one's."""
    return f"{host}-{when:%Y-%m-%d}" + ("-quick" if quick else "")
