"""The detector: pre-process -> runtime -> post-process, with per-stage timings.

``Detector(runtime, ...)`` only stores what it is handed, so tests pass a fake runtime (anything
with the ``Runtime`` attributes); ``Detector.from_path`` builds the real ONNX Runtime session.
Class names come from the model's metadata (Ultralytics writes ``names``), with the configured
names as the fallback; name and version from inspector's own metadata keys, else the file stem
and "0".
"""

from __future__ import annotations

import ast
import copy
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from inspector.conventions import utc_now
from inspector.errors import ModelError
from inspector.imageio import DecodedImage
from inspector.postprocess import DEFAULTS, head_layout, postprocess
from inspector.preprocess import preprocess
from inspector.types import Detections, Inspection, Letterbox, ModelInfo, Size, Thresholds

logger = logging.getLogger(__name__)

NAME_KEY = "inspector_model_name"  # written by scripts/export_model.py
VERSION_KEY = "inspector_model_version"


class Runtime(Protocol):
    """What the detector needs from a model runtime (``inspector.runtime.OnnxRuntime``)."""

    input_size: Size  # the model input, height and width
    output_shape: tuple[int | str | None, ...]  # as declared; symbolic dims are str or None
    metadata: dict[str, str]  # the ONNX custom metadata
    path: Path | None
    sha256: str  # of the model file's bytes

    def run(self, tensor: np.ndarray) -> np.ndarray: ...


class Detector:
    """A YOLOv8 detector. ``preprocess``/``postprocess`` are pure; ``inspect`` does all three.

    Thread-safe: the session is, and nothing here mutates after construction.
    """

    def __init__(
        self,
        runtime: Runtime,
        *,
        class_names: Sequence[str] | None = None,
        thresholds: Thresholds = DEFAULTS,
        model_info: ModelInfo | None = None,
    ) -> None:
        self.runtime = runtime
        self.model = model_info or describe_model(runtime, class_names=class_names)
        self.thresholds = thresholds

    @property
    def conf_threshold(self) -> float:
        """The one the verdict is judged by (recorded in every result)."""
        return self.thresholds.conf

    @classmethod
    def from_path(
        cls,
        path: Path | str,
        *,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int | None = None,
        inter_op_threads: int | None = None,
        thresholds: Thresholds = DEFAULTS,
        class_names: Sequence[str] | None = None,
        name: str | None = None,
        version: str | None = None,
        default_input_size: Size = Size(640, 640),  # noqa: B008 - frozen value
        expected_sha256: str = "",
        concurrent_runs: int = 1,
    ) -> Detector:
        """Load the ONNX model at ``path`` (see ``OnnxRuntime.from_path`` for the errors)."""
        from inspector.runtime import OnnxRuntime  # onnxruntime only when a model is loaded

        runtime = OnnxRuntime.from_path(
            path,
            providers=providers,
            intra_op_threads=intra_op_threads,
            inter_op_threads=inter_op_threads,
            default_input_size=default_input_size,
            expected_sha256=expected_sha256,
            concurrent_runs=concurrent_runs,
        )
        info = describe_model(runtime, class_names=class_names, name=name, version=version)
        logger.info(
            "model %s %s (%s): classes %s, input %s, sha256 %s",
            info.name,
            info.version,
            Path(path).name,
            list(info.class_names),
            info.input_size,
            info.sha256[:12],
        )
        return cls(runtime, thresholds=thresholds, model_info=info)

    def preprocess(
        self, image_bgr: np.ndarray, source: Size | None = None
    ) -> tuple[np.ndarray, Letterbox]:
        """(H, W, 3) uint8 BGR -> (1, 3, h, w) float32 model input and its letterbox.

        ``source``: the original size when ``image_bgr`` is a reduced decode of it (the
        letterbox then maps to original pixels)."""
        return preprocess(image_bgr, self.model.input_size, source)

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        """The session run: the raw detection head output."""
        return self.runtime.run(tensor)

    def postprocess(self, raw: np.ndarray, letterbox: Letterbox) -> Detections:
        """Raw head -> detections in source pixels (decode, NMS, max_det, letterbox inverse)."""
        return postprocess(raw, letterbox, self.thresholds, num_classes=len(self.model.class_names))

    def inspect(self, image: DecodedImage) -> Inspection:
        """All three stages on one decoded image, timed."""
        t0 = time.perf_counter()
        tensor, letterbox = self.preprocess(image.bgr, image.info.size)
        t1 = time.perf_counter()
        raw = self.infer(tensor)
        t2 = time.perf_counter()
        detections = self.postprocess(raw, letterbox)
        t3 = time.perf_counter()
        timings_ms = {
            "decode": image.decode_ms,
            "preprocess": (t1 - t0) * 1000,
            "inference": (t2 - t1) * 1000,
            "postprocess": (t3 - t2) * 1000,
        }
        timings_ms["total"] = sum(timings_ms.values())
        return Inspection(
            image=image.info,
            model=self.model,
            detections=detections,
            conf_threshold=self.conf_threshold,
            timings_ms=timings_ms,
            time_utc=utc_now(),
        )

    def with_thresholds(self, thresholds: Thresholds) -> Detector:
        """A copy with other thresholds, sharing the session (for live configuration updates)."""
        clone = copy.copy(self)
        clone.thresholds = thresholds
        return clone


