"""read_image on real files: good ones of every kind cv2 must normalise, and each bad case."""

from __future__ import annotations

import hashlib
import io
import os
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from bad_images import with_exif_orientation
from inspector.errors import ImageDecodeError, ImageTooLargeError, ImageUnavailableError
from inspector.imageio import (
    HEAD_BYTES,
    ends_properly,
    header_size,
    jpeg_problem,
    read_image,
    sniff_format,
)
from inspector.types import Size


def encode(image: np.ndarray, ext: str) -> bytes:
    ok, buffer = cv2.imencode(ext, image)
    assert ok
    return buffer.tobytes()


def gradient(height: int, width: int) -> np.ndarray:
    """A non-square BGR image whose channels and rows differ."""
    image = np.zeros((height, width, 3), dtype=np.uint8)
    image[:, :, 0] = 40
    image[:, :, 1] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    image[:, :, 2] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    return image


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tiff", ".webp"])
def test_reads_a_non_square_image_with_its_facts(tmp_path: Path, ext: str):
    image = gradient(30, 70)
    data = encode(image, ext)
    decoded = read_image(write(tmp_path, f"tag{ext}", data))
    assert decoded.bgr.shape == (30, 70, 3)
    assert decoded.bgr.dtype == np.uint8
    assert decoded.info.name == f"tag{ext}"
    assert decoded.info.size == Size(height=30, width=70)
    assert decoded.info.sha256 == hashlib.sha256(data).hexdigest()
    assert decoded.decode_ms >= 0
    if ext != ".jpg":  # lossless
        np.testing.assert_array_equal(decoded.bgr, image)


@pytest.mark.parametrize("ext", [".jpg", ".png", ".bmp", ".tiff", ".webp"])
def test_header_size_without_decoding(ext: str):
    data = encode(gradient(30, 70), ext)
    assert header_size(data, sniff_format(data)) == Size(30, 70)


def test_exif_rotated_jpeg_comes_upright(tmp_path: Path):
    stored = gradient(20, 40)  # stored landscape; orientation 6 = shown rotated 90 degrees CW
    path = write(tmp_path, "rotated.jpg", with_exif_orientation(encode(stored, ".jpg"), 6))
    decoded = read_image(path)
    assert decoded.info.size == Size(height=40, width=20)
    assert decoded.bgr.shape == (40, 20, 3)
    expected = cv2.rotate(stored, cv2.ROTATE_90_CLOCKWISE)
    assert np.abs(decoded.bgr.astype(int) - expected.astype(int)).mean() < 4


def test_16_bit_png_is_scaled_to_8_bit(tmp_path: Path):
    deep = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)[:, :, None].repeat(3, axis=2)
    decoded = read_image(write(tmp_path, "deep.png", encode(deep, ".png")))
    assert decoded.bgr.dtype == np.uint8
    np.testing.assert_array_equal(decoded.bgr, (deep >> 8).astype(np.uint8))


def test_grayscale_becomes_three_channels(tmp_path: Path):
    decoded = read_image(write(tmp_path, "grey.png", encode(np.full((5, 6), 77, np.uint8), ".png")))
    assert decoded.bgr.shape == (5, 6, 3)
    assert (decoded.bgr == 77).all()


def test_rgba_drops_alpha(tmp_path: Path):
    rgba = np.zeros((5, 6, 4), dtype=np.uint8)
    rgba[..., 2] = 200
    rgba[..., 3] = 0  # fully transparent: the colour is still what is inspected
    decoded = read_image(write(tmp_path, "alpha.png", encode(rgba, ".png")))
    assert decoded.bgr.shape == (5, 6, 3)
    assert decoded.bgr[0, 0].tolist() == [0, 0, 200]


def test_cmyk_jpeg_is_converted(tmp_path: Path):
    pil = pytest.importorskip("PIL.Image")
    buffer = io.BytesIO()
    pil.new("CMYK", (30, 10), (0, 255, 255, 0)).save(buffer, "JPEG")  # pure red
    decoded = read_image(write(tmp_path, "cmyk.jpg", buffer.getvalue()))
    assert decoded.bgr.shape == (10, 30, 3)
    b, g, r = decoded.bgr[5, 15].tolist()
    assert r > 200 and g < 40 and b < 40


@pytest.mark.parametrize(
    ("name", "make", "reason"),
    [
        ("empty.jpg", lambda: b"", "empty file"),
        ("notes.jpg", lambda: b"this is a text file, not a picture\n" * 4, "not an image"),
        (
            "cut.jpg",
            lambda: encode(
                np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8), ".jpg"
            )[:-300],
            "truncated JPEG",
        ),
        (
            "cut.png",
            lambda: encode(
                np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8), ".png"
            )[:-100],
            "truncated PNG",
        ),
        ("half.jpg", lambda: encode(gradient(300, 400), ".jpg")[:400], "truncated JPEG"),
    ],
)
def test_undecodable_files(tmp_path: Path, name, make, reason):
    path = write(tmp_path, name, make())
    with pytest.raises(ImageDecodeError, match=reason) as caught:
        read_image(path)
    assert caught.value.path == path
    assert str(path) in str(caught.value)


