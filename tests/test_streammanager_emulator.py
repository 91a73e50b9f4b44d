"""The StreamManager emulator, driven by the unmodified stream_manager client."""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from stream_manager import (
    ConnectFailedException,
    ExportDefinition,
    InvalidRequestException,
    MessageStreamDefinition,
    NotEnoughMessagesException,
    Persistence,
    ReadMessagesOptions,
    ResourceNotFoundException,
    S3ExportTaskDefinition,
    S3ExportTaskExecutorConfig,
    Status,
    StatusConfig,
    StatusLevel,
    StatusMessage,
    StrategyOnFull,
    StreamManagerClient,
    Util,
)

from inspector.testing.streammanager import StreamManagerEmulator

TOKEN = "test-token"
UPLOADS, STATUS = "InspectorUploads", "InspectorUploadStatus"


@pytest.fixture
def sm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[StreamManagerEmulator]:
    with StreamManagerEmulator(tmp_path / "s3", auth_token=TOKEN) as emulator:
        for key, value in emulator.env.items():
            monkeypatch.setenv(key, value)
        yield emulator


@pytest.fixture
def client(sm: StreamManagerEmulator) -> Iterator[StreamManagerClient]:
    with StreamManagerClient(port=sm.port, request_timeout=10) as c:
        yield c


def create_streams(client: StreamManagerClient, level: StatusLevel = StatusLevel.INFO) -> None:
    client.create_message_stream(MessageStreamDefinition(
        name=STATUS, strategy_on_full=StrategyOnFull.OverwriteOldestData))
    client.create_message_stream(MessageStreamDefinition(
        name=UPLOADS, strategy_on_full=StrategyOnFull.OverwriteOldestData,
        export_definition=ExportDefinition(s3_task_executor=[S3ExportTaskExecutorConfig(
            identifier="S3Export", status_config=StatusConfig(
                status_level=level, status_stream_name=STATUS))])))


def append_task(client: StreamManagerClient, source: Path, key: str, **metadata: str) -> int:
    task = S3ExportTaskDefinition(
        input_url=source.as_uri(), bucket="inspector-defects", key=key, user_metadata=metadata)
    return int(client.append_message(UPLOADS, Util.validate_and_serialize_to_json_bytes(task)))


def read_statuses(client: StreamManagerClient, count: int, start: int = 0) -> list[StatusMessage]:
    messages = client.read_messages(STATUS, ReadMessagesOptions(
        desired_start_sequence_number=start, min_message_count=count, max_message_count=count,
        read_timeout_millis=5000))
    return [Util.deserialize_json_bytes_to_obj(m.payload, StatusMessage) for m in messages]


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "defect 1.jpg"  # a space: the URL must be percent-decoded
    path.write_bytes(b"\xff\xd8 not really a jpeg \xff\xd9")
    return path


def test_s3_export_success(
    sm: StreamManagerEmulator, client: StreamManagerClient, image: Path
) -> None:
    create_streams(client)
    sequence_number = append_task(client, image, "line1/defect-1.jpg", verdict="scratch")
    in_progress, success = read_statuses(client, 2)
    assert (in_progress.status, success.status) == (Status.InProgress, Status.Success)
    context = success.status_context
    assert context.sequence_number == sequence_number
    assert context.stream_name == UPLOADS
    assert context.export_identifier == "S3Export"
    assert context.s3_export_task_definition.key == "line1/defect-1.jpg"
    landed = sm.s3_dir / "inspector-defects" / "line1" / "defect-1.jpg"
    assert landed.read_bytes() == image.read_bytes()
    sidecar = sm.s3_dir / ".metadata" / "inspector-defects" / "line1" / "defect-1.jpg.json"
    assert json.loads(sidecar.read_text()) == {"verdict": "scratch"}
    (upload,) = sm.uploads
    assert (upload.status, upload.path) == ("Success", landed)


