"""The IPC client wrapper against the nucleus emulator with the real awsiotsdk V2 client."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inspector.errors import IpcError, IpcRejected, IpcTimeout, IpcUnavailable
from inspector.greengrass.clients import connect_ipc
from inspector.greengrass.ipc import IpcClient
from inspector.testing.fixtures import running_nucleus
from inspector.testing.nucleus import NucleusEmulator

pytestmark = pytest.mark.timeout(60)
COMPONENT = "com.example.Inspector"


@pytest.fixture
def nucleus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NucleusEmulator]:
    with running_nucleus(tmp_path, config={"ImageDirectory": "/x", "Nested": {"A": 1}},
                         component_name=COMPONENT) as emulator:
        for key, value in emulator.env.items():
            monkeypatch.setenv(key, value)
        yield emulator


@pytest.fixture
def ipc(nucleus: NucleusEmulator) -> Iterator[IpcClient]:
    client = IpcClient(connect_ipc, timeout_s=0.5, backoff_s=0.05, backoff_max_s=0.3)
    client.start(wait_s=5)
    yield client
    client.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_calls(ipc: IpcClient, nucleus: NucleusEmulator) -> None:
    assert ipc.get_configuration() == {"ImageDirectory": "/x", "Nested": {"A": 1}}
    assert ipc.get_configuration(["Nested"]) == {"A": 1}
    ipc.update_state("RUNNING")
    ipc.publish_to_iot_core("a/b", b"{}")
    ipc.publish_to_topic("local", {"k": 1})
    assert nucleus.states == ["RUNNING"]
    assert [(m.operation, m.topic) for m in nucleus.published] == [
        ("PublishToIoTCore", "a/b"), ("PublishToTopic", "local")]
    assert nucleus.published[0].qos == "1"


def test_a_silent_nucleus_times_out_instead_of_hanging(
    ipc: IpcClient, nucleus: NucleusEmulator
) -> None:
    nucleus.delay_s["UpdateState"] = math.inf
    t0 = time.monotonic()
    with pytest.raises(IpcTimeout, match="no answer"):
        ipc.update_state("RUNNING")
    assert time.monotonic() - t0 < 5  # one attempt: a timeout is not retried here


def test_service_error_is_retried(ipc: IpcClient, nucleus: NucleusEmulator) -> None:
    nucleus.fail_next("PublishToIoTCore", "ServiceError", times=2)
    ipc.publish_to_iot_core("a/b", b"x")
    assert len(nucleus.published) == 1
    assert sum(c.operation == "PublishToIoTCore" for c in nucleus.calls) == 3


def test_refusals_are_not_retried(ipc: IpcClient, nucleus: NucleusEmulator) -> None:
    nucleus.fail_next("PublishToIoTCore", "UnauthorizedError")
    with pytest.raises(IpcRejected, match="UnauthorizedError"):
        ipc.publish_to_iot_core("a/b", b"x")
    with pytest.raises(IpcRejected, match="ResourceNotFoundError"):
        ipc.get_configuration(["Missing"])
    assert sum(c.operation == "PublishToIoTCore" for c in nucleus.calls) == 1


def test_reconnects_and_subscribes_again_after_a_restart(
    ipc: IpcClient, nucleus: NucleusEmulator
) -> None:
    updates: list[list[str]] = []
    reconnected = threading.Event()
    ipc.on_reconnect(reconnected.set)
    ipc.subscribe_to_configuration_update(updates.append)
    ipc.subscribe_to_validate_configuration_updates(
        lambda deployment, config: ipc.send_configuration_validity_report(
            deployment, accepted=False, message="no"))
    assert nucleus.subscriber_count() == 2
    nucleus.stop()
    wait_until(lambda: not ipc.connected)
    with pytest.raises(IpcUnavailable):
        ipc.publish_to_iot_core("a/b", b"x", attempts=1)
    nucleus.start()
    assert reconnected.wait(10)
    wait_until(lambda: nucleus.subscriber_count() == 2)
    assert ipc.reconnects == 1
    result = nucleus.update_config(COMPONENT, {"ImageDirectory": "/y"}, merge=True)
    assert (result.status, result.message) == ("REJECTED", "no")
    nucleus.set_config(COMPONENT, {"ImageDirectory": "/z"})
    wait_until(lambda: ["ImageDirectory"] in updates)


def test_start_fails_clearly_without_a_nucleus(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT",
                       str(tmp_path / "none.sock"))
    monkeypatch.setenv("SVCUID", "x")
    client = IpcClient(lambda on_disconnect: connect_ipc(on_disconnect, timeout_s=0.5),
                       backoff_s=0.05, backoff_max_s=0.1)
    with pytest.raises(IpcUnavailable, match="cannot connect"):
        client.start(wait_s=0.5)
    assert issubclass(IpcUnavailable, IpcError)


def test_a_subscription_the_nucleus_does_not_answer_is_retried(
    ipc: IpcClient, nucleus: NucleusEmulator
) -> None:
    nucleus.delay_s["SubscribeToConfigurationUpdate"] = math.inf
    updates: list[list[str]] = []
    ipc.subscribe_to_configuration_update(updates.append)  # times out: no exception
    assert nucleus.subscriber_count("SubscribeToConfigurationUpdate") == 0
    nucleus.delay_s.clear()
    wait_until(lambda: nucleus.subscriber_count("SubscribeToConfigurationUpdate") == 1)
    nucleus.set_config(COMPONENT, {"ImageDirectory": "/w"})
    wait_until(lambda: ["ImageDirectory"] in updates)
