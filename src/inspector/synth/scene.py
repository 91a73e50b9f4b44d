"""One picture: belt, tag, scratches, dust, light, noise, blur (in that order).

Every stage draws from its own random stream (spawned from ``(seed, index)``), so an image
rendered without its scratches is otherwise identical pixel for pixel: the tests use this to
check that each label box matches the pixels the scratch changed.
"""

from __future__ import annotations

import cv2
import numpy as np

from inspector.synth.config import REFERENCE_WIDTH, Rendering, SynthConfig
from inspector.synth.geometry import TagGeometry, place_tag
from inspector.synth.sample import Sample
from inspector.synth.scratch import draw_scratch, plan_scratch, scratch_count
from inspector.synth.tag import render_tag
from inspector.types import Size

_STREAMS = ("size", "tag", "texture", "scratch", "background", "light", "noise", "format")
# Streams of the effects beyond data-spec.md (config.rendering). Spawned after the eight above, so
# those are the same children as ever: a docs/data-spec.md picture does not change.
_EXTRA_STREAMS = ("render", "stroke")


def _gaussian_noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 noise, seeded from ``rng``.

    cv2.randn is about three times faster than numpy's generator here; seeding OpenCV's
    (per-thread) generator from ``rng`` right before the call keeps the result deterministic.
    """
    out = np.empty(shape, dtype=np.float32)
    cv2.setRNGSeed(int(rng.integers(0, 2**31 - 1)))
    # one channel view: a float mean/stddev would be Scalar(v, 0, 0, 0), i.e. no noise in
    # channels 1 and 2 of a 3-channel array
    cv2.randn(out.reshape(shape[0], -1), np.zeros(1), np.ones(1))
    return out


def _pick_size(rng: np.random.Generator, config: SynthConfig) -> Size:
    weights = np.array([w for _, w in config.sizes], dtype=np.float64)
    choice = int(rng.choice(len(weights), p=weights / weights.sum()))
    return config.sizes[choice][0]


def _belt(rng: np.random.Generator, size: Size) -> tuple[np.ndarray, dict[str, object]]:
    """Dark conveyor belt: grey 15-70, fine noise, faint horizontal bands."""
    h, w = size.height, size.width
    level = float(rng.uniform(15.0, 70.0))
    white = _gaussian_noise(rng, (h, w))
    kernel = cv2.getGaussianKernel(3, 0.7)
    grain: np.ndarray = cv2.GaussianBlur(white, (3, 3), 0.7)
    grain *= np.float32(rng.uniform(2.0, 5.0) / float(np.sum(kernel**2)))  # std of the blur
    n_knots = max(4, h // int(rng.integers(12, 40)))
    bands = cv2.resize(
        rng.standard_normal((n_knots, 1), dtype=np.float32), (1, h), interpolation=cv2.INTER_CUBIC
    )
    bands *= np.float32(rng.uniform(1.0, 3.5))
    belt = grain + bands + np.float32(level)
    return belt, {"belt_grey": round(level, 1)}


def _warp_tag(
    canvas: np.ndarray, texture: np.ndarray, alpha: np.ndarray, geom: TagGeometry
) -> np.ndarray:
    """Composite the local tag into ``canvas`` (in place); returns the tag's image alpha."""
    h, w = canvas.shape
    poly = geom.polygon
    x0 = max(0, int(np.floor(poly[:, 0].min())) - 2)
    y0 = max(0, int(np.floor(poly[:, 1].min())) - 2)
    x1 = min(w, int(np.ceil(poly[:, 0].max())) + 3)
    y1 = min(h, int(np.ceil(poly[:, 1].max())) + 3)
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], dtype=np.float64)
    matrix = shift @ geom.homography
    size = (x1 - x0, y1 - y0)
    tex = cv2.warpPerspective(texture, matrix, size, flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    a = cv2.warpPerspective(alpha, matrix, size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    region = canvas[y0:y1, x0:x1]
    region += a * (tex - region)
    full = np.zeros_like(canvas)
    full[y0:y1, x0:x1] = a
    return full


def _dust(rng: np.random.Generator, canvas: np.ndarray, geom: TagGeometry, scale: float) -> int:
    """0-15 specks of 1-3 px on the tag; not labelled."""
    count = int(rng.integers(0, 16))
    local = rng.uniform([0.05, 0.05], [0.95, 0.95], size=(count, 2)) * [geom.length, geom.height]
    centres = geom.to_image(local) if count else np.zeros((0, 2))
    h, w = canvas.shape
    for cx, cy in centres:
        sigma = rng.uniform(0.35, 0.9) * max(1.0, scale)
        amp = rng.uniform(-70.0, -20.0) if rng.random() < 0.75 else rng.uniform(20.0, 50.0)
        r = int(np.ceil(3 * sigma))
        xi, yi = round(cx), round(cy)
        xs = np.arange(max(0, xi - r), min(w, xi + r + 1))
        ys = np.arange(max(0, yi - r), min(h, yi + r + 1))
        blob = np.exp(
            -((xs[None, :] - cx) ** 2 + (ys[:, None] - cy) ** 2) / (2 * sigma**2)
        ).astype(np.float32)
        canvas[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1] += np.float32(amp) * blob
    return count


def _lighting(
    rng: np.random.Generator,
    canvas: np.ndarray,
    tag_alpha: np.ndarray,
    geom: TagGeometry,
    rendering: Rendering,
) -> dict[str, object]:
    """Smooth gradient over the frame (up to +-30) and sometimes a soft specular band on the tag."""
    h, w = canvas.shape
    peak = rng.uniform(*rendering.gradient_peak)
    direction = rng.uniform(0, 2 * np.pi)
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32) * np.float32(np.cos(direction))
    ys = np.linspace(-1.0, 1.0, h, dtype=np.float32) * np.float32(np.sin(direction))
    norm = np.float32(peak / max(1e-6, abs(np.cos(direction)) + abs(np.sin(direction))))
    canvas += (ys[:, None] + xs[None, :]) * norm
    meta: dict[str, object] = {"gradient_peak": round(peak, 1), "specular": False}
    if rng.random() < 0.35:
        theta = np.deg2rad(geom.angle_deg) + rng.uniform(0.3, np.pi - 0.3)
        centre = geom.polygon.mean(axis=0) + rng.uniform(-0.3, 0.3, 2) * geom.height
        width = rng.uniform(0.08, 0.25) * geom.height
        amp = rng.uniform(15.0, 45.0)
        dx = (np.arange(w, dtype=np.float32) - np.float32(centre[0])) * np.float32(np.cos(theta))
        dy = (np.arange(h, dtype=np.float32) - np.float32(centre[1])) * np.float32(np.sin(theta))
        dist = (dy[:, None] + dx[None, :]) / np.float32(width)
        canvas += np.float32(amp) * np.exp(-0.5 * dist * dist) * tag_alpha
        meta.update(specular=True, specular_amp=round(amp, 1))
    return meta


def _vignette(rng: np.random.Generator, canvas: np.ndarray, rendering: Rendering) -> float:
    """Darken towards the frame corners (lens falloff), centre slightly off the frame centre."""
    if rendering.p_vignette <= 0 or rng.random() >= rendering.p_vignette:
        return 0.0
    strength = float(rng.uniform(*rendering.vignette))
    h, w = canvas.shape
    cx, cy = rng.uniform(0.4, 0.6) * w, rng.uniform(0.4, 0.6) * h
    xs = (np.arange(w, dtype=np.float32) - np.float32(cx)) / np.float32(w / 2)
    ys = (np.arange(h, dtype=np.float32) - np.float32(cy)) / np.float32(h / 2)
    r2 = (ys[:, None] ** 2 + xs[None, :] ** 2) / np.float32(2.0)
    canvas *= 1 - np.float32(strength) * np.minimum(r2, np.float32(1.5))
    return strength


def _sensor(
    rng: np.random.Generator, image: np.ndarray, rendering: Rendering, scale: float
) -> dict[str, object]:
    """Shot noise (std grows with the grey level) and motion blur, when the rendering has them."""
    meta: dict[str, object] = {}
    if rendering.shot_noise[1] > 0:
        gain = float(rng.uniform(*rendering.shot_noise))
        shot = np.sqrt(np.maximum(image, 0) * np.float32(gain))
        image += _gaussian_noise(rng, image.shape) * shot
        meta["shot_noise_gain"] = round(gain, 3)
    if rendering.p_motion_blur > 0 and rng.random() < rendering.p_motion_blur:
        length = float(rng.uniform(*rendering.motion_blur_px)) * scale
        reach = max(1, int(np.ceil(length / 2)))
        kernel = np.zeros((2 * reach + 1, 2 * reach + 1), np.float32)
        theta = rng.uniform(0, np.pi)
        dx, dy = np.cos(theta) * length / 2, np.sin(theta) * length / 2
        cv2.line(kernel, (round(reach - dx), round(reach - dy)),
                 (round(reach + dx), round(reach + dy)), 1.0, 1, cv2.LINE_AA)
        kernel /= kernel.sum()
        image[...] = cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT)
        meta["motion_blur_px"] = round(length, 2)
    return meta