def test_status_level_error_reports_failures_only(
    sm: StreamManagerEmulator, client: StreamManagerClient, image: Path
) -> None:
    create_streams(client, StatusLevel.ERROR)
    sm.fail_uploads = 1
    append_task(client, image, "a.jpg")
    append_task(client, image, "b.jpg")
    sm.wait_for_uploads(2)
    (failure,) = read_statuses(client, 1)
    assert failure.status == Status.Failure
    assert failure.status_context.s3_export_task_definition.key == "a.jpg"
    assert [u.status for u in sm.uploads] == ["Failure", "Success"]


def test_failure_injection_by_predicate_and_missing_file(
    sm: StreamManagerEmulator, client: StreamManagerClient, image: Path, tmp_path: Path
) -> None:
    create_streams(client)
    sm.fail_uploads = lambda task: task.key.endswith("bad.jpg")
    append_task(client, image, "bad.jpg")
    append_task(client, tmp_path / "gone.jpg", "gone.jpg")
    append_task(client, image, "good.jpg")
    statuses = [s for s in read_statuses(client, 6) if s.status != Status.InProgress]
    assert [s.status for s in statuses] == [Status.Failure, Status.Failure, Status.Success]
    assert "gone.jpg" in statuses[1].message
    assert not (sm.s3_dir / "inspector-defects" / "bad.jpg").exists()


def test_long_poll_read_does_not_block_append_on_one_client(
    client: StreamManagerClient,
) -> None:
    client.create_message_stream(MessageStreamDefinition(
        name="data", strategy_on_full=StrategyOnFull.RejectNewData, persistence=Persistence.Memory))
    result: list[list[bytes]] = []
    reader = threading.Thread(target=lambda: result.append([m.payload for m in client.read_messages(
        "data", ReadMessagesOptions(min_message_count=2, max_message_count=5,
                                    read_timeout_millis=5000))]))
    reader.start()
    assert client.append_message("data", b"one") == 0
    assert client.append_message("data", b"two") == 1
    reader.join(5)
    assert result == [[b"one", b"two"]]


def test_read_timeout_is_not_enough_messages(client: StreamManagerClient) -> None:
    client.create_message_stream(MessageStreamDefinition(
        name="data", strategy_on_full=StrategyOnFull.RejectNewData))
    with pytest.raises(NotEnoughMessagesException):
        client.read_messages("data", ReadMessagesOptions(read_timeout_millis=100))


def test_stream_management(client: StreamManagerClient) -> None:
    definition = MessageStreamDefinition(name="s", strategy_on_full=StrategyOnFull.RejectNewData)
    client.create_message_stream(definition)
    with pytest.raises(InvalidRequestException):
        client.create_message_stream(definition)
    client.append_message("s", b"abc")
    info = client.describe_message_stream("s")
    assert info.definition.name == "s"
    assert (info.storage_status.newest_sequence_number, info.storage_status.total_bytes) == (0, 3)
    client.update_message_stream(MessageStreamDefinition(
        name="s", strategy_on_full=StrategyOnFull.OverwriteOldestData))
    assert client.describe_message_stream("s").definition.strategy_on_full == \
        StrategyOnFull.OverwriteOldestData
    assert client.list_streams() == ["s"]
    client.delete_message_stream("s")
    assert client.list_streams() == []
    for call in (lambda: client.delete_message_stream("s"),
                 lambda: client.append_message("s", b"x"),
                 lambda: client.describe_message_stream("s"),
                 lambda: client.read_messages("s")):
        with pytest.raises(ResourceNotFoundException):
            call()


