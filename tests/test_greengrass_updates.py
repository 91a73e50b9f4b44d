"""Deferred component updates: the component's UpdateDeferrer over the real IPC client (IpcClient
on awsiotsdk) against the nucleus emulator's SubscribeToComponentUpdates / DeferComponentUpdate."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inspector.greengrass.clients import connect_ipc
from inspector.greengrass.ipc import IpcClient
from inspector.greengrass.updates import UpdateDeferrer
from inspector.testing.fixtures import running_nucleus
from inspector.testing.nucleus import NucleusEmulator, UpdateNotice

COMPONENT = "com.inspector.Inference"
T = 10.0


@pytest.fixture
def nucleus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NucleusEmulator]:
    with running_nucleus(tmp_path, config={}, component_name=COMPONENT) as emulator:
        for key, value in emulator.env.items():
            monkeypatch.setenv(key, value)
        yield emulator


@pytest.fixture
def ipc(nucleus: NucleusEmulator) -> Iterator[IpcClient]:
    client = IpcClient(connect_ipc, timeout_s=2.0, backoff_s=0.05, backoff_max_s=0.3)
    client.start(wait_s=5)
    yield client
    client.close()


class InFlight:
    """The count the pipeline reports (Pipeline.active), set by the test."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.lock = threading.Lock()

    def __call__(self) -> int:
        with self.lock:
            return self.count


def start_deferrer(ipc: IpcClient, nucleus: NucleusEmulator, in_flight: InFlight,
                   **kwargs: float) -> UpdateDeferrer:
    deferrer = UpdateDeferrer(ipc, in_flight, recheck_ms=100, **kwargs).start()  # type: ignore[arg-type]
    assert nucleus.wait_until(
        lambda: nucleus.subscriber_count("SubscribeToComponentUpdates") == 1, T)
    return deferrer


def notify_in_background(nucleus: NucleusEmulator, deployment_id: str) -> tuple[
        threading.Thread, list[UpdateNotice]]:
    out: list[UpdateNotice] = []
    thread = threading.Thread(
        target=lambda: out.append(nucleus.notify_component_update(deployment_id, timeout_s=T)),
        daemon=True)
    thread.start()
    return thread, out


def test_defers_while_images_are_in_flight_then_lets_the_update_go(
    ipc: IpcClient, nucleus: NucleusEmulator,
) -> None:
    in_flight = InFlight(3)
    deferrer = start_deferrer(ipc, nucleus, in_flight)
    thread, out = notify_in_background(nucleus, "dep-1")
    # wait until it deferred twice (two rounds), then the images are delivered
    assert nucleus.wait_until(lambda: len(nucleus.deferrals) >= 2, T)
    assert thread.is_alive()  # the update has not gone ahead
    with in_flight.lock:
        in_flight.count = 0
    thread.join(T)
    assert not thread.is_alive()
    notice = out[0]
    assert notice.silent == [] and notice.rounds >= 3
    deferrals = [d for d in nucleus.deferrals if d.recheck_after_ms]
    assert deferrals and all(d.message == "3 image(s) in flight" and d.recheck_after_ms == 100
                             and d.component == COMPONENT for d in deferrals)
    assert nucleus.deferrals[-1].recheck_after_ms == 0  # the go-ahead, not a silent timeout
    assert deferrer.released == 1 and deferrer.deferred == len(deferrals)


def test_nothing_in_flight_answers_at_once(ipc: IpcClient, nucleus: NucleusEmulator) -> None:
    deferrer = start_deferrer(ipc, nucleus, InFlight(0))
    notice = nucleus.notify_component_update("dep-2", timeout_s=T)
    assert (notice.rounds, notice.deferrals, notice.silent) == (1, [], [])
    assert [d.recheck_after_ms for d in nucleus.deferrals] == [0]
    assert deferrer.released == 1
    nucleus.post_component_update("dep-2")


def test_gives_up_deferring_after_max_defer(ipc: IpcClient, nucleus: NucleusEmulator) -> None:
    deferrer = start_deferrer(ipc, nucleus, InFlight(5), max_defer_s=0.3)
    notice = nucleus.notify_component_update("dep-3", timeout_s=T)
    assert notice.silent == [] and notice.rounds >= 2
    last = nucleus.deferrals[-1]
    assert last.recheck_after_ms == 0 and "still in flight" in (last.message or "")
    assert deferrer.released == 1
