"""Pre-processing: letterbox a BGR image into the model input, then make the NCHW tensor.

Pure functions, no state: safe to call from any thread. The geometry follows Ultralytics'
``LetterBox`` (the transform YOLOv8 was trained and validated with): one scale for both axes so the
aspect is kept, ``round`` for the resized size, the padding split between both sides with the odd
pixel going bottom/right, grey 114 in the padding. Shrinking uses area averaging (see
``_resize``), where Ultralytics uses bilinear: thin scratches survive it.

``source``: the size the geometry is computed from when the pixels handed in are a reduced
decode of a larger image (``inspector.imageio`` reduced JPEG decode): the letterbox then maps
between the model input and the ORIGINAL image, and the reduced pixels are resized straight to
the content size.
"""

from __future__ import annotations

import cv2
import numpy as np

from inspector.types import Letterbox, Size

PAD_VALUE = 114  # the grey YOLOv8 was trained with
_INV_255 = np.float32(1.0 / 255.0)


def letterbox_geometry(source: Size, target: Size) -> Letterbox:
    """Where ``source`` lands inside ``target``: the resized size and the top/left padding."""
    scale = min(target.height / source.height, target.width / source.width)
    resized = Size(
        height=max(1, round(source.height * scale)),
        width=max(1, round(source.width * scale)),
    )
    pad_h = (target.height - resized.height) / 2
    pad_w = (target.width - resized.width) / 2
    # Ultralytics' split: the -0.1 sends the odd pixel to the bottom/right side.
    return Letterbox(
        source=source,
        target=target,
        resized=resized,
        pad_top=round(pad_h - 0.1),
        pad_left=round(pad_w - 0.1),
    )


def _resize(image_bgr: np.ndarray, box: Letterbox) -> np.ndarray:
    """The image content at ``box.resized``: area averaging when shrinking, bilinear otherwise.

    A scratch is 2-5 px wide in a 1280 px frame and 4-10 px in a 2448 px one; bilinear sampling
    at a 3.8x reduction skips most of such a line, area averaging keeps it (fainter, but whole).
    The training frames were shrunk the same way (``inspector.synth.downscale``).
    """
    height, width = image_bgr.shape[:2]
    if (box.resized.height, box.resized.width) == (height, width):
        return image_bgr
    shrinking = box.resized.width < width
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    size = (box.resized.width, box.resized.height)
    return cv2.resize(image_bgr, size, interpolation=interpolation)


def letterbox(
    image_bgr: np.ndarray, target: Size, source: Size | None = None
) -> tuple[np.ndarray, Letterbox]:
    """Resize ``image_bgr`` (H, W, 3) uint8 into ``target`` keeping its aspect, pad with 114.

    Returns the padded (target.height, target.width, 3) uint8 image and its geometry.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"image: expected (H, W, 3), got {image_bgr.shape}")
    source = source or Size(height=image_bgr.shape[0], width=image_bgr.shape[1])
    box = letterbox_geometry(source, target)
    content = _resize(image_bgr, box)
    if box.resized == target:
        return content, box
    padded = cv2.copyMakeBorder(
        content,
        box.pad_top,
        target.height - box.resized.height - box.pad_top,
        box.pad_left,
        target.width - box.resized.width - box.pad_left,
        cv2.BORDER_CONSTANT,
        value=(PAD_VALUE, PAD_VALUE, PAD_VALUE),
    )
    return padded, box


def to_tensor(image_bgr: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR -> (1, 3, H, W) float32 RGB in [0, 1], C-contiguous.

    One allocation and one pass: each output plane is written straight from a strided view of
    the matching BGR channel, scaled on the way.
    """
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"image: expected (H, W, 3), got {image_bgr.shape}")
    height, width = image_bgr.shape[:2]
    tensor = np.empty((1, 3, height, width), dtype=np.float32)
    for plane in range(3):  # RGB plane 0 comes from BGR channel 2
        np.multiply(image_bgr[:, :, 2 - plane], _INV_255, out=tensor[0, plane], casting="unsafe")
    return tensor


def preprocess(
    image_bgr: np.ndarray, target: Size, source: Size | None = None
) -> tuple[np.ndarray, Letterbox]:
    """Letterbox and tensor in one pass: (1, 3, H, W) float32 model input and its geometry.

    Equal to ``to_tensor(letterbox(image, target)[0])`` but without the padded uint8
    intermediate: the resized content is scaled straight into the tensor and only the padding
    bands are filled, so every output element is written once. ``fit_content`` and
    ``content_tensor`` are its two halves, which the pipeline runs on two threads (its queue
    then holds the small uint8 content, not the float tensor).
    """
    content, box = fit_content(image_bgr, target, source)
    return content_tensor(content, box), box


def fit_content(
    image_bgr: np.ndarray, target: Size, source: Size | None = None
) -> tuple[np.ndarray, Letterbox]:
    """The first half of ``preprocess``: the (h, w, 3) uint8 content at its letterbox size
    (``image_bgr`` itself when it has that size already) and the geometry."""
    if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError(f"image: expected (H, W, 3), got {image_bgr.shape}")
    source = source or Size(height=image_bgr.shape[0], width=image_bgr.shape[1])
    box = letterbox_geometry(source, target)
    return _resize(image_bgr, box), box


def content_tensor(content: np.ndarray, box: Letterbox, out: np.ndarray | None = None
                   ) -> np.ndarray:
    """The second half of ``preprocess``: ``fit_content``'s content, padded and scaled into the
    (1, 3, H, W) float32 RGB model input.

    ``out``: a tensor to fill instead of a new one when it has that shape and type (every
    element is written: padding and content). An inference worker reuses its own: a new 4.7 MiB
    array is a fresh mapping with glibc's fixed mmap threshold (``inspector.malloc``), ~1,150
    page faults each image."""
    target = box.target
    if content.shape[:2] != (box.resized.height, box.resized.width):
        raise ValueError(f"content: expected {box.resized}, got {content.shape[:2]}")
    shape = (1, 3, target.height, target.width)
    if out is not None and out.shape == shape and out.dtype == np.float32:
        tensor = out
    else:
        tensor = np.empty(shape, dtype=np.float32)
    top, left = box.pad_top, box.pad_left
    bottom, right = top + box.resized.height, left + box.resized.width
    pad = np.float32(PAD_VALUE) * _INV_255  # bit-equal to what to_tensor makes of 114
    planes = tensor[0]
    planes[:, :top] = pad
    planes[:, bottom:] = pad
    planes[:, top:bottom, :left] = pad
    planes[:, top:bottom, right:] = pad
    for plane in range(3):  # RGB plane 0 comes from BGR channel 2
        np.multiply(
            content[:, :, 2 - plane],
            _INV_255,
            out=planes[plane, top:bottom, left:right],
            casting="unsafe",
        )
    return tensor
