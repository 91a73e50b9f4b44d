"""Scratches: planned on the tag (local frame), drawn in image pixels, labelled from the drawing.

A scratch is a centre line (straight, quadratic or cubic Bezier, or a jittered 2-4 segment
polyline) sampled densely, with a radius that tapers to a point at both ends. It is rasterised
4x supersampled in a small region of interest, so its coverage is anti-aliased, and the label box
is read back from that coverage: box and pixels cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inspector.synth.config import REFERENCE_WIDTH, SynthConfig
from inspector.synth.geometry import TagGeometry
from inspector.synth.tag import Hole

SUPERSAMPLE = 4
LABEL_COVERAGE = 0.2  # a pixel belongs to the stroke (and its box) from this coverage up
_SHIFT = 2  # cv2 drawing precision at the supersampled scale: 1/4 px


@dataclass(frozen=True)
class ScratchPlan:
    points_xy: np.ndarray  # (n, 2) float64, image pixels, along the centre line
    radius: np.ndarray  # (n,) float64, image pixels, half the local stroke width
    strength: np.ndarray  # (n,) float64, 0..1, slow variation of depth along the stroke
    contrast: float  # grey levels at full coverage (signed)
    companion: float  # grey levels of the 1 px companion line (opposite sign), 0 if none
    companion_side: int  # +1 or -1: which side of the stroke the companion runs
    edge_level: float  # 0..1: depth at the stroke's flanks relative to its core (groove profile)
    meta: dict[str, object]
    soften_px: float = 0.0  # "soft" profile: Gaussian blur of the stroke's depth (image px)
    companion_px: float = 1.0  # width of the companion line ("bipolar": about the stroke's)


@dataclass(frozen=True)
class DrawnScratch:
    box_xyxy: np.ndarray  # (4,) float32, image pixels, pixel-edge coordinates
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) in the image
    delta: np.ndarray  # (y1 - y0, x1 - x0) float32 grey-level change inside the roi


def scratch_count(rng: np.random.Generator, config: SynthConfig) -> int:
    if config.max_scratches == 0 or rng.random() < config.p_clean:
        return 0
    return int(rng.integers(max(1, config.min_scratches), config.max_scratches + 1))


def _bezier(control: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Evaluate a Bezier curve of any degree (de Casteljau) at parameters t."""
    pts = np.repeat(control[None, :, :], t.size, axis=0)
    tt = t[:, None, None]
    while pts.shape[1] > 1:
        pts = (1 - tt) * pts[:, :-1] + tt * pts[:, 1:]
    return pts[:, 0]


def _polyline(vertices: np.ndarray, t: np.ndarray) -> np.ndarray:
    seg = np.linalg.norm(np.diff(vertices, axis=0), axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg)]) / seg.sum()
    return np.stack([np.interp(t, cum, vertices[:, k]) for k in (0, 1)], axis=1)


def _centre_line(
    rng: np.random.Generator, centre: np.ndarray, length: float, angle: float
) -> tuple[str, np.ndarray, np.ndarray]:
    """(shape name, control points, dense local points) of one stroke."""
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-direction[1], direction[0]])
    p0 = centre - direction * length / 2
    p1 = centre + direction * length / 2
    n = max(8, int(np.ceil(length * 2.5)))
    t = np.linspace(0.0, 1.0, n)
    shape = ("straight", "quadratic", "cubic", "polyline")[
        int(rng.choice(4, p=[0.3, 0.3, 0.2, 0.2]))
    ]
    if shape == "straight":
        control = np.stack([p0, p1])
        return shape, control, _bezier(control, t)
    if shape == "quadratic":
        bend = rng.uniform(-0.15, 0.15) * length
        control = np.stack([p0, (p0 + p1) / 2 + normal * bend, p1])
        return shape, control, _bezier(control, t)
    if shape == "cubic":
        b1, b2 = rng.uniform(-0.12, 0.12, size=2) * length
        control = np.stack([
            p0,
            p0 + (p1 - p0) / 3 + normal * b1,
            p0 + 2 * (p1 - p0) / 3 + normal * b2,
            p1,
        ])
        return shape, control, _bezier(control, t)
    segments = int(rng.integers(2, 5))
    along = np.linspace(0.0, 1.0, segments + 1)
    along[1:-1] += rng.uniform(-0.1, 0.1, size=segments - 1) / segments
    vertices = p0 + np.outer(along, p1 - p0)
    vertices[1:-1] += np.outer(rng.uniform(-0.04, 0.04, size=segments - 1) * length, normal)
    return shape, vertices, _polyline(vertices, t)


def _taper(rng: np.random.Generator, n: int) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n)
    head, tail = rng.uniform(0.08, 0.3, size=2)
    ramp = np.minimum(np.minimum(t / head, (1 - t) / tail), 1.0)
    return np.asarray(np.clip(ramp, 0.0, 1.0) ** 0.7)


