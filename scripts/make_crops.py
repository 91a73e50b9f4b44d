#!/usr/bin/env python3
"""Cut a YOLO data set into fixed-size crops at the SAME pixel scale, for cheaper training.

A scratch is 1-2.5 px wide once a 1280 px frame is letterboxed to 640; shrinking the frame
further for speed would erase it. Instead, training sees crops of the 640 px frames (e.g.
320x320) at full scale: the convolutional detector learns the same local features at a quarter
of the cost per sample, so far more gradient steps fit in the same CPU time. Crops are placed
mostly over the tag (where scratches and distractors are), some anywhere (belt, tag edges).
Only training changes: evaluation always runs on whole frames through our own pipeline.

    python scripts/make_crops.py data/trainA data/trainB --out data/crops320 --size 320
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def read_labels(path: Path, width: int, height: int) -> np.ndarray:
    """YOLO label file -> (n, 4) xyxy pixels."""
    if not path.exists() or not path.read_text().strip():
        return np.zeros((0, 4), np.float32)
    rows = np.array(
        [
            [float(v) for v in line.split()[1:5]]
            for line in path.read_text().splitlines()
            if line.strip()
        ],
        np.float32,
    )
    cx, cy, w, h = rows[:, 0] * width, rows[:, 1] * height, rows[:, 2] * width, rows[:, 3] * height
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def crop_boxes(boxes: np.ndarray, x0: int, y0: int, size: int) -> np.ndarray:
    """Boxes clipped to the crop; a box keeps its label while >= 40 % (and 3 px) is inside."""
    if len(boxes) == 0:
        return boxes
    clipped = boxes.copy()
    clipped[:, [0, 2]] = np.clip(boxes[:, [0, 2]] - x0, 0, size)
    clipped[:, [1, 3]] = np.clip(boxes[:, [1, 3]] - y0, 0, size)
    w, h = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area0 = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    keep = (w >= 3) & (h >= 3) & (w * h / area0 >= 0.4)
    return clipped[keep]


def crop_origins(
    rng: np.random.Generator, width: int, height: int, size: int, count: int, boxes: np.ndarray
) -> list[tuple[int, int]]:
    origins = []
    for k in range(count):
        if len(boxes) and k < count - 1:
            # centre on a random scratch, jittered, so positives dominate
            b = boxes[rng.integers(len(boxes))]
            cx = (b[0] + b[2]) / 2 + rng.uniform(-0.35, 0.35) * size
            cy = (b[1] + b[3]) / 2 + rng.uniform(-0.35, 0.35) * size
        else:  # anywhere near the middle: belt, tag edges, text, holes
            cx = rng.uniform(0.25, 0.75) * width
            cy = rng.uniform(0.25, 0.75) * height
        x0 = int(np.clip(cx - size / 2, 0, max(0, width - size)))
        y0 = int(np.clip(cy - size / 2, 0, max(0, height - size)))
        origins.append((x0, y0))
    return origins


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "sources", type=Path, nargs="+", help="YOLO data sets (images/train, labels/train)"
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--size", type=int, default=320)
    p.add_argument("--per-image", type=int, default=3)
    p.add_argument("--seed", type=int, default=11)
    args = p.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    positives = crops = 0
    for split in ("train", "val"):
        out_img, out_lbl = args.out / "images" / split, args.out / "labels" / split
        out_img.mkdir(parents=True, exist_ok=True)
        out_lbl.mkdir(parents=True, exist_ok=True)
        images = sorted(
            f
            for src in args.sources
            if (src / "images" / split).is_dir()
            for f in (src / "images" / split).iterdir()
            if f.suffix.lower() in IMAGE_SUFFIXES
        )
        for path in tqdm(images, desc=f"{split} crops", unit="img"):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            height, width = image.shape[:2]
            dataset = path.parent.parent.parent
            boxes = read_labels(dataset / "labels" / split / (path.stem + ".txt"), width, height)
            origins = crop_origins(rng, width, height, args.size, args.per_image, boxes)
            for k, (x0, y0) in enumerate(origins):
                tile = np.full((args.size, args.size, 3), 114, np.uint8)
                part = image[y0 : y0 + args.size, x0 : x0 + args.size]
                tile[: part.shape[0], : part.shape[1]] = part
                kept = crop_boxes(boxes, x0, y0, args.size)
                name = f"{dataset.name}_{path.stem}_{k}"
                # PNG: no second round of JPEG loss on top of the generator's own.
                cv2.imwrite(str(out_img / f"{name}.png"), tile)
                s = args.size
                lines = [
                    f"0 {(b[0] + b[2]) / 2 / s:.6f} {(b[1] + b[3]) / 2 / s:.6f} "
                    f"{(b[2] - b[0]) / s:.6f} {(b[3] - b[1]) / s:.6f}"
                    for b in kept
                ]
                (out_lbl / f"{name}.txt").write_text("\n".join(lines) + ("\n" if lines else ""))
                positives += len(kept)
                crops += 1
    (args.out / "data.yaml").write_text(
        f"path: {args.out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: scratch\n"
    )
    print(f"wrote {crops} crops with {positives} boxes to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
