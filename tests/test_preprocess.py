"""Letterbox geometry and tensor layout, on non-square images in both orientations."""

from __future__ import annotations

import numpy as np
import pytest

from inspector.preprocess import PAD_VALUE, letterbox, letterbox_geometry, preprocess, to_tensor
from inspector.types import Size

BGR = (10, 20, 30)  # a solid colour whose channels differ, so a swap shows


def solid(size: Size, colour: tuple[int, int, int] = BGR) -> np.ndarray:
    image = np.empty((size.height, size.width, 3), dtype=np.uint8)
    image[:] = colour
    return image


# source, target, resized, pad_top, pad_left
GEOMETRY = [
    # landscape 1280x960 into 640x640: bands top and bottom
    (Size(960, 1280), Size(640, 640), Size(480, 640), 80, 0),
    # portrait into a square: bands left and right
    (Size(1280, 960), Size(640, 640), Size(640, 480), 0, 80),
    # landscape into a non-square (wide) input
    (Size(960, 1280), Size(384, 640), Size(384, 512), 0, 64),
    # portrait into a non-square input
    (Size(1280, 960), Size(384, 640), Size(384, 288), 0, 176),
    # portrait into a tall input
    (Size(1280, 960), Size(640, 384), Size(512, 384), 64, 0),
    # odd padding: 158.5 on each side -> 158 top, 159 bottom (Ultralytics' split)
    (Size(101, 200), Size(640, 640), Size(323, 640), 158, 0),
    # 5 MP camera frame
    (Size(2048, 2448), Size(640, 640), Size(535, 640), 52, 0),
    # same size: nothing to do
    (Size(640, 640), Size(640, 640), Size(640, 640), 0, 0),
    # smaller than the input: scaled up
    (Size(100, 320), Size(640, 640), Size(200, 640), 220, 0),
]


@pytest.mark.parametrize(("source", "target", "resized", "pad_top", "pad_left"), GEOMETRY)
def test_geometry_has_exact_pads(source, target, resized, pad_top, pad_left):
    box = letterbox_geometry(source, target)
    assert (box.resized, box.pad_top, box.pad_left) == (resized, pad_top, pad_left)


@pytest.mark.parametrize(("source", "target", "resized", "pad_top", "pad_left"), GEOMETRY)
def test_letterboxed_pixels_are_content_inside_and_114_outside(
    source, target, resized, pad_top, pad_left
):
    padded, _ = letterbox(solid(source), target)
    assert padded.shape == (target.height, target.width, 3)
    assert padded.dtype == np.uint8
    content = np.zeros(padded.shape[:2], dtype=bool)
    content[pad_top : pad_top + resized.height, pad_left : pad_left + resized.width] = True
    assert (padded[content] == BGR).all()
    assert (padded[~content] == PAD_VALUE).all()


@pytest.mark.parametrize(("source", "target", "resized", "pad_top", "pad_left"), GEOMETRY)
def test_round_trip_source_to_target_and_back(source, target, resized, pad_top, pad_left):
    box = letterbox_geometry(source, target)
    whole = np.array([[0, 0, source.width, source.height]], dtype=np.float32)
    np.testing.assert_allclose(
        box.to_target(whole),
        [[pad_left, pad_top, pad_left + resized.width, pad_top + resized.height]],
        atol=1e-3,
    )
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, 1, (50, 2)) * [source.width * 0.8, source.height * 0.8]
    wh = rng.uniform(0.01, 0.2, (50, 2)) * [source.width, source.height]
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    np.testing.assert_allclose(box.to_source(box.to_target(boxes)), boxes, atol=1e-3 * source.width)


@pytest.mark.parametrize(
    ("source", "target"),
    [(Size(960, 1280), Size(640, 640)), (Size(1280, 960), Size(384, 640))],
)
def test_a_drawn_rectangle_lands_where_to_target_says(source, target):
    """Catches a height/width swap, which square test images would hide."""
    image = solid(source, (0, 0, 0))
    x1, y1, x2, y2 = source.width // 5, source.height // 3, source.width // 2, source.height // 2
    image[y1:y2, x1:x2] = 255
    padded, box = letterbox(image, target)
    ys, xs = np.nonzero(padded[:, :, 0] > 127)
    found = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    expected = box.to_target(np.array([[x1, y1, x2, y2]], dtype=np.float32))[0]
    np.testing.assert_allclose(found, expected, atol=1.0)