def describe_model(
    runtime: Runtime,
    *,
    class_names: Sequence[str] | None = None,
    name: str | None = None,
    version: str | None = None,
) -> ModelInfo:
    """The model's identity from its metadata, with ``class_names`` etc. as fallbacks.

    Raises ModelError when the class names do not fit the detection head's channel count.
    """
    meta = runtime.metadata
    label = str(runtime.path) if runtime.path is not None else "<model>"
    names = parse_class_names(meta)
    if names is None:
        names = tuple(class_names) if class_names else None
    elif class_names and tuple(class_names) != names:
        logger.warning(
            "model %s: metadata names %s differ from configured %s; using the model's",
            label,
            list(names),
            list(class_names),
        )
    num_classes = _head_classes(runtime.output_shape, label, None if names is None else len(names))
    if names is None:
        if num_classes is None:
            raise ModelError(
                label,
                "no class names in the model metadata and none configured, and the output "
                f"shape {runtime.output_shape} does not tell the number of classes",
            )
        names = tuple(f"class{i}" for i in range(num_classes))
    stem = runtime.path.stem if runtime.path is not None else "model"
    return ModelInfo(
        name=name or meta.get(NAME_KEY) or stem,
        version=version or meta.get(VERSION_KEY) or "0",
        sha256=runtime.sha256,
        class_names=names,
        input_size=runtime.input_size,
    )


def parse_class_names(metadata: Mapping[str, str]) -> tuple[str, ...] | None:
    """Class names from Ultralytics' ``names`` metadata ("{0: 'scratch', 1: 'dent'}").

    Parsed with ``ast.literal_eval``, never ``eval``. A list is accepted too; dict ids must be
    0..n-1. None when absent or malformed (logged).
    """
    text = metadata.get("names")
    if not text:
        return None
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        logger.warning("model metadata 'names' is not a literal: %.80r", text)
        return None
    if isinstance(value, (list, tuple)) and value:
        return tuple(str(v) for v in value)
    if isinstance(value, dict) and value and sorted(value) == list(range(len(value))):
        return tuple(str(value[i]) for i in range(len(value)))
    logger.warning("model metadata 'names' is not {0: name, ...}: %.80r", text)
    return None


def _head_classes(
    shape: tuple[int | str | None, ...], label: str, num_classes: int | None
) -> int | None:
    """The class count the head's declared shape implies (None when it cannot tell)."""
    if len(shape) != 3:
        raise ModelError(label, f"output shape {shape} is not a YOLOv8 detection head")
    fixed = [d for d in shape[1:] if isinstance(d, int) and d > 0]
    if len(fixed) < 2:
        if num_classes is not None and fixed and fixed[0] != 4 + num_classes:
            raise ModelError(
                label,
                f"output shape {shape} does not fit {num_classes} class names "
                f"(expected a dimension of {4 + num_classes})",
            )
        return num_classes if num_classes is not None else (fixed[0] - 4 if fixed else None)
    dims = (1, int(fixed[0]), int(fixed[1]))
    try:
        layout = head_layout(dims, num_classes)
    except ValueError as exc:
        raise ModelError(label, f"output does not fit the class names: {exc}") from exc
    return (dims[1] if layout == "channels_first" else dims[2]) - 4
