"""Reading one camera image: bytes once (for the sha256 and the decode), checks, then cv2.

What ``read_image`` guarantees: an upright (EXIF orientation applied), 8-bit, 3-channel BGR array,
or an ``ImageError`` naming the file and the reason. cv2's ``IMREAD_COLOR`` already turns
grayscale, RGBA (alpha dropped), CMYK JPEG and 16-bit PNG (high byte) into 8-bit BGR and applies
the EXIF orientation; what it does not do is checked here first:

- the pixel count, read from the file header before anything is decoded (JPEG SOF, PNG IHDR,
  BMP, TIFF IFD0, WebP), so a hostile or broken header cannot make us allocate gigabytes;
- truncation: cv2 decodes a JPEG cut short into a partly grey image with only a warning, so a
  JPEG must end with its EOI marker after the last scan and a PNG must have its IEND chunk.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from inspector.errors import (
    ImageDecodeError,
    ImageTooLargeError,
    ImageUnavailableError,
)
from inspector.types import ImageInfo, Size

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 50_000_000
_TAIL_BYTES = 4096  # where the PNG IEND chunk must be found


@dataclass(frozen=True)
class DecodedImage:
    bgr: np.ndarray  # (H, W, 3) uint8, upright
    info: ImageInfo
    decode_ms: float  # read + hash + checks + decode


def read_image(path: Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> DecodedImage:
    """Read, check and decode the image file at ``path``.

    Raises ImageUnavailableError (vanished, permission denied, a directory or other non-file),
    ImageTooLargeError (header says more than ``max_pixels``) or ImageDecodeError (empty,
    truncated, not an image).
    """
    started = time.perf_counter()
    path = Path(path)
    data = _read_bytes(path)
    if not data:
        raise ImageDecodeError(path, "empty file (0 bytes)")
    kind = sniff_format(data)
    size = header_size(data, kind)
    if size is not None and size.pixels > max_pixels:
        raise ImageTooLargeError(
            path, f"{size} = {size.pixels} pixels, over the limit of {max_pixels} (from the header)"
        )
    problem = _truncation(data, kind)
    if problem:
        raise ImageDecodeError(path, problem)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        bgr = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageDecodeError(path, f"cannot decode it: {exc}") from exc
    if bgr is None:
        what = f"a damaged {kind.upper()} file" if kind else "not an image (unrecognised format)"
        raise ImageDecodeError(path, what)
    decoded = Size(height=bgr.shape[0], width=bgr.shape[1])
    if decoded.pixels > max_pixels:  # formats whose header we do not parse
        raise ImageTooLargeError(
            path, f"{decoded} = {decoded.pixels} pixels, over the limit of {max_pixels}"
        )
    info = ImageInfo(name=path.name, size=decoded, sha256=hashlib.sha256(data).hexdigest())
    return DecodedImage(bgr=bgr, info=info, decode_ms=(time.perf_counter() - started) * 1000)


def _read_bytes(path: Path) -> bytes:
    """The whole file, refusing anything but a regular file (without blocking on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError as exc:
        # the watcher, which saw the file before, says "vanished"; here it may never have existed
        raise ImageUnavailableError(path, "file not found") from exc
    except PermissionError as exc:
        raise ImageUnavailableError(path, "permission denied") from exc
    except IsADirectoryError as exc:
        raise ImageUnavailableError(path, "is a directory, not an image file") from exc
    except OSError as exc:
        raise ImageUnavailableError(path, f"cannot open it: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ImageUnavailableError(path, "is a directory, not an image file")
        if not stat.S_ISREG(mode):
            raise ImageUnavailableError(path, "not a regular file")
        with os.fdopen(os.dup(fd), "rb") as stream:
            return stream.read()
    except OSError as exc:
        raise ImageUnavailableError(path, f"cannot read it: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def sniff_format(data: bytes) -> str:
    """ "jpeg", "png", "bmp", "tiff", "webp" from the magic bytes, or "" when unknown."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:2] == b"BM":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return ""


def header_size(data: bytes, kind: str) -> Size | None:
    """The stored image size from the header, without decoding; None when it cannot be read.

    For JPEG and TIFF this is the size before any EXIF rotation (the pixel count is the same).
    """
    try:
        height, width = _HEADER_READERS[kind](data) if kind in _HEADER_READERS else (0, 0)
    except (struct.error, IndexError, ValueError):
        return None
    if height <= 0 or width <= 0:
        return None
    return Size(height=height, width=width)


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 9 < len(data):
        if data[pos] != 0xFF:
            return 0, 0
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        # SOF0..SOF15 carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) do not.
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return height, width
        pos += 2 + length
    return 0, 0


def _png_size(data: bytes) -> tuple[int, int]:
    if data[12:16] != b"IHDR":
        return 0, 0
    width, height = struct.unpack(">II", data[16:24])
    return height, width


def _bmp_size(data: bytes) -> tuple[int, int]:
    (header_len,) = struct.unpack("<I", data[14:18])
    if header_len == 12:  # OS/2 BITMAPCOREHEADER
        width, height = struct.unpack("<HH", data[18:22])
        return height, width
    width, height = struct.unpack("<ii", data[18:26])
    return abs(height), width  # negative height = top-down rows


def _tiff_size(data: bytes) -> tuple[int, int]:
    order = "<" if data[:2] == b"II" else ">"
    (ifd,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd : ifd + 2])
    found: dict[int, int] = {}
    for n in range(count):
        entry = data[ifd + 2 + 12 * n : ifd + 14 + 12 * n]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT or LONG
            fmt = "H" if kind == 3 else "I"
            (found[tag],) = struct.unpack(order + fmt, entry[8 : 8 + struct.calcsize(fmt)])
    return found.get(257, 0), found.get(256, 0)


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return height, width
    if chunk == b"VP8L":
        bits = int.from_bytes(data[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8 ":
        width, height = struct.unpack("<HH", data[26:30])
        return height & 0x3FFF, width & 0x3FFF
    return 0, 0


_HEADER_READERS = {
    "jpeg": _jpeg_size,
    "png": _png_size,
    "bmp": _bmp_size,
    "tiff": _tiff_size,
    "webp": _webp_size,
}


def _truncation(data: bytes, kind: str) -> str:
    """Why the file looks cut short, or "" when it ends properly (or we cannot tell)."""
    if kind == "jpeg":
        last_scan = data.rfind(b"\xff\xda")
        end = data.rfind(b"\xff\xd9")
        # EOI after the last scan: an EXIF thumbnail's EOI comes before it, and FF D9 cannot
        # occur inside entropy-coded data; trailers after the EOI (MPF, maker data) are fine.
        if end < 0 or end < last_scan:
            return "truncated JPEG (no end-of-image marker after the last scan)"
    elif kind == "png" and data.rfind(b"IEND", max(0, len(data) - _TAIL_BYTES)) < 0:
        return "truncated PNG (no IEND chunk)"
    return ""
