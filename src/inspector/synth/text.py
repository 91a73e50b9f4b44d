"""Engraved or embossed serial-number text on the tag (1-3 lines, height 6-14 % of the tag)."""

from __future__ import annotations

import cv2
import numpy as np

_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
_DIGITS = "0123456789"


def _pick(rng: np.random.Generator, alphabet: str, count: int) -> str:
    return "".join(alphabet[i] for i in rng.integers(0, len(alphabet), size=count))


def random_line(rng: np.random.Generator) -> str:
    """One line such as ``SN 4471-22B``, ``P/N 880-1203`` or ``LOT K7731``."""
    kind = int(rng.integers(0, 6))
    d, a = _DIGITS, _LETTERS
    if kind == 0:
        return f"SN {_pick(rng, d, 4)}-{_pick(rng, d, 2)}{_pick(rng, a, 1)}"
    if kind == 1:
        return f"P/N {_pick(rng, d, 3)}-{_pick(rng, d, 4)}"
    if kind == 2:
        return f"LOT {_pick(rng, a, 1)}{_pick(rng, d, 4)}"
    if kind == 3:
        return f"MFG {rng.integers(2015, 2027)}-{rng.integers(1, 13):02d}"
    if kind == 4:
        return f"{_pick(rng, a, 3)} {_pick(rng, d, 3)}"
    return f"ID {_pick(rng, a + d, 6)}"


def draw_text(
    rng: np.random.Generator, grey: np.ndarray, *, hole_side: str, hole_extent: float
) -> dict[str, object]:
    """Draw 1-3 lines into ``grey`` (local frame, modified in place), away from the holes."""
    h, w = grey.shape
    n_lines = int(rng.integers(1, 4))
    lines = [random_line(rng) for _ in range(n_lines)]
    font = _FONTS[int(rng.integers(0, len(_FONTS)))]
    target = rng.uniform(0.06, 0.14) * h

    left = hole_extent + 0.05 * w if hole_side == "left" else 0.08 * w
    right = w - hole_extent - 0.05 * w if hole_side == "right" else 0.92 * w
    avail_w = max(8.0, right - left)
    widest = max(cv2.getTextSize(line, font, 1.0, 1)[0][0] for line in lines)
    cap_height = cv2.getTextSize("0", font, 1.0, 1)[0][1]
    scale = target / cap_height
    scale = min(scale, avail_w / widest, 0.85 * h / (n_lines * 1.7 * cap_height))
    text_h = scale * cap_height
    thickness = max(1, round(text_h / 9))

    block_h = text_h * (1.7 * n_lines - 0.7)
    top = (h - block_h) / 2 + rng.uniform(-0.1, 0.1) * h
    top = float(np.clip(top, 0.06 * h, h - 0.06 * h - block_h))
    align = ("left", "centre")[int(rng.integers(0, 2))]

    ink = np.zeros((h, w), dtype=np.uint8)
    for i, line in enumerate(lines):
        line_w = cv2.getTextSize(line, font, scale, thickness)[0][0]
        x = left if align == "left" else left + (avail_w - line_w) / 2
        baseline_y = top + text_h * (1 + 1.7 * i)
        cv2.putText(
            ink, line, (round(x), round(baseline_y)), font, scale, 255, thickness, cv2.LINE_AA
        )
    cover = ink.astype(np.float32) * np.float32(1 / 255)
    dark = float(rng.uniform(35.0, 95.0))
    embossed = bool(rng.random() < 0.35)
    if embossed:  # raised letters: a light rim on one side of every stroke
        shift = max(1, round(text_h / 14))
        rim = np.roll(cover, (-shift, -shift), axis=(0, 1)) - cover
        grey += np.clip(rim, 0, 1) * np.float32(rng.uniform(15.0, 35.0))
    grey *= 1 - cover
    grey += cover * np.float32(dark)
    return {"lines": lines, "height_px": round(text_h, 1), "embossed": embossed}
