"""The exception tree. Every error the package raises on purpose is an ``InspectorError``.

    InspectorError
    ├── ConfigError            settings invalid; ``errors`` lists (key path, message) pairs
    │   └── FolderBusyError       another inspector holds the watch folder's lock
    ├── ModelError             model file missing, unreadable, not ONNX, not a YOLOv8 head
    │   ├── ModelNotFoundError
    │   ├── ModelIntegrityError   sha256 differs from the one the model component declares
    │   └── ProviderError         an execution provider that this onnxruntime lacks
    ├── ImageError             one input image cannot be inspected; the service goes on
    │   ├── ImageDecodeError      empty, truncated, not an image, unsupported depth
    │   ├── ImageTooLargeError    over the configured pixel limit (read from the header)
    │   └── ImageUnavailableError vanished, unreadable (permissions), not a regular file
    ├── SinkError              a sink failed to deliver one result; other sinks go on
    │   └── SpoolFull             the MQTT spool is at its limit: the new message is refused
    └── GreengrassError        IPC or StreamManager failures, translated at the boundary
        ├── IpcError              an IPC call failed
        │   ├── IpcUnavailable       no connection to the nucleus: retry after a reconnect
        │   ├── IpcTimeout           no answer in time; the operation may have happened
        │   └── IpcRejected          refused (unauthorized, invalid, not found): retrying won't help
        └── UploadError           StreamManager is unreachable or refused a request

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


class FolderBusyError(ConfigError):
    """Another process holds the lock on the watch folder (``inspector.lock``)."""

    def __init__(self, folder: Path, pid: int | None) -> None:
        who = f"another inspector (pid {pid})" if pid else "another inspector"
        super().__init__(
            f"ImageDirectory {folder} is already being inspected by {who}; stop that one "
            "first, or give this one another folder",
            [("ImageDirectory", f"in use by {who}")],
        )
        self.folder = folder
        self.pid = pid


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


class SpoolFull(SinkError):
    """The spool holds ``max_items`` messages or ``max_bytes`` already: the new one is refused
    (not lost silently: the caller reports it)."""


class GreengrassError(InspectorError):
    pass


class IpcError(GreengrassError):
    """An IPC call failed."""


class IpcUnavailable(IpcError):
    """No connection to the nucleus (down, restarting, refused): retry after a reconnect."""


class IpcTimeout(IpcError):
    """No answer in time. The outcome is unknown: the operation may have happened."""


class IpcRejected(IpcError):
    """The nucleus refused the request (unauthorized, invalid, not found): retrying won't help."""


class UploadError(GreengrassError):
    """StreamManager is unreachable or refused a request."""
