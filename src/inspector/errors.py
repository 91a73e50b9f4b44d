"""The exception tree. Every error the package raises on purpose is an ``InspectorError``.

    InspectorError
    ├── ConfigError            settings invalid; ``errors`` lists (key path, message) pairs
    ├── ModelError             model file missing, unreadable, not ONNX, not a YOLOv8 head
    │   ├── ModelNotFoundError
    │   ├── ModelIntegrityError   sha256 differs from the one the model component declares
    │   └── ProviderError         an execution provider that this onnxruntime lacks
    ├── ImageError             one input image cannot be inspected; the service goes on
    │   ├── ImageDecodeError      empty, truncated, not an image, unsupported depth
    │   ├── ImageTooLargeError    over the configured pixel limit (read from the header)
    │   └── ImageUnavailableError vanished, unreadable (permissions), not a regular file
    ├── SinkError              a sink failed to deliver one result; other sinks go on
    └── GreengrassError        IPC or StreamManager failures, translated at the boundary

Lower-layer exceptions (onnxruntime, cv2, awsiot, stream_manager) are translated at the
boundary with ``raise ... from exc`` so callers only ever catch these.
"""

from __future__ import annotations

from pathlib import Path


class InspectorError(Exception):
    """Base of every error inspector raises on purpose."""


class ConfigError(InspectorError):
    """Settings are invalid. ``errors`` holds (key path, message) pairs, one per problem."""

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors: list[tuple[str, str]] = errors or []


class ModelError(InspectorError):
    """A model file cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"model {path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class ModelNotFoundError(ModelError):
    pass


class ModelIntegrityError(ModelError):
    pass


class ProviderError(ModelError):
    pass


class ImageError(InspectorError):
    """One image cannot be inspected; the message names the file and the reason."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class ImageDecodeError(ImageError):
    pass


class ImageTooLargeError(ImageError):
    pass


class ImageUnavailableError(ImageError):
    pass


class SinkError(InspectorError):
    pass


class GreengrassError(InspectorError):
    pass
