#!/usr/bin/env python3
"""Retrain from reviewed images: build the data set, fine-tune, evaluate, refuse a worse model.

Input: images a person reviewed (e.g. the uploads of the uncertain/audit band) with YOLO box
labels as labelling tools export them: ``class cx cy w h`` normalised to 0..1, one ``.txt`` per
image, either beside the image or in a ``labels/`` folder parallel to its ``images/`` folder
(Ultralytics' rule); an empty ``.txt`` is a reviewed image without scratches.

    python scripts/retrain_from_review.py --reviewed review/2026-12 --work runs/retrain-1 \\
        --current models/scratch-yolov8n.onnx --current-weights models/scratch-yolov8n.pt \\
        --synthetic-ratio 3 --epochs 30 --device 0 --publish-to models/candidates

Steps:
  1. check every reviewed image and label (a bad one is logged with its file and reason and left
     out; a duplicate image is logged and used once), split off a hold-out (``--holdout-fraction``,
     stable by file name, so adding images later never moves an old image across);
  2. mix the rest with synthetic images (``--synthetic-ratio`` per reviewed image, rendering
     ``--synthetic-profile``, default ``randomized``) into an Ultralytics data set + data.yaml;
  3. fine-tune from ``--current-weights`` (default models/scratch-yolov8n.pt, else rebuilt from
     the current ONNX by scripts/onnx_to_weights.py; scripts/train.py, the ``train`` extra), export
     the candidate ONNX (scripts/export_model.py). ``--train-cmd`` replaces this step with any
     command that writes the candidate ONNX ({data} {weights} {out} {work} are filled in), and
     ``--candidate`` skips it and evaluates a given ONNX file;
  4. evaluate the candidate and ``--current`` with our own pipeline on the in-distribution set,
     the OOD set (scripts/evaluate.py's seeds) and the reviewed hold-out;
  5. the gate: a candidate lower than the current model on any set in any of ``--gate-metrics``
     (by more than ``--tolerance``) is REFUSED: exit code 3 and one line per reason. Otherwise
     it is ACCEPTED (exit 0) and copied to ``--publish-to`` if given.

Everything goes to ``--work``: dataset/, candidate.onnx, report.json (both models' figures on
every set, the gate's decision and reasons). Exit codes: 0 accepted, 2 bad input, 3 refused,
4 the training command failed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
DEFAULT_WEIGHTS = REPO / "models" / "scratch-yolov8n.pt"
SYNTHETIC_SEED = 51  # training seeds are < 1_000_000; 1, 2, 21 made model 1.2.0, 41+ robust runs
EXIT_ACCEPTED, EXIT_BAD_INPUT, EXIT_REFUSED, EXIT_TRAIN_FAILED = 0, 2, 3, 4

logger = logging.getLogger("retrain_from_review")


@dataclass(frozen=True)
class Reviewed:
    image: Path
    label: Path
    boxes: list[tuple[float, float, float, float]]  # normalised cx, cy, w, h
    sha256: str


class LabelError(ValueError):
    pass


def label_path(image: Path) -> Path | None:
    """Where the YOLO label of ``image`` is: ``.../labels/...`` for ``.../images/...``, else
    beside the image. None when neither exists."""
    parts = list(image.parts)
    candidates = []
    if "images" in parts:
        k = len(parts) - 1 - parts[::-1].index("images")
        candidates.append(Path(*parts[:k], "labels", *parts[k + 1 :]).with_suffix(".txt"))
    candidates.append(image.with_suffix(".txt"))
    return next((c for c in candidates if c.is_file()), None)


def parse_label(path: Path) -> list[tuple[float, float, float, float]]:
    """Boxes of one YOLO label file; LabelError names the line and what is wrong with it."""
    boxes = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise LabelError(
                f"line {number}: expected 'class cx cy w h' (5 fields), got {len(fields)}"
                + (" (a polygon/segmentation export?)" if len(fields) > 5 else "")
            )
        try:
            cls = int(fields[0])
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            raise LabelError(f"line {number}: not numbers: {line.strip()!r}") from None
        if cls != 0:
            raise LabelError(f"line {number}: class {cls}, the model has one class (0: scratch)")
        if not all(0.0 <= v <= 1.0 for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
            raise LabelError(f"line {number}: values must be in 0..1 with w, h > 0: {line.strip()}")
        boxes.append((cx, cy, w, h))
    return boxes


def collect(reviewed_dir: Path) -> tuple[list[Reviewed], list[str]]:
    """Every usable reviewed image, and one problem line per image left out."""
    from inspector.errors import ImageError
    from inspector.imageio import read_image

    good: list[Reviewed] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    images = sorted(p for p in reviewed_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    for image in images:
        label = label_path(image)
        if label is None:
            problems.append(f"{image}: no label file (.txt beside it or under labels/)")
            continue
        try:
            boxes = parse_label(label)
        except (LabelError, UnicodeDecodeError) as exc:
            problems.append(f"{image}: bad label {label}: {exc}")
            continue
        try:
            digest = read_image(image).info.sha256
        except ImageError as exc:
            problems.append(f"{image}: {exc}")
            continue
        if digest in seen:
            logger.warning("%s: the same image as %s; used once", image, seen[digest])
            continue
        seen[digest] = image
        good.append(Reviewed(image, label, boxes, digest))
    return good, problems


def in_holdout(item: Reviewed, fraction: float) -> bool:
    """Stable split by file name: adding images later never moves an old one across."""
    digest = hashlib.sha256(item.image.name.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_reviewed(items: list[Reviewed], out: Path, split: str) -> None:
    for k, item in enumerate(items):
        stem = f"review_{k:05d}_{item.image.stem}"
        _link_or_copy(item.image, out / "images" / split / f"{stem}{item.image.suffix.lower()}")
        lines = "".join(f"0 {cx:.6f} {cy:.6f} {w:.6f} {h:.6f}\n" for cx, cy, w, h in item.boxes)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split / f"{stem}.txt").write_text(lines)


def build_dataset(
    train: list[Reviewed], holdout: list[Reviewed], work: Path, args: argparse.Namespace
) -> Path:
    """dataset/ (reviewed train + hold-out), synthetic/ (make_dataset.py) and data.yaml."""
    dataset = work / "dataset"
    if dataset.exists():
        shutil.rmtree(dataset)
    _write_reviewed(train, dataset, "train")
    _write_reviewed(holdout, dataset, "holdout")
    synthetic_count = round(args.synthetic_ratio * len(train))
    train_dirs = [str((dataset / "images" / "train").resolve())]
    val_dirs: list[str] = []
    if synthetic_count > 0:
        sys.path.insert(0, str(SCRIPTS))
        import make_dataset

        synthetic = work / "synthetic"
        if synthetic.exists():
            shutil.rmtree(synthetic)
        val_fraction = 0.1 if synthetic_count >= 10 else 0.0
        rc = make_dataset.main([
            str(synthetic), "--count", str(synthetic_count), "--seed", str(args.synthetic_seed),
            "--profile", args.synthetic_profile, "--max-side", "640",
            "--val-fraction", str(val_fraction), "--p-clean", "0.2", "--max-scratches", "5",
        ])
        if rc != 0:
            raise SystemExit(f"make_dataset.py failed ({rc})")
        train_dirs.append(str((synthetic / "images" / "train").resolve()))
        if val_fraction:
            val_dirs.append(str((synthetic / "images" / "val").resolve()))
    if not val_dirs:  # Ultralytics needs a val split; the reviewed train images stand in
        val_dirs = train_dirs[:1]
    data_yaml = work / "data.yaml"
    import yaml

    data_yaml.write_text(yaml.safe_dump(
        {"train": train_dirs, "val": val_dirs, "names": {0: "scratch"}}, sort_keys=False
    ))
    summary = {
        "reviewed_train": len(train),
        "reviewed_holdout": len(holdout),
        "synthetic": synthetic_count,
        "synthetic_profile": args.synthetic_profile,
        "synthetic_seed": args.synthetic_seed,
    }
    (work / "dataset.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("data set: %s", summary)
    return data_yaml


def train_candidate(data_yaml: Path, work: Path, args: argparse.Namespace) -> Path:
    out = work / "candidate.onnx"
    if out.exists():
        out.unlink()
    fields = {"data": str(data_yaml), "weights": str(args.current_weights or ""),
              "out": str(out), "work": str(work)}
    if args.train_cmd:
        commands = [shlex.split(args.train_cmd.format(**fields))]
    else:
        py = sys.executable
        run = work / "runs"
        weights = args.current_weights
        commands = []
        if weights is None:  # rebuild the current model's weights from its ONNX export
            weights = work / "current-from-onnx.pt"
            import yaml

            train_dirs = yaml.safe_load(data_yaml.read_text())["train"]
            commands.append([py, str(SCRIPTS / "onnx_to_weights.py"), str(args.current),
                             str(weights), "--calibrate", *train_dirs])
        commands += [
            [py, str(SCRIPTS / "train.py"), "--data", str(data_yaml), "--weights",
             str(weights), "--imgsz", "640", "--epochs", str(args.epochs),
             "--batch", str(args.batch), "--device", args.device, "--project", str(run),
             "--name", "finetune", "--optimizer", "AdamW", "--lr0", str(args.lr0),
             "--warmup-epochs", "0.5", "--close-mosaic", "2", "--box", "9.0"],
            [py, str(SCRIPTS / "export_model.py"), str(run / "finetune" / "weights" / "best.pt"),
             str(out), "--imgsz", "640", "--name", "scratch-yolov8n", "--version", args.version],
        ]
    for command in commands:
        logger.info("running: %s", shlex.join(command))
        rc = subprocess.run(command, cwd=REPO).returncode
        if rc != 0:
            logger.error("training step failed (exit %d): %s", rc, shlex.join(command))
            raise SystemExit(EXIT_TRAIN_FAILED)
    if not out.is_file():
        logger.error("the training step wrote no candidate at %s", out)
        raise SystemExit(EXIT_TRAIN_FAILED)
    return out


def holdout_items(holdout: list[Reviewed]) -> list[tuple[Path, Any, dict[str, list[str]]]]:
    """Hold-out images in evaluate.py's item form: boxes back in pixels of each image."""
    import numpy as np

    from inspector.imageio import read_image

    items = []
    for item in holdout:
        size = read_image(item.image).info.size
        b = np.array(item.boxes, dtype=np.float64).reshape(-1, 4)
        xyxy = np.stack([
            (b[:, 0] - b[:, 2] / 2) * size.width, (b[:, 1] - b[:, 3] / 2) * size.height,
            (b[:, 0] + b[:, 2] / 2) * size.width, (b[:, 1] + b[:, 3] / 2) * size.height,
        ], axis=1)
        items.append((item.image, xyxy, {"image_size": [f"{size.width}x{size.height}"] * len(b)}))
    return items


