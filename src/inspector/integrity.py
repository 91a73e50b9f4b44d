"""Model file integrity: the sha256 the model component declares, checked before loading.

Greengrass checks an artifact's digest only while downloading it; nothing checks the file again
before a component runs. So the inference component hashes the model file itself and refuses a
mismatch before onnxruntime ever sees the bytes.

Under Greengrass the model's identity travels with the model component VERSION, never with
configuration a core keeps from an older version (the nucleus keeps existing configuration values
across versions). Each com.inspector.ScratchModel version ships, beside its .onnx files, a
``model.json`` written by the build from the same bytes::

    {"schema": "inspector.model-artifact/1", "component": "com.inspector.ScratchModel",
     "version": "1.3.0", "name": "scratch-yolov8n",
     "files": {"fp32": {"file": "scratch-yolov8n.onnx", "sha256": "<hex>", "bytes": N},
               "int8": {"file": "scratch-yolov8n-int8.onnx", "sha256": "<hex>", "bytes": N}}}

and the inference recipe's Run step sets ``INSPECTOR_MODEL_DIR`` (Setenv, no configuration
value in a shell line) to ``{com.inspector.ScratchModel:artifacts:path}``.
``model_from_environment(environ, precision)`` reads it and returns the file of the configured
``ModelPrecision`` with its sha256 and the component version (results name that version).

The older pair ``INSPECTOR_MODEL_PATH`` / ``INSPECTOR_MODEL_SHA256`` is still understood when
``INSPECTOR_MODEL_DIR`` is not set.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from inspector.errors import ModelError, ModelIntegrityError, ModelNotFoundError

logger = logging.getLogger(__name__)

MODEL_DIR_ENV = "INSPECTOR_MODEL_DIR"
MODEL_PATH_ENV = "INSPECTOR_MODEL_PATH"
MODEL_SHA256_ENV = "INSPECTOR_MODEL_SHA256"
MODEL_ARTIFACT_FILE = "model.json"
MODEL_ARTIFACT_SCHEMA = "inspector.model-artifact/1"
PRECISIONS = ("fp32", "int8")

# Models are tens of MB: hash them in 1 MiB pieces, never read whole.
_CHUNK_BYTES = 1 << 20
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelRef:
    """A model file and the sha256 it must have; from a model.json also the model's name, the
    model component's name and version, and the precision picked."""

    path: Path
    sha256: str
    name: str = ""
    version: str = ""
    component: str = ""
    precision: str = ""


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file, read in chunks. Raises OSError as ``open`` does."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def normalize_sha256(value: str) -> str | None:
    """Lower-case hex digest, or None when ``value`` is not 64 hex digits."""
    candidate = value.strip().lower()
    return candidate if _SHA256_HEX.fullmatch(candidate) else None


def verify_model(path: Path, expected_sha256: str) -> str:
    """Check ``path`` against ``expected_sha256`` and return the digest.

    Raises ModelNotFoundError when the file is missing or not a regular file, ModelError when it
    cannot be read, and ModelIntegrityError when the expected digest is malformed or differs from
    the file's (the message names the file and both digests). To check the very bytes a session
    is made from, ``OnnxRuntime.from_path(expected_sha256=...)`` calls ``check_digest`` instead.
    """
    path = Path(path)
    _expected(path, expected_sha256)
    if not path.is_file():
        reason = "not a regular file" if path.exists() else "file not found"
        raise ModelNotFoundError(path, reason)
    try:
        actual = sha256_file(path)
    except OSError as exc:
        raise ModelError(path, f"cannot read it to check its sha256: {exc}") from exc
    check_digest(path, actual, expected_sha256)
    return actual


def check_digest(path: Path, actual: str, expected_sha256: str) -> None:
    """Refuse ``path`` (ModelIntegrityError naming both digests) unless ``actual`` is expected."""
    expected = _expected(path, expected_sha256)
    if actual != expected:
        raise ModelIntegrityError(
            path,
            f"sha256 mismatch: the file has {actual}, the model component declares {expected}; "
            "refusing to load it (redeploy the model component to restore the file)",
        )
    logger.info("model %s: sha256 %s verified", path, actual)


def _expected(path: Path, expected_sha256: str) -> str:
    expected = normalize_sha256(expected_sha256)
    if expected is None:
        raise ModelIntegrityError(
            path,
            f"expected sha256 {expected_sha256!r} is not 64 hex digits; "
            "check ModelSha256 in the model component's configuration",
        )
    return expected


