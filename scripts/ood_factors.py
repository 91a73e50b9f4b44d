#!/usr/bin/env python3
"""Which OOD rendering choice costs a model the most: one factor group at a time.

Each variant is the data-spec.md rendering with ONE group of the ``ood`` profile's choices switched
on (camera and scale, metal, light, sensor and compression, stroke profiles), plus the whole
``ood`` profile; all drawn from the OOD test seed, evaluated by our own pipeline
(scripts/evaluate.py). It tells where robustness training has to work, not a test set of its own.

    python scripts/ood_factors.py --model models/scratch-yolov8n.onnx --count 150 \
        --out models/ood-factors.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent

GROUPS: dict[str, tuple[str, ...]] = {
    "camera + scale": ("tag_width", "rotation_deg", "corner_jitter", "keystone"),
    "metal": ("base_grey", "brush_amplitude", "texture_choices"),
    "light": ("gradient_peak", "p_vignette", "vignette"),
    "sensor + JPEG": ("noise_sigma", "shot_noise", "p_blur", "blur_sigma", "p_motion_blur",
                      "motion_blur_px"),
    "strokes": ("stroke_choices",),
}
COLUMNS = ("map50", "map50_95", "recall", "recall_iou10", "image_recall", "image_precision")


def variants() -> dict[str, object]:
    """{name: SynthConfig}: domain, each group of the ood profile alone, and the whole ood."""
    from inspector.synth import SynthConfig, profile
    from inspector.synth.config import Rendering

    ood = profile("ood")
    names = {f.name for f in fields(Rendering)}
    out: dict[str, object] = {"domain": SynthConfig()}
    for group, keys in GROUPS.items():
        assert set(keys) <= names, keys
        changes = {k: getattr(ood.rendering, k) for k in keys}
        config = SynthConfig(rendering=replace(Rendering(), name=f"ood:{group}", **changes))
        if group == "camera + scale":
            config = replace(config, sizes=ood.sizes)
        if group == "sensor + JPEG":
            config = replace(config, p_png=ood.p_png, jpeg_quality_min=ood.jpeg_quality_min,
                             jpeg_quality_max=ood.jpeg_quality_max)
        out[f"ood {group} only"] = config
    out["ood (all)"] = ood
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--count", type=int, default=150)
    p.add_argument("--seed", type=int, default=None, help="default: evaluate.py's OOD seed")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, help="write the markdown table here")
    args = p.parse_args(argv)
    sys.path.insert(0, str(SCRIPTS))
    import evaluate
    from inspector.synth import generate, write_image

    seed = args.seed if args.seed is not None else evaluate.OOD_SEED
    lines = [
        f"Model {args.model.name}, {args.count} images per variant, seed {seed}, conf 0.25 "
        "(`python scripts/ood_factors.py " + " ".join(argv if argv is not None else sys.argv[1:])
        + "`):",
        "",
        "| variant | " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * (len(COLUMNS) + 1),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for name, config in variants().items():
            folder = Path(tmp) / name.replace(" ", "_").replace("+", "")
            folder.mkdir(parents=True)
            items = []
            for index in range(args.count):
                sample = generate(seed, index, config)  # type: ignore[arg-type]
                path = write_image(sample, folder / f"img_{index:05d}")
                items.append((path, sample.boxes_xyxy, evaluate.box_groups(sample.meta)))
            row = evaluate.evaluate_model(args.model, items, args.threads, 0.25)
            lines.append(f"| {name} | " + " | ".join(str(row[c]) for c in COLUMNS) + " |")
            print(lines[-1], flush=True)
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
