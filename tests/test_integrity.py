"""The model file is checked against the model component's sha256 before it is loaded."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from inspector.errors import ModelError, ModelIntegrityError, ModelNotFoundError
from inspector.integrity import (
    MODEL_PATH_ENV,
    MODEL_SHA256_ENV,
    ModelRef,
    model_from_environment,
    sha256_file,
    verify_model,
)


def _tiny_onnx(path: Path) -> Path:
    """A real (if trivial) ONNX model: y = identity(x), float32 (1, 3, 4, 4)."""
    onnx = pytest.importorskip("onnx")
    helper = onnx.helper
    tensor = onnx.TensorProto.FLOAT
    graph = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["output0"])],
        "tiny",
        [helper.make_tensor_value_info("images", tensor, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("output0", tensor, [1, 3, 4, 4])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    return _tiny_onnx(tmp_path / "scratch-fp32.onnx")


def test_good_model_passes_and_returns_its_digest(model_file: Path) -> None:
    expected = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert verify_model(model_file, expected) == expected
    # Upper case and stray whitespace in the configuration are tolerated.
    assert verify_model(model_file, f"  {expected.upper()}\n") == expected


def test_tampered_model_is_refused_naming_file_and_both_digests(model_file: Path) -> None:
    expected = hashlib.sha256(model_file.read_bytes()).hexdigest()
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the weights/graph
    model_file.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()

    with pytest.raises(ModelIntegrityError) as caught:
        verify_model(model_file, expected)

    message = str(caught.value)
    assert str(model_file) in message
    assert expected in message
    assert actual in message
    assert caught.value.path == model_file


def test_missing_model_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="file not found"):
        verify_model(tmp_path / "absent.onnx", "0" * 64)


def test_directory_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not a regular file"):
        verify_model(tmp_path, "0" * 64)


@pytest.mark.parametrize("bad", ["", "abc", "g" * 64, "0" * 63, "{configuration:/ModelSha256}"])
def test_malformed_expected_digest_is_refused(model_file: Path, bad: str) -> None:
    with pytest.raises(ModelIntegrityError, match="not 64 hex digits"):
        verify_model(model_file, bad)


def test_unreadable_model_is_a_model_error(
    model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(ModelError, match="cannot read") as caught:
        verify_model(model_file, "0" * 64)
    assert not isinstance(caught.value, ModelIntegrityError | ModelNotFoundError)


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    payload = bytes(range(256)) * (3 * 4096 + 7)  # a few MiB, not a multiple of the chunk
    big.write_bytes(payload)
    assert sha256_file(big) == hashlib.sha256(payload).hexdigest()


def test_environment_names_the_model() -> None:
    env = {MODEL_PATH_ENV: "/gg/artifacts/m/1.0.0/scratch.onnx", MODEL_SHA256_ENV: "ab" * 32}
    assert model_from_environment(env) == ModelRef(
        Path("/gg/artifacts/m/1.0.0/scratch.onnx"), "ab" * 32
    )
    assert model_from_environment({}) is None


@pytest.mark.parametrize(
    "env",
    [
        {MODEL_PATH_ENV: "/m.onnx"},
        {MODEL_SHA256_ENV: "ab" * 32},
        {MODEL_PATH_ENV: "/x/{configuration:/ModelFile}", MODEL_SHA256_ENV: "ab" * 32},
    ],
)
def test_environment_half_set_or_unresolved_is_refused(env: dict[str, str]) -> None:
    with pytest.raises(ModelIntegrityError):
        model_from_environment(env)


def test_service_refuses_a_tampered_greengrass_model_before_loading(tmp_path: Path) -> None:
    """As under Greengrass: the Run step's environment names the model and its digest; the
    service exits non-zero (the nucleus marks the component ERRORED) with both digests logged."""
    import os
    import subprocess
    import sys

    model = _tiny_onnx(tmp_path / "scratch-fp32.onnx")
    declared = hashlib.sha256(model.read_bytes()).hexdigest()
    data = bytearray(model.read_bytes())
    data[-1] ^= 0x01
    model.write_bytes(bytes(data))
    actual = hashlib.sha256(bytes(data)).hexdigest()
    (tmp_path / "in").mkdir()

    env = {**os.environ, MODEL_PATH_ENV: str(model), MODEL_SHA256_ENV: declared}
    result = subprocess.run(
        [sys.executable, "-u", "-m", "inspector", "run", "--watch", str(tmp_path / "in"),
         "--once"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert str(model) in output and declared in output and actual in output, output