def render_sample(
    seed: int, index: int, config: SynthConfig | None = None, *, draw_scratches: bool = True
) -> Sample:
    """Render image ``index`` of the stream ``seed``.

    With ``draw_scratches=False`` the same picture is rendered without its scratches (boxes and
    scratch metadata are still returned): pixels differ only where the scratches were.
    """
    config = config or SynthConfig()
    rendering = config.rendering
    names = _STREAMS + _EXTRA_STREAMS
    streams = np.random.SeedSequence([seed, index]).spawn(len(names))
    rng = {name: np.random.default_rng(s) for name, s in zip(names, streams, strict=True)}

    size = _pick_size(rng["size"], config)
    scale = size.width / REFERENCE_WIDTH
    geom = place_tag(rng["tag"], size, rendering, rng["render"])
    tag = render_tag(rng["texture"], geom, rendering, rng["render"])

    canvas, belt_meta = _belt(rng["background"], size)
    tag_alpha = _warp_tag(canvas, tag.grey, tag.alpha, geom)

    n = scratch_count(rng["scratch"], config)
    plans = [
        plan_scratch(rng["scratch"], geom, tag.holes, size.width, config, rng["stroke"])
        for _ in range(n)
    ]
    boxes = np.zeros((n, 4), dtype=np.float32)
    for i, plan in enumerate(plans):
        drawn = draw_scratch(plan, size.height, size.width)
        boxes[i] = drawn.box_xyxy
        plan.meta["box_xyxy"] = [float(v) for v in drawn.box_xyxy]
        if draw_scratches:
            x0, y0, x1, y1 = drawn.roi
            canvas[y0:y1, x0:x1] += drawn.delta * tag_alpha[y0:y1, x0:x1]

    dust = _dust(rng["light"], canvas, geom, scale)
    light_meta = _lighting(rng["light"], canvas, tag_alpha, geom, rendering)
    vignette = _vignette(rng["render"], canvas, rendering)

    noise_rng = rng["noise"]
    gains = np.asarray(tag.tint_bgr, dtype=np.float32) - 1
    metal = canvas * tag_alpha if np.any(gains != 0) else canvas
    image: np.ndarray = cv2.merge([canvas + metal * g if g else canvas for g in gains.tolist()])
    sigma = float(noise_rng.uniform(*rendering.noise_sigma))
    image += _gaussian_noise(noise_rng, image.shape) * np.float32(sigma)
    blur = (
        float(noise_rng.uniform(*rendering.blur_sigma))
        if noise_rng.random() < rendering.p_blur
        else 0.0
    )
    if blur > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur)
    sensor_meta = _sensor(rng["render"], image, rendering, scale)
    np.maximum(image, 0, out=image)
    pixels = cv2.convertScaleAbs(image)  # rounds and saturates at 255

    fmt_rng = rng["format"]
    if fmt_rng.random() < config.p_png:
        fmt: dict[str, object] = {"format": "png"}
    else:
        quality = int(fmt_rng.integers(config.jpeg_quality_min, config.jpeg_quality_max + 1))
        fmt = {"format": "jpg", "jpeg_quality": quality}

    meta: dict[str, object] = {
        "seed": seed,
        "index": index,
        "size": {"width": size.width, "height": size.height},
        "tag": {
            "length_px": geom.length,
            "height_px": geom.height,
            "angle_deg": round(geom.angle_deg, 2),
            "corner_radius_px": round(geom.corner_radius, 1),
            **tag.meta,
        },
        **belt_meta,
        **light_meta,
        "dust_specks": dust,
        "noise_sigma": round(sigma, 2),
        "blur_sigma": round(blur, 2),
        "scratches": [plan.meta for plan in plans],
        **fmt,
    }
    if not rendering.is_domain:
        meta["rendering"] = {
            "profile": rendering.name,
            "keystone": round(geom.keystone, 3),
            "vignette": round(vignette, 3),
            **sensor_meta,
        }
    return Sample(image=pixels, boxes_xyxy=boxes, tag_polygon=geom.polygon.copy(), meta=meta)


def generate(seed: int, index: int, config: SynthConfig | None = None) -> Sample:
    """Image ``index`` of the stream ``seed``: deterministic for (seed, index, config)."""
    return render_sample(seed, index, config)
