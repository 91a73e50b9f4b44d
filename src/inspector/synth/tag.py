"""The metal tag in its own frame: brushed texture, punched holes, engraved text, bevel.

Returns float32 grey levels and an anti-aliased coverage (alpha) so the caller can warp both into
the image. Holes are cut out of the alpha, so the dark belt shows through them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inspector.synth.geometry import TagGeometry
from inspector.synth.text import draw_text

_SUPERSAMPLE_SHIFT = 3  # cv2 drawing with 1/8 px precision


@dataclass(frozen=True)
class Hole:
    center_xy: tuple[float, float]  # local pixels
    radius: float  # local pixels


@dataclass(frozen=True)
class TagTexture:
    grey: np.ndarray  # (h, w) float32 grey levels, local frame
    alpha: np.ndarray  # (h, w) float32 0..1, tag coverage (0 in holes and outside the corners)
    holes: tuple[Hole, ...]
    base_grey: float
    tint_bgr: tuple[float, float, float]  # per-channel gains applied to the metal
    meta: dict[str, object]


def _fixed(value: float) -> int:
    return round(value * (1 << _SUPERSAMPLE_SHIFT))


def _rounded_rect_alpha(geom: TagGeometry) -> np.ndarray:
    w, h, r = geom.length, geom.height, max(1.0, geom.corner_radius)
    outline: list[np.ndarray] = []
    centres = ((w - r, r, 270), (w - r, h - r, 0), (r, h - r, 90), (r, r, 180))
    for cx, cy, start in centres:
        arc = cv2.ellipse2Poly(
            (_fixed(cx), _fixed(cy)), (_fixed(r), _fixed(r)), 0, start, start + 90, 5
        )
        outline.append(np.asarray(arc))
    poly = np.concatenate(outline).astype(np.int32)
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(mask, [poly], 255, lineType=cv2.LINE_AA, shift=_SUPERSAMPLE_SHIFT)
    return mask


def _holes(rng: np.random.Generator, geom: TagGeometry) -> tuple[Hole, ...]:
    """One or two punched holes near one short edge (diameter 4-9 % of the tag height)."""
    count = int(rng.integers(1, 3))
    radius = rng.uniform(0.04, 0.09) * geom.height / 2.0
    inset = max(geom.corner_radius * 0.6, 0.06 * geom.height) + radius * 1.6
    x = inset if rng.random() < 0.5 else geom.length - inset
    if count == 1:
        ys = [geom.height * rng.uniform(0.42, 0.58)]
    else:
        gap = rng.uniform(0.18, 0.3) * geom.height
        ys = [geom.height / 2 - gap, geom.height / 2 + gap]
    return tuple(Hole((float(x), float(y)), float(radius)) for y in ys)


def _brushed(rng: np.random.Generator, geom: TagGeometry, amplitude: float) -> np.ndarray:
    """Thin streaks along the long axis: rows of noise that vary slowly along x."""
    w, h = geom.length, geom.height
    coarse_cols = max(4, w // 48)
    coarse = rng.standard_normal((h, coarse_cols), dtype=np.float32)
    along: np.ndarray = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    along += 0.8 * rng.standard_normal((h, 1), dtype=np.float32)
    streaks: np.ndarray = cv2.GaussianBlur(along, (1, 5), sigmaX=0, sigmaY=0.6)
    streaks *= np.float32(amplitude / (2.5 * float(streaks[::4, ::4].std()) + 1e-6))
    # a little large-scale mottling so the metal is not perfectly even
    mottle = cv2.resize(
        rng.standard_normal((3, 5), dtype=np.float32), (w, h), interpolation=cv2.INTER_CUBIC
    )
    return streaks + rng.uniform(1.0, 4.0) * mottle


def _bevel(rng: np.random.Generator, alpha: np.ndarray, geom: TagGeometry) -> np.ndarray:
    """Highlight on the edges facing the light, shadow on the others (also around the holes)."""
    sigma = max(0.8, 0.006 * geom.height)
    soft = cv2.GaussianBlur(alpha, (0, 0), sigma)
    gx = cv2.Sobel(soft, cv2.CV_32F, 1, 0, ksize=3, scale=1 / 8)
    gy = cv2.Sobel(soft, cv2.CV_32F, 0, 1, ksize=3, scale=1 / 8)
    light = rng.uniform(0, 2 * np.pi)
    shade = gx * np.float32(np.cos(light)) + gy * np.float32(np.sin(light))
    shade *= np.float32(np.sqrt(2 * np.pi) * sigma)  # edge of a blurred step peaks at 1
    amplitude = rng.uniform(15.0, 40.0)
    return amplitude * shade


def render_tag(rng: np.random.Generator, geom: TagGeometry) -> TagTexture:
    """Draw the tag in its local frame (long axis along x)."""
    base = float(rng.uniform(120.0, 215.0))
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    tint_kind = "none"
    if rng.random() < 0.3:
        strength = rng.uniform(0.02, 0.07)
        if rng.random() < 0.5:  # warm: more red, less blue (BGR order)
            tint, tint_kind = (1 - strength, 1.0, 1 + strength), "warm"
        else:
            tint, tint_kind = (1 + strength, 1.0, 1 - strength), "cool"

    brush_amplitude = float(rng.uniform(3.0, 12.0))
    grey = np.full((geom.height, geom.length), base, dtype=np.float32)
    grey += _brushed(rng, geom, brush_amplitude)

    mask = _rounded_rect_alpha(geom)
    holes = _holes(rng, geom)
    for hole in holes:
        cv2.circle(
            mask, (_fixed(hole.center_xy[0]), _fixed(hole.center_xy[1])), _fixed(hole.radius),
            0, thickness=-1, lineType=cv2.LINE_AA, shift=_SUPERSAMPLE_SHIFT,
        )
    alpha = mask.astype(np.float32) * np.float32(1 / 255)

    hole_side = "left" if holes[0].center_xy[0] < geom.length / 2 else "right"
    text_meta = draw_text(rng, grey, hole_side=hole_side, hole_extent=_hole_extent(holes, geom))
    grey += _bevel(rng, alpha, geom)

    meta: dict[str, object] = {
        "base_grey": round(base, 1),
        "tint": tint_kind,
        "brush_amplitude": round(brush_amplitude, 2),
        "holes": len(holes),
        "text": text_meta,
    }
    return TagTexture(grey, alpha, holes, base, tint, meta)


def _hole_extent(holes: tuple[Hole, ...], geom: TagGeometry) -> float:
    """How far (local px) the holes reach in from their short edge."""
    hole = holes[0]
    reach = hole.center_xy[0] + hole.radius
    if hole.center_xy[0] > geom.length / 2:
        reach = geom.length - (hole.center_xy[0] - hole.radius)
    return float(reach)
