#!/usr/bin/env python3
"""Export trained weights to the ONNX file the device runs (``train`` extra; never on a device).

Static 1x3xHxW input, simplified graph, and metadata: Ultralytics writes ``names``, ``stride``
and ``imgsz``; we add ``inspector_model_name`` and ``inspector_model_version`` so every result
can say which model made it.

One rewrite of the exported graph (:func:`fast_dfl`, same outputs): the head's distribution focal
loss decode is ``Transpose -> Softmax(axis=1) -> 1x1 Conv`` on (1, 16, 4, anchors). ONNX Runtime
runs a softmax over a non-last axis by transposing around it; measured here on 2 cores that block
alone took 16-20 ms against 1.5-6 ms for the equivalent ``Transpose -> Softmax(axis=-1) ->
MatMul`` on (1, 4, anchors, 16), i.e. 7-8 % of a whole fp32 session and more of an INT8 one.

    python scripts/export_model.py runs/scratch640/weights/best.pt models/scratch-yolov8n.onnx \
        --imgsz 640 --name scratch-yolov8n --version 1.0.0
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any


def fast_dfl(model: Any) -> bool:
    """Rewrite the DFL decode of an exported YOLOv8 graph in place; True if it was found.

    ``x (1,4,16,A) -> Transpose[0,2,1,3] -> Softmax(axis=1) -> Conv(w: 1x16x1x1) -> (1,1,4,A)``
    becomes ``x -> Transpose[0,1,3,2] -> Softmax(axis=-1) -> MatMul(w: 16x1) -> (1,4,A,1)``; the
    Reshape that follows in every Ultralytics export makes both (1,4,A). Node names are kept, so
    the INT8 script still recognises the decode tail it must leave in fp32.
    """
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[Any]] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    inits = {t.name: t for t in graph.initializer}

    def attr(node: Any, name: str) -> Any:
        return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), None)

    for softmax in graph.node:
        if softmax.op_type != "Softmax" or attr(softmax, "axis") != 1:
            continue
        transpose = producer.get(softmax.input[0])
        users = consumers.get(softmax.output[0], [])
        if transpose is None or transpose.op_type != "Transpose" or len(users) != 1:
            continue
        conv = users[0]
        if list(attr(transpose, "perm") or []) != [0, 2, 1, 3] or conv.op_type != "Conv":
            continue
        if len(conv.input) != 2 or conv.input[1] not in inits:
            continue
        weight = numpy_helper.to_array(inits[conv.input[1]])
        if weight.ndim != 4 or weight.shape[0] != 1 or weight.shape[2:] != (1, 1):
            continue
        if [n.op_type for n in consumers.get(conv.output[0], [])] != ["Reshape"]:
            continue

        for a in transpose.attribute:
            if a.name == "perm":
                a.CopyFrom(helper.make_attribute("perm", [0, 1, 3, 2]))
        for a in softmax.attribute:
            if a.name == "axis":
                a.CopyFrom(helper.make_attribute("axis", -1))
        matmul_weight = numpy_helper.from_array(
            np.ascontiguousarray(weight.reshape(weight.shape[1], 1)), conv.input[1] + "_matmul"
        )
        graph.initializer.append(matmul_weight)
        matmul = helper.make_node(
            "MatMul",
            [softmax.output[0], matmul_weight.name],
            list(conv.output),
            name=conv.name.rsplit("/", 2)[0] + "/MatMul" if "/" in conv.name else "dfl_matmul",
        )
        index = list(graph.node).index(conv)
        graph.node.remove(conv)
        graph.node.insert(index, matmul)
        if not any(conv.input[1] in n.input for n in graph.node):
            graph.initializer.remove(inits[conv.input[1]])
        # Shapes recorded for the three rewritten tensors are stale now: let them be inferred.
        stale = {transpose.output[0], softmax.output[0], conv.output[0]}
        for info in [v for v in graph.value_info if v.name in stale]:
            graph.value_info.remove(info)
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("weights", type=Path, help="Ultralytics .pt checkpoint (best.pt)")
    p.add_argument("output", type=Path, help="where to write the .onnx file")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--name", default="scratch-yolov8n")
    p.add_argument("--version", default="1.0.0")
    p.add_argument("--opset", type=int, default=17)
    args = p.parse_args(argv)

    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "False"
    os.environ.setdefault(
        "YOLO_CONFIG_DIR", str(Path(tempfile.gettempdir()) / "inspector-yolo-config")
    )
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

    import onnx
    from ultralytics import YOLO

    with tempfile.TemporaryDirectory() as tmp:
        # Ultralytics writes the .onnx beside the weights: work on a copy.
        weights = Path(tmp) / "model.pt"
        shutil.copy2(args.weights, weights)
        exported = YOLO(str(weights)).export(
            format="onnx",
            imgsz=args.imgsz,
            dynamic=False,
            simplify=True,
            opset=args.opset,
            half=False,
            nms=False,
            batch=1,
        )
        model = onnx.load(str(exported))

    if not fast_dfl(model):
        print("note: no DFL softmax block found; graph left as exported", file=sys.stderr)
    meta = {p.key: p.value for p in model.metadata_props}
    meta["inspector_model_name"] = args.name
    meta["inspector_model_version"] = args.version
    del model.metadata_props[:]
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=str(value))
    onnx.checker.check_model(model)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(args.output))
    print(f"wrote {args.output} ({args.output.stat().st_size / 1e6:.1f} MB); metadata: {meta}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
