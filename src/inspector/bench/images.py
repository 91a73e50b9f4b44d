"""The benchmark's images: a small pool of generated JPEGs, reused under many names.

Generating a picture takes a few hundred milliseconds, so a burst of hundreds of files copies the
pool's bytes under new names instead; the service decodes every copy all the same.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inspector.synth import SynthConfig, generate, write_image
from inspector.types import Size

SEED = 7
QUICK_SIZE = Size(height=480, width=640)


@dataclass(frozen=True)
class ImagePool:
    paths: tuple[Path, ...]  # distinct JPEG files, generated once per run

    def path(self, index: int) -> Path:
        return self.paths[index % len(self.paths)]

    def copies(self, folder: Path, prefix: str, count: int) -> list[Path]:
        """``count`` copies of the pool, cycled, as ``folder/<prefix>-00000.jpg`` ..."""
        folder.mkdir(parents=True, exist_ok=True)
        out = []
        for i in range(count):
            target = folder / f"{prefix}-{i:05d}.jpg"
            shutil.copyfile(self.path(i), target)
            out.append(target)
        return out


def make_pool(folder: Path, count: int, *, quick: bool = False) -> ImagePool:
    """``count`` JPEGs from the synthetic generator (camera sizes of docs/data-spec.md; ``quick``:
    small 640x480 ones)."""
    config = SynthConfig(p_png=0.0)
    if quick:
        config = SynthConfig(p_png=0.0, sizes=((QUICK_SIZE, 1.0),))
    folder.mkdir(parents=True, exist_ok=True)
    paths = [write_image(generate(SEED, i, config), folder / f"pool-{i:03d}") for i in range(count)]
    return ImagePool(tuple(paths))


def drop(paths: Sequence[Path], folder: Path) -> list[Path]:
    """Rename ``paths`` into ``folder`` (same file system: each arrives complete, at once)."""
    out = []
    for path in paths:
        target = folder / path.name
        os.replace(path, target)
        out.append(target)
    return out
