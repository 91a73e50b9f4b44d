"""Write a YOLO data set of synthetic scratched metal tags (docs/data-spec.md).

    python scripts/make_dataset.py data/synth_train --count 4000 --seed 1 --val-fraction 0.05
    python scripts/make_dataset.py data/synth_test --count 300 --seed 9001 --test
    python scripts/make_dataset.py data/robust --count 8000 --seed 41 --profile randomized
    python scripts/make_dataset.py data/ood_test --count 300 --seed 9700000 --test --profile ood

Training layout: OUT/images/{train,val}/*.jpg|png, OUT/labels/{train,val}/*.txt, OUT/data.yaml.
Test layout (``--test``): a flat OUT/images/ + OUT/labels/ with the docs/data-spec.md distribution
(training levers refused), and a data.yaml whose train, val and test all point at it. Both also
write OUT/synth.json (config, seed, counts) and OUT/contact_sheet.png (first 16 images, boxes
drawn). Use a test seed that no training set ever used. ``--profile`` picks the rendering
(inspector.synth.config.PROFILES): ``domain`` (default, docs/data-spec.md), ``randomized`` (domain
randomization for training) or ``ood`` (the out-of-distribution rendering: test sets only, it is
refused without ``--test``).
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from inspector.synth import (
    Sample,
    SynthConfig,
    contact_sheet,
    downscale,
    generate,
    profile,
    write_image,
    yolo_label_lines,
)
from inspector.synth.config import TEST_PROFILES

logger = logging.getLogger("make_dataset")

SHEET_COUNT = 16


@dataclass(frozen=True)
class Job:
    index: int
    split: str  # "train", "val" or "" (flat test set)
    out_dir: Path
    seed: int
    config: SynthConfig
    max_side: int | None
    keep_for_sheet: bool


@dataclass(frozen=True)
class Done:
    index: int
    split: str
    boxes: int
    fmt: str
    kinds: list[str]
    sheet_sample: Sample | None


def _run_job(job: Job) -> Done:
    sample = generate(job.seed, job.index, job.config)
    if job.max_side:
        sample = downscale(sample, job.max_side)
    images = job.out_dir / "images" / job.split
    labels = job.out_dir / "labels" / job.split
    stem = f"tag_{job.seed}_{job.index:06d}"
    path = write_image(sample, images / stem)
    (labels / f"{stem}.txt").write_text("".join(f"{line}\n" for line in yolo_label_lines(sample)))
    scratches = sample.meta.get("scratches", [])
    kinds = [str(s["kind"]) for s in scratches] if isinstance(scratches, list) else []
    sheet = None
    if job.keep_for_sheet:
        sheet = downscale(sample, 480)
    return Done(job.index, job.split, len(sample.boxes_xyxy), path.suffix[1:], kinds, sheet)


def _single_threaded() -> None:
    cv2.setNumThreads(1)  # the pool already uses the cores; nested threads only contend


def _jobs(args: argparse.Namespace, config: SynthConfig) -> Iterator[Job]:
    n_val = 0 if args.test else round(args.count * args.val_fraction)
    n_train = args.count - n_val
    for k in range(args.count):
        split = "" if args.test else ("train" if k < n_train else "val")
        # the sheet shows the first images of each split so both can be checked
        keep = k < SHEET_COUNT - min(4, n_val) or n_train <= k < n_train + min(4, n_val)
        index = args.start_index + k
        yield Job(index, split, args.out_dir, args.seed, config, args.max_side, keep)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--start-index", type=int, default=0,
                   help="first image index of the stream (to extend a set without repeats)")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--test", action="store_true",
                   help="flat test set with the data-spec.md distribution (no training levers)")
    p.add_argument("--profile", default="domain", choices=["domain", "randomized", "ood"],
                   help="rendering profile (ood: test sets only)")
    p.add_argument("--max-side", type=int, default=None,
                   help="downscale images and labels so the long side is at most this")
    levers = p.add_argument_group("training levers (change only the scratches)")
    levers.add_argument("--p-clean", type=float, default=None)
    levers.add_argument("--min-scratches", type=int, default=None)
    levers.add_argument("--max-scratches", type=int, default=None)
    levers.add_argument("--contrast-scale", type=float, default=None)
    levers.add_argument("--faint-fraction", type=float, default=None)
    levers.add_argument("--width-scale", type=float, default=None)
    args = p.parse_args(argv)
    if args.count <= 0:
        p.error("--count must be > 0")
    if args.start_index < 0:
        p.error("--start-index must be >= 0")
    if not 0.0 <= args.val_fraction < 1.0:
        p.error("--val-fraction must be in 0..1")
    if args.max_side is not None and args.max_side < 32:
        p.error("--max-side must be >= 32")
    return args


def _config(args: argparse.Namespace) -> SynthConfig:
    levers = {
        name: getattr(args, name)
        for name in ("p_clean", "min_scratches", "max_scratches", "contrast_scale",
                     "faint_fraction", "width_scale")
        if getattr(args, name) is not None
    }
    if args.test and levers:
        raise SystemExit(f"--test keeps the docs/data-spec.md distribution; drop {sorted(levers)}")
    if args.profile in TEST_PROFILES and not args.test:
        raise SystemExit(f"--profile {args.profile} is for test sets only (add --test); "
                         "it must never be trained on")
    if args.test and args.profile not in ("domain", *TEST_PROFILES):
        raise SystemExit(f"--test with --profile {args.profile}: test sets are domain or "
                         f"{'/'.join(sorted(TEST_PROFILES))}")
    return replace(profile(args.profile), **levers)


def _write_yaml(out_dir: Path, test: bool) -> None:
    if test:
        body = "train: images\nval: images\ntest: images\n"
    else:
        body = "train: images/train\nval: images/val\n"
    text = f"path: {out_dir.resolve()}\n{body}names:\n  0: scratch\n"
    (out_dir / "data.yaml").write_text(text)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parse(argv)
    try:
        config = _config(args)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    splits = [""] if args.test else ["train", "val"]
    for split in splits:
        (args.out_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        (args.out_dir / "labels" / split).mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()
    done: list[Done] = []
    jobs = list(_jobs(args, config))
    progress = tqdm(total=len(jobs), unit="img", desc=str(args.out_dir.name))
    if args.workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(args.workers, initializer=_single_threaded) as pool:
            for result in pool.imap_unordered(_run_job, jobs, chunksize=4):
                done.append(result)
                progress.update()
    else:
        for job in jobs:
            done.append(_run_job(job))
            progress.update()
    progress.close()
    elapsed = time.perf_counter() - started

    done.sort(key=lambda d: d.index)
    sheet = [d.sheet_sample for d in done if d.sheet_sample is not None][:SHEET_COUNT]
    cv2.imwrite(str(args.out_dir / "contact_sheet.png"), contact_sheet(sheet))
    _write_yaml(args.out_dir, args.test)

    kinds = [k for d in done for k in d.kinds]
    summary = {
        "generator": "inspector.synth",
        "profile": args.profile,
        "seed": args.seed,
        "count": args.count,
        "start_index": args.start_index,
        "test": args.test,
        "val_fraction": 0.0 if args.test else args.val_fraction,
        "max_side": args.max_side,
        "config": config.to_dict(),
        "splits": {s or "test": sum(1 for d in done if d.split == s) for s in splits},
        "images_with_scratches": sum(1 for d in done if d.boxes),
        "scratches": len(kinds),
        "scratch_kinds": {k: kinds.count(k) for k in sorted(set(kinds))},
        "formats": {f: sum(1 for d in done if d.fmt == f) for f in ("jpg", "png")},
        "seconds": round(elapsed, 1),
        "command": " ".join(sys.argv),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
    (args.out_dir / "synth.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("wrote %d images (%d scratches) to %s in %.1f s", len(done), len(kinds),
                args.out_dir, elapsed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
