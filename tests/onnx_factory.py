"""Tiny YOLOv8-like ONNX models built with onnx.helper, whose output is known exactly.

Reusable by any test (``from onnx_factory import ...``; pytest puts ``tests/`` on sys.path):

    raw = head_tensor([(320, 240, 40, 20, 0.9)])          # (1, 5, 1): cx cy w h score
    path = write_model(tmp_path / "m.onnx", constant_head_model(raw, input_size=Size(480, 640)))

The graph ignores the image values: its output is the constant ``raw`` (plus 0 x the input's
maximum, so the input must still be fed with the declared shape). Ultralytics-style metadata
(``names`` as a python-dict-like string, ``imgsz``, ``stride``) is written unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from inspector.types import Size

OPSET = 17
IR_VERSION = 8  # old enough for any onnxruntime >= 1.17
INPUT_NAME = "images"  # Ultralytics' names
OUTPUT_NAME = "output0"
SCRATCH = {0: "scratch"}
DEFAULT_INPUT_SIZE = Size(640, 640)


def head_tensor(
    rows: Sequence[Sequence[float]], *, num_classes: int = 1, channels_last: bool = False
) -> np.ndarray:
    """(1, 4+nc, N) float32 from rows of (cx, cy, w, h, score_0, ..., score_{nc-1}).

    ``channels_last`` gives the transposed (1, N, 4+nc) layout instead.
    """
    raw = np.zeros((1, 4 + num_classes, len(rows)), dtype=np.float32)
    for n, row in enumerate(rows):
        if len(row) != 4 + num_classes:
            raise ValueError(f"row {n}: expected {4 + num_classes} values, got {len(row)}")
        raw[0, :, n] = row
    return np.ascontiguousarray(raw.transpose(0, 2, 1)) if channels_last else raw


def ultralytics_metadata(
    names: Mapping[int, str] | None = SCRATCH,
    input_size: Size | None = None,
    *,
    name: str | None = None,
    version: str | None = None,
) -> dict[str, str]:
    """Metadata as Ultralytics' exporter writes it, plus inspector's own keys when given."""
    meta = {
        "description": "Ultralytics YOLOv8n model (test double)",
        "author": "Ultralytics",
        "version": "8.3.0",  # Ultralytics' version, not the model's
        "task": "detect",
        "stride": "32",
        "batch": "1",
    }
    if names is not None:
        meta["names"] = str(dict(names))  # "{0: 'scratch'}"
    if input_size is not None:
        meta["imgsz"] = str([input_size.height, input_size.width])
    if name is not None:
        meta["inspector_model_name"] = name
    if version is not None:
        meta["inspector_model_version"] = version
    return meta


def constant_output_model(
    output: np.ndarray,
    *,
    input_size: Size | None = DEFAULT_INPUT_SIZE,
    metadata: Mapping[str, str] | None = None,
    dynamic_output_dims: Sequence[int] = (),
) -> onnx.ModelProto:
    """A model whose single output is ``output`` (any shape), whatever the image.

    ``input_size=None`` declares a dynamic (batch, 3, height, width) input. Output dimensions
    listed in ``dynamic_output_dims`` are declared symbolic.
    """
    out = np.ascontiguousarray(output, dtype=np.float32)
    if input_size is None:
        input_dims: list[int | str] = ["batch", 3, "height", "width"]
    else:
        input_dims = [1, 3, input_size.height, input_size.width]
    output_dims: list[int | str] = [
        f"d{axis}" if axis in dynamic_output_dims else int(dim)
        for axis, dim in enumerate(out.shape)
    ]
    nodes = [
        helper.make_node("ReduceMax", [INPUT_NAME], ["image_max"], keepdims=0),
        helper.make_node("Mul", ["image_max", "zero"], ["nothing"]),
        helper.make_node("Add", ["head", "nothing"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes,
        "constant_head",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, input_dims)],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, output_dims)],
        initializer=[
            numpy_helper.from_array(out, "head"),
            numpy_helper.from_array(np.zeros((), np.float32), "zero"),
        ],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnx_factory"
    )
    model.ir_version = IR_VERSION
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


def constant_head_model(
    raw: np.ndarray,
    *,
    input_size: Size | None = DEFAULT_INPUT_SIZE,
    names: Mapping[int, str] | None = SCRATCH,
    name: str | None = None,
    version: str | None = None,
    dynamic_anchors: bool = False,
) -> onnx.ModelProto:
    """A YOLOv8-like detector that always outputs ``raw`` ((1, 4+nc, N) or (1, N, 4+nc))."""
    meta = ultralytics_metadata(names, input_size, name=name, version=version)
    channels = 4 + (len(names) if names else 1)
    anchors_axis = 1 if raw.shape[2] == channels and raw.shape[1] != channels else 2
    return constant_output_model(
        raw,
        input_size=input_size,
        metadata=meta,
        dynamic_output_dims=(anchors_axis,) if dynamic_anchors else (),
    )


def write_model(path: Path, model: onnx.ModelProto) -> Path:
    """Serialise ``model`` to ``path`` (parents created); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


class FakeRuntime:
    """A stand-in for ``inspector.runtime.OnnxRuntime`` that returns a fixed ``raw`` output.

    Records every tensor it is run on (``calls``), so tests can check what pre-processing fed it.
    """

    def __init__(
        self,
        raw: np.ndarray,
        *,
        input_size: Size = DEFAULT_INPUT_SIZE,
        names: Mapping[int, str] | None = SCRATCH,
        metadata: Mapping[str, str] | None = None,
        path: Path | None = None,
        sha256: str = "0" * 64,
    ) -> None:
        self.raw = np.asarray(raw, dtype=np.float32)
        self.input_size = input_size
        self.output_shape: tuple[int | str | None, ...] = tuple(self.raw.shape)
        self.metadata = dict(
            ultralytics_metadata(names, input_size) if metadata is None else metadata
        )
        self.path = path
        self.sha256 = sha256
        self.calls: list[np.ndarray] = []

    def run(self, tensor: np.ndarray) -> np.ndarray:
        self.calls.append(tensor)
        return self.raw
