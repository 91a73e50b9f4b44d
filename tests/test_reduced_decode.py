"""Reduced JPEG decode (``read_image(..., fit=)``): the factor, EXIF orientation, boxes in the
original pixels, and the corruption checks still holding."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bad_images import with_exif_orientation
from inspector.detector import Detector
from inspector.errors import ImageDecodeError
from inspector.imageio import jpeg_problem, read_image, reduction_for
from inspector.preprocess import letterbox_geometry, preprocess
from inspector.types import Size
from onnx_factory import constant_head_model, head_tensor, write_model

FIT = Size(640, 640)


def photo(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus noise and a few dark lines: JPEG-like content, no flat grey."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 200 // width, y * 200 // height, (x + y) * 100 // (width + height)], -1)
    image = (base + 30 + rng.integers(-15, 15, (height, width, 3))).clip(0, 255).astype(np.uint8)
    for n in range(5):
        cv2.line(image, (n * width // 6, 0), (width - 1, (n + 1) * height // 6), (20, 20, 20), 4)
    return image


def jpeg(image: np.ndarray, *params: int) -> bytes:
    ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 92, *params])
    assert ok
    return buffer.tobytes()


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    ("stored", "factor"),
    [
        (Size(2048, 2448), 2),  # 1024x1224 holds the 535x640 content; 1/4 (512x612) does not
        (Size(960, 1280), 2),  # exactly the 480x640 content
        (Size(4096, 5120), 8),  # exactly 512x640
        (Size(3000, 3000), 4),  # 750 >= 640, 375 < 640
        (Size(800, 1000), 1),  # under twice the input
        (Size(1279, 1280), 1),  # 640x640 both ways at 1/2: orientation could not be told
        (Size(1280, 1280), 2),  # square: no orientation to tell
    ],
)
def test_the_largest_factor_that_keeps_the_letterbox_content(stored: Size, factor: int):
    assert reduction_for(stored, FIT) == factor
    for upright in (stored, Size(stored.width, stored.height)):
        box = letterbox_geometry(upright, FIT)
        assert -(-upright.height // factor) >= box.resized.height
        assert -(-upright.width // factor) >= box.resized.width


def test_reduced_decode_keeps_the_original_size_and_the_content(tmp_path: Path):
    image = photo(960, 1280)
    path = write(tmp_path, "a.jpg", jpeg(image))
    full = read_image(path)
    reduced = read_image(path, fit=FIT)
    assert (full.scale, reduced.scale) == (1, 2)
    assert reduced.info == full.info  # original size, same sha256 and name
    assert reduced.bgr.shape == (480, 640, 3)
    area = cv2.resize(full.bgr, (640, 480), interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.bgr.astype(int) - area.astype(int)).mean() < 3
    tensor_full, box_full = preprocess(full.bgr, FIT)
    tensor_reduced, box_reduced = preprocess(reduced.bgr, FIT, reduced.info.size)
    assert box_reduced == box_full  # the letterbox maps to the ORIGINAL pixels
    assert np.abs(tensor_reduced - tensor_full).mean() < 3 / 255


@pytest.mark.parametrize(("orientation", "rotate"), [(6, cv2.ROTATE_90_CLOCKWISE),
                                                     (8, cv2.ROTATE_90_COUNTERCLOCKWISE),
                                                     (3, cv2.ROTATE_180)])
def test_reduced_decode_applies_the_exif_orientation(tmp_path: Path, orientation, rotate):
    stored = photo(1000, 1400, seed=orientation)  # stored landscape
    path = write(tmp_path, "r.jpg", with_exif_orientation(jpeg(stored), orientation))
    full = read_image(path)
    reduced = read_image(path, fit=FIT)
    assert reduced.scale == 2
    assert reduced.info.size == full.info.size == Size(*cv2.rotate(stored, rotate).shape[:2])
    upright_small = cv2.resize(full.bgr, (reduced.bgr.shape[1], reduced.bgr.shape[0]),
                               interpolation=cv2.INTER_AREA)
    assert np.abs(reduced.bgr.astype(int) - upright_small.astype(int)).mean() < 3


def test_boxes_come_back_in_original_pixels(tmp_path: Path):
    # the model "finds" one box at a fixed place of its input; both decodes must map it to the
    # same place of the original 2448x2048 frame
    model = write_model(tmp_path / "m.onnx",
                        constant_head_model(head_tensor([(320, 300, 64, 32, 0.9)])))
    detector = Detector.from_path(model, intra_op_threads=1)
    path = write(tmp_path, "big.jpg", jpeg(photo(2048, 2448)))
    full = detector.inspect(read_image(path))
    reduced_image = read_image(path, fit=detector.model.input_size)
    assert reduced_image.scale == 2 and reduced_image.bgr.shape == (1024, 1224, 3)
    reduced = detector.inspect(reduced_image)
    assert reduced.image.size == Size(2048, 2448)
    np.testing.assert_allclose(reduced.detections.xyxy, full.detections.xyxy, atol=1e-3)
    box = letterbox_geometry(Size(2048, 2448), detector.model.input_size)
    expected = box.to_source(np.array([[288, 284, 352, 316]], np.float32))[0]
    np.testing.assert_allclose(reduced.detections.xyxy[0], expected, atol=1e-3)
    assert expected[2] > 1300  # original pixels, not the 1224-wide reduced frame's


def test_png_and_small_jpegs_are_decoded_whole(tmp_path: Path):
    ok, png = cv2.imencode(".png", photo(1300, 1400))
    assert ok
    assert read_image(write(tmp_path, "a.png", png.tobytes()), fit=FIT).scale == 1
    small = read_image(write(tmp_path, "s.jpg", jpeg(photo(700, 900))), fit=FIT)
    assert small.scale == 1 and small.bgr.shape == (700, 900, 3)


def test_a_scan_missing_its_middle_is_still_refused(tmp_path: Path):
    data = jpeg(photo(1024, 1400))
    middle = len(data) // 2
    cut = data[: middle - 20000] + data[middle + 20000 :]  # structurally sound, 40 KB short
    assert jpeg_problem(cut) == ""
    reduced = cv2.imdecode(np.frombuffer(cut, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
    assert reduced is not None and (reduced[-4:, -4:] == 128).all()
    with pytest.raises(ImageDecodeError, match="grey fill") as caught:
        read_image(write(tmp_path, "cut.jpg", cut), fit=FIT)
    assert "cut.jpg" in str(caught.value)


def test_a_genuine_grey_corner_at_reduced_scale_is_confirmed_at_full_scale(tmp_path: Path):
    # a last block of mid-grey with a fine checker on it: the 1/2-scale IDCT drops the
    # checker's frequency, so the reduced frame's last 4x4 pixels are exactly (128, 128, 128)
    # while the full frame's are not; the image is accepted (decoded whole after the check)
    image = photo(1024, 1400)
    image[-16:, -16:] = 128  # the whole last MCU neutral, so chroma does not bleed in
    yy, xx = np.mgrid[0:8, 0:8]
    image[-8:, -8:] = (128 + np.where((yy + xx) % 2 == 0, 10, -10))[..., None]
    data = jpeg(image, cv2.IMWRITE_JPEG_QUALITY, 100)
    reduced = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
    full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert (reduced[-4:, -4:] == 128).all() and not (full[-8:, -8:] == 128).all()
    decoded = read_image(write(tmp_path, "grey.jpg", data), fit=FIT)
    assert decoded.scale == 1 and decoded.info.size == Size(1024, 1400)
    assert decoded.bgr.shape == (1024, 1400, 3)
