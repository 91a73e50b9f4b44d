"""The model file is checked against the model component's sha256 before it is loaded."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import pytest

from inspector.errors import ConfigError, ModelError, ModelIntegrityError, ModelNotFoundError
from inspector.greengrass.config import proposal_problems
from inspector.integrity import (
    MODEL_DIR_ENV,
    MODEL_PATH_ENV,
    MODEL_SHA256_ENV,
    ModelRef,
    model_from_environment,
    sha256_file,
    verify_model,
)
from inspector.service import load_detector
from inspector.settings import Settings


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


# ------------------------------------------------------------ model.json (the model component)


def write_model_dir(directory: Path, files: dict[str, Path], *, version: str = "1.3.0") -> Path:
    """A model component version's artifacts folder: the .onnx files and model.json, as the
    build writes them (the contract's inspector.model-artifact/1)."""
    directory.mkdir(parents=True, exist_ok=True)
    entries = {}
    for precision, source in files.items():
        target = directory / source.name
        if target != source:
            target.write_bytes(source.read_bytes())
        data = target.read_bytes()
        entries[precision] = {"file": target.name, "sha256": hashlib.sha256(data).hexdigest(),
                              "bytes": len(data)}
    (directory / "model.json").write_text(json.dumps({
        "schema": "inspector.model-artifact/1", "component": "com.inspector.ScratchModel",
        "version": version, "name": "scratch-test", "files": entries}))
    return directory


def test_model_dir_names_the_file_of_the_precision(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    fp32 = _tiny_onnx(tmp_path / "src" / "m.onnx")
    int8 = tmp_path / "src" / "m-int8.onnx"
    int8.write_bytes(fp32.read_bytes())
    folder = write_model_dir(tmp_path / "artifacts", {"fp32": fp32, "int8": int8})
    ref = model_from_environment({MODEL_DIR_ENV: str(folder)}, "int8")
    assert ref is not None
    assert (ref.path, ref.version, ref.name, ref.precision, ref.component) == (
        folder / "m-int8.onnx", "1.3.0", "scratch-test", "int8", "com.inspector.ScratchModel")
    assert ref.sha256 == sha256_file(folder / "m-int8.onnx")
    # the directory wins over the older pair
    both = {MODEL_DIR_ENV: str(folder), MODEL_PATH_ENV: "/x.onnx", MODEL_SHA256_ENV: "ab" * 32}
    ref = model_from_environment(both)
    assert ref is not None and ref.path == folder / "m.onnx"


@pytest.mark.parametrize(("content", "reason"), [
    (None, "file not found"),
    ("{not json", "cannot read it as JSON"),
    ({"schema": "other"}, "schema"),
    ({"schema": "inspector.model-artifact/1", "version": "1", "files": {"fp32": {
        "file": "m.onnx", "sha256": "ab" * 32}}}, "no int8 model"),
    ({"schema": "inspector.model-artifact/1", "version": "1", "files": {"int8": {
        "file": "../m.onnx", "sha256": "ab" * 32}}}, "plain file name"),
    ({"schema": "inspector.model-artifact/1", "version": "1", "files": {"int8": {
        "file": "m.onnx", "sha256": "$(reboot)"}}}, "64 hex digits"),
])
def test_bad_model_json_is_refused_naming_it(
    tmp_path: Path, content: object, reason: str
) -> None:
    if content is not None:
        text = content if isinstance(content, str) else json.dumps(content)
        (tmp_path / "model.json").write_text(text)
    with pytest.raises(ModelError) as caught:
        model_from_environment({MODEL_DIR_ENV: str(tmp_path)}, "int8")
    assert reason in str(caught.value) and "model.json" in str(caught.value)


def test_unresolved_model_dir_is_refused() -> None:
    with pytest.raises(ModelIntegrityError, match="unresolved"):
        model_from_environment({MODEL_DIR_ENV: "{com.inspector.ScratchModel:artifacts:path}"})


def _settings(tmp_path: Path, **extra: object) -> Settings:
    (tmp_path / "in").mkdir(exist_ok=True)
    return Settings.from_mapping({"ImageDirectory": str(tmp_path / "in"), **extra})


def test_model_path_without_sha256_is_refused_unless_allowed(
    tmp_path: Path, tiny_model_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ConfigError, match="without ModelSha256") as refused:
        _settings(tmp_path, ModelPath=str(tiny_model_path))
    assert [key for key, _ in refused.value.errors] == ["ModelSha256"]
    problems = proposal_problems({"ImageDirectory": str(tmp_path),
                                  "ModelPath": str(tiny_model_path)})  # the validation hook
    assert [key for key, _ in problems] == ["ModelSha256"]
    # the loader refuses it too, whatever built the settings
    unchecked = Settings.model_construct(**{
        **_settings(tmp_path).model_dump(), "ModelPath": str(tiny_model_path)})
    with pytest.raises(ModelIntegrityError, match="without ModelSha256"):
        load_detector(unchecked, {})
    with caplog.at_level(logging.WARNING, logger="inspector.service"):
        detector = load_detector(
            _settings(tmp_path, ModelPath=str(tiny_model_path), AllowUnverifiedModel=True), {})
    assert detector.model.name == "tiny"
    assert any(r.levelno == logging.WARNING and "UNVERIFIED" in r.getMessage()
               for r in caplog.records)
    digest = sha256_file(tiny_model_path)
    verified = load_detector(
        _settings(tmp_path, ModelPath=str(tiny_model_path), ModelSha256=digest), {})
    assert verified.model.sha256 == digest


def test_deployed_model_results_name_the_component_version(
    tmp_path: Path, tiny_model_path: Path
) -> None:
    folder = write_model_dir(tmp_path / "v130", {"fp32": tiny_model_path}, version="1.3.0")
    detector = load_detector(_settings(tmp_path), {MODEL_DIR_ENV: str(folder)})
    assert (detector.model.name, detector.model.version) == ("scratch-test", "1.3.0")
    # a file that does not match model.json is refused with both digests
    (folder / "tiny.onnx").write_bytes(tiny_model_path.read_bytes() + b"\0")
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch"):
        load_detector(_settings(tmp_path), {MODEL_DIR_ENV: str(folder)})
    with pytest.raises(ModelError, match="no int8 model"):
        load_detector(_settings(tmp_path, ModelPrecision="int8"), {MODEL_DIR_ENV: str(folder)})


def test_bundled_model_path_is_verified_against_its_manifest(tmp_path: Path) -> None:
    from inspector.models import default_model_path, load_manifest

    try:
        bundled = default_model_path(precision="int8")
    except ModelError:
        pytest.skip("no bundled models in this checkout")
    entry = load_manifest(bundled.parent).entry(bundled.name)
    assert entry is not None
    detector = load_detector(_settings(tmp_path, ModelPath=str(bundled)), {})
    assert detector.model.sha256 == entry.sha256


def test_bundled_default_is_verified_against_its_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With neither ModelPath nor a model component, the service runs the bundled default of
    ModelPrecision: it is checked against the sha256 the models' manifest declares."""
    import shutil

    from inspector.models import MODELS_DIR_ENV, default_model_path, load_manifest

    try:
        bundled = default_model_path()
    except ModelError:
        pytest.skip("no bundled models in this checkout")
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy2(bundled.parent / "manifest.json", models / "manifest.json")
    shutil.copy2(bundled, models / bundled.name)
    monkeypatch.setenv(MODELS_DIR_ENV, str(models))
    entry = load_manifest(models).entry(bundled.name)
    assert entry is not None
    assert load_detector(_settings(tmp_path), {}).model.sha256 == entry.sha256
    data = bytearray((models / bundled.name).read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit in the weights: still a loadable model
    (models / bundled.name).write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch"):
        load_detector(_settings(tmp_path), {})
