"""The metal tag in its own frame: brushed texture, punched holes, engraved text, bevel.

Returns float32 grey levels and an anti-aliased coverage (alpha) so the caller can warp both into
the image. Holes are cut out of the alpha, so the dark belt shows through them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inspector.synth.config import Rendering
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


def _normalised(texture: np.ndarray, amplitude: float) -> np.ndarray:
    texture *= np.float32(amplitude / (2.5 * float(texture[::4, ::4].std()) + 1e-6))
    return texture


def _mottle(rng: np.random.Generator, geom: TagGeometry) -> np.ndarray:
    coarse = rng.standard_normal((3, 5), dtype=np.float32)
    mottle = cv2.resize(coarse, (geom.length, geom.height), interpolation=cv2.INTER_CUBIC)
    return np.asarray(rng.uniform(1.0, 4.0) * mottle, dtype=np.float32)


def _streaks_at(rng: np.random.Generator, geom: TagGeometry, angle_deg: float,
                reach: int) -> np.ndarray:
    """White noise smeared along a line of ``reach`` px at ``angle_deg``: streaks at an angle."""
    kernel = np.zeros((2 * reach + 1, 2 * reach + 1), np.float32)
    theta = np.deg2rad(angle_deg)
    end = np.array([np.cos(theta), np.sin(theta)]) * reach
    p0 = np.round(reach - end).astype(int)
    p1 = np.round(reach + end).astype(int)
    cv2.line(kernel, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), 1.0, 1, cv2.LINE_AA)
    kernel /= kernel.sum()
    noise = rng.standard_normal((geom.height, geom.length), dtype=np.float32)
    return np.asarray(cv2.filter2D(noise, -1, kernel, borderType=cv2.BORDER_REFLECT))


def _texture(rng: np.random.Generator, geom: TagGeometry, kind: str,
             amplitude: float) -> np.ndarray:
    """Metal finishes beyond data-spec.md's long-axis brushing (``brushed`` is :func:`_brushed`).

    brushed_coarse: wider, shorter streaks; cross: two brushing directions; hammered: coarse
    dimples; arc: brushing along gently curved arcs in any direction; blasted: isotropic fine
    bead-blasted grain; spun: concentric rings of a spin-brushed (lathe) finish.
    """
    w, h = geom.length, geom.height
    if kind == "brushed":
        return _brushed(rng, geom, amplitude)
    if kind == "brushed_coarse":
        coarse = rng.standard_normal((h, max(8, w // 12)), dtype=np.float32)
        along: np.ndarray = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
        streaks = cv2.GaussianBlur(along, (0, 0), sigmaX=0.8, sigmaY=1.4)
        return _normalised(streaks, amplitude) + _mottle(rng, geom)
    if kind == "cross":
        reach = max(6, w // 20)
        first = _streaks_at(rng, geom, 0.0, reach)
        second = _streaks_at(rng, geom, float(rng.uniform(25.0, 65.0)) * rng.choice([-1, 1]), reach)
        return _normalised(first + 0.8 * second, amplitude) + _mottle(rng, geom)
    if kind == "hammered":
        white = rng.standard_normal((h, w), dtype=np.float32)
        dimples = np.asarray(cv2.GaussianBlur(white, (0, 0), float(rng.uniform(2.5, 5.0))))
        dimples = _normalised(dimples, 1.0) + 0.25 * rng.standard_normal((h, w), dtype=np.float32)
        return _normalised(dimples, amplitude) + _mottle(rng, geom)
    if kind in ("spun", "arc"):
        return _rings(rng, geom, amplitude, far=kind == "arc") + _mottle(rng, geom)
    if kind == "blasted":
        white = rng.standard_normal((h, w), dtype=np.float32)
        grain = np.asarray(cv2.GaussianBlur(white, (0, 0), float(rng.uniform(0.6, 1.4))))
        return _normalised(grain, amplitude) + _mottle(rng, geom)
    raise ValueError(f"unknown metal texture {kind!r}")


def _rings(rng: np.random.Generator, geom: TagGeometry, amplitude: float, far: bool) -> np.ndarray:
    """Streaks along circles: around a centre on or near the tag (spun), or so far away that
    they are gently curved brushing in any direction (arc)."""
    w, h = geom.length, geom.height
    if far:
        reach = rng.uniform(3.0, 10.0) * w
        phi = rng.uniform(0, 2 * np.pi)
        centre = np.array([w / 2 + reach * np.cos(phi), h / 2 + reach * np.sin(phi)])
    else:
        centre = rng.uniform([-0.5 * w, -0.5 * h], [1.5 * w, 1.5 * h])
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    radius = np.hypot(xs - np.float32(centre[0]), ys - np.float32(centre[1]))
    profile = cv2.GaussianBlur(
        rng.standard_normal((1, int(radius.max()) + 2), dtype=np.float32), (0, 0), 0.7
    )[0]
    rings = np.interp(radius.ravel(), np.arange(profile.size), profile).reshape(h, w)
    rings = rings.astype(np.float32) + 0.3 * rng.standard_normal((h, w), dtype=np.float32)
    return _normalised(rings, amplitude)


def _choose(rng: np.random.Generator, choices: tuple[tuple[str, float], ...]) -> str:
    weights = np.array([w for _, w in choices], dtype=np.float64)
    return choices[int(rng.choice(len(choices), p=weights / weights.sum()))][0]


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


def render_tag(
    rng: np.random.Generator,
    geom: TagGeometry,
    rendering: Rendering | None = None,
    extra: np.random.Generator | None = None,
) -> TagTexture:
    """Draw the tag in its local frame (long axis along x).

    With the data-spec.md rendering (the default) only ``rng`` is used. Another metal texture is
    chosen from ``extra`` (its own stream) when ``rendering`` offers more than brushing.
    """
    rendering = rendering or Rendering()
    texture = "brushed"
    if rendering.texture_choices != (("brushed", 1.0),):
        if extra is None:
            raise ValueError("render_tag: a texture choice needs the extra random stream")
        texture = _choose(extra, rendering.texture_choices)
    base = float(rng.uniform(*rendering.base_grey))
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    tint_kind = "none"
    if rng.random() < 0.3:
        strength = rng.uniform(0.02, 0.07)
        if rng.random() < 0.5:  # warm: more red, less blue (BGR order)
            tint, tint_kind = (1 - strength, 1.0, 1 + strength), "warm"
        else:
            tint, tint_kind = (1 + strength, 1.0, 1 - strength), "cool"

    brush_amplitude = float(rng.uniform(*rendering.brush_amplitude))
    grey = np.full((geom.height, geom.length), base, dtype=np.float32)
    grey += _texture(rng, geom, texture, brush_amplitude)

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
    if not rendering.is_domain:
        meta["texture"] = texture
    return TagTexture(grey, alpha, holes, base, tint, meta)


def _hole_extent(holes: tuple[Hole, ...], geom: TagGeometry) -> float:
    """How far (local px) the holes reach in from their short edge."""
    hole = holes[0]
    reach = hole.center_xy[0] + hole.radius
    if hole.center_xy[0] > geom.length / 2:
        reach = geom.length - (hole.center_xy[0] - hole.radius)
    return float(reach)
