"""Synthetic labelled pictures of metal tags with scratches (docs/data-spec.md).

    sample = generate(seed, index, SynthConfig())
    write_image(sample, out_dir / "img_000001")      # .jpg (mostly) or .png
    label_text = "\n".join(yolo_label_lines(sample))
    small = downscale(sample, 640)                   # image and boxes, for fast training

Each image is deterministic for ``(seed, index, config)`` (seed and index non-negative).
``render_sample(..., draw_scratches=False)`` renders the same picture without its scratches.
``profile("ood")`` / ``profile("randomized")`` are other renderings (config.py): the
out-of-distribution test rendering and the domain randomization for training.
``scripts/make_dataset.py`` writes whole YOLO data sets (and flat test sets) with these.
"""

from inspector.synth.config import DEFAULT_SIZES, PROFILES, Rendering, SynthConfig, profile
from inspector.synth.contact_sheet import contact_sheet
from inspector.synth.sample import Sample, downscale, write_image, yolo_label_lines
from inspector.synth.scene import generate, render_sample

__all__ = [
    "DEFAULT_SIZES",
    "PROFILES",
    "Rendering",
    "Sample",
    "SynthConfig",
    "contact_sheet",
    "downscale",
    "generate",
    "profile",
    "render_sample",
    "write_image",
    "yolo_label_lines",
]
