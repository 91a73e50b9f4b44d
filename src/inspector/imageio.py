"""Reading one camera image: bytes once (for the sha256 and the decode), checks, then cv2.

What ``read_image`` guarantees: an upright (EXIF orientation applied), 8-bit, 3-channel BGR array,
or an ``ImageError`` naming the file and the reason. cv2's ``IMREAD_COLOR`` already turns
grayscale, RGBA (alpha dropped), CMYK JPEG and 16-bit PNG (high byte) into 8-bit BGR and applies
the EXIF orientation; what it does not do is checked here first:

- the pixel count, read from the file header before anything is decoded (JPEG SOF, PNG IHDR,
  BMP, TIFF IFD0, WebP), so a hostile or broken header cannot make us allocate gigabytes;
- completeness and corruption: libjpeg decodes a JPEG cut short, or one whose scan data is
  damaged, into a partly grey image and only prints a warning ("Corrupt JPEG data: premature end
  of data segment") that OpenCV offers no API to see. So a JPEG's markers are walked first
  (``jpeg_problem``: every segment whole, the scan data free of stray markers, restart markers
  in sequence and as many as the frame needs, EOI at the end), and after decoding an image
  whose last block is libjpeg's exact mid-grey fill (128, 128, 128) is refused (a genuine
  image whose bottom-right 8 x 8 pixels are exactly that grey would be refused too). A PNG must
  have its IEND chunk (libpng itself rejects bad chunk CRCs).

  Limits: damage that keeps the scan data free of stray markers (a run of zero bytes written
  over the middle, say) decodes to wrong pixels with only libjpeg's warning ("N extraneous
  bytes before marker"), and a progressive JPEG missing part of a later scan decodes blurred,
  not grey; telling those apart would need a second entropy decoder. Restart markers, where a
  camera writes them, catch both.

Reduced decode (``fit``): a JPEG at least twice the model input is decoded by libjpeg at 1/2,
1/4 or 1/8 scale (``IMREAD_REDUCED_COLOR_*``: the IDCT itself is scaled, so most of the
decode and the resize work is skipped), the largest factor that still leaves at least the
letterbox's content size in both axes; the letterbox then shrinks it the rest of the way with
area averaging. ``info.size`` stays the ORIGINAL upright size and ``DecodedImage.scale`` says
by how much the pixels were reduced, so the letterbox (``preprocess(..., source=info.size)``)
maps boxes to original pixels. cv2 applies the EXIF orientation to a reduced decode as to a
full one (``imgcodecs``' ``imdecode_`` applies it for every flag but ``IMREAD_UNCHANGED``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import struct
import time
from dataclasses import dataclass, field
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
    scale: int = 1  # the JPEG was decoded at 1/scale of ``info.size`` (reduced decode)


_REDUCED = {2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
            8: cv2.IMREAD_REDUCED_COLOR_8}


def reduction_for(stored: Size, fit: Size) -> int:
    """The JPEG decode reduction (8, 4, 2 or 1) for an image stored at ``stored`` (before EXIF
    rotation) that is to be letterboxed into ``fit``.

    The largest factor whose decoded frame (libjpeg rounds up: ceil(side / f)) still holds the
    letterbox content size in both axes, whichever way the EXIF orientation turns the image. A
    factor is skipped when it would make a non-square image's reduced sides equal, since the
    orientation is then told from the reduced frame's shape.
    """
    from inspector.preprocess import letterbox_geometry  # no cycle: preprocess needs only types

    for factor in (8, 4, 2):
        rows, cols = _reduced(stored, factor)
        if rows == cols and stored.height != stored.width:
            continue
        fits = True
        for upright in (stored, Size(height=stored.width, width=stored.height)):
            box = letterbox_geometry(upright, fit)
            have = (rows, cols) if upright is stored else (cols, rows)
            if have[0] < box.resized.height or have[1] < box.resized.width:
                fits = False
        if fits:
            return factor
    return 1


def read_image(
    path: Path,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    name: str | None = None,
    fit: Size | None = None,
) -> DecodedImage:
    """Read, check and decode the image file at ``path``.

    ``name`` is what the result calls the image (the path relative to the watch folder in the
    service); the file's own name by default. ``fit``: the model input the image will be
    letterboxed into; a JPEG at least twice that size is decoded at reduced scale (see the
    module docstring; ``bgr`` is then smaller than ``info.size``).

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
    problem = completeness_problem(data, kind)
    if problem:
        raise ImageDecodeError(path, problem)
    buffer = np.frombuffer(data, dtype=np.uint8)
    scale = 1
    if fit is not None and size is not None and kind == "jpeg":
        scale = reduction_for(size, fit)
    bgr = _decode(path, buffer, kind, scale)
    turned = _upright(size, bgr.shape[:2], scale) if size is not None and scale > 1 else None
    if scale > 1 and turned is None:  # not the shape libjpeg was asked for: decode it whole
        scale = 1
        bgr = _decode(path, buffer, kind, scale)
    upright = turned or Size(height=bgr.shape[0], width=bgr.shape[1])
    if kind == "jpeg" and _grey_filled(bgr, 8 // scale):
        if scale > 1:  # confirm at full scale, where the check is exact (rare: costs a decode)
            scale = 1
            bgr = _decode(path, buffer, kind, scale)
            upright = Size(height=bgr.shape[0], width=bgr.shape[1])
        if _grey_filled(bgr):
            raise ImageDecodeError(
                path,
                "corrupt JPEG data: it decodes with the uniform grey fill libjpeg puts where "
                "the scan data ended early (premature end of data segment)",
            )
    if upright.pixels > max_pixels:  # formats whose header we do not parse
        raise ImageTooLargeError(
            path, f"{upright} = {upright.pixels} pixels, over the limit of {max_pixels}"
        )
    info = ImageInfo(name=name or path.name, size=upright, sha256=hashlib.sha256(data).hexdigest())
    return DecodedImage(
        bgr=bgr, info=info, decode_ms=(time.perf_counter() - started) * 1000, scale=scale
    )


def _decode(path: Path, buffer: np.ndarray, kind: str, scale: int) -> np.ndarray:
    try:
        bgr = cv2.imdecode(buffer, _REDUCED[scale] if scale > 1 else cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise ImageDecodeError(path, f"cannot decode it: {exc}") from exc
    if bgr is None:
        what = f"a damaged {kind.upper()} file" if kind else "not an image (unrecognised format)"
        raise ImageDecodeError(path, what)
    return bgr


def _upright(stored: Size, shape: tuple[int, ...], scale: int) -> Size | None:
    """The original upright size of a frame decoded at 1/scale: the stored size, or turned when
    the EXIF orientation swapped the axes; None when the shape fits neither."""
    rows, cols = _reduced(stored, scale)
    if (shape[0], shape[1]) == (rows, cols):
        return stored
    if (shape[0], shape[1]) == (cols, rows):
        return Size(height=stored.width, width=stored.height)
    return None


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


INCOMPLETE_JPEG = "incomplete (no JPEG end marker): a truncated JPEG"
INCOMPLETE_PNG = "incomplete (no PNG end chunk IEND): a truncated PNG"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk: length 0, type, CRC
_GREY = 128  # what libjpeg decodes a block with no coefficients to (CENTERJSAMPLE)


def completeness_problem(data: bytes, kind: str) -> str:
    """Why the file is incomplete or corrupt, or "" when it looks whole (or we cannot tell)."""
    if kind == "jpeg":
        return jpeg_problem(data)
    if kind == "png" and data.rfind(b"IEND", max(0, len(data) - _TAIL_BYTES)) < 0:
        return INCOMPLETE_PNG
    return ""


HEAD_BYTES = 256 * 1024  # enough for a JPEG's header segments (EXIF, ICC) up to its first scan


def ends_properly(head: bytes, tail: bytes, size: int) -> bool | None:
    """Whether a file of ``size`` bytes, whose first bytes are ``head`` (up to HEAD_BYTES) and
    last bytes ``tail``, ends with its format's end marker (zero padding after it allowed);
    None for formats without one.

    Cheap enough to ask each time a file being watched changes: no decoding, two short reads.
    For a JPEG the EOI must also lie after the first scan's start: an EXIF thumbnail ends with
    an EOI of its own, and a camera writing in chunks may pause right after it.
    """
    kind = sniff_format(head)
    body = tail.rstrip(b"\x00")
    if kind == "png":
        return body.endswith(_PNG_END)
    if kind != "jpeg":
        return None
    if not body.endswith(b"\xff\xd9"):
        return False
    eoi = size - (len(tail) - len(body)) - 2
    scan = _first_scan(head)
    if scan is None or scan < 0:
        # no scan in ``head``: if that is the whole file it is still being written; if not,
        # the header segments are longer than ``head`` and the tail is all we have
        return len(head) < size
    return scan < eoi


def _first_scan(head: bytes) -> int | None:
    """Where the first SOS marker starts, walking the header segments; -1 when ``head`` ends
    inside them before any scan (the file is still being written, if head is all of it);
    None when it cannot be told from ``head`` (a segment runs past it)."""
    pos = 2
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            return pos  # not a marker: let the reader's full walk say what is wrong
        marker = head[pos + 1]
        if marker == 0xFF:
            pos += 1
            continue
        if marker == 0xDA:
            return pos
        (length,) = struct.unpack(">H", head[pos + 2 : pos + 4])
        pos += 2 + length
    return None if pos > len(head) else -1


# Markers that may follow a scan's entropy-coded data (ITU-T T.81, B.2.4 and B.6): tables,
# restart interval, another scan, number of lines, comments and application data, end of image.
_AFTER_SCAN = frozenset({0xC4, 0xCC, 0xDB, 0xDD, 0xDA, 0xDC, 0xD9, 0xFE, *range(0xE0, 0xF0)})
# Frame headers (SOF0..SOF15 except DHT C4, JPG C8 and DAC CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


@dataclass
class _Frame:
    height: int = 0
    width: int = 0
    components: dict[int, tuple[int, int]] = field(default_factory=dict)  # id -> (h, v) sampling
    restart_interval: int = 0

    def mcus(self, scan_ids: list[int]) -> int:
        """MCUs in a scan of these components (T.81 A.2); 0 when the frame size is unknown."""
        if not (self.height and self.width and self.components):
            return 0
        h_max = max(h for h, _ in self.components.values())
        v_max = max(v for _, v in self.components.values())
        if len(scan_ids) != 1:  # interleaved: one MCU covers h_max x v_max blocks of 8 x 8
            return _ceil_div(self.width, 8 * h_max) * _ceil_div(self.height, 8 * v_max)
        h, v = self.components.get(scan_ids[0], (h_max, v_max))
        cols = _ceil_div(_ceil_div(self.width * h, h_max), 8)
        rows = _ceil_div(_ceil_div(self.height * v, v_max), 8)
        return cols * rows


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _reduced(stored: Size, scale: int) -> tuple[int, int]:
    """(rows, cols) of a frame stored at ``stored`` decoded at 1/scale (libjpeg rounds up)."""
    return _ceil_div(stored.height, scale), _ceil_div(stored.width, scale)


def jpeg_problem(data: bytes) -> str:
    """Walk a JPEG's markers: "" when it is whole, else why not.

    Checks what a decoder would only warn about: every segment complete; inside scan data only
    stuffed bytes (FF 00) and restart markers, the restart markers in sequence and, when the
    frame uses them, as many as its MCUs need; after a scan only a marker that may follow one;
    an EOI at the end of it all (anything after the EOI, such as a maker trailer, is ignored).
    """
    frame = _Frame()
    pos = 2  # after SOI
    n = len(data)
    markers: np.ndarray | None = None
    while True:
        if pos + 1 >= n:
            return INCOMPLETE_JPEG
        if data[pos] != 0xFF:
            return f"corrupt JPEG data: no marker where one must be (byte {pos})"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return ""
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:
            return f"corrupt JPEG data: marker 0x{marker:02X} out of place (byte {pos})"
        if pos + 4 > n:
            return INCOMPLETE_JPEG
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if length < 2:
            return f"corrupt JPEG data: segment 0x{marker:02X} with length {length} (byte {pos})"
        if end > n:
            return INCOMPLETE_JPEG
        segment = data[pos + 4 : end]
        if marker in _SOF and len(segment) >= 6:
            frame.height, frame.width = struct.unpack(">HH", segment[1:5])
            count = segment[5]
            frame.components = {
                segment[6 + 3 * i]: (segment[7 + 3 * i] >> 4, segment[7 + 3 * i] & 0x0F)
                for i in range(count)
                if 8 + 3 * i < len(segment)
            }
        elif marker == 0xDD and len(segment) >= 2:
            (frame.restart_interval,) = struct.unpack(">H", segment[:2])
        if marker != 0xDA:
            pos = end
            continue
        scan_ids = [segment[1 + 2 * i] for i in range(segment[0])] if segment else []
        if markers is None:  # found once, for all the scans after this point
            markers = _marker_bytes(data, end)
        result = _walk_scan(data, end, frame, scan_ids, markers)
        if isinstance(result, str):
            return result
        pos = result


def _marker_bytes(data: bytes, start: int) -> np.ndarray:
    """Positions (from ``start`` on) of every byte that makes a marker with the FF before it:
    an FF followed by neither 00 (a stuffed data byte) nor FF (a fill byte). Vectorised: the
    regular expression it replaces (``\\xff+[^\\x00\\xff]``) cost ~1.4 ms a camera JPEG, a
    fifth of the whole read."""
    body = np.frombuffer(data, dtype=np.uint8)[start:]
    if body.size < 2:
        return np.empty(0, np.intp)
    ff = np.flatnonzero(body[:-1] == 0xFF)  # ~1 byte in 256 of entropy-coded data
    after = body[ff + 1]
    return ff[(after != 0x00) & (after != 0xFF)] + (start + 1)


def _walk_scan(data: bytes, start: int, frame: _Frame, scan_ids: list[int],
               markers: np.ndarray) -> int | str:
    """Through one scan's entropy-coded data: the position of the marker after it, or why not.
    ``markers``: ``_marker_bytes`` of the data from this scan's start or before."""
    restarts = 0
    pos = start
    i = int(np.searchsorted(markers, pos + 1))
    while True:
        if i >= markers.size:
            return INCOMPLETE_JPEG
        at = int(markers[i])  # the marker byte; its FF (run) just before
        i += 1
        marker = data[at]
        if 0xD0 <= marker <= 0xD7:
            if marker - 0xD0 != restarts % 8:
                return (
                    f"corrupt JPEG data: restart marker RST{marker - 0xD0} out of sequence "
                    f"(byte {_run_start(data, at, pos)})"
                )
            restarts += 1
            pos = at + 1
            continue
        if marker not in _AFTER_SCAN:
            return (
                f"corrupt JPEG data: marker 0x{marker:02X} inside the image data "
                f"(byte {_run_start(data, at, pos)})"
            )
        mcus = frame.mcus(scan_ids)
        if frame.restart_interval and mcus:
            expected = _ceil_div(mcus, frame.restart_interval) - 1
            if restarts != expected:
                return (
                    f"corrupt JPEG data: {restarts} restart marker(s) in a scan that needs "
                    f"{expected} (the scan data was cut or damaged)"
                )
        return at - 1


def _run_start(data: bytes, at: int, floor: int) -> int:
    """Where the run of FF bytes before the marker byte at ``at`` starts (not before
    ``floor``): the byte an error message names."""
    start = at - 1
    while start > floor and data[start - 1] == 0xFF:
        start -= 1
    return start


def _grey_filled(bgr: np.ndarray, block: int = 8) -> bool:
    """Whether the last block (bottom right, 8 x 8) is exactly libjpeg's fill for the blocks it
    had no data for: when the scan data ends early every block after that point is left at
    zero, which decodes to (128, 128, 128), and the last block is always among them. ``block``:
    the block's side in the decoded frame (8 / scale for a reduced decode, where a block with
    no coefficients decodes to the same grey)."""
    block = max(1, block)
    corner = bgr[-min(block, bgr.shape[0]) :, -min(block, bgr.shape[1]) :]
    return bool(corner.size) and bool((corner == _GREY).all())