def model_from_environment(
    environ: Mapping[str, str] | None = None, precision: str = "fp32",
) -> ModelRef | None:
    """The model the Greengrass lifecycle hands over: ``$INSPECTOR_MODEL_DIR/model.json`` (the
    file of ``precision``), else INSPECTOR_MODEL_PATH / INSPECTOR_MODEL_SHA256.

    None when none of them is set (standalone mode: the settings name the model). Raises
    ModelIntegrityError (naming the file and the reason) when model.json is missing, malformed or
    lacks ``precision``, when only one of the older pair is set, or when a recipe variable was
    left unresolved (the nucleus leaves ``{...}`` in place when it cannot resolve it).
    """
    env = os.environ if environ is None else environ
    raw_dir = env.get(MODEL_DIR_ENV, "").strip()
    if raw_dir:
        if "{" in raw_dir:
            raise ModelIntegrityError(
                raw_dir,
                f"unresolved recipe variable in {MODEL_DIR_ENV}={raw_dir!r}; is "
                "com.inspector.ScratchModel a direct dependency of this component?",
            )
        return read_model_artifact(Path(raw_dir), precision)
    raw_path = env.get(MODEL_PATH_ENV, "").strip()
    raw_sha = env.get(MODEL_SHA256_ENV, "").strip()
    if not raw_path and not raw_sha:
        return None
    shown_path = raw_path or f"<{MODEL_PATH_ENV} unset>"
    if not raw_path or not raw_sha:
        missing = MODEL_PATH_ENV if not raw_path else MODEL_SHA256_ENV
        raise ModelIntegrityError(shown_path, f"{missing} is not set; both or neither are needed")
    if "{" in raw_path or "{" in raw_sha:
        raise ModelIntegrityError(
            shown_path,
            f"unresolved recipe variable in {MODEL_PATH_ENV}={raw_path!r} or "
            f"{MODEL_SHA256_ENV}={raw_sha!r}; is the model component a direct dependency "
            "with ModelFile and ModelSha256 in its configuration?",
        )
    return ModelRef(path=Path(raw_path), sha256=raw_sha)


def read_model_artifact(directory: Path, precision: str = "fp32") -> ModelRef:
    """The ``precision`` file named by ``directory/model.json`` (see the module docstring).

    Raises ModelIntegrityError naming model.json and what is wrong with it. The .onnx file itself
    is not read here: its sha256 is checked on the very bytes the session is made from.
    """
    manifest = Path(directory) / MODEL_ARTIFACT_FILE
    try:
        data = json.loads(manifest.read_text("utf-8"))
    except FileNotFoundError:
        raise ModelNotFoundError(
            manifest, "file not found; the model component version must ship model.json "
            "(built by scripts/build_component.py model)") from None
    except (OSError, ValueError) as exc:
        raise ModelIntegrityError(manifest, f"cannot read it as JSON: {exc}") from exc

    def bad(reason: str) -> ModelIntegrityError:
        return ModelIntegrityError(manifest, reason)

    if not isinstance(data, dict) or data.get("schema") != MODEL_ARTIFACT_SCHEMA:
        raise bad(f"schema is not {MODEL_ARTIFACT_SCHEMA!r}")
    files = data.get("files")
    if precision not in PRECISIONS:
        raise bad(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if not isinstance(files, dict) or not isinstance(files.get(precision), dict):
        shipped = ", ".join(sorted(files)) if isinstance(files, dict) else "none"
        raise bad(f"no {precision} model in this version (it ships: {shipped}); "
                  "set ModelPrecision to one it ships")
    entry = files[precision]
    name = entry.get("file")
    if not isinstance(name, str) or not name or "/" in name or name in (".", ".."):
        raise bad(f"files.{precision}.file {name!r} is not a plain file name")
    sha = normalize_sha256(str(entry.get("sha256", "")))
    if sha is None:
        raise bad(f"files.{precision}.sha256 {entry.get('sha256')!r} is not 64 hex digits")
    version = data.get("version")
    if not isinstance(version, str) or not version:
        raise bad("version is missing")
    return ModelRef(
        path=Path(directory) / name, sha256=sha, name=str(data.get("name") or ""),
        version=version, component=str(data.get("component") or ""), precision=precision,
    )
