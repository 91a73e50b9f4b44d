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


def conv_proxy_model(
    *,
    input_size: Size = DEFAULT_INPUT_SIZE,
    widths: Sequence[int] = (16, 32, 64, 128, 256),
    blocks_per_level: int = 4,
    score_bias: float = -1.95,
    seed: int = 0,
) -> onnx.ModelProto:
    """A random-weight conv net with roughly YOLOv8n's compute and a real (1, 5, N) head.

    For benchmarks and throughput tests only: its boxes mean nothing. Five stride-2 3x3 convs
    (widths ``widths``), ``blocks_per_level`` extra 3x3 convs at strides 4..32, 1x1 heads at
    strides 8, 16 and 32 concatenated like YOLOv8 (8400 anchors at 640x640); box channels are
    sigmoid-scaled to pixels, the score channel is sigmoid(x + ``score_bias``) so only a few
    hundred anchors pass 0.25. About 4 GMACs at 640x640 with the defaults (YOLOv8n: 4.4).
    """
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, name: str, act: bool) -> str:
        w = rng.normal(0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"{name}_w"))
        inits.append(numpy_helper.from_array(np.zeros(cout, np.float32), f"{name}_b"))
        pad = k // 2
        nodes.append(
            helper.make_node(
                "Conv",
                [x, f"{name}_w", f"{name}_b"],
                [f"{name}_c"],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[pad] * 4,
            )
        )
        if not act:
            return f"{name}_c"
        nodes.append(helper.make_node("Relu", [f"{name}_c"], [f"{name}_r"]))
        return f"{name}_r"

    x, cin = INPUT_NAME, 3
    levels: list[tuple[str, int]] = []
    for level, cout in enumerate(widths):
        x = conv(x, cin, cout, 3, 2, f"down{level}", act=True)
        cin = cout
        if level >= 1:
            for block in range(blocks_per_level):
                x = conv(x, cin, cin, 3, 1, f"l{level}b{block}", act=True)
        levels.append((x, cin))
    heads = []
    for level, (feature, channels) in list(enumerate(levels))[-3:]:
        head = conv(feature, channels, 5, 1, 1, f"head{level}", act=False)
        nodes.append(helper.make_node("Reshape", [head, "flat"], [f"flat{level}"]))
        heads.append(f"flat{level}")
    nodes += [
        helper.make_node("Concat", heads, ["logits"], axis=2),
        helper.make_node("Add", ["logits", "bias"], ["shifted"]),
        helper.make_node("Sigmoid", ["shifted"], ["unit"]),
        helper.make_node("Mul", ["unit", "scale"], [OUTPUT_NAME]),
    ]
    scale = [input_size.width, input_size.height, 64.0, 64.0, 1.0]
    inits += [
        numpy_helper.from_array(np.array([1, 5, -1], np.int64), "flat"),
        numpy_helper.from_array(
            np.array([0, 0, 0, 0, score_bias], np.float32).reshape(1, 5, 1), "bias"
        ),
        numpy_helper.from_array(np.array(scale, np.float32).reshape(1, 5, 1), "scale"),
    ]
    anchors = sum((input_size.height // s) * (input_size.width // s) for s in (8, 16, 32))
    graph = helper.make_graph(
        nodes,
        "conv_proxy",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, [1, 3, input_size.height, input_size.width]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, 5, anchors])],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="onnx_factory"
    )
    model.ir_version = IR_VERSION
    for key, value in ultralytics_metadata(SCRATCH, input_size, name="conv-proxy").items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model


def fake_model_folder(folder: Path, precisions: Sequence[str] = ("fp32", "int8"), *,
                      version: str = "1.2.0") -> Path:
    """A models folder as scripts/build_component.py and deploy_fleet.py read it: one file per
    precision (not ONNX: those scripts only copy and hash them) and its manifest.json."""
    import hashlib
    import json

    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for precision in precisions:
        name = f"scratch-{precision}.onnx"
        data = f"fake onnx {precision}".encode()
        (folder / name).write_bytes(data)
        entries.append({"file": name, "name": "scratch-yolov8n", "version": version,
                        "precision": precision, "sha256": hashlib.sha256(data).hexdigest(),
                        "input_size": [640, 640], "classes": ["scratch"]})
    manifest = {"default": "scratch-fp32.onnx", "models": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return folder


def max_pixel_model(input_size: Size, *, name: str = "maxpixel", version: str = "1",
                    box: tuple[float, float, float, float] | None = None) -> onnx.ModelProto:
    """One box (cx, cy, w, h in input pixels; default: a quarter of the input at its centre)
    whose score is the input's brightest value (0..1): a grey image of level v scores exactly
    v / 255 (fill the whole input: letterbox padding is 114)."""
    h, w = input_size.height, input_size.width
    head = np.zeros((1, 5, 1), np.float32)
    head[0, :4, 0] = box if box is not None else (w / 2, h / 2, w / 4, h / 4)
    mask = np.zeros((1, 5, 1), np.float32)
    mask[0, 4, 0] = 1.0
    nodes = [
        helper.make_node("ReduceMax", [INPUT_NAME], ["image_max"], keepdims=0),
        helper.make_node("Mul", ["mask", "image_max"], ["score"]),
        helper.make_node("Add", ["head", "score"], [OUTPUT_NAME]),
    ]
    graph = helper.make_graph(
        nodes, "max_pixel",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, 5, 1])],
        initializer=[numpy_helper.from_array(head, "head"), numpy_helper.from_array(mask, "mask")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    for key, value in ultralytics_metadata(input_size=input_size, name=name,
                                           version=version).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return model
