"""An emulator of the Greengrass StreamManager server, for tests and laptops.

It speaks StreamManager's TCP protocol (a version byte, then ``[int32 length][u8 operation][CBOR]``
frames) so the unmodified ``stream_manager.StreamManagerClient`` talks to it, and it exports
S3 tasks into a local folder: a message appended to a stream with an ``s3_task_executor`` export
is an ``S3ExportTaskDefinition`` (JSON); a background thread copies ``input_url`` to
``<s3_dir>/<bucket>/<key>`` (user metadata to ``<s3_dir>/.metadata/<bucket>/<key>.json``) and
appends ``StatusMessage`` records (InProgress, then Success or Failure) to the status stream.

Requests are handled concurrently per connection and answered by ``requestId``: a long-poll read
does not hold up an append. Deleting a stream cancels its pending exports, as the real server
does (a Canceled status is appended), so a client that recreates its stream per upload loses
uploads here too.

Fault knobs: ``refuse_connections`` (accept, then hang up), ``stop()``/``start()`` (nothing
listening), ``restart()``, ``fail_uploads`` (a count, or a predicate on the task definition),
``slow_upload_s``.
"""

from __future__ import annotations

import json
import logging
import shutil
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import cbor2
from stream_manager import Util
from stream_manager.data import (
    AppendMessageRequest,
    AppendMessageResponse,
    ConnectRequest,
    ConnectResponse,
    CreateMessageStreamRequest,
    CreateMessageStreamResponse,
    DeleteMessageStreamRequest,
    DeleteMessageStreamResponse,
    DescribeMessageStreamRequest,
    DescribeMessageStreamResponse,
    EventType,
    ListStreamsRequest,
    ListStreamsResponse,
    Message,
    MessageStreamInfo,
    Operation,
    Persistence,
    ReadMessagesRequest,
    ReadMessagesResponse,
    ResponseStatusCode,
    S3ExportTaskDefinition,
    Status,
    StatusContext,
    StatusLevel,
    StatusMessage,
    UnknownOperationError,
    UpdateMessageStreamRequest,
    UpdateMessageStreamResponse,
    VersionInfo,
)

from inspector.testing.recording import Recording
from inspector.testing.sockets import Connection, SocketServer

logger = logging.getLogger(__name__)

CONNECT_VERSION = 1
SERVER_VERSION = "1.1.0-inspector-emulator"
MAX_FRAME_BYTES = 1 << 30
UploadPredicate = Callable[[S3ExportTaskDefinition], bool]


@dataclass(frozen=True)
class Upload:
    """One finished S3 export (Success or Failure)."""

    stream_name: str
    sequence_number: int
    bucket: str
    key: str
    input_url: str
    status: str  # "Success" | "Failure" | "Canceled"
    message: str = ""
    path: Path | None = None  # where the object landed, on Success
    user_metadata: dict[str, Any] = field(default_factory=dict)


