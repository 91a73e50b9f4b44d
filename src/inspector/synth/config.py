"""The knobs of the synthetic image distribution (docs/data-spec.md defaults).

Three kinds of fields live here. The *distribution* fields (sizes, formats) define the test
distribution and should stay at their defaults for any evaluation set. The *training levers*
(``p_clean``, ``min_scratches``, ``max_scratches``, ``contrast_scale``, ``faint_fraction``,
``width_scale``) change only how scratches are drawn, so a training set can be made easier or
denser without touching anything else in the picture. The *rendering* (:class:`Rendering`, the
``rendering`` field) says how the picture itself is drawn: tag scale and camera angle, metal
texture, light, sensor noise, blur, scratch stroke profile. Its defaults are data-spec.md's and draw
exactly the random numbers the generator always drew, so every existing ``(seed, index)`` still
gives the same image. :data:`PROFILES` names the three renderings in use:

- ``domain``: docs/data-spec.md (the training set of model 1.2.0 and the in-distribution test set);
- ``ood``: deliberately different choices, for an out-of-distribution TEST set only (seeds
  9_700_000 and up; ``scripts/make_dataset.py`` refuses it for training);
- ``randomized``: domain randomization for training, every range wider than docs/data-spec.md's and
  reaching into the OOD ranges' neighbourhood, but without the OOD-only families (the
  ``blasted``/``spun`` metal textures, the ``bipolar``/``broken`` stroke profiles, 1920x1080
  frames).
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

TEXTURES = ("brushed", "brushed_coarse", "cross", "hammered", "arc", "blasted", "spun")
STROKE_PROFILES = ("groove", "soft", "uneven", "bipolar", "broken")

Range = tuple[float, float]
Choices = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Rendering:
    """How a picture is drawn. Defaults are docs/data-spec.md's (the ``domain`` profile).

    Ranges are ``(low, high)`` of a uniform draw; ``p_*`` are probabilities; ``*_choices`` are
    ``(name, weight)`` pairs. Effects the data spec lacks (vignetting, shot noise, motion
    blur, keystone, other textures and stroke profiles, short-scratch boost) draw from random
    streams of their own, so leaving them off changes nothing in a ``domain`` picture.
    """

    name: str = "domain"
    # tag placement and camera
    tag_width: Range = (0.35, 0.75)  # long side as a fraction of the image width
    rotation_deg: float = 15.0  # uniform in -r..+r
    corner_jitter: float = 0.03  # perspective: corners moved up to this fraction of the tag size
    keystone: Range = (0.0, 0.0)  # camera tilt: one tag edge shortened by this fraction
    # metal
    base_grey: Range = (120.0, 215.0)
    brush_amplitude: Range = (3.0, 12.0)
    texture_choices: Choices = (("brushed", 1.0),)
    # light
    gradient_peak: Range = (0.0, 30.0)
    p_vignette: float = 0.0
    vignette: Range = (0.0, 0.0)  # brightness lost in the frame corners (fraction)
    # sensor and optics
    noise_sigma: Range = (2.0, 7.0)
    shot_noise: Range = (0.0, 0.0)  # signal-dependent noise: std = sqrt(gain * grey level)
    p_blur: float = 0.3
    blur_sigma: Range = (0.4, 1.2)
    p_motion_blur: float = 0.0
    motion_blur_px: Range = (0.0, 0.0)  # at 1280 px image width, scales with the width
    # scratches (how each is drawn, not how many)
    stroke_choices: Choices = (("groove", 1.0),)
    short_fraction: float = 0.0  # extra share of scratches drawn 4-12 % of the tag diagonal

    def problems(self) -> list[str]:
        out: list[str] = []
        ranges = ("tag_width", "keystone", "base_grey", "brush_amplitude", "gradient_peak",
                  "vignette", "noise_sigma", "shot_noise", "blur_sigma", "motion_blur_px")
        for field_name in ranges:
            low, high = getattr(self, field_name)
            if not 0 <= low <= high:
                out.append(f"rendering.{field_name}: expected 0 <= low <= high, got {low}, {high}")
        if not (self.tag_width[0] >= 0.1 and self.tag_width[1] <= 0.95):
            out.append(f"rendering.tag_width: expected within 0.1..0.95, got {self.tag_width}")
        if self.keystone[1] > 0.3 or self.vignette[1] > 0.8 or self.corner_jitter > 0.1:
            out.append("rendering: keystone <= 0.3, vignette <= 0.8, corner_jitter <= 0.1")
        if not 0 <= self.rotation_deg <= 45:
            out.append(f"rendering.rotation_deg: expected 0..45, got {self.rotation_deg}")
        for field_name in ("p_vignette", "p_blur", "p_motion_blur", "short_fraction"):
            if not 0.0 <= getattr(self, field_name) <= 1.0:
                out.append(f"rendering.{field_name}: expected 0..1")
        for field_name, known in (("texture_choices", TEXTURES),
                                  ("stroke_choices", STROKE_PROFILES)):
            choices = getattr(self, field_name)
            if not choices or any(w <= 0 or n not in known for n, w in choices):
                out.append(f"rendering.{field_name}: names from {known}, weights > 0")
        return out

    @property
    def is_domain(self) -> bool:
        """True when nothing beyond docs/data-spec.md is drawn (the generator's original path)."""
        return self == Rendering()


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
    rendering: Rendering = Rendering()

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
        problems += self.rendering.problems()
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


# Out-of-distribution TEST rendering: each choice differs from data-spec.md (and from training).
OOD_RENDERING = Rendering(
    name="ood",
    tag_width=(0.25, 0.85),
    rotation_deg=25.0,
    corner_jitter=0.05,
    keystone=(0.04, 0.12),
    base_grey=(95.0, 230.0),
    brush_amplitude=(2.0, 16.0),
    texture_choices=(("blasted", 0.5), ("spun", 0.5)),
    gradient_peak=(20.0, 45.0),
    p_vignette=0.8,
    vignette=(0.15, 0.4),
    noise_sigma=(5.0, 11.0),
    shot_noise=(0.05, 0.3),
    p_blur=0.5,
    blur_sigma=(0.9, 1.8),
    p_motion_blur=0.25,
    motion_blur_px=(2.0, 5.0),
    stroke_choices=(("groove", 0.3), ("bipolar", 0.35), ("broken", 0.35)),
)

OOD_SIZES: tuple[tuple[Size, float], ...] = (
    (Size(height=960, width=1280), 0.35),
    (Size(height=768, width=1024), 0.2),
    (Size(height=1200, width=1600), 0.15),
    (Size(height=2048, width=2448), 0.1),
    (Size(height=1080, width=1920), 0.2),  # 16:9, a size no training set has
)

# Domain randomization for TRAINING: wider than any one rendering, next to the OOD ranges but
# without its texture and stroke families (and without 1920x1080 frames).
RANDOMIZED_RENDERING = Rendering(
    name="randomized",
    tag_width=(0.25, 0.85),
    rotation_deg=30.0,
    corner_jitter=0.06,
    keystone=(0.0, 0.12),
    base_grey=(90.0, 235.0),
    brush_amplitude=(1.5, 18.0),
    texture_choices=(("brushed", 0.4), ("brushed_coarse", 0.15), ("cross", 0.15),
                     ("hammered", 0.15), ("arc", 0.15)),
    gradient_peak=(0.0, 50.0),
    p_vignette=0.5,
    vignette=(0.0, 0.45),
    noise_sigma=(1.5, 12.0),
    shot_noise=(0.0, 0.35),
    p_blur=0.5,
    blur_sigma=(0.3, 2.0),
    p_motion_blur=0.2,
    motion_blur_px=(1.0, 6.0),
    stroke_choices=(("groove", 0.55), ("soft", 0.25), ("uneven", 0.2)),
    short_fraction=0.35,
)

RANDOMIZED_SIZES: tuple[tuple[Size, float], ...] = (
    *DEFAULT_SIZES,
    (Size(height=600, width=800), 0.08),
    (Size(height=1200, width=1920), 0.08),
)

PROFILES: dict[str, SynthConfig] = {
    "domain": SynthConfig(),
    "ood": SynthConfig(
        sizes=OOD_SIZES, p_png=0.05, jpeg_quality_min=60, jpeg_quality_max=88,
        rendering=OOD_RENDERING,
    ),
    "randomized": SynthConfig(
        sizes=RANDOMIZED_SIZES, p_png=0.15, jpeg_quality_min=55, jpeg_quality_max=98,
        rendering=RANDOMIZED_RENDERING,
    ),
}
TEST_PROFILES = frozenset({"ood"})  # never to be used for training


def profile(name: str) -> SynthConfig:
    """The named rendering profile (``domain``, ``ood`` or ``randomized``)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown synth profile {name!r}; known: {sorted(PROFILES)}") from None