def _contrast(rng: np.random.Generator, config: SynthConfig) -> tuple[str, float]:
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if rng.random() < config.faint_fraction:
        return "faint", sign * rng.uniform(15.0, 25.0) * config.contrast_scale
    kind = "bright" if sign > 0 else "dark"
    return kind, sign * rng.uniform(25.0, 70.0) * config.contrast_scale


def _gaps(stroke: np.random.Generator, n: int) -> np.ndarray:
    """(n,) depth factor of a "broken" stroke: 1-3 interior gaps where it barely touched."""
    t = np.linspace(0.0, 1.0, n)
    factor = np.ones(n)
    for _ in range(int(stroke.integers(1, 4))):
        start = stroke.uniform(0.15, 0.75)
        factor[(t >= start) & (t <= start + stroke.uniform(0.04, 0.12))] = 0.05
    return factor


def plan_scratch(
    rng: np.random.Generator,
    geom: TagGeometry,
    holes: tuple[Hole, ...],
    image_width: int,
    config: SynthConfig,
    stroke: np.random.Generator | None = None,
) -> ScratchPlan:
    """One scratch wholly on the tag, >= 2 % of the tag size from its border, clear of holes.

    Beyond data-spec.md (``config.rendering``), ``stroke`` (a stream of its own) picks the stroke
    profile and the short-scratch boost; with the docs/data-spec.md rendering it is not used.
    """
    rendering = config.rendering
    width = rng.uniform(2.0, 5.0) * image_width / REFERENCE_WIDTH * config.width_scale
    diagonal = float(np.hypot(geom.length, geom.height))
    length = rng.uniform(0.04, 0.35) * diagonal
    profile = "groove"
    if not rendering.is_domain:
        if stroke is None:
            raise ValueError("plan_scratch: this rendering needs the stroke random stream")
        if stroke.random() < rendering.short_fraction:
            length = stroke.uniform(0.04, 0.12) * diagonal
        weights = np.array([w for _, w in rendering.stroke_choices], dtype=np.float64)
        pick = int(stroke.choice(len(weights), p=weights / weights.sum()))
        profile = rendering.stroke_choices[pick][0]
    border = 0.02 * max(geom.length, geom.height) + width / 2 + 2.0
    angle = rng.uniform(0.0, np.pi)
    for _ in range(100):
        centre = rng.uniform(
            [border + 0.0, border + 0.0], [geom.length - border, geom.height - border]
        )
        shape, control, local = _centre_line(rng, centre, length, angle)
        inside = np.all(geom.rounded_rect_sdf(local) <= -border)
        clear = all(
            np.min(np.linalg.norm(local - np.array(h.center_xy), axis=1))
            > h.radius * 1.6 + width + 2.0
            for h in holes
        )
        if inside and clear:
            break
        length = max(0.04 * diagonal, length * 0.97)
        angle = rng.uniform(0.0, np.pi)
    else:  # pragma: no cover - a short scratch in the middle always fits
        shape, control, local = _centre_line(
            rng, np.array([geom.length / 2, geom.height * 0.7]), 0.04 * diagonal, 0.0
        )

    image_pts = geom.to_image(local)
    taper = _taper(rng, len(image_pts))
    radius = np.maximum(taper * width / 2, 0.3)
    wobble = cv2.resize(
        rng.uniform(0.65, 1.0, size=(1, 6)).astype(np.float32), (len(image_pts), 1),
        interpolation=cv2.INTER_LINEAR,
    )[0].astype(np.float64)
    kind, contrast = _contrast(rng, config)
    companion = 0.0
    side = 1 if rng.random() < 0.5 else -1
    if rng.random() < (0.6 if kind != "faint" else 0.3):
        companion = -np.sign(contrast) * abs(contrast) * rng.uniform(0.35, 0.7)
    meta: dict[str, object] = {
        "kind": kind,
        "contrast": round(float(contrast), 1),
        "companion": round(float(companion), 1),
        "shape": shape,
        "width_px": round(float(width), 2),
        "length_px": round(float(np.sum(np.linalg.norm(np.diff(image_pts, axis=0), axis=1))), 1),
        "length_fraction_of_diagonal": round(length / diagonal, 3),
        "control_points_local": np.round(control, 1).tolist(),
    }
    edge_level = float(rng.uniform(0.45, 1.0))
    meta["edge_level"] = round(edge_level, 2)
    soften, companion_px = 0.0, 1.0
    if not rendering.is_domain:
        assert stroke is not None
        meta["profile"] = profile
        if profile == "soft":  # out of focus or worn: the groove's edges smeared
            soften = float(stroke.uniform(0.5, 1.2)) * image_width / REFERENCE_WIDTH
        elif profile == "bipolar":  # lit from the side: one flank bright, the other dark
            companion = -contrast * float(stroke.uniform(0.6, 1.0))
            companion_px = max(1.0, width * float(stroke.uniform(0.4, 0.7)))
        elif profile == "uneven":  # depth dips along the stroke, never to nothing
            dips = stroke.uniform(0.35, 1.0, size=(1, 10)).astype(np.float32)
            wobble = wobble * cv2.resize(dips, (len(wobble), 1),
                                         interpolation=cv2.INTER_LINEAR)[0].astype(np.float64)
        elif profile == "broken":
            wobble = wobble * _gaps(stroke, len(wobble))
    return ScratchPlan(
        image_pts, radius, wobble, float(contrast), float(companion), side, edge_level, meta,
        soften, companion_px,
    )


