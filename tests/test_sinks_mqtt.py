"""The MQTT results sink: payload fitting, topics, spool-then-publish against the nucleus emulator
with the real awsiotsdk client (in-process)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest

from inspector.errors import SinkError
from inspector.greengrass.clients import connect_ipc
from inspector.greengrass.ipc import IpcClient
from inspector.greengrass.spool import Spool
from inspector.result import load_schema, to_result
from inspector.settings import Settings
from inspector.sinks.base import Delivery
from inspector.sinks.mqtt import MAX_PAYLOAD_BYTES, MqttSink, fit_payload, render_topic
from inspector.testing.fixtures import running_nucleus
from inspector.testing.nucleus import NucleusEmulator
from inspector.types import Detections, ImageInfo, Inspection, ModelInfo, Size

pytestmark = pytest.mark.timeout(60)


def inspection(n_detections: int = 1, name: str = "tag.jpg") -> Inspection:
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 1000, (n_detections, 2)).astype(np.float32)
    detections = Detections(
        xyxy=np.concatenate([xy, xy + 10.5], axis=1),
        confidence=rng.uniform(0.25, 1.0, n_detections).astype(np.float32),
        class_id=np.zeros(n_detections, np.int64),
    )
    return Inspection(
        image=ImageInfo(name=name, size=Size(960, 1280), sha256="a" * 64),
        model=ModelInfo("m", "1", "b" * 64, ("scratch",), Size(640, 640)),
        detections=detections,
        conf_threshold=0.25,
        timings_ms={"decode": 1, "preprocess": 1, "inference": 1, "postprocess": 1, "total": 4},
        time_utc="2026-11-25T19:22:48.123Z",
    )


def delivery(name: str = "tag.jpg", n: int = 1) -> Delivery:
    insp = inspection(n, name)
    return Delivery(to_result(insp, device="thing-1"), insp, Path(name))


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# --- payloads and topics ---------------------------------------------------------------------

def test_small_result_untouched() -> None:
    result = delivery(n=3).result
    data, truncated = fit_payload(result)
    assert not truncated
    assert b"detections_truncated" not in data


def test_large_result_truncated_to_fit_with_count_and_flag() -> None:
    result = delivery(n=5000).result
    data, truncated = fit_payload(result)
    assert truncated and len(data) <= MAX_PAYLOAD_BYTES
    import json

    fitted = json.loads(data)
    jsonschema.Draft202012Validator(load_schema()).validate(fitted)
    assert fitted["detections_truncated"] is True and fitted["detections_total"] == 5000
    kept = [d["confidence"] for d in fitted["detections"]]
    assert 0 < len(kept) < 5000
    dropped_max = sorted((d["confidence"] for d in result["detections"]), reverse=True)[len(kept)]
    assert min(kept) >= dropped_max  # the most confident ones are kept
    assert len(json.dumps(fitted).encode()) > MAX_PAYLOAD_BYTES * 0.9  # not cut needlessly


@pytest.mark.parametrize(("template", "expected"), [
    ("inspector/results", "inspector/results"),
    ("factory/{thingName}/results", "factory/thing-1/results"),
])
def test_topic_templates(template: str, expected: str) -> None:
    assert render_topic(template, "thing-1") == expected


@pytest.mark.parametrize(("template", "why"), [
    ("results/#", "wildcards"),
    ("results/+/x", "wildcards"),
    ("a/{device}", "unknown placeholder"),
    ("/a", "empty level"),
    ("a//b", "empty level"),
    ("a/b/c/d/e/f/g/h/i", "levels"),
    ("a/{thingName", "malformed"),
])
def test_bad_topic_templates(template: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        render_topic(template, "thing-1")


# --- against the nucleus emulator ------------------------------------------------------------

@pytest.fixture
def nucleus(tmp_path: Path) -> Iterator[NucleusEmulator]:
    with running_nucleus(tmp_path, config={"ImageDirectory": "/x"}) as emulator:
        yield emulator


@pytest.fixture
def ipc(nucleus: NucleusEmulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[IpcClient]:
    for key, value in nucleus.env.items():
        monkeypatch.setenv(key, value)
    client = IpcClient(connect_ipc, timeout_s=1.0, backoff_max_s=0.5)
    client.start(wait_s=5)
    yield client
    client.close()


def make_sink(ipc: IpcClient, tmp_path: Path, **kwargs: Any) -> MqttSink:
    sink = MqttSink(ipc, Spool(tmp_path / "spool"), thing_name="thing-1",
                    iot_topic="factory/{thingName}/results", backoff_max_s=0.3, **kwargs)
    ipc.on_reconnect(sink.wake)
    return sink.start()


def test_publishes_qos1_in_order_and_empties_the_spool(
    ipc: IpcClient, nucleus: NucleusEmulator, tmp_path: Path
) -> None:
    sink = make_sink(ipc, tmp_path)
    for n in range(5):
        sink.send(delivery(f"img{n}.jpg"))
    published = nucleus.wait_for_published(5)
    assert [m.json()["image"]["name"] for m in published] == [f"img{n}.jpg" for n in range(5)]
    assert {(m.operation, m.topic, m.qos) for m in published} == {
        ("PublishToIoTCore", "factory/thing-1/results", "1")}
    wait_until(lambda: sink.pending() == 0)
    sink.close(1.0)


def test_targets_pubsub_and_both_live(
    ipc: IpcClient, nucleus: NucleusEmulator, tmp_path: Path
) -> None:
    sink = make_sink(ipc, tmp_path, target="pubsub", pubsub_topic="local/results")
    sink.send(delivery("a.jpg"))
    nucleus.wait_for_published(1)
    settings = Settings(ImageDirectory="/x", PublishTarget="both",
                        PublishResultsOnTopic="r/{thingName}", PubSubTopic="local/results")
    sink.reconfigure(settings)
    sink.send(delivery("b.jpg"))
    published = nucleus.wait_for_published(3)
    assert [(m.operation, m.topic) for m in published] == [
        ("PublishToTopic", "local/results"), ("PublishToIoTCore", "r/thing-1"),
        ("PublishToTopic", "local/results")]
    assert published[0].json_message["image"]["name"] == "a.jpg"
    sink.close(1.0)


def test_nucleus_down_then_back_sends_everything(
    ipc: IpcClient, nucleus: NucleusEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(ipc, tmp_path)
    nucleus.stop()
    wait_until(lambda: not ipc.connected)
    for n in range(4):
        sink.send(delivery(f"img{n}.jpg"))
    # the publisher has tried and failed (twice): nothing may have left the spool meanwhile
    wait_until(lambda: caplog.text.count("img0.jpg: publish failed, will retry") >= 2)
    assert sink.pending() == 4 and not nucleus.published and sink.dead_letters == 0
    nucleus.start()
    published = nucleus.wait_for_published(4, timeout_s=15)
    assert [m.json()["image"]["name"] for m in published] == [f"img{n}.jpg" for n in range(4)]
    wait_until(lambda: sink.pending() == 0)
    sink.close(1.0)


def test_timeout_is_retried_and_may_duplicate(
    ipc: IpcClient, nucleus: NucleusEmulator, tmp_path: Path
) -> None:
    nucleus.delay_s["PublishToIoTCore"] = 1.5  # answered after the 1 s timeout
    sink = make_sink(ipc, tmp_path)
    sink.send(delivery("slow.jpg"))
    nucleus.wait_for_published(1)
    nucleus.delay_s.clear()
    wait_until(lambda: sink.pending() == 0)
    names = [m.json()["image"]["name"] for m in nucleus.published]
    assert set(names) == {"slow.jpg"} and len(names) >= 2  # at least once: a duplicate
    sink.close(1.0)


def test_refused_publish_is_dead_lettered_named_and_counted(
    ipc: IpcClient, nucleus: NucleusEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nucleus.fail_next("PublishToIoTCore", "UnauthorizedError")
    sink = make_sink(ipc, tmp_path)
    sink.send(delivery("denied.jpg"))
    sink.send(delivery("ok.jpg"))
    published = nucleus.wait_for_published(1)
    assert [m.json()["image"]["name"] for m in published] == ["ok.jpg"]
    wait_until(lambda: sink.pending() == 0)
    assert sink.rejected == 1 and sink.status()["dead_letters"] == 1
    dead = tmp_path / "spool" / "dead-letter.jsonl"
    lines = [json.loads(line) for line in dead.read_text().splitlines()]
    assert len(lines) == 1 and lines[0]["image"] == "denied.jpg"
    assert "UnauthorizedError" in lines[0]["error"] and lines[0]["topic"] and lines[0]["time"]
    assert json.loads(lines[0]["payload"])["image"]["name"] == "denied.jpg"
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("denied.jpg" in m and str(dead) in m for m in errors), errors
    sink.close(1.0)


def test_close_keeps_unsent_messages_for_the_next_start(
    ipc: IpcClient, nucleus: NucleusEmulator, tmp_path: Path
) -> None:
    nucleus.stop()
    wait_until(lambda: not ipc.connected)
    sink = make_sink(ipc, tmp_path)
    sink.send(delivery("later.jpg"))
    sink.close(0.3)
    assert len(Spool(tmp_path / "spool")) == 1
    nucleus.start()
    assert ipc.wait_connected(10)
    again = make_sink(ipc, tmp_path)
    assert nucleus.wait_for_published(1)[0].json()["image"]["name"] == "later.jpg"
    wait_until(lambda: again.pending() == 0)
    again.close(1.0)


class FlakyIpc:
    """Raises an error nobody planned for (as awscrt's AwsCrtError was) before succeeding."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.sent: list[bytes] = []

    def publish_to_iot_core(self, topic: str, payload: bytes, *, qos: str = "1",
                            attempts: int | None = None) -> None:
        if self.failures:
            self.failures -= 1
            raise RuntimeError("something unexpected")
        self.sent.append(payload)

    def publish_to_topic(self, topic: str, message: dict[str, Any], *,
                         attempts: int | None = None) -> None:
        raise AssertionError("not used")


def test_an_unexpected_error_is_retried_never_dropped(tmp_path: Path) -> None:
    ipc = FlakyIpc(failures=2)
    spool = Spool(tmp_path / "spool")
    spool.put({"target": "iotcore"})  # malformed (an older version's record): dropped
    sink = MqttSink(ipc, spool, thing_name="t", backoff_s=0.01, backoff_max_s=0.02).start()
    sink.send(delivery("kept.jpg"))
    wait_until(lambda: sink.pending() == 0)
    assert len(ipc.sent) == 1 and b"kept.jpg" in ipc.sent[0]
    sink.close(1.0)


# --- express publish: from memory, while the spool entry is written ---------------------------

class GatedSpool(Spool):
    """The real spool, whose writes wait for ``gate``: the fsyncs that take that long."""

    def __init__(self, folder: Path, **kwargs: Any) -> None:
        super().__init__(folder, **kwargs)
        self.gate = threading.Event()
        self.writing = threading.Event()

    def put(self, record: dict[str, Any]) -> Any:
        self.writing.set()
        assert self.gate.wait(15), "gate never opened"
        return super().put(record)


def test_express_publish_runs_while_the_spool_is_written_and_send_waits_for_it(
    ipc: IpcClient, nucleus: NucleusEmulator, tmp_path: Path
) -> None:
    spool = GatedSpool(tmp_path / "spool")
    sink = MqttSink(ipc, spool, thing_name="thing-1", iot_topic="r/{thingName}").start()
    sender = threading.Thread(target=sink.send, args=(delivery("fast.jpg"),))
    sender.start()
    # the nucleus has the result although its spool entry is not written yet ...
    assert nucleus.wait_for_published(1)[0].json()["image"]["name"] == "fast.jpg"
    assert spool.writing.is_set() and not spool.gate.is_set()
    # ... and send (custody: the image may go to done) has not returned: not durable on disk,
    # and an acknowledgement alone counts only when the spool cannot take the message
    assert sender.is_alive()
    spool.gate.set()
    sender.join(10)
    assert not sender.is_alive()
    wait_until(lambda: sink.pending() == 0)  # the acknowledgement removed the entry
    assert len(nucleus.published) == 1 and sink.express == 1  # not sent again from the spool
    assert not list((tmp_path / "spool").glob("*.json"))
    sink.close(1.0)


def test_a_failed_express_publish_is_sent_from_the_spool_in_order(
    ipc: IpcClient, nucleus: NucleusEmulator, tmp_path: Path
) -> None:
    nucleus.fail_next("PublishToIoTCore", "ServiceError")  # the first publish fails
    sink = make_sink(ipc, tmp_path)
    for n in range(4):
        sink.send(delivery(f"img{n}.jpg"))
    wait_until(lambda: sink.pending() == 0)
    names = [m.json()["image"]["name"] for m in nucleus.published]
    first_seen = list(dict.fromkeys(names))
    assert first_seen == [f"img{n}.jpg" for n in range(4)], names  # nothing overtook img0
    assert sink.dead_letters == 0
    sink.close(1.0)


def test_a_full_spool_is_no_loss_when_the_nucleus_acknowledged_else_send_fails(
    ipc: IpcClient, nucleus: NucleusEmulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    spool = Spool(tmp_path / "spool", max_items=0)  # refuses every message
    sink = MqttSink(ipc, spool, thing_name="thing-1", iot_topic="r/{thingName}",
                    express_wait_s=5.0).start()
    sink.send(delivery("acked.jpg"))  # durable by the acknowledgement: no SinkError
    assert [m.json()["image"]["name"] for m in nucleus.published] == ["acked.jpg"]
    assert "acked.jpg: result not spooled, but the nucleus acknowledged it" in caplog.text
    nucleus.stop()
    wait_until(lambda: not ipc.connected)
    with pytest.raises(SinkError, match="is full"):  # neither spooled nor acknowledged
        sink.send(delivery("lost.jpg"))
    sink.close(0.5)