def test_jpeg_with_a_thumbnail_eoi_but_cut_main_scan_is_truncated(tmp_path: Path):
    thumbnail = encode(gradient(8, 8), ".jpg")
    main = encode(np.random.default_rng(1).integers(0, 255, (200, 300, 3), np.uint8), ".jpg")
    # a fake APP1 holding a whole JPEG (with its own EOI) before the main image's scan
    app1 = b"\xff\xe1" + struct.pack(">H", len(thumbnail) + 2) + thumbnail
    data = main[:2] + app1 + main[2:]
    assert read_image(write(tmp_path, "ok.jpg", data)).info.size == Size(200, 300)
    with pytest.raises(ImageDecodeError, match="truncated JPEG"):
        read_image(write(tmp_path, "cut.jpg", data[: len(data) // 2]))


def png_header_only(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + b"\x00" * 4


def jpeg_claiming(height: int, width: int) -> bytes:
    data = bytearray(encode(gradient(16, 16), ".jpg"))
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("huge.png", png_header_only(100_000, 60_000)),
        ("huge.jpg", jpeg_claiming(60_000, 60_000)),
    ],
)
def test_huge_dimensions_refused_from_the_header(tmp_path: Path, name, data):
    with pytest.raises(ImageTooLargeError, match="from the header"):
        read_image(write(tmp_path, name, data))


def test_max_pixels_is_configurable(tmp_path: Path):
    path = write(tmp_path, "small.png", encode(gradient(30, 70), ".png"))
    with pytest.raises(ImageTooLargeError, match="70x30 = 2100 pixels"):
        read_image(path, max_pixels=2099)
    assert read_image(path, max_pixels=2100).info.size == Size(30, 70)


def test_vanished_file(tmp_path: Path):
    with pytest.raises(ImageUnavailableError, match="not found"):
        read_image(tmp_path / "gone.jpg")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_permission_denied(tmp_path: Path):
    path = write(tmp_path, "secret.jpg", encode(gradient(10, 10), ".jpg"))
    path.chmod(0)
    try:
        with pytest.raises(ImageUnavailableError, match="permission denied"):
            read_image(path)
    finally:
        path.chmod(0o600)


def test_directory_named_like_an_image(tmp_path: Path):
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(ImageUnavailableError, match="directory"):
        read_image(tmp_path / "folder.jpg")


def test_fifo_is_refused_without_blocking(tmp_path: Path):
    path = tmp_path / "pipe.jpg"
    os.mkfifo(path)
    with pytest.raises(ImageUnavailableError, match="not a regular file"):
        read_image(path)


def test_jpeg_with_a_trailer_after_eoi_is_fine(tmp_path: Path):
    data = encode(gradient(30, 70), ".jpg") + b"MAKER-TRAILER" * 1000
    assert read_image(write(tmp_path, "trailer.jpg", data)).info.size == Size(30, 70)


# --- completeness and corrupt scan data (issue 12, fault 6) -------------------------------------


def noisy(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A photo-like image: a gradient with sensor-like noise (no flat grey anywhere)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(-20, 20, (height, width, 3))
    return (gradient(height, width).astype(int) + noise).clip(0, 255).astype(np.uint8)


def encode_with(image: np.ndarray, *params: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, list(params))
    assert ok
    return buffer.tobytes()


@pytest.mark.parametrize(
    "params",
    [
        (),
        (cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        (cv2.IMWRITE_JPEG_RST_INTERVAL, 4),
        (cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444,
         cv2.IMWRITE_JPEG_RST_INTERVAL, 3),
    ],
)
def test_marker_walk_accepts_whole_jpegs(params):
    colour = encode_with(noisy(120, 200), *params)
    grey = encode_with(cv2.cvtColor(noisy(121, 203), cv2.COLOR_BGR2GRAY), *params)
    assert jpeg_problem(colour) == ""
    assert jpeg_problem(grey) == ""
    assert jpeg_problem(colour + b"maker trailer after the EOI") == ""
    assert ends_properly(colour[:HEAD_BYTES], colour[-64:], len(colour)) is True


def test_end_marker_check_allows_zero_padding_only():
    def ends(data: bytes) -> bool | None:
        return ends_properly(data[:HEAD_BYTES], data[-4096:], len(data))

    jpeg = encode_with(noisy(40, 60))
    png = encode(noisy(40, 60), ".png")
    assert ends(jpeg) is True and ends(jpeg + b"\0" * 100) is True
    assert ends(jpeg[:-10]) is False and ends(jpeg + b"trailer") is False
    assert ends(png) is True and ends(png + b"\0" * 7) is True
    assert ends(png[:-1]) is False
    assert ends(encode(noisy(40, 60), ".bmp")) is None  # no end marker to look for


def test_end_marker_of_an_exif_thumbnail_is_not_the_end():
    thumbnail = encode_with(noisy(8, 8))
    main = encode_with(noisy(200, 300, seed=1))
    app1 = b"\xff\xe1" + struct.pack(">H", len(thumbnail) + 2) + thumbnail
    whole = main[:2] + app1 + main[2:]
    cut_after_thumbnail = whole[: 2 + len(app1)]  # a camera's chunk ending with its EOI
    cut_inside_thumbnail = whole[: 2 + len(app1) - 20] + b"\xff\xd9"
    assert ends_properly(whole[:HEAD_BYTES], whole[-64:], len(whole)) is True
    for cut in (cut_after_thumbnail, cut_inside_thumbnail):
        assert cut.endswith(b"\xff\xd9")
        assert ends_properly(cut[:HEAD_BYTES], cut[-64:], len(cut)) is False


def overwrite_middle(data: bytes, fill: bytes) -> bytes:
    middle = len(data) // 2
    return data[: middle - len(fill) // 2] + fill + data[middle - len(fill) // 2 + len(fill) :]


def test_jpeg_with_its_middle_overwritten_is_failed_not_judged(tmp_path: Path):
    data = encode_with(noisy(240, 320))
    damaged = overwrite_middle(data, np.random.default_rng(7).bytes(3000))
    # what the service used to accept: cv2 decodes it (half grey), only libjpeg's warning says so
    assert cv2.imdecode(np.frombuffer(damaged, np.uint8), cv2.IMREAD_COLOR) is not None
    with pytest.raises(ImageDecodeError, match="corrupt JPEG data") as caught:
        read_image(write(tmp_path, "damaged.jpg", damaged))
    assert "damaged.jpg" in str(caught.value)


def test_jpeg_missing_part_of_its_scan_is_caught_by_the_grey_fill(tmp_path: Path):
    data = encode_with(noisy(240, 320))
    middle = len(data) // 2
    cut = data[: middle - 2000] + data[middle + 2000 :]  # structurally sound, 4 KB short
    assert jpeg_problem(cut) == ""
    decoded = cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and (decoded[-8:, -8:] == 128).all()
    with pytest.raises(ImageDecodeError, match="grey fill"):
        read_image(write(tmp_path, "cut.jpg", cut))
    ended = data[: middle] + b"\xff\xd9"  # cut short but given an end marker
    with pytest.raises(ImageDecodeError, match="corrupt JPEG data"):
        read_image(write(tmp_path, "ended.jpg", ended))


def test_restart_markers_show_a_cut_or_overwritten_scan():
    data = encode_with(noisy(240, 320), cv2.IMWRITE_JPEG_RST_INTERVAL, 2)
    middle = len(data) // 2
    assert "restart marker" in jpeg_problem(data[: middle - 500] + data[middle + 500 :])
    assert "restart marker" in jpeg_problem(overwrite_middle(data, bytes(800)))


def test_jpeg_without_its_end_marker_is_incomplete(tmp_path: Path):
    data = encode_with(noisy(120, 160))
    for cut in (data[:-2], data[: len(data) // 2], data[:300]):
        assert jpeg_problem(cut).startswith("incomplete (no JPEG end marker)")
    with pytest.raises(ImageDecodeError, match=r"incomplete \(no JPEG end marker\)"):
        read_image(write(tmp_path, "cut.jpg", data[:-2]))


def test_truncated_png_is_incomplete_never_judged(tmp_path: Path):
    data = encode(noisy(120, 160), ".png")
    for n, cut in enumerate((data[:-12], data[: len(data) // 2])):
        with pytest.raises(ImageDecodeError, match=r"incomplete \(no PNG end chunk IEND\)"):
            read_image(write(tmp_path, f"cut{n}.png", cut))


def test_name_is_what_the_caller_says(tmp_path: Path):
    path = write(tmp_path, "a.jpg", encode_with(noisy(30, 40)))
    assert read_image(path, name="line2/a.jpg").info.name == "line2/a.jpg"


def test_marker_search_finds_what_the_marker_grammar_defines():
    """The vectorised search finds exactly the marker bytes that the pattern FF+ [^00 FF]
    defines (runs of fill bytes, stuffed FF 00, restart markers, EOI), from any start."""
    import re

    from inspector.imageio import _marker_bytes

    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, (96, 128, 3), np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_RST_INTERVAL, 2])
    assert ok
    samples = [jpeg.tobytes(), bytes(rng.integers(0, 256, 5000, np.uint8)),
               b"\xff\xff\xff\xd0\x00\xff\x00\xff\xff", b"\xff", b"", b"\x00\xff\xd9"]
    for data in samples:
        for start in (0, 1, len(data) // 2):
            expected = [m.end() - 1 for m in re.finditer(rb"\xff+[^\x00\xff]", data[start:])]
            assert (_marker_bytes(data, start) - start).tolist() == expected
