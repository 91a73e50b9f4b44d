"""The parts of the model scripts that need no torch: export_model.py's rewrite of the DFL decode
(same outputs, faster layout) and write_manifest.py's training summary.

The export itself needs torch and Ultralytics (``train`` extra, never in CI); the rewrite is plain
ONNX, so it is tested here on a graph built like Ultralytics' head tail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from tests.script_loader import load_script

export_model = load_script("scripts/export_model.py")
write_manifest = load_script("scripts/write_manifest.py")
quantize_model = load_script("scripts/quantize_model.py")

ANCHORS = 21


def dfl_graph(perm: tuple[int, ...] = (0, 2, 1, 3), axis: int = 1) -> onnx.ModelProto:
    """(1,64,A) box logits -> Reshape (1,4,16,A) -> Transpose -> Softmax -> 1x1 Conv -> (1,4,A)."""
    nodes = [
        helper.make_node("Reshape", ["x", "shape4"], ["r"], name="/model.22/dfl/Reshape"),
        helper.make_node(
            "Transpose", ["r"], ["t"], perm=list(perm), name="/model.22/dfl/Transpose"
        ),
        helper.make_node("Softmax", ["t"], ["s"], axis=axis, name="/model.22/dfl/Softmax"),
        helper.make_node("Conv", ["s", "w"], ["c"], name="/model.22/dfl/conv/Conv"),
        helper.make_node("Reshape", ["c", "shape3"], ["y"], name="/model.22/dfl/Reshape_1"),
    ]
    inits = [
        numpy_helper.from_array(np.array([1, 4, 16, ANCHORS], np.int64), "shape4"),
        numpy_helper.from_array(np.array([1, 4, ANCHORS], np.int64), "shape3"),
        numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(1, 16, 1, 1), "w"),
    ]
    graph = helper.make_graph(
        nodes,
        "dfl",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64, ANCHORS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, ANCHORS])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    # Exports carry inferred shapes of intermediate tensors; the rewrite must not leave stale ones.
    return onnx.shape_inference.infer_shapes(model)


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def test_rewrite_keeps_the_outputs_and_softmaxes_the_last_axis():
    original = dfl_graph()
    rewritten = dfl_graph()
    assert export_model.fast_dfl(rewritten) is True
    onnx.checker.check_model(rewritten, full_check=True)

    ops = {n.op_type: n for n in rewritten.graph.node}
    assert "Conv" not in ops and "MatMul" in ops
    assert helper.get_attribute_value(ops["Softmax"].attribute[0]) == -1
    assert list(helper.get_attribute_value(ops["Transpose"].attribute[0])) == [0, 1, 3, 2]
    assert ops["MatMul"].name.startswith("/model.22/dfl/")  # the INT8 script finds the tail by name
    assert "w" not in {t.name for t in rewritten.graph.initializer}

    x = np.random.default_rng(0).normal(0, 3, (1, 64, ANCHORS)).astype(np.float32)
    expected = run(original, x)
    np.testing.assert_allclose(run(rewritten, x), expected, rtol=1e-5, atol=1e-5)
    # and it is the DFL expectation: sum_k k * softmax(logits)_k for each of the 4 sides
    logits = x.reshape(4, 16, ANCHORS)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(expected[0], (p * np.arange(16)[:, None]).sum(axis=1), rtol=1e-5)


@pytest.mark.parametrize("perm, axis", [((0, 1, 2, 3), 1), ((0, 2, 1, 3), 2)])
def test_other_graphs_are_left_alone(perm, axis):
    model = dfl_graph(perm, axis)
    before = model.SerializeToString()
    assert export_model.fast_dfl(model) is False
    assert model.SerializeToString() == before


def test_training_summary_adds_up_the_stages(tmp_path: Path):
    run = tmp_path / "crops320"
    (run / "weights").mkdir(parents=True)
    (run / "results.csv").write_text("epoch,loss\n1,2.0\n2,1.5\n3,1.2\n")
    old_record = {"wall_s": 3600.0, "best": str(run / "weights" / "best.pt")}  # no epochs_run
    new_record = {"wall_s": 1800.0, "epochs_run": 5, "best": "/elsewhere/best.pt"}
    gpu_record = {
        "wall_s": 720.0,
        "epochs_run": 67,
        "best": "/out/best.pt",
        "args": {"device": "0"},
        "gpu": "NVIDIA H200",
    }
    summary = write_manifest.training_summary([old_record, new_record, gpu_record])
    assert summary == {
        "epochs": 75,
        "hours": 1.7,
        "hours_by_device": {"cpu": 1.5, "NVIDIA H200": 0.2},
        "stages": [old_record, new_record, gpu_record],
    }
    unknown = write_manifest.training_summary([{"wall_s": 60, "best": "/gone/weights/best.pt"}])
    assert unknown["epochs"] is None


def test_input_convs_names_only_the_convolutions_that_read_the_image():
    def conv(name: str, x: str, y: str) -> onnx.NodeProto:
        return helper.make_node("Conv", [x, f"{name}_w"], [y], name=name, pads=[1, 1, 1, 1])

    weights = [
        numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "first_w"),
        numpy_helper.from_array(np.ones((4, 4, 3, 3), np.float32), "second_w"),
    ]
    graph = helper.make_graph(
        [
            conv("first", "images", "a"),
            helper.make_node("Sigmoid", ["a"], ["b"], name="act"),
            conv("second", "b", "out"),
        ],
        "two_convs",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 4, 8, 8])],
        initializer=weights,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    assert quantize_model.input_convs(model) == ["first"]


def test_manifest_metrics_keep_the_domain_set_on_top_and_add_the_ood_set():
    row = {"model": "m.onnx", "map50": 0.93, "recall": 0.9}
    ood_row = {"model": "m.onnx", "map50": 0.56, "recall": 0.6}
    evaluation = {
        "set": "domain", "seed": 9_000_000, "count": 300, "conf_threshold": 0.25,
        "results": [row, {"model": "other.onnx", "map50": 0.1}],
        "sets": {
            "domain": {"seed": 9_000_000, "count": 300, "results": [row]},
            "ood": {"seed": 9_700_000, "count": 300, "results": [ood_row]},
        },
    }
    metrics = write_manifest.eval_row(evaluation, "m.onnx")
    assert metrics["map50"] == 0.93 and metrics["test_set"]["seed"] == 9_000_000
    assert metrics["ood"] == {
        "test_set": {"set": "ood", "seed": 9_700_000, "count": 300},
        "map50": 0.56,
        "recall": 0.6,
    }
    # an evaluation from before --set: one set, no "sets"
    old = {k: evaluation[k] for k in ("seed", "count", "conf_threshold", "results")}
    assert "ood" not in write_manifest.eval_row(old, "m.onnx")
    assert write_manifest.eval_row(old, "m.onnx")["map50"] == 0.93
    assert write_manifest.eval_row(evaluation, "missing.onnx") == {}


def test_weights_rebuilt_from_the_bundled_onnx_compute_the_same_outputs(tmp_path: Path):
    """Needs torch and Ultralytics (the ``train`` extra): skipped where they are absent (CI)."""
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    onnx_to_weights = load_script("scripts/onnx_to_weights.py")
    onnx_path = Path(__file__).resolve().parents[1] / "models" / "scratch-yolov8n.onnx"
    model, filled = onnx_to_weights.rebuild(onnx_path)
    assert filled == 126  # every convolution of YOLOv8n (one class) and its bias
    assert onnx_to_weights.check(model, onnx_path, seed=1) < onnx_to_weights.MAX_ABS_DIFF
    # and a model whose weights were not all found is refused, not half-filled
    broken = onnx.load(str(onnx_path))
    keep = [i for i in broken.graph.initializer if i.name != "model.9.cv2.conv.weight"]
    del broken.graph.initializer[:]
    broken.graph.initializer.extend(keep)
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    with pytest.raises(ValueError, match=r"model\.9\.cv2"):
        onnx_to_weights.rebuild(tmp_path / "broken.onnx")


def test_calibrated_batchnorms_keep_the_function_and_follow_training_statistics(tmp_path: Path):
    """Needs the ``train`` extra (skipped in CI). Calibration must leave the eval-mode function
    as the ONNX file computes it, and bring training mode (batch statistics) much closer to it."""
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    import cv2

    onnx_to_weights = load_script("scripts/onnx_to_weights.py")
    onnx_path = Path(__file__).resolve().parents[1] / "models" / "scratch-yolov8n.onnx"
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(3)
    for i in range(8):  # textured grey frames: real convolution statistics, any content
        image = (rng.random((480, 640, 3)) * 60 + 90 + 40 * (i % 3)).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i}.jpg"), image)
    model, _ = onnx_to_weights.rebuild(onnx_path)
    images = onnx_to_weights.calibration_images([folder], count=8)
    before = onnx_to_weights.train_mode_difference(model, images)
    assert onnx_to_weights.calibrate(model, images) == 57
    after = onnx_to_weights.train_mode_difference(model, images)
    assert onnx_to_weights.check(model, onnx_path, seed=1) < onnx_to_weights.MAX_ABS_DIFF
    assert after[0] < before[0] / 3  # mean score difference, training vs eval mode
