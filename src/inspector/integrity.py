"""Model file integrity: the sha256 the model component declares, checked before loading.

Greengrass checks an artifact's digest only while downloading it; nothing checks the file again
before a component runs. So the inference component hashes the model file itself and refuses a
mismatch before onnxruntime ever sees the bytes.

Under Greengrass the inference recipe's Run step hands the model over in two environment variables,
filled from the model component's configuration (a direct dependency, so its recipe variables
resolve in our lifecycle; M = com.inspector.ScratchModel):

- ``INSPECTOR_MODEL_PATH``   = ``{M:artifacts:path}/{M:configuration:/ModelFile}``
- ``INSPECTOR_MODEL_SHA256`` = ``{M:configuration:/ModelSha256}``
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from inspector.errors import ModelError, ModelIntegrityError, ModelNotFoundError

logger = logging.getLogger(__name__)

MODEL_PATH_ENV = "INSPECTOR_MODEL_PATH"
MODEL_SHA256_ENV = "INSPECTOR_MODEL_SHA256"

# Models are tens of MB: hash them in 1 MiB pieces, never read whole.
_CHUNK_BYTES = 1 << 20
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ModelRef:
    """A model file and the sha256 it must have."""

    path: Path
    sha256: str


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


def model_from_environment(environ: Mapping[str, str] | None = None) -> ModelRef | None:
    """The model the Greengrass lifecycle names in INSPECTOR_MODEL_PATH / INSPECTOR_MODEL_SHA256.

    None when neither is set (standalone mode: the settings name the model). Raises
    ModelIntegrityError when only one of the two is set, or when a recipe variable was left
    unresolved (the nucleus leaves ``{...}`` in place when the key does not exist).
    """
    env = os.environ if environ is None else environ
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