def test_recreating_the_stream_cancels_pending_exports(
    sm: StreamManagerEmulator, client: StreamManagerClient, image: Path
) -> None:
    create_streams(client)
    sm.slow_upload_s = 60.0  # cut short by the delete
    append_task(client, image, "first.jpg")
    append_task(client, image, "second.jpg")
    assert sm.wait_until(lambda: sm.pending_exports() == 2)
    # the anti-pattern: delete + create per upload
    client.delete_message_stream(UPLOADS)
    client.delete_message_stream(STATUS)
    create_streams(client)
    sm.wait_until(lambda: sm.pending_exports() == 0)
    assert sorted(u.status for u in sm.uploads) == ["Canceled", "Canceled"]
    assert not (sm.s3_dir / "inspector-defects").exists()


def test_bad_token_is_refused(sm: StreamManagerEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_CONTAINER_AUTHORIZATION_TOKEN", "wrong")
    with pytest.raises(ConnectFailedException):
        StreamManagerClient(port=sm.port)


def test_unavailable_then_restart(
    sm: StreamManagerEmulator, image: Path
) -> None:
    sm.stop()
    with pytest.raises(ConnectionError):
        StreamManagerClient(port=sm.port, connect_timeout=2)
    sm.start()
    sm.refuse_connections = True
    # hung up during the handshake: a reset, or asyncio.IncompleteReadError (an EOFError)
    with pytest.raises((ConnectionError, EOFError)):
        StreamManagerClient(port=sm.port, connect_timeout=2, request_timeout=2)
    sm.refuse_connections = False
    with StreamManagerClient(port=sm.port) as client:
        create_streams(client)
    sm.restart(down_s=0.1)
    # file-persisted streams survive a restart; a new client works
    with StreamManagerClient(port=sm.port) as client:
        assert sorted(client.list_streams()) == sorted([UPLOADS, STATUS])
        append_task(client, image, "after-restart.jpg")
        assert read_statuses(client, 2)[-1].status == Status.Success


def test_memory_streams_are_lost_on_restart(sm: StreamManagerEmulator) -> None:
    with StreamManagerClient(port=sm.port) as client:
        client.create_message_stream(MessageStreamDefinition(
            name="volatile", strategy_on_full=StrategyOnFull.RejectNewData,
            persistence=Persistence.Memory))
    sm.restart(down_s=0.0)
    assert sm.stream_names() == []


def _frame(operation: int, body: dict[str, object]) -> bytes:
    payload = cbor2.dumps(body)
    return struct.pack(">iB", len(payload) + 1, operation) + payload


def _read_frame(sock: socket.socket) -> tuple[int, dict[str, object]]:
    (length,) = struct.unpack(">i", sock.recv(4, socket.MSG_WAITALL))
    body = sock.recv(length, socket.MSG_WAITALL)
    return body[0], cbor2.loads(body[1:])


def test_raw_protocol_unknown_operation(sm: StreamManagerEmulator) -> None:
    with socket.create_connection(("127.0.0.1", sm.port), timeout=5) as sock:
        sock.sendall(b"\x01" + _frame(1, {"requestId": "c1", "protocolVersion": "1.1.0",
                                            "authToken": TOKEN}))
        assert sock.recv(1, socket.MSG_WAITALL) == b"\x01"
        operation, body = _read_frame(sock)
        assert (operation, body["requestId"], body["status"]) == (6, "c1", 0)
        sock.sendall(_frame(99, {"requestId": "r1"}))
        operation, body = _read_frame(sock)
        assert (operation, body["requestId"], body["status"]) == (17, "r1", 18)


def test_append_fails_while_down_and_the_same_client_recovers(
    sm: StreamManagerEmulator, client: StreamManagerClient
) -> None:
    client.create_message_stream(MessageStreamDefinition(
        name="data", strategy_on_full=StrategyOnFull.RejectNewData))
    sm.stop()
    # the client notices the hang-up in its read loop (a request racing it would time out)
    deadline = time.monotonic() + 5
    while client.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(ConnectionError):
        client.append_message("data", b"lost")
    sm.start()
    # the client reconnects by itself on its next request
    assert client.append_message("data", b"kept") == 0
    assert sm.messages("data") == [b"kept"]