class _RequestError(Exception):
    def __init__(self, status: ResponseStatusCode, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Stream:
    definition: Any  # MessageStreamDefinition
    generation: int  # changes when the stream is deleted/recreated: pending exports die with it
    messages: list[Any] = field(default_factory=list)  # stream_manager.data.Message
    next_sequence_number: int = 0
    total_bytes: int = 0
    exported: dict[str, int] = field(default_factory=dict)  # executor id -> last exported seq


@dataclass
class _ExportTask:
    stream_name: str
    generation: int
    sequence_number: int
    payload: bytes
    executor: Any  # S3ExportTaskExecutorConfig


class _Connection(Connection):
    def send_frame(self, operation: Operation, body: Any) -> None:
        payload = cbor2.dumps(body.as_dict())
        self.send_bytes(struct.pack(">iB", len(payload) + 1, operation.value) + payload)

    def recv_exact(self, count: int) -> bytes | None:
        chunks = bytearray()
        while len(chunks) < count:
            try:
                chunk = self.sock.recv(count - len(chunks))
            except OSError:
                return None
            if not chunk:
                return None
            chunks += chunk
        return bytes(chunks)


def _now_ms() -> int:
    return int(time.time() * 1000)


class StreamManagerEmulator(SocketServer[_Connection], Recording):
    """The StreamManager server, emulated. Thread-safe; a context manager.

    Args:
        s3_dir: the local folder that stands in for S3 (``<s3_dir>/<bucket>/<key>``).
        port: TCP port on ``host``; 0 picks a free one (see ``port`` after ``start()``).
        auth_token: the token clients must present (AWS_CONTAINER_AUTHORIZATION_TOKEN); None
            accepts any client.
    """

    def __init__(
        self,
        s3_dir: str | Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        auth_token: str | None = None,
    ) -> None:
        self.s3_dir = Path(s3_dir)
        self.host = host
        self.port = port
        self.auth_token = auth_token

        self.uploads: list[Upload] = []
        self.requests: list[tuple[str, Any]] = []  # (operation name, decoded request)

        # fault knobs: change them at any time
        self.refuse_connections = False
        self.fail_uploads: int | UploadPredicate = 0
        self.slow_upload_s = 0.0

        lock = threading.RLock()
        super().__init__(lock)
        self._changed = threading.Condition(lock)
        self._streams: dict[str, _Stream] = {}
        self._generation = 0
        self._closing = threading.Event()
        self._exports: list[_ExportTask] = []
        self._export_thread: threading.Thread | None = None
        self._exporting = False

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> StreamManagerEmulator:
        with self._lock:
            self.s3_dir.mkdir(parents=True, exist_ok=True)
            if not self.start_listening():
                return self
            self._closing.clear()
            if self._export_thread is None:
                self._export_thread = threading.Thread(
                    target=self._export_loop, name="streammanager-s3", daemon=True
                )
                self._export_thread.start()
        logger.info("StreamManager emulator listening on %s:%d", self.host, self.port)
        return self

    def stop(self) -> None:
        """Stop listening and drop every connection (the unavailable server)."""
        self.stop_listening()
        with self._lock:
            self._changed.notify_all()  # reads waiting for data see the server is down

    def close(self) -> None:
        """stop() and end the export thread."""
        self.stop()
        with self._lock:
            self._closing.set()
            thread, self._export_thread = self._export_thread, None
            self._changed.notify_all()
        if thread is not None:
            thread.join(timeout=5.0)

    def restart(self, down_s: float = 0.2) -> None:
        """Drop connections, stay down ``down_s`` seconds, listen again on the same port.

        Streams with ``Persistence.Memory`` are lost, as in the real server; file-persisted
        streams and their pending exports survive.
        """
        logger.info("StreamManager emulator restarting (down %.2f s)", down_s)
        self.stop()
        with self._lock:
            for name in [n for n, s in self._streams.items()
                         if s.definition.persistence == Persistence.Memory]:
                self._drop_stream(name)
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> StreamManagerEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def env(self) -> dict[str, str]:
        """The environment variables a component needs to reach this server."""
        env = {"STREAM_MANAGER_SERVER_PORT": str(self.port)}
        if self.auth_token is not None:
            env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = self.auth_token
        return env

    # ------------------------------------------------------------------ queries

    def stream_names(self) -> list[str]:
        with self._lock:
            return list(self._streams)

    def messages(self, stream_name: str) -> list[bytes]:
        """Payloads currently held in a stream."""
        with self._lock:
            stream = self._streams.get(stream_name)
            return [m.payload for m in stream.messages] if stream else []

    def pending_exports(self) -> int:
        with self._lock:
            return len(self._exports) + (1 if self._exporting else 0)


    def wait_for_uploads(self, count: int = 1, timeout_s: float = 5.0) -> list[Upload]:
        self.wait_until(lambda: len(self.uploads) >= count, timeout_s)
        with self._lock:
            if len(self.uploads) < count:
                raise TimeoutError(f"{len(self.uploads)} of {count} uploads finished")
            return list(self.uploads)

    # ------------------------------------------------------------ server loops

    thread_name = "streammanager"

    def _bind(self) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self.host, self.port))
        listener.listen(16)
        self.port = listener.getsockname()[1]  # keep it across restarts
        return listener

    def _admit(self, sock: socket.socket) -> bool:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return not self.refuse_connections

    def _new_connection(self, sock: socket.socket, number: int) -> _Connection:
        return _Connection(sock, number)

    def _serve(self, conn: _Connection) -> None:
        try:
            if self._handshake(conn):
                self._read_loop(conn)
        except Exception:  # a bug here must not kill the server silently
            logger.exception("StreamManager emulator: connection %d failed", conn.number)

    def _read_frame(self, conn: _Connection) -> tuple[int, bytes] | None:
        header = conn.recv_exact(4)
        if header is None:
            return None
        (length,) = struct.unpack(">i", header)
        if not 1 <= length <= MAX_FRAME_BYTES:
            logger.warning("StreamManager emulator: bad frame length %d", length)
            return None
        body = conn.recv_exact(length)
        if body is None:
            return None
        return body[0], body[1:]

    def _handshake(self, conn: _Connection) -> bool:
        version = conn.recv_exact(1)
        if version is None:
            return False
        if version[0] != CONNECT_VERSION:
            logger.warning("StreamManager emulator: connect version %d", version[0])
            conn.send_bytes(bytes([CONNECT_VERSION]))
            return False
        frame = self._read_frame(conn)
        if frame is None:
            return False
        operation, payload = frame
        request = ConnectRequest.from_dict(cbor2.loads(payload))
        response = ConnectResponse(
            request_id=request.request_id,
            protocol_version=VersionInfo.PROTOCOL_VERSION.value,
            supported_protocol_versions=[VersionInfo.PROTOCOL_VERSION.value, "1.0.0"],
            server_version=SERVER_VERSION,
            client_identifier=str(uuid.uuid4()),
        )
        ok = operation == Operation.Connect.value
        if not ok:
            response.status, response.error_message = \
                ResponseStatusCode.UnexpectedOperation, "expected Connect"
        elif self.auth_token is not None and request.auth_token != self.auth_token:
            ok = False
            response.status, response.error_message = \
                ResponseStatusCode.Unauthorized, "invalid auth token"
        else:
            response.status = ResponseStatusCode.Success
        conn.send_bytes(bytes([CONNECT_VERSION]))
        conn.send_frame(Operation.ConnectResponse, response)
        if not ok:
            logger.info("StreamManager emulator: connection %d refused: %s",
                        conn.number, response.error_message)
        return ok

    def _read_loop(self, conn: _Connection) -> None:
        while not conn.closed.is_set():
            frame = self._read_frame(conn)
            if frame is None:
                return
            operation, payload = frame
            try:
                body = cbor2.loads(payload)
            except (ValueError, cbor2.CBORDecodeError):
                logger.warning("StreamManager emulator: undecodable CBOR, closing")
                return
            if operation == Operation.ReadMessages.value:
                # a long poll: never hold up the next request on this connection
                threading.Thread(
                    target=self._handle, args=(conn, operation, body), daemon=True,
                    name="streammanager-read",
                ).start()
            else:
                self._handle(conn, operation, body)

    # -------------------------------------------------------------- operations

    def _handle(self, conn: _Connection, operation: int, body: Any) -> None:
        handlers: dict[int, tuple[Any, Any, Operation, Callable[[Any, Any], None]]] = {
            Operation.CreateMessageStream.value: (
                CreateMessageStreamRequest, CreateMessageStreamResponse,
                Operation.CreateMessageStreamResponse, self._create),
            Operation.DeleteMessageStream.value: (
                DeleteMessageStreamRequest, DeleteMessageStreamResponse,
                Operation.DeleteMessageStreamResponse, self._delete),
            Operation.AppendMessage.value: (
                AppendMessageRequest, AppendMessageResponse,
                Operation.AppendMessageResponse, self._append_request),
            Operation.ReadMessages.value: (
                ReadMessagesRequest, ReadMessagesResponse,
                Operation.ReadMessagesResponse, self._read),
            Operation.ListStreams.value: (
                ListStreamsRequest, ListStreamsResponse,
                Operation.ListStreamsResponse, self._list),
            Operation.DescribeMessageStream.value: (
                DescribeMessageStreamRequest, DescribeMessageStreamResponse,
                Operation.DescribeMessageStreamResponse, self._describe),
            Operation.UpdateMessageStream.value: (
                UpdateMessageStreamRequest, UpdateMessageStreamResponse,
                Operation.UpdateMessageStreamResponse, self._update),
        }
        request_id = body.get("requestId") if isinstance(body, dict) else None
        entry = handlers.get(operation)
        if entry is None:
            conn.send_frame(Operation.UnknownOperationError, UnknownOperationError(
                request_id=request_id, status=ResponseStatusCode.UnknownOperation,
                error_message=f"unknown operation {operation}",
            ))
            return
        request_type, response_type, response_operation, handler = entry
        response = response_type(request_id=request_id)
        try:
            request = request_type.from_dict(body)
            with self._changed:
                self.requests.append((response_operation.name.removesuffix("Response"), request))
                self._changed.notify_all()
            handler(request, response)
            response.status = ResponseStatusCode.Success
        except _RequestError as exc:
            response.status, response.error_message = exc.status, str(exc)
        except (TypeError, ValueError, KeyError, AttributeError) as exc:
            response.status, response.error_message = ResponseStatusCode.InvalidRequest, str(exc)
        conn.send_frame(response_operation, response)

    def _stream(self, name: Any) -> _Stream:
        stream = self._streams.get(name)
        if stream is None:
            raise _RequestError(ResponseStatusCode.ResourceNotFound, f"stream {name} not found")
        return stream

    @staticmethod
    def _check_definition(definition: Any) -> None:
        if definition is None or not definition.name:
            raise _RequestError(ResponseStatusCode.InvalidRequest, "definition.name is required")
        if definition.strategy_on_full is None:
            raise _RequestError(ResponseStatusCode.InvalidRequest, "strategy_on_full is required")

    def _create(self, request: Any, response: Any) -> None:
        definition = request.definition
        self._check_definition(definition)
        with self._changed:
            if definition.name in self._streams:
                raise _RequestError(
                    ResponseStatusCode.InvalidRequest, f"stream {definition.name} already exists"
                )
            self._generation += 1
            self._streams[definition.name] = _Stream(definition, self._generation)
            self._changed.notify_all()
        logger.info("StreamManager: created stream %s", definition.name)

    def _delete(self, request: Any, response: Any) -> None:
        with self._changed:
            self._stream(request.name)
            self._drop_stream(request.name)
            self._changed.notify_all()
        logger.info("StreamManager: deleted stream %s", request.name)

    def _drop_stream(self, name: str) -> None:
        """Remove a stream; its pending exports are cancelled (call with the lock held)."""
        self._streams.pop(name)
        cancelled = [t for t in self._exports if t.stream_name == name]
        self._exports = [t for t in self._exports if t.stream_name != name]
        for task in cancelled:
            self._finish(task, None, Status.Canceled, "stream deleted before the export ran")

    def _update(self, request: Any, response: Any) -> None:
        definition = request.definition
        self._check_definition(definition)
        with self._changed:
            self._stream(definition.name).definition = definition
            self._changed.notify_all()

    def _list(self, request: Any, response: Any) -> None:
        response.streams = self.stream_names()

    def _describe(self, request: Any, response: Any) -> None:
        with self._lock:
            stream = self._stream(request.name)
            newest = stream.next_sequence_number - 1 if stream.messages else None
            oldest = stream.messages[0].sequence_number if stream.messages else None
            exports = []
            definition = stream.definition
            executors = (definition.export_definition.s3_task_executor or []) \
                if definition.export_definition else []
            for executor in executors:
                exports.append(MessageStreamInfo.exportStatuses(
                    export_config_identifier=executor.identifier,
                    last_exported_sequence_number=stream.exported.get(executor.identifier, -1),
                ))
            response.message_stream_info = MessageStreamInfo(
                definition=definition,
                storage_status=MessageStreamInfo.storageStatus(
                    oldest_sequence_number=oldest, newest_sequence_number=newest,
                    total_bytes=stream.total_bytes,
                ),
                export_statuses=exports,
            )

    def _append_request(self, request: Any, response: Any) -> None:
        if request.payload is None:
            raise _RequestError(ResponseStatusCode.InvalidRequest, "payload is required")
        response.sequence_number = self._append(request.name, bytes(request.payload))

    def _append(self, name: str, payload: bytes) -> int:
        with self._changed:
            stream = self._stream(name)
            sequence_number = stream.next_sequence_number
            stream.next_sequence_number += 1
            stream.messages.append(Message(
                stream_name=name, sequence_number=sequence_number, ingest_time=_now_ms(),
                payload=payload,
            ))
            stream.total_bytes += len(payload)
            definition = stream.definition
            executors = (definition.export_definition.s3_task_executor or []) \
                if definition.export_definition else []
            for executor in executors:
                if not executor.disabled:
                    self._exports.append(_ExportTask(
                        name, stream.generation, sequence_number, payload, executor))
            self._changed.notify_all()
        return sequence_number

    def _read(self, request: Any, response: Any) -> None:
        options = request.read_messages_options
        start = (options.desired_start_sequence_number if options else None) or 0
        min_count = (options.min_message_count if options else None) or 1
        max_count = (options.max_message_count if options else None) or min_count
        timeout_ms = (options.read_timeout_millis if options else None) or 0
        deadline = time.monotonic() + timeout_ms / 1000.0

        def available() -> list[Any]:
            stream = self._stream(request.stream_name)
            return [m for m in stream.messages if m.sequence_number >= start]

        with self._changed:
            while True:
                messages = available()
                if len(messages) >= min_count:
                    response.messages = messages[:max_count]
                    return
                left = deadline - time.monotonic()
                if left <= 0 or not self._running.is_set():
                    raise _RequestError(
                        ResponseStatusCode.NotEnoughMessages,
                        f"{len(messages)} message(s) available, {min_count} requested",
                    )
                self._changed.wait(left)

    # ---------------------------------------------------------------- exports

    def _export_loop(self) -> None:
        while True:
            with self._changed:
                while not self._exports and not self._closing.is_set():
                    self._changed.wait()
                if self._closing.is_set():
                    return
                task = self._exports.pop(0)
                self._exporting = True
            try:
                self._export(task)
            except Exception:
                logger.exception("StreamManager emulator: export of %s #%d crashed",
                                 task.stream_name, task.sequence_number)
            finally:
                with self._changed:
                    self._exporting = False
                    self._changed.notify_all()

    def _export(self, task: _ExportTask) -> None:
        try:
            definition = Util.deserialize_json_bytes_to_obj(task.payload, S3ExportTaskDefinition)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self._finish(task, None, Status.Failure, f"invalid S3ExportTaskDefinition: {exc}")
            return
        self._status(task, definition, Status.InProgress, "upload started")
        deadline = time.monotonic() + self.slow_upload_s
        with self._changed:
            # a slow upload; deleting the stream or closing the emulator cuts it short
            while self._alive(task) and not self._closing.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            if self._closing.is_set():
                return
            if not self._alive(task):
                self._finish(task, definition, Status.Canceled, "stream deleted during upload")
                return
        if self._should_fail(definition):
            self._finish(task, definition, Status.Failure, "injected upload failure")
            return
        error = self._copy(definition)
        if error:
            self._finish(task, definition, Status.Failure, error)
        else:
            self._finish(task, definition, Status.Success, "upload succeeded")

    def _alive(self, task: _ExportTask) -> bool:
        stream = self._streams.get(task.stream_name)
        return stream is not None and stream.generation == task.generation

    def _should_fail(self, definition: Any) -> bool:
        with self._lock:
            knob = self.fail_uploads
            if callable(knob):
                return bool(knob(definition))
            if knob > 0:
                self.fail_uploads = knob - 1
                return True
        return False

    def _object_path(self, bucket: str, key: str) -> Path:
        return self.s3_dir / bucket / key

    def _copy(self, definition: Any) -> str | None:
        """Copy the input file to the local 'bucket'; an error message, or None."""
        url = urlparse(definition.input_url or "")
        if url.scheme != "file":
            return f"input_url must be a file:// URL, got {definition.input_url!r}"
        source = Path(unquote(url.path))
        if not source.is_absolute():
            return f"input_url must name an absolute path, got {definition.input_url!r}"
        bucket, key = definition.bucket or "", definition.key or ""
        if not bucket or not key or ".." in Path(key).parts or key.startswith("/") \
                or "/" in bucket or bucket.startswith("."):
            return f"invalid bucket/key {bucket!r}/{key!r}"
        target = self._object_path(bucket, key)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(target.name + ".partial")
            shutil.copyfile(source, tmp)
            tmp.replace(target)
            if definition.user_metadata:
                sidecar = self.s3_dir / ".metadata" / bucket / f"{key}.json"
                sidecar.parent.mkdir(parents=True, exist_ok=True)
                sidecar.write_text(json.dumps(definition.user_metadata, sort_keys=True))
        except OSError as exc:
            return f"cannot read {source}: {exc.strerror or exc}"
        return None

    def _finish(self, task: _ExportTask, definition: Any, status: Any, message: str) -> None:
        self._status(task, definition, status, message)
        upload = Upload(
            stream_name=task.stream_name, sequence_number=task.sequence_number,
            bucket=getattr(definition, "bucket", "") or "",
            key=getattr(definition, "key", "") or "",
            input_url=getattr(definition, "input_url", "") or "",
            status=status.name, message=message,
            path=self._object_path(definition.bucket, definition.key)
            if status == Status.Success else None,
            user_metadata=dict(getattr(definition, "user_metadata", None) or {}),
        )
        with self._changed:
            self.uploads.append(upload)
            stream = self._streams.get(task.stream_name)
            if status == Status.Success and stream is not None:
                stream.exported[task.executor.identifier] = task.sequence_number
            self._changed.notify_all()
        log = logger.info if status == Status.Success else logger.warning
        log("S3 upload %s #%d -> s3://%s/%s: %s (%s)", task.stream_name, task.sequence_number,
            upload.bucket, upload.key, status.name, message)

    def _status(self, task: _ExportTask, definition: Any, status: Any, message: str) -> None:
        config = task.executor.status_config
        if config is None or not config.status_stream_name:
            return
        level = config.status_level if config.status_level is not None else StatusLevel.INFO
        message_level = {
            Status.Failure: StatusLevel.ERROR, Status.Canceled: StatusLevel.ERROR,
            Status.Warning: StatusLevel.WARN,
        }.get(status, StatusLevel.INFO)
        if message_level.value > level.value:
            return
        status_message = StatusMessage(
            event_type=EventType.S3Task, status_level=message_level, status=status,
            status_context=StatusContext(
                s3_export_task_definition=definition, export_identifier=task.executor.identifier,
                stream_name=task.stream_name, sequence_number=task.sequence_number,
            ),
            message=message, timestamp_epoch_ms=_now_ms(),
        )
        try:
            self._append(config.status_stream_name, Util.validate_and_serialize_to_json_bytes(
                status_message))
        except _RequestError:
            logger.warning("StreamManager emulator: status stream %s does not exist",
                           config.status_stream_name)

