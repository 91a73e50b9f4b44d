"""The knobs of the synthetic image distribution (docs/data-spec.md defaults).

Two kinds of fields live here. The *distribution* fields (sizes, formats) define the test
distribution and should stay at their defaults for any evaluation set. The *training levers*
(``p_clean``, ``min_scratches``, ``max_scratches``, ``contrast_scale``, ``faint_fraction``,
``width_scale``) change only how scratches are drawn, so a training set can be made easier or
denser without touching anything else in the picture.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from inspector.types import Size

# (size, weight): mostly 1280x960, plus the other cameras of docs/data-spec.md.
DEFAULT_SIZES: tuple[tuple[Size, float], ...] = (
    (Size(height=960, width=1280), 0.60),
    (Size(height=768, width=1024), 0.15),
    (Size(height=1200, width=1600), 0.15),
    (Size(height=2048, width=2448), 0.10),
)

REFERENCE_WIDTH = 1280  # scratch widths are specified at this image width and scale with it


@dataclass(frozen=True)
class SynthConfig:
    """Distribution of generated images. Defaults follow docs/data-spec.md.

    Scratch count: with probability ``p_clean`` an image has none; otherwise the count is uniform
    in ``max(1, min_scratches) .. max_scratches``.
    """

    sizes: tuple[tuple[Size, float], ...] = DEFAULT_SIZES
    p_png: float = 0.2  # the rest is JPEG
    jpeg_quality_min: int = 85
    jpeg_quality_max: int = 95
    # training levers: they change the scratches only
    p_clean: float = 0.4
    min_scratches: int = 0
    max_scratches: int = 4
    contrast_scale: float = 1.0  # multiplies every scratch contrast (and its companion line)
    faint_fraction: float = 0.15
    width_scale: float = 1.0  # multiplies the 2-5 px (at 1280 px) stroke width

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not self.sizes:
            problems.append("sizes: at least one size is needed")
        if any(w <= 0 for _, w in self.sizes):
            problems.append("sizes: every weight must be > 0")
        for name in ("p_png", "p_clean", "faint_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name}: expected 0..1, got {value}")
        if not 1 <= self.jpeg_quality_min <= self.jpeg_quality_max <= 100:
            problems.append("jpeg_quality_min/max: expected 1 <= min <= max <= 100")
        if not 0 <= self.min_scratches <= self.max_scratches <= 16:
            problems.append(
                f"min_scratches/max_scratches: expected 0 <= min <= max <= 16, "
                f"got {self.min_scratches}/{self.max_scratches}"
            )
        if not 0.1 <= self.contrast_scale <= 4.0:
            problems.append(f"contrast_scale: expected 0.1..4, got {self.contrast_scale}")
        if not 0.25 <= self.width_scale <= 4.0:
            problems.append(f"width_scale: expected 0.25..4, got {self.width_scale}")
        if problems:
            raise ValueError("invalid SynthConfig: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready copy (sizes as ``{"width", "height", "weight"}`` records)."""
        data = asdict(self)
        data["sizes"] = [
            {"width": size.width, "height": size.height, "weight": weight}
            for size, weight in self.sizes
        ]
        return data
