"""The ONNX Runtime wrapper, on real tiny models: shapes, metadata, providers, bad files."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from inspector.errors import ModelError, ModelNotFoundError, ProviderError
from inspector.runtime import OnnxRuntime, available_providers
from inspector.types import Size
from onnx_factory import constant_head_model, constant_output_model, head_tensor, write_model


def test_reads_names_shapes_and_metadata(tiny_model_path: Path):
    runtime = OnnxRuntime.from_path(tiny_model_path)
    assert runtime.input_name == "images"
    assert runtime.input_size == Size(640, 640)
    assert runtime.output_names == ("output0",)
    assert runtime.output_shape == (1, 5, 3)
    assert runtime.metadata["names"] == "{0: 'scratch'}"
    assert runtime.providers == ("CPUExecutionProvider",)
    assert len(runtime.sha256) == 64


def test_run_returns_the_known_output(tiny_model_path: Path):
    runtime = OnnxRuntime.from_path(tiny_model_path, intra_op_threads=1, inter_op_threads=1)
    raw = runtime.run(np.zeros((1, 3, 640, 640), np.float32))
    np.testing.assert_array_equal(raw[0, :, 0], np.float32([320, 240, 40, 20, 0.9]))


def test_non_square_fixed_input(tmp_path: Path):
    model = constant_head_model(head_tensor([(1, 2, 3, 4, 0.5)]), input_size=Size(384, 640))
    runtime = OnnxRuntime.from_path(write_model(tmp_path / "wide.onnx", model))
    assert runtime.input_size == Size(height=384, width=640)


def test_dynamic_input_uses_imgsz_metadata_else_the_default(tmp_path: Path):
    raw = head_tensor([(1, 2, 3, 4, 0.5)])
    model = constant_head_model(raw, input_size=None, dynamic_anchors=True)
    path = write_model(tmp_path / "dynamic.onnx", model)
    assert OnnxRuntime.from_path(path, default_input_size=Size(320, 480)).input_size == Size(
        320, 480
    )
    model.metadata_props.add(key="imgsz", value="[256, 416]")
    path = write_model(tmp_path / "dynamic_imgsz.onnx", model)
    assert OnnxRuntime.from_path(path).input_size == Size(256, 416)


def test_unavailable_provider_lists_the_available_ones(tiny_model_path: Path):
    with pytest.raises(ProviderError) as caught:
        OnnxRuntime.from_path(tiny_model_path, providers=["NoSuchExecutionProvider"])
    message = str(caught.value)
    assert "NoSuchExecutionProvider" in message
    assert str(tiny_model_path) in message
    for name in available_providers():
        assert name in message


def _bad_model(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.onnx"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a model\n")
    elif kind == "truncated":
        good = constant_head_model(head_tensor([(1, 2, 3, 4, 0.5)] * 50)).SerializeToString()
        path.write_bytes(good[: len(good) // 2])
    elif kind == "directory":
        path.mkdir()
    elif kind == "rank2":
        write_model(path, constant_output_model(np.zeros((1, 10), np.float32)))
    elif kind == "too_few_channels":
        write_model(path, constant_output_model(np.zeros((1, 3, 4), np.float32)))
    elif kind == "batch2":
        write_model(path, constant_output_model(np.zeros((2, 5, 100), np.float32)))
    elif kind == "not_an_image_input":
        model = constant_output_model(np.zeros((1, 5, 10), np.float32), input_size=None)
        model.graph.input[0].type.tensor_type.shape.dim[1].dim_value = 1
        write_model(path, model)
    return path


@pytest.mark.parametrize(
    ("kind", "error", "reason"),
    [
        ("empty", ModelError, "empty file"),
        ("text", ModelError, "not a valid ONNX model"),
        ("truncated", ModelError, "not a valid ONNX model"),
        ("directory", ModelError, "is a directory"),
        ("rank2", ModelError, r"shape \(1, 10\); not a YOLOv8 detection head"),
        ("too_few_channels", ModelError, r"shape \(1, 3, 4\); not a YOLOv8 detection head"),
        ("batch2", ModelError, "not a YOLOv8 detection head"),
        ("not_an_image_input", ModelError, r"expected an image batch \(1, 3, H, W\)"),
    ],
)
def test_bad_model_files_give_a_clear_error(tmp_path: Path, kind, error, reason):
    path = _bad_model(tmp_path, kind)
    with pytest.raises(error, match=reason) as caught:
        OnnxRuntime.from_path(path)
    assert str(path) in str(caught.value)
    assert caught.value.path == path


def test_missing_file(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="file not found"):
        OnnxRuntime.from_path(tmp_path / "nope.onnx")


def test_no_telemetry_is_written_under_home(tmp_path: Path, tiny_model_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env["HOME"] = str(home)
    script = textwrap.dedent(
        f"""
        from inspector.runtime import OnnxRuntime
        OnnxRuntime.from_path({str(tiny_model_path)!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=120)
    assert not (home / ".cache" / "Microsoft").exists()
    assert list(home.iterdir()) == []


def test_expected_sha256_is_checked_on_the_bytes_loaded(tiny_model_path):
    from inspector.errors import ModelIntegrityError
    from inspector.integrity import sha256_file

    actual = sha256_file(tiny_model_path)
    assert OnnxRuntime.from_path(tiny_model_path, expected_sha256=actual.upper()).sha256 == actual
    with pytest.raises(ModelIntegrityError) as info:
        OnnxRuntime.from_path(tiny_model_path, expected_sha256="0" * 64)
    assert actual in str(info.value) and "0" * 64 in str(info.value)
    assert tiny_model_path.name in str(info.value)