def draw_scratch(plan: ScratchPlan, image_height: int, image_width: int) -> DrawnScratch:
    """Rasterise one scratch: its grey-level change in a region of interest, and its box."""
    pts, radius = plan.points_xy, plan.radius
    pad = float(radius.max()) + 4.0
    x0 = max(0, int(np.floor(pts[:, 0].min() - pad)))
    y0 = max(0, int(np.floor(pts[:, 1].min() - pad)))
    x1 = min(image_width, int(np.ceil(pts[:, 0].max() + pad)) + 1)
    y1 = min(image_height, int(np.ceil(pts[:, 1].max() + pad)) + 1)
    roi_w, roi_h = x1 - x0, y1 - y0
    s = SUPERSAMPLE
    scale = s * (1 << _SHIFT)
    # pixel centres sit at integer coords; the supersampled pixel k covers [k/s, (k+1)/s)
    local = (pts - np.array([x0, y0]) + 0.5) * scale - (1 << _SHIFT) / 2
    fixed = np.round(local).astype(np.int32)
    outer_r = np.maximum(np.round(radius * scale), 1).astype(np.int32)
    core_r = np.maximum(np.round(radius * 0.55 * scale), 1).astype(np.int32)
    core_v = np.round(255 * plan.strength).astype(np.int32)
    edge_v = np.maximum(np.round(core_v * plan.edge_level), 1).astype(np.int32)

    main = np.zeros((roi_h * s, roi_w * s), dtype=np.uint8)
    for radii, values in ((outer_r, edge_v), (core_r, core_v)):
        for (cx, cy), r, v in zip(fixed, radii, values, strict=True):
            cv2.circle(main, (int(cx), int(cy)), int(r), int(v), -1, cv2.LINE_8, _SHIFT)
    depth = cv2.resize(main, (roi_w, roi_h), interpolation=cv2.INTER_AREA)
    alpha = depth.astype(np.float32) * np.float32(1 / 255)
    if plan.soften_px > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), plan.soften_px)
    delta = alpha * np.float32(plan.contrast)
    # the label follows the stroke's footprint, whatever its depth profile
    footprint = cv2.resize(
        np.where(main > 0, 255, 0).astype(np.uint8), (roi_w, roi_h), interpolation=cv2.INTER_AREA
    )
    drawn = footprint >= round(255 * LABEL_COVERAGE)

    if plan.companion != 0.0:
        tangent = np.gradient(pts, axis=0)
        tangent /= np.linalg.norm(tangent, axis=1, keepdims=True) + 1e-9
        normal = np.stack([-tangent[:, 1], tangent[:, 0]], axis=1)
        gap = radius + 0.8 + (plan.companion_px - 1.0) / 2  # 1 px companion: 0.8 px off the edge
        offset = gap[:, None] * normal * plan.companion_side
        n = len(pts)
        keep = slice(int(0.1 * n), max(int(0.1 * n) + 2, int(0.85 * n)))
        line = (pts[keep] + offset[keep] - np.array([x0, y0]) + 0.5) * scale - (1 << _SHIFT) / 2
        comp = np.zeros_like(main)
        thickness = max(s, round(plan.companion_px * s))
        cv2.polylines(
            comp, [np.round(line).astype(np.int32)], False, 255, thickness, cv2.LINE_8, _SHIFT
        )
        comp_alpha = cv2.resize(comp, (roi_w, roi_h), interpolation=cv2.INTER_AREA)
        comp_alpha_f = comp_alpha.astype(np.float32) * np.float32(1 / 255)
        comp_alpha_f *= 1 - np.minimum(alpha * 2, 1)  # the stroke itself wins where they meet
        delta += comp_alpha_f * np.float32(plan.companion)
        drawn |= comp_alpha_f >= LABEL_COVERAGE

    ys, xs = np.nonzero(drawn)
    if xs.size == 0:  # pragma: no cover - radius >= 0.3 px always covers some pixels
        xs, ys = np.array([roi_w // 2]), np.array([roi_h // 2])
    box = np.array(
        [x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1], dtype=np.float32
    )
    return DrawnScratch(box, (x0, y0, x1, y1), delta)
