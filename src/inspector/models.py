"""The bundled models and their manifest, ``models/manifest.json``.

Where the models are: ``$INSPECTOR_MODELS_DIR`` when set, else the models of an installed wheel
(``inspector/bundled/models/``: setup.py copies ``models/`` there at build time), else the
repository checkout's ``models/`` (an editable/dev install). Under Greengrass the model component
hands an explicit model path instead (``inspector.integrity``): this module is for standalone use.

The manifest::

    {"schema": "inspector.models/1", "default": "scratch-yolov8n.onnx",
     "models": [{"file": "scratch-yolov8n.onnx", "name": "scratch-yolov8n", "version": "1.0.0",
                 "precision": "fp32", "sha256": "...", "input_size": {"height": 640, "width": 640},
                 "classes": ["scratch"], "data": {...}, "training": {...}, "metrics": {...}}]}

Free-form objects (``data``, ``training``, ``metrics`` and any other key) are kept as they are.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inspector.errors import ModelError, ModelNotFoundError
from inspector.integrity import sha256_file
from inspector.types import Size

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA",
    "MODELS_DIR_ENV",
    "Manifest",
    "ManifestModel",
    "default_model",
    "default_model_path",
    "load_manifest",
    "resolve_models_dir",
    "sha256_file",
]

MODELS_DIR_ENV = "INSPECTOR_MODELS_DIR"
MANIFEST_NAME = "manifest.json"
MANIFEST_SCHEMA = "inspector.models/1"
Precision = Literal["fp32", "int8"]


class InputSize(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    height: int = Field(gt=0, description="model input height in pixels")
    width: int = Field(gt=0, description="model input width in pixels")

    def to_size(self) -> Size:
        return Size(height=self.height, width=self.width)


class ManifestModel(BaseModel):
    """One bundled model file. Unknown keys are kept (free-form provenance)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    file: str = Field(min_length=1, description="file name inside the models directory")
    name: str = Field(min_length=1)
    version: str = Field(min_length=1)
    precision: Precision = "fp32"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="of the file's bytes")
    input_size: InputSize
    classes: tuple[str, ...] = Field(min_length=1)
    data: dict[str, Any] = Field(default_factory=dict, description="what it was trained on")
    training: dict[str, Any] = Field(default_factory=dict, description="how it was trained")
    metrics: dict[str, Any] = Field(default_factory=dict, description="how well it does")


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    schema_: Literal["inspector.models/1"] = Field(alias="schema")
    default: str = Field(min_length=1, description="file of the default (fp32) model")
    models: tuple[ManifestModel, ...] = Field(min_length=1)
    directory: Path = Field(default=Path("."), exclude=True)

    def entry(self, file: str) -> ManifestModel | None:
        return next((m for m in self.models if m.file == file), None)

    def path_of(self, entry: ManifestModel) -> Path:
        return self.directory / entry.file


BUNDLED_DIR = Path(__file__).resolve().parent / "bundled" / "models"  # in a built wheel only


def resolve_models_dir(models_dir: Path | None = None) -> Path:
    """The models directory: the argument, else $INSPECTOR_MODELS_DIR, else the wheel's bundled
    models, else the checkout's ``models/``."""
    if models_dir is not None:
        return Path(models_dir)
    env = os.environ.get(MODELS_DIR_ENV, "").strip()
    if env:
        return Path(env)
    if (BUNDLED_DIR / MANIFEST_NAME).is_file():
        return BUNDLED_DIR
    return Path(__file__).resolve().parents[2] / "models"


def describe_default_model(models_dir: Path | None = None) -> str:
    """``name version precision`` of each bundled model, for ``--version``; never raises."""
    try:
        manifest = load_manifest(models_dir)
    except ModelError as exc:
        return f"no bundled model ({exc.reason})"
    parts = [f"{m.name} {m.version} {m.precision}" for m in manifest.models]
    return ", ".join(parts) + f" (from {manifest.directory})"


def load_manifest(models_dir: Path | None = None) -> Manifest:
    """Read and validate ``manifest.json`` of the models directory.

    Raises ModelNotFoundError when there is none (no bundled model yet), ModelError when it is
    not valid (the message lists every problem with its key path).
    """
    directory = resolve_models_dir(models_dir)
    path = directory / MANIFEST_NAME
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError as exc:
        raise ModelNotFoundError(
            path,
            "no bundled model yet (no manifest.json in the models directory); "
            "pass --model PATH to an .onnx file",
        ) from exc
    except OSError as exc:
        raise ModelError(path, f"cannot read the manifest: {exc.strerror or exc}") from exc
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(path, f"manifest is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ModelError(path, "manifest must be a JSON object")
    try:
        return Manifest.model_validate({**raw, "directory": directory})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ModelError(path, f"invalid manifest: {problems}") from exc


def default_model_path(models_dir: Path | None = None, precision: str = "fp32") -> Path:
    """The bundled default model file of ``precision`` ("fp32" or "int8").

    For fp32 that is the manifest's ``default``; for another precision, the model of that
    precision with the default's name (else the first of that precision). Raises
    ModelNotFoundError, saying what to do, when there is none or its file is missing.
    """
    return default_model(models_dir, precision)[0]


def default_model(models_dir: Path | None = None, precision: str = "fp32") -> tuple[Path, str]:
    """``default_model_path`` and the sha256 the manifest declares for that file (one read)."""
    manifest = load_manifest(models_dir)
    manifest_path = manifest.directory / MANIFEST_NAME
    default = manifest.entry(manifest.default)
    if default is None:
        raise ModelError(
            manifest_path, f"default {manifest.default!r} is not one of the listed models"
        )
    if default.precision == precision:
        chosen: ManifestModel | None = default
    else:
        same_precision = [m for m in manifest.models if m.precision == precision]
        chosen = next(
            (m for m in same_precision if m.name == default.name),
            same_precision[0] if same_precision else None,
        )
    if chosen is None:
        available = sorted({m.precision for m in manifest.models})
        raise ModelNotFoundError(
            manifest_path,
            f"no bundled {precision} model (bundled: {', '.join(available)}); "
            "pass --model PATH to an .onnx file",
        )
    path = manifest.path_of(chosen)
    if not path.is_file():
        raise ModelNotFoundError(
            path, f"listed in {manifest_path} but the file is missing; pass --model PATH"
        )
    return path, chosen.sha256


def manifest_sha256(path: Path) -> str:
    """The sha256 a ``manifest.json`` in the same folder (the bundled models') declares for the
    model file ``path``; "" when there is no such manifest or it does not list the file."""
    path = Path(path).expanduser()
    if not (path.parent / MANIFEST_NAME).is_file():
        return ""
    try:
        entry = load_manifest(path.parent).entry(path.name)
    except ModelError:
        return ""
    return entry.sha256 if entry is not None else ""