def evaluate_both(
    candidate: Path, current: Path, holdout: list[Reviewed], work: Path, args: argparse.Namespace
) -> dict[str, dict[str, dict[str, Any]]]:
    """{"candidate"|"current": {set: report}} on domain, ood and the reviewed hold-out."""
    sys.path.insert(0, str(SCRIPTS))
    import evaluate

    sets: dict[str, list] = {}
    for set_name, seed in (("domain", evaluate.TEST_SEED), ("ood", evaluate.OOD_SEED)):
        if args.eval_count > 0:
            sets[set_name] = evaluate.build_test_set(
                work / "eval" / set_name, args.eval_count, seed, set_name
            )
    if holdout:
        sets["holdout"] = holdout_items(holdout)
    reports: dict[str, dict[str, dict[str, Any]]] = {"candidate": {}, "current": {}}
    for set_name, items in sets.items():
        for role, model in (("candidate", candidate), ("current", current)):
            reports[role][set_name] = evaluate.evaluate_model(model, items, args.threads, args.conf)
    return reports


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reviewed", type=Path, required=True, help="reviewed images + YOLO labels")
    p.add_argument("--work", type=Path, required=True, help="output folder (created)")
    p.add_argument("--current", type=Path, default=REPO / "models" / "scratch-yolov8n.onnx",
                   help="the model in service (ONNX), the one to beat")
    p.add_argument("--current-weights", type=Path,
                   help="the .pt weights the current model was exported from, to fine-tune "
                        "(default: models/scratch-yolov8n.pt if it exists, else rebuilt from "
                        "--current by scripts/onnx_to_weights.py)")
    p.add_argument("--candidate", type=Path, help="skip training: evaluate this ONNX file")
    p.add_argument("--train-cmd", help="replaces fine-tune + export; must write {out}")
    p.add_argument("--synthetic-ratio", type=float, default=3.0,
                   help="synthetic training images per reviewed training image (0: none)")
    p.add_argument("--synthetic-profile", choices=["domain", "randomized"], default="randomized")
    p.add_argument("--synthetic-seed", type=int, default=SYNTHETIC_SEED)
    p.add_argument("--holdout-fraction", type=float, default=0.2)
    p.add_argument("--eval-count", type=int, default=300,
                   help="images of each synthetic test set (domain, ood)")
    p.add_argument("--gate-metrics", nargs="+", default=["map50", "image_recall"])
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="how much lower than the current model a metric may be (default 0)")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--lr0", type=float, default=0.0005)
    p.add_argument("--device", default="cpu")
    p.add_argument("--version", default="0.0.0-candidate", help="written into the ONNX metadata")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--conf", type=float, default=0.25)
    p.add_argument("--publish-to", type=Path, help="copy an accepted candidate here")
    args = p.parse_args(argv)
    if not args.reviewed.is_dir():
        p.error(f"--reviewed: not a folder: {args.reviewed}")
    if not args.current.is_file():
        p.error(f"--current: no such model file: {args.current}")
    if args.candidate is not None and not args.candidate.is_file():
        p.error(f"--candidate: no such model file: {args.candidate}")
    if args.candidate is not None and args.train_cmd:
        p.error("--candidate and --train-cmd exclude each other")
    if args.current_weights is not None and not args.current_weights.is_file():
        p.error(f"--current-weights: no such file {args.current_weights}")
    if args.current_weights is None and DEFAULT_WEIGHTS.is_file():
        args.current_weights = DEFAULT_WEIGHTS
    if not 0.0 <= args.holdout_fraction < 1.0:
        p.error("--holdout-fraction must be in 0..1")
    if args.synthetic_ratio < 0 or args.tolerance < 0 or args.eval_count < 0:
        p.error("--synthetic-ratio, --tolerance and --eval-count must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    from inspector.evaluation import gate

    started = time.time()
    args.work.mkdir(parents=True, exist_ok=True)
    reviewed, problems = collect(args.reviewed)
    for line in problems:
        logger.error("left out: %s", line)
    if not reviewed:
        logger.error("no usable reviewed images in %s (%d left out)", args.reviewed,
                     len(problems))
        return EXIT_BAD_INPUT
    holdout = [r for r in reviewed if in_holdout(r, args.holdout_fraction)]
    train = [r for r in reviewed if not in_holdout(r, args.holdout_fraction)]
    logger.info("%d reviewed images: %d to train on, %d held out, %d left out", len(reviewed),
                len(train), len(holdout), len(problems))
    if not holdout:
        logger.warning("no reviewed hold-out (too few images for --holdout-fraction %s): the "
                       "gate compares on the synthetic sets only", args.holdout_fraction)

    data_yaml = build_dataset(train, holdout, args.work, args)
    if args.candidate is not None:
        candidate = args.work / "candidate.onnx"
        if args.candidate.resolve() != candidate.resolve():
            shutil.copy2(args.candidate, candidate)
    else:
        try:
            candidate = train_candidate(data_yaml, args.work, args)
        except SystemExit as exc:
            return int(exc.code or EXIT_TRAIN_FAILED)

    reports = evaluate_both(candidate, args.current, holdout, args.work, args)
    reasons = gate(reports["candidate"], reports["current"], args.gate_metrics, args.tolerance)
    accepted = not reasons
    published = None
    if accepted and args.publish_to:
        args.publish_to.mkdir(parents=True, exist_ok=True)
        published = args.publish_to / candidate.name
        shutil.copy2(candidate, published)
    table = {
        role: {s: {m: r.get(m) for m in (*args.gate_metrics, "map50_95", "recall", "images")}
               for s, r in per_set.items()}
        for role, per_set in reports.items()
    }
    report = {
        "accepted": accepted,
        "reasons": reasons,
        "gate_metrics": args.gate_metrics,
        "tolerance": args.tolerance,
        "candidate": str(candidate),
        "current": str(args.current),
        "published": str(published) if published else None,
        "summary": table,
        "reports": reports,
        "left_out": problems,
        "wall_s": round(time.time() - started, 1),
    }
    (args.work / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    for set_name in table["current"]:
        logger.info("%-8s current %s | candidate %s", set_name, table["current"][set_name],
                    table["candidate"].get(set_name))
    if not accepted:
        logger.error("REFUSED: the candidate %s is worse than the current model %s:", candidate,
                     args.current)
        for reason in reasons:
            logger.error("  %s", reason)
        return EXIT_REFUSED
    logger.info("ACCEPTED: the candidate is at least as good on every set%s",
                f"; copied to {published}" if published else "")
    return EXIT_ACCEPTED


if __name__ == "__main__":
    sys.exit(main())