def test_boxes_in_the_padding_are_clipped_to_the_source_image():
    box = letterbox_geometry(Size(960, 1280), Size(640, 640))  # pads 80 px top and bottom
    out = box.to_source(np.array([[-5, 0, 700, 80], [0, 560, 640, 640]], dtype=np.float32))
    np.testing.assert_allclose(out, [[0, 0, 1280, 0], [0, 960, 1280, 960]])


def test_tensor_is_nchw_rgb_scaled_float32_contiguous():
    image = solid(Size(3, 5))
    tensor = to_tensor(image)
    assert tensor.shape == (1, 3, 3, 5)
    assert tensor.dtype == np.float32
    assert tensor.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(tensor[0, :, 0, 0], [30 / 255, 20 / 255, 10 / 255], rtol=1e-6)


def test_preprocess_pads_with_114_over_255():
    tensor, box = preprocess(solid(Size(960, 1280)), Size(640, 640))
    assert tensor.shape == (1, 3, 640, 640)
    np.testing.assert_allclose(tensor[0, :, 0, 0], PAD_VALUE / 255, rtol=1e-6)
    np.testing.assert_allclose(tensor[0, :, 320, 320], [30 / 255, 20 / 255, 10 / 255], rtol=1e-6)
    assert box.pad_top == 80


def test_letterbox_rejects_a_non_bgr_array():
    with pytest.raises(ValueError, match=r"expected \(H, W, 3\)"):
        letterbox(np.zeros((10, 10), dtype=np.uint8), Size(64, 64))


@pytest.mark.parametrize(("source", "target", "resized", "pad_top", "pad_left"), GEOMETRY)
def test_one_pass_preprocess_equals_letterbox_then_tensor(
    source, target, resized, pad_top, pad_left
):
    rng = np.random.default_rng(source.pixels)
    image = rng.integers(0, 256, (source.height, source.width, 3), dtype=np.uint8)
    tensor, box = preprocess(image, target)
    padded, expected_box = letterbox(image, target)
    assert box == expected_box
    np.testing.assert_array_equal(tensor, to_tensor(padded))


@pytest.mark.parametrize("x0", range(1000, 1008))
def test_shrinking_keeps_a_thin_line_at_every_phase(x0):
    # A 2 px scratch in a 5 MP frame shrunk 3.8x: bilinear sampling misses it at some phases,
    # area averaging keeps at least half of 2/3.8 of its contrast wherever it lies.
    image = np.zeros((2048, 2448, 3), np.uint8)
    image[:, x0 : x0 + 2] = 255
    tensor, box = preprocess(image, Size(640, 640))
    content = tensor[0, 0, box.pad_top : box.pad_top + box.resized.height, :]
    assert content.max(axis=1).min() >= 0.2  # bilinear: 0.0 at x0 = 1001 and 1005


@pytest.mark.parametrize("source,target", [(s, t) for s, t, *_ in GEOMETRY])
def test_the_two_halves_make_the_same_tensor(source: Size, target: Size):
    """The pipeline runs ``fit_content`` (decode worker) and ``content_tensor`` (inference
    worker) apart; together they are ``preprocess``, bit for bit; the half in between is the
    uint8 content at its letterbox size."""
    from inspector.preprocess import content_tensor, fit_content

    image = np.random.default_rng(1).integers(0, 256, (source.height, source.width, 3),
                                                np.uint8)
    content, box = fit_content(image, target)
    assert content.dtype == np.uint8 and content.shape[:2] == (box.resized.height,
                                                                 box.resized.width)
    whole, whole_box = preprocess(image, target)
    assert box == whole_box
    np.testing.assert_array_equal(content_tensor(content, box), whole)
    # filled into a tensor that held another image (other padding, other content): the same
    other, other_box = fit_content(255 - image[: source.height // 2], target)
    reused = content_tensor(other, other_box)
    assert content_tensor(content, box, out=reused) is reused
    np.testing.assert_array_equal(reused, whole)
