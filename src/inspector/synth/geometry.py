"""Where the tag lies: its size in its own (local) frame and the homography into the image.

The tag is drawn upright in a local canvas of ``length x height`` pixels (long axis along x),
then warped into the image by ``homography`` (rotation, translation, slight perspective).
Everything drawn on the tag (texture, holes, text) lives in the local frame; scratches are
planned there too (so "at least 2 % from the border" is measured on the tag) and drawn in image
pixels so their width and label box are exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from inspector.synth.config import Rendering
from inspector.types import Size

_DOMAIN = Rendering()


@dataclass(frozen=True)
class TagGeometry:
    length: int  # local canvas width (the long side), pixels
    height: int  # local canvas height (the short side), pixels
    corner_radius: float  # local pixels
    homography: np.ndarray  # (3, 3) float64, local pixel coords -> image pixel coords
    polygon: np.ndarray  # (4, 2) float32, image coords of the local canvas corners
    angle_deg: float
    keystone: float = 0.0  # fraction one edge was shortened by (camera tilt), 0 in data-spec.md

    @property
    def local_corners(self) -> np.ndarray:
        """(4, 2) float32 corners of the local canvas (pixel-edge coordinates)."""
        w, h = float(self.length), float(self.height)
        return np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)

    def to_image(self, points_xy: np.ndarray) -> np.ndarray:
        """Map (n, 2) local points to (n, 2) float64 image points."""
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 1, 2)
        return cv2.perspectiveTransform(pts, self.homography).reshape(-1, 2)

    def rounded_rect_sdf(self, points_xy: np.ndarray) -> np.ndarray:
        """Signed distance (local pixels) of (n, 2) local points to the tag outline; < 0 inside."""
        pts = np.asarray(points_xy, dtype=np.float64).reshape(-1, 2)
        half = np.array([self.length / 2.0, self.height / 2.0])
        r = self.corner_radius
        q = np.abs(pts - half) - (half - r)
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        inside = np.minimum(np.max(q, axis=1), 0.0)
        return outside + inside - r


def _homography(length: int, height: int, corners_image: np.ndarray) -> np.ndarray:
    src = np.array(
        [[0, 0], [length, 0], [length, height], [0, height]], dtype=np.float32
    )
    return cv2.getPerspectiveTransform(src, corners_image.astype(np.float32))


def _keystone(extra: np.random.Generator | None, rendering: Rendering) -> tuple[int, float]:
    """(edge 0-3, fraction) by which one tag edge is shortened: a camera not square to the belt."""
    if extra is None or rendering.keystone[1] <= 0:
        return 0, 0.0
    return int(extra.integers(0, 4)), float(extra.uniform(*rendering.keystone))


def place_tag(
    rng: np.random.Generator,
    size: Size,
    rendering: Rendering = _DOMAIN,
    extra: np.random.Generator | None = None,
) -> TagGeometry:
    """Draw the tag's size, rotation, perspective and position for one image.

    data-spec.md: aspect 1.3-2.2, long side 35-75 % of the image width, centre in the middle 60 %,
    rotation -15..+15 deg, corners moved up to 3 % of the tag size, corner radius 3-12 % of the
    short side. The whole tag stays inside the frame (1 % margin): placements that leave it are
    redrawn, and after many misses the tag shrinks a little. ``rendering`` widens these ranges
    (same random draws); its keystone comes from ``extra`` (another stream), only when set.
    """
    width_fraction = rng.uniform(*rendering.tag_width)
    aspect = rng.uniform(1.3, 2.2)
    radius_fraction = rng.uniform(0.03, 0.12)
    margin = 0.01 * size.width
    key_edge, key_amount = _keystone(extra, rendering)
    for attempt in range(200):
        shrink = 0.97 ** (attempt // 25)
        length = max(16, round(width_fraction * shrink * size.width))
        height = max(8, round(length / aspect))
        angle = rng.uniform(-rendering.rotation_deg, rendering.rotation_deg)
        cx = rng.uniform(0.2, 0.8) * size.width
        cy = rng.uniform(0.2, 0.8) * size.height
        cj = rendering.corner_jitter
        jitter = rng.uniform(-cj, cj, size=(4, 2)) * np.array([length, height])
        local = np.array(
            [[-length / 2, -height / 2], [length / 2, -height / 2],
             [length / 2, height / 2], [-length / 2, height / 2]]
        )
        if key_amount:  # pull the two corners of one edge towards each other
            a, b = key_edge, (key_edge + 1) % 4
            mid = (local[a] + local[b]) / 2
            local[[a, b]] = mid + (local[[a, b]] - mid) * (1 - key_amount)
        local = local + jitter
        theta = np.deg2rad(angle)
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        corners = local @ rot.T + np.array([cx, cy])
        inside = (
            corners[:, 0].min() >= margin
            and corners[:, 1].min() >= margin
            and corners[:, 0].max() <= size.width - margin
            and corners[:, 1].max() <= size.height - margin
        )
        if inside:
            return TagGeometry(
                length=length,
                height=height,
                corner_radius=radius_fraction * height,
                homography=_homography(length, height, corners),
                polygon=corners.astype(np.float32),
                angle_deg=float(angle),
                keystone=key_amount,
            )
    raise RuntimeError(f"could not place a tag in a {size} image")  # pragma: no cover
