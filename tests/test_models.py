"""The bundled-models manifest, on manifests written into tmp_path."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from inspector.errors import ModelError, ModelNotFoundError
from inspector.models import (
    MODELS_DIR_ENV,
    default_model_path,
    load_manifest,
    resolve_models_dir,
    sha256_file,
)
from inspector.types import Size


def entry(file: str, precision: str = "fp32", name: str = "scratch-yolov8n", **extra) -> dict:
    return {
        "file": file,
        "name": name,
        "version": "1.0.0",
        "precision": precision,
        "sha256": "c" * 64,
        "input_size": {"height": 640, "width": 640},
        "classes": ["scratch"],
        **extra,
    }


def write_manifest(directory: Path, manifest: dict, files: tuple[str, ...] = ()) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    for name in files:
        (directory / name).write_bytes(b"onnx bytes")
    return directory


FULL = {
    "schema": "inspector.models/1",
    "default": "scratch-yolov8n.onnx",
    "models": [
        entry("scratch-yolov8n.onnx", data={"train_images": 4000}, metrics={"map50": 0.8}),
        entry("scratch-yolov8n-int8.onnx", "int8"),
    ],
}


def test_load_manifest_keeps_free_form_objects(tmp_path: Path):
    manifest = load_manifest(write_manifest(tmp_path, FULL))
    first = manifest.models[0]
    assert first.input_size.to_size() == Size(640, 640)
    assert first.classes == ("scratch",)
    assert first.metrics == {"map50": 0.8}
    assert first.data == {"train_images": 4000}
    assert manifest.directory == tmp_path


@pytest.mark.parametrize(
    ("precision", "file"), [("fp32", "scratch-yolov8n.onnx"), ("int8", "scratch-yolov8n-int8.onnx")]
)
def test_default_model_path_by_precision(tmp_path: Path, precision: str, file: str):
    directory = write_manifest(
        tmp_path, FULL, files=("scratch-yolov8n.onnx", "scratch-yolov8n-int8.onnx")
    )
    assert default_model_path(directory, precision=precision) == directory / file


def test_no_manifest_means_no_bundled_model_yet(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match=r"no bundled model yet.*--model"):
        default_model_path(tmp_path)


def test_listed_file_missing(tmp_path: Path):
    with pytest.raises(ModelNotFoundError, match="file is missing"):
        default_model_path(write_manifest(tmp_path, FULL))


def test_no_model_of_that_precision(tmp_path: Path):
    manifest = {**FULL, "models": [FULL["models"][0]]}
    directory = write_manifest(tmp_path, manifest, files=("scratch-yolov8n.onnx",))
    with pytest.raises(ModelNotFoundError, match="no bundled int8 model"):
        default_model_path(directory, precision="int8")


@pytest.mark.parametrize(
    ("manifest", "reason"),
    [
        ({**FULL, "schema": "other/9"}, "schema"),
        ({**FULL, "models": []}, "models"),
        ({**FULL, "models": [{**entry("a.onnx"), "sha256": "xyz"}]}, r"models\.0\.sha256"),
        ({**FULL, "models": [{**entry("a.onnx"), "precision": "fp16"}]}, "precision"),
        ({**FULL, "default": "other.onnx"}, "not one of the listed models"),
    ],
)
def test_invalid_manifests_name_the_key(tmp_path: Path, manifest: dict, reason: str):
    directory = write_manifest(tmp_path, manifest)
    with pytest.raises(ModelError, match=reason) as caught:
        default_model_path(directory)
    assert "manifest.json" in str(caught.value)


def test_manifest_that_is_not_json(tmp_path: Path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_manifest(tmp_path)


def test_models_dir_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    assert resolve_models_dir() == tmp_path
    assert resolve_models_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv(MODELS_DIR_ENV)
    assert resolve_models_dir() == Path(__file__).resolve().parents[1] / "models"


def test_sha256_file(tmp_path: Path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"abc")
    assert sha256_file(path) == hashlib.sha256(b"abc").hexdigest()


def test_an_installed_wheel_reads_its_bundled_models(tmp_path: Path, monkeypatch):
    """setup.py copies models/ into inspector/bundled/models of the wheel; that is used when
    present and $INSPECTOR_MODELS_DIR is not set (scripts/check_wheel.sh checks a real wheel)."""
    import inspector.models as models_module

    bundled = tmp_path / "bundled" / "models"
    bundled.mkdir(parents=True)
    monkeypatch.setattr(models_module, "BUNDLED_DIR", bundled)
    monkeypatch.delenv(MODELS_DIR_ENV, raising=False)
    checkout = Path(__file__).resolve().parents[1] / "models"
    assert resolve_models_dir() == checkout  # no manifest there yet: the checkout's
    (bundled / "manifest.json").write_text("{}")
    assert resolve_models_dir() == bundled
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path / "elsewhere"))
    assert resolve_models_dir() == tmp_path / "elsewhere"


def test_version_names_the_package_and_the_bundled_models(capsys, monkeypatch, tmp_path: Path):
    from inspector import __version__
    from inspector.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    manifest = load_manifest()
    assert out.startswith(f"inspector {__version__}\n")
    for entry in manifest.models:
        assert f"{entry.name} {entry.version} {entry.precision}" in out
    monkeypatch.setenv(MODELS_DIR_ENV, str(tmp_path))
    with pytest.raises(SystemExit):
        main(["--version"])
    assert "no bundled model" in capsys.readouterr().out
