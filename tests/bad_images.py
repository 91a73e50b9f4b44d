"""Every awkward input the service must survive, written to disk (reusable by any test).

    cases = write_bad_inputs(watch_dir, outside_dir)   # {file name: Case}

Each ``Case`` says what must become of the file: ``processed`` (a result line, image moved to
done) or ``failed`` (moved to the failed folder with a reason containing ``reason``). Odd names
(spaces, unicode, a newline) and hard-but-valid images (16-bit, grayscale, RGBA, CMYK, EXIF
rotation) must be processed; undecodable, huge, directories and symlinks out of the watch
directory must fail. Permission-denied and vanishing files need the test's cooperation and are
made by ``write_unreadable`` / the test itself.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from inspector.types import Size


@dataclass(frozen=True)
class Case:
    name: str
    expect: Literal["processed", "failed"]
    reason: str = ""  # substring of the failure reason (failed cases)
    upright: Size | None = None  # the decoded size a processed result must report


def gradient(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A non-square BGR test picture (uint8), different for every seed."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    image[:, :, 1] += np.linspace(0, 180, width, dtype=np.uint8)[None, :]
    image[:, :, 2] += np.linspace(0, 180, height, dtype=np.uint8)[:, None]
    return image


def encode(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok, ext
    return data.tobytes()


def with_exif_orientation(jpeg: bytes, orientation: int) -> bytes:
    """Insert an APP1 EXIF segment carrying only the Orientation tag after SOI."""
    tiff = b"MM\x00*" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return jpeg[:2] + app1 + jpeg[2:]


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00" * 4


def cmyk_jpeg(height: int, width: int) -> bytes:
    from PIL import Image  # the test extra installs Pillow

    buffer = io.BytesIO()
    Image.new("CMYK", (width, height), (0, 255, 255, 0)).save(buffer, "JPEG")
    return buffer.getvalue()


def _bytes_cases() -> list[tuple[Case, Callable[[], bytes]]]:
    h, w = 90, 160  # small and non-square
    return [
        (Case("zero bytes.jpg", "failed", "empty"), lambda: b""),
        (Case("truncated.jpg", "failed", "truncated jpeg"),
         lambda: encode(gradient(h, w, 1), ".jpg")[:-300]),
        (Case("truncated.png", "failed", "truncated png"),
         lambda: encode(gradient(h, w, 2), ".png")[:-100]),
        (Case("notes.jpg", "failed", "not an image"),
         lambda: b"this is a text file, not a picture\n" * 8),
        (Case("huge.png", "failed", "over the limit"), lambda: png_header_only(100_000, 60_000)),
        (Case("deep16.png", "processed", upright=Size(h, w)),
         lambda: encode((gradient(h, w, 3).astype(np.uint16) * 257), ".png")),
        (Case("gray.png", "processed", upright=Size(h, w)),
         lambda: encode(cv2.cvtColor(gradient(h, w, 4), cv2.COLOR_BGR2GRAY), ".png")),
        (Case("gray.jpg", "processed", upright=Size(h, w)),
         lambda: encode(cv2.cvtColor(gradient(h, w, 5), cv2.COLOR_BGR2GRAY), ".jpg")),
        (Case("rgba.png", "processed", upright=Size(h, w)),
         lambda: encode(cv2.cvtColor(gradient(h, w, 6), cv2.COLOR_BGR2BGRA), ".png")),
        (Case("cmyk.jpg", "processed", upright=Size(h, w)), lambda: cmyk_jpeg(h, w)),
        # stored 160 wide x 90 high, orientation 6 (rotate 90 CW): upright it is 90 wide
        (Case("exif rotated.jpg", "processed", upright=Size(w, h)),
         lambda: with_exif_orientation(encode(gradient(h, w, 7), ".jpg"), 6)),
        (Case("with space.jpg", "processed", upright=Size(h, w)),
         lambda: encode(gradient(h, w, 8), ".jpg")),
        (Case("ünïcødé 画像.png", "processed", upright=Size(h, w)),
         lambda: encode(gradient(h, w, 9), ".png")),
        (Case("new\nline.jpg", "processed", upright=Size(h, w)),
         lambda: encode(gradient(h, w, 10), ".jpg")),
        (Case("UPPER.JPEG", "processed", upright=Size(h, w)),
         lambda: encode(gradient(h, w, 11), ".jpg")),
        (Case("plain.bmp", "processed", upright=Size(h, w)),
         lambda: encode(gradient(h, w, 12), ".bmp")),
        (Case("scan.tiff", "processed", upright=Size(h, w)),
         lambda: encode(gradient(h, w, 13), ".tiff")),
    ]


def write_bad_inputs(folder: Path, outside: Path) -> dict[str, Case]:
    """Write every case into ``folder``; ``outside`` (not under ``folder``) holds link targets."""
    cases: dict[str, Case] = {}
    for case, make in _bytes_cases():
        write_atomically(folder / case.name, make())
        cases[case.name] = case
    (folder / "folder.jpg").mkdir()
    cases["folder.jpg"] = Case("folder.jpg", "failed", "directory")
    outside.mkdir(parents=True, exist_ok=True)
    target = outside / "elsewhere.jpg"
    target.write_bytes(encode(gradient(40, 60, 14), ".jpg"))
    os.symlink(target, folder / "escape.jpg")
    cases["escape.jpg"] = Case("escape.jpg", "failed", "outside the watch directory")
    inside = folder / "inside-target.jpg"
    write_atomically(inside, encode(gradient(40, 60, 15), ".jpg"))
    cases[inside.name] = Case(inside.name, "processed", upright=Size(40, 60))
    return cases


def ignored_files(folder: Path) -> list[Path]:
    """Files the watcher must never touch: hidden, temporary, partial, other extensions."""
    data = encode(gradient(30, 40, 20), ".jpg")
    names = [".hidden.jpg", "upload.jpg.part", "camera.tmp", "backup.jpg~", "notes.txt",
             "x.jpg.partial"]
    paths = []
    for name in names:
        path = folder / name
        path.write_bytes(data)
        paths.append(path)
    return paths


def write_atomically(path: Path, data: bytes) -> None:
    """Like a careful camera: write a temporary name, then rename into place."""
    temp = path.with_name(path.name + ".part")
    temp.write_bytes(data)
    os.replace(temp, path)


def write_unreadable(path: Path) -> None:
    """A complete image whose permissions deny reading (only meaningful when not root)."""
    write_atomically(path, encode(gradient(30, 40, 21), ".jpg"))
    path.chmod(0)
