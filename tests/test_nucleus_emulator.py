"""The nucleus emulator, driven by the unmodified awsiotsdk IPC clients."""

from __future__ import annotations

import concurrent.futures
import json
import math
import socket
import threading
from collections.abc import Iterator

import pytest
from awsiot.eventstreamrpc import AccessDeniedError
from awsiot.greengrasscoreipc import connect, model
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

from inspector.testing.eventstream import (
    Decoder,
    Header,
    Message,
    MessageFlag,
    MessageType,
    encode_message,
    rpc_fields,
    rpc_message,
)
from inspector.testing.ipcrules import authorized, changed_paths, deep_merge, lookup, topic_matches
from inspector.testing.nucleus import NucleusEmulator

COMPONENT = "com.example.Inspector"
CONFIG = {"thresholds": {"conf": 0.25, "iou": 0.45}, "topic": "inspector/results", "enabled": True}
T = 5.0  # seconds: every future below gets a bound


@pytest.fixture
def nucleus() -> Iterator[NucleusEmulator]:
    with NucleusEmulator(component_name=COMPONENT, config={COMPONENT: CONFIG}) as emulator:
        yield emulator


def make_client(nucleus: NucleusEmulator, token: str | None = None) -> GreengrassCoreIPCClientV2:
    ipc = connect(ipc_socket=nucleus.socket_path, authtoken=token or nucleus.svcuid, timeout=T)
    return GreengrassCoreIPCClientV2(client=ipc)


@pytest.fixture
def client(nucleus: NucleusEmulator) -> Iterator[GreengrassCoreIPCClientV2]:
    ipc = make_client(nucleus)
    yield ipc
    ipc.close()


def test_env_names_the_socket_and_token(nucleus: NucleusEmulator) -> None:
    env = nucleus.env
    assert env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] == nucleus.socket_path
    assert env["SVCUID"] == env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == nucleus.svcuid
    assert {"AWS_IOT_THING_NAME", "AWS_REGION"} <= env.keys()
    assert len(nucleus.socket_path.encode()) < 108


def test_client_from_environment(nucleus: NucleusEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in nucleus.env.items():
        monkeypatch.setenv(key, value)
    ipc = GreengrassCoreIPCClientV2()
    try:
        ipc.update_state_async(state=model.ReportedLifecycleState.RUNNING).result(T)
    finally:
        ipc.close()
    assert nucleus.states == ["RUNNING"]


def test_bad_token_is_access_denied(nucleus: NucleusEmulator) -> None:
    with pytest.raises(AccessDeniedError):
        connect(ipc_socket=nucleus.socket_path, authtoken="not-the-token", timeout=T)
    assert nucleus.connect_count == 0


def test_reject_connect_knob(nucleus: NucleusEmulator) -> None:
    nucleus.reject_connect = True
    with pytest.raises(AccessDeniedError):
        connect(ipc_socket=nucleus.socket_path, authtoken=nucleus.svcuid, timeout=T)
    nucleus.reject_connect = False
    make_client(nucleus).close()
    assert nucleus.connect_count == 1


def test_long_socket_path_is_refused() -> None:
    with pytest.raises(ValueError, match="socket path"):
        NucleusEmulator("/tmp/" + "x" * 110)


def test_publish_to_iot_core_is_recorded(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2
) -> None:
    client.publish_to_iot_core_async(
        topic_name="inspector/results", qos=model.QOS.AT_LEAST_ONCE, payload=b'{"ok": true}'
    ).result(T)
    (message,) = nucleus.published
    assert (message.operation, message.topic, message.qos) == \
        ("PublishToIoTCore", "inspector/results", "1")
    assert message.json() == {"ok": True}
    assert message.component == COMPONENT
    assert [c.operation for c in nucleus.calls] == ["PublishToIoTCore"]


def test_publish_to_topic_json_and_binary(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2
) -> None:
    client.publish_to_topic_async(
        topic="local/a", publish_message=model.PublishMessage(
            json_message=model.JsonMessage(message={"n": 1}))
    ).result(T)
    client.publish_to_topic_async(
        topic="local/b", publish_message=model.PublishMessage(
            binary_message=model.BinaryMessage(message=b"\x00\x01"))
    ).result(T)
    first, second = nucleus.published
    assert (first.topic, first.json_message) == ("local/a", {"n": 1})
    assert (second.topic, second.payload) == ("local/b", b"\x00\x01")


def test_get_configuration_key_paths(client: GreengrassCoreIPCClientV2) -> None:
    whole = client.get_configuration_async().result(T)
    assert whole.component_name == COMPONENT
    assert whole.value == CONFIG
    assert client.get_configuration_async(key_path=["thresholds"]).result(T).value == \
        CONFIG["thresholds"]
    # a leaf comes back wrapped in its own key
    assert client.get_configuration_async(key_path=["thresholds", "conf"]).result(T).value == \
        {"conf": 0.25}
    assert client.get_configuration_async(key_path=["topic"]).result(T).value == \
        {"topic": "inspector/results"}


def test_get_configuration_missing_key(client: GreengrassCoreIPCClientV2) -> None:
    with pytest.raises(model.ResourceNotFoundError):
        client.get_configuration_async(key_path=["nope"]).result(T)
    with pytest.raises(model.ResourceNotFoundError):
        client.get_configuration_async(key_path=["topic", "deeper"]).result(T)
    with pytest.raises(model.ResourceNotFoundError):
        client.get_configuration_async(component_name="other.Component").result(T)


def test_update_state(nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2) -> None:
    client.update_state_async(state=model.ReportedLifecycleState.RUNNING).result(T)
    client.update_state_async(state=model.ReportedLifecycleState.ERRORED).result(T)
    assert nucleus.states == ["RUNNING", "ERRORED"]


def test_configuration_update_events(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2
) -> None:
    events: list[model.ConfigurationUpdateEvents] = []
    got = threading.Event()

    def on_event(event: model.ConfigurationUpdateEvents) -> None:
        events.append(event)
        got.set()

    _, operation = client.subscribe_to_configuration_update_async(
        key_path=["thresholds"], on_stream_event=on_event
    )
    operation.get_response().result(T)
    result = nucleus.update_config(
        COMPONENT, {**CONFIG, "thresholds": {"conf": 0.5, "iou": 0.45}}, timeout_s=T)
    assert (result.status, result.applied) == ("NO_VALIDATORS", True)
    assert got.wait(T)
    event = events[0].configuration_update_event
    assert (event.component_name, event.key_path) == (COMPONENT, ["thresholds", "conf"])
    assert client.get_configuration_async(key_path=["thresholds", "conf"]).result(T).value == \
        {"conf": 0.5}
    # a change outside the subscribed key path sends nothing
    got.clear()
    nucleus.update_config(COMPONENT, {"topic": "elsewhere"}, merge=True)
    assert not got.wait(0.3)
    assert len(events) == 1


def test_subscribe_to_missing_key_is_not_found(client: GreengrassCoreIPCClientV2) -> None:
    _, operation = client.subscribe_to_configuration_update_async(key_path=["nope"])
    with pytest.raises(model.ResourceNotFoundError):
        operation.get_response().result(T)


def _validator(
    client: GreengrassCoreIPCClientV2, status: str, message: str
) -> list[model.ValidateConfigurationUpdateEvents]:
    seen: list[model.ValidateConfigurationUpdateEvents] = []

    def on_event(event: model.ValidateConfigurationUpdateEvents) -> None:
        seen.append(event)
        update = event.validate_configuration_update_event
        client.send_configuration_validity_report_async(
            configuration_validity_report=model.ConfigurationValidityReport(
                status=status, deployment_id=update.deployment_id, message=message)
        ).result(T)

    _, operation = client.subscribe_to_validate_configuration_updates_async(
        on_stream_event=on_event)
    operation.get_response().result(T)
    return seen


def test_validation_rejected_is_not_applied(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2
) -> None:
    seen = _validator(client, "REJECTED", "conf must be in [0, 1]")
    bad = {**CONFIG, "thresholds": {"conf": 7, "iou": 0.45}}
    result = nucleus.update_config(COMPONENT, bad, timeout_s=T)
    assert (result.status, result.message, result.applied) == \
        ("REJECTED", "conf must be in [0, 1]", False)
    assert seen[0].validate_configuration_update_event.configuration == bad
    assert nucleus.config[COMPONENT] == CONFIG


def test_validation_accepted_is_applied(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2
) -> None:
    _validator(client, "ACCEPTED", "fine")
    result = nucleus.update_config(COMPONENT, {"enabled": False}, merge=True, timeout_s=T)
    assert (result.status, result.applied) == ("ACCEPTED", True)
    assert nucleus.config[COMPONENT]["enabled"] is False


def test_validation_timeout_proceeds(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2
) -> None:
    _, operation = client.subscribe_to_validate_configuration_updates_async(
        on_stream_event=lambda event: None)  # never reports
    operation.get_response().result(T)
    result = nucleus.update_config(COMPONENT, {"enabled": False}, merge=True, timeout_s=0.3)
    assert (result.status, result.applied) == ("TIMED_OUT", True)


def test_unsolicited_validity_report_is_invalid(client: GreengrassCoreIPCClientV2) -> None:
    with pytest.raises(model.InvalidArgumentsError):
        client.send_configuration_validity_report_async(
            configuration_validity_report=model.ConfigurationValidityReport(
                status="ACCEPTED", deployment_id="nope")
        ).result(T)


@pytest.mark.parametrize(
    ("shape", "error"),
    [("ServiceError", model.ServiceError), ("UnauthorizedError", model.UnauthorizedError),
     ("aws.greengrass#InvalidArgumentsError", model.InvalidArgumentsError)],
)
def test_error_injection(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2, shape: str, error: type
) -> None:
    nucleus.error_for["PublishToIoTCore"] = shape
    with pytest.raises(error):
        client.publish_to_iot_core_async(topic_name="t", qos="0", payload=b"x").result(T)
    assert nucleus.published == []
    del nucleus.error_for["PublishToIoTCore"]
    client.publish_to_iot_core_async(topic_name="t", qos="0", payload=b"x").result(T)
    assert len(nucleus.published) == 1


def test_fail_next_counts_down(nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2) -> None:
    nucleus.fail_next("PublishToIoTCore", "ServiceError", times=2)
    for _ in range(2):
        with pytest.raises(model.ServiceError):
            client.publish_to_iot_core_async(topic_name="t", qos="1", payload=b"x").result(T)
    client.publish_to_iot_core_async(topic_name="t", qos="1", payload=b"x").result(T)


def test_delay_makes_the_future_time_out_without_blocking_others(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2
) -> None:
    nucleus.delay_s["PublishToIoTCore"] = math.inf  # a silent nucleus
    slow = client.publish_to_iot_core_async(topic_name="t", qos="1", payload=b"x")
    with pytest.raises(concurrent.futures.TimeoutError):
        slow.result(0.3)
    # other operations on the same connection are not held up
    client.update_state_async(state="RUNNING").result(T)
    assert nucleus.published == []
    assert [c.operation for c in nucleus.calls] == ["PublishToIoTCore", "UpdateState"]


def test_finite_delay_answers_late(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2
) -> None:
    nucleus.delay_s["UpdateState"] = 0.2
    client.update_state_async(state="RUNNING").result(T)
    assert nucleus.states == ["RUNNING"]


def test_dropped_connection_and_restart(nucleus: NucleusEmulator) -> None:
    disconnected = threading.Event()

    class Lifecycle:
        def on_connect(self) -> None: ...
        def on_disconnect(self, reason: object) -> None:
            disconnected.set()
        def on_error(self, error: Exception) -> bool:
            return True
        def on_ping(self, headers: object, payload: object) -> None: ...

    ipc = connect(ipc_socket=nucleus.socket_path, authtoken=nucleus.svcuid,
                  lifecycle_handler=Lifecycle(), timeout=T)
    client = GreengrassCoreIPCClientV2(client=ipc)
    nucleus.delay_s["PublishToIoTCore"] = math.inf
    pending = client.publish_to_iot_core_async(topic_name="t", qos="1", payload=b"x")
    assert nucleus.wait_until(lambda: len(nucleus.calls) == 1)
    nucleus.drop_connections()
    assert disconnected.wait(T)
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises a closed-stream/connection error
        pending.result(T)
    client.close()
    nucleus.delay_s.clear()

    down = threading.Thread(target=nucleus.restart, kwargs={"down_s": 0.5})
    down.start()
    assert nucleus.wait_until(lambda: not nucleus.running, T)
    with pytest.raises(Exception):  # noqa: B017 - no socket while down
        connect(ipc_socket=nucleus.socket_path, authtoken=nucleus.svcuid, timeout=T)
    down.join(T)
    fresh = make_client(nucleus)
    try:
        fresh.publish_to_iot_core_async(topic_name="t", qos="1", payload=b"y").result(T)
    finally:
        fresh.close()
    assert [m.payload for m in nucleus.published] == [b"y"]


def test_iot_core_subscription_gets_messages(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2
) -> None:
    received: list[model.IoTCoreMessage] = []
    got = threading.Event()

    def on_event(event: model.IoTCoreMessage) -> None:
        received.append(event)
        got.set()

    _, operation = client.subscribe_to_iot_core_async(
        topic_name="commands/+/run", qos="1", on_stream_event=on_event)
    operation.get_response().result(T)
    assert nucleus.publish_from_cloud("commands/line1/run", b"go") == 1
    assert nucleus.publish_from_cloud("commands/line1/stop", b"no") == 0
    assert got.wait(T)
    assert (received[0].message.topic_name, received[0].message.payload) == \
        ("commands/line1/run", b"go")


def test_local_pubsub_between_two_components(nucleus: NucleusEmulator) -> None:
    other_token = nucleus.add_component("com.example.Other")
    publisher, subscriber = make_client(nucleus), make_client(nucleus, other_token)
    received: list[model.SubscriptionResponseMessage] = []
    got = threading.Event()

    def on_event(event: model.SubscriptionResponseMessage) -> None:
        received.append(event)
        got.set()

    try:
        _, operation = subscriber.subscribe_to_topic_async(
            topic="local/#", on_stream_event=on_event)
        operation.get_response().result(T)
        publisher.publish_to_topic_async(
            topic="local/x", publish_message=model.PublishMessage(
                json_message=model.JsonMessage(message={"v": 2}))
        ).result(T)
        assert got.wait(T)
        assert received[0].json_message.message == {"v": 2}
        assert received[0].json_message.context.topic == "local/x"
        assert nucleus.published[0].component == COMPONENT
    finally:
        publisher.close()
        subscriber.close()


def test_closing_a_subscription_stops_events(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2
) -> None:
    _, operation = client.subscribe_to_iot_core_async(topic_name="a/#", qos="0")
    operation.get_response().result(T)
    assert nucleus.subscriber_count("SubscribeToIoTCore") == 1
    operation.close().result(T)
    assert nucleus.wait_until(lambda: nucleus.subscriber_count() == 0, T)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "expected"),
    [("a/b", "a/b", True), ("a/+", "a/b", True), ("a/+", "a/b/c", False), ("a/#", "a/b/c", True),
     ("a/#", "a", True), ("#", "x/y", True), ("a/b", "a/c", False), ("+/b", "a/b", True),
     ("a/+/c", "a//c", True), ("a", "a/b", False)],
)
def test_topic_matches(topic_filter: str, topic: str, expected: bool) -> None:
    assert topic_matches(topic_filter, topic) is expected


def test_access_control_from_the_component_configuration() -> None:
    config = {"accessControl": {
        "aws.greengrass.ipc.mqttproxy": {"com.example.Inspector:mqtt:1": {
            "policyDescription": "results only",
            "operations": ["aws.greengrass#PublishToIoTCore"],
            "resources": ["inspector/+/results"]}},
        "aws.greengrass.ipc.pubsub": {"com.example.Inspector:pubsub:1": {
            "operations": ["*"], "resources": ["local/+"]}},
    }}
    with NucleusEmulator(component_name=COMPONENT, config={COMPONENT: config},
                         enforce_access_control=True) as nucleus:
        client = make_client(nucleus)
        try:
            client.publish_to_iot_core_async(
                topic_name="inspector/line1/results", qos="1", payload=b"{}").result(T)
            with pytest.raises(model.UnauthorizedError):
                client.publish_to_iot_core_async(
                    topic_name="inspector/line1/other", qos="1", payload=b"{}").result(T)
            with pytest.raises(model.UnauthorizedError):  # not granted: SubscribeToIoTCore
                client.subscribe_to_iot_core_async(
                    topic_name="inspector/line1/results", qos="1")[1].get_response().result(T)
            # pubsub wildcards are literal: "local/+" is only the topic "local/+"
            with pytest.raises(model.UnauthorizedError):
                client.publish_to_topic_async(topic="local/x", publish_message=model.PublishMessage(
                    json_message=model.JsonMessage(message={}))).result(T)
            client.publish_to_topic_async(topic="local/+", publish_message=model.PublishMessage(
                json_message=model.JsonMessage(message={}))).result(T)
        finally:
            client.close()
        assert [m.topic for m in nucleus.published] == ["inspector/line1/results", "local/+"]


def test_access_control_glob_and_mqtt_wildcard_rules_of_the_nucleus() -> None:
    """As aws-greengrass-nucleus's WildcardTrie: ``*`` matches anything (``/`` included) for
    both services; ``+`` is a wildcard only as a whole level (this emulator used to take ``*``
    only as a whole resource)."""
    config = {"accessControl": {
        "aws.greengrass.ipc.mqttproxy": {"p:1": {
            "operations": ["aws.greengrass#PublishToIoTCore"],
            "resources": ["plant/*/results", "cell+/x"]}},
        "aws.greengrass.ipc.pubsub": {"p:2": {
            "operations": ["aws.greengrass#PublishToTopic"], "resources": ["local/*"]}},
    }}
    message = model.PublishMessage(json_message=model.JsonMessage(message={}))
    with NucleusEmulator(component_name=COMPONENT, config={COMPONENT: config},
                         enforce_access_control=True) as nucleus:
        client = make_client(nucleus)
        try:
            client.publish_to_iot_core_async(
                topic_name="plant/a/line-1/results", qos="1", payload=b"{}").result(T)
            client.publish_to_topic_async(topic="local/a/b", publish_message=message).result(T)
            with pytest.raises(model.UnauthorizedError):  # "+" inside a level is literal
                client.publish_to_iot_core_async(topic_name="cell7/x", qos="1",
                                                 payload=b"{}").result(T)
        finally:
            client.close()
        assert len(nucleus.published) == 2


def test_client_closing_a_delayed_stream_gets_no_late_answer(
    nucleus: NucleusEmulator, client: GreengrassCoreIPCClientV2
) -> None:
    nucleus.delay_s["SubscribeToIoTCore"] = 0.2
    _, operation = client.subscribe_to_iot_core_async(topic_name="a", qos="0")
    operation.close()
    nucleus.wait_until(lambda: False, 0.4)  # the delayed answer would come now
    # the connection is still healthy
    client.update_state_async(state="RUNNING").result(T)
    assert nucleus.subscriber_count() == 0


def _raw_connect(nucleus: NucleusEmulator) -> tuple[socket.socket, Decoder]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(T)
    sock.connect(nucleus.socket_path)
    sock.sendall(encode_message(rpc_message(
        MessageType.CONNECT, headers=(Header.string(":version", "0.1.0"),),
        payload=json.dumps({"authToken": nucleus.svcuid}).encode())))
    decoder = Decoder()
    ack = _next(sock, decoder)
    assert rpc_fields(ack) == (MessageType.CONNECT_ACK, MessageFlag.CONNECTION_ACCEPTED, 0)
    return sock, decoder


def _next(sock: socket.socket, decoder: Decoder) -> Message:
    while True:
        for message in decoder.feed(sock.recv(65536)):
            return message


def test_raw_ping_and_unknown_operation(nucleus: NucleusEmulator) -> None:
    sock, decoder = _raw_connect(nucleus)
    with sock:
        sock.sendall(encode_message(rpc_message(MessageType.PING, payload=b"p")))
        pong = _next(sock, decoder)
        assert rpc_fields(pong)[0] == MessageType.PING_RESPONSE
        assert pong.payload == b"p"
        sock.sendall(encode_message(rpc_message(
            MessageType.APPLICATION_MESSAGE, 1,
            headers=(Header.string("operation", "aws.greengrass#ListComponents"),),
            payload=b"{}")))
        error = _next(sock, decoder)
        assert rpc_fields(error) == (MessageType.APPLICATION_ERROR, MessageFlag.TERMINATE_STREAM, 1)
        assert error.header("service-model-type") == "aws.greengrass#ServiceError"
        assert error.header(":content-type") == "application/json"


def test_raw_message_without_rpc_headers_is_a_protocol_error(nucleus: NucleusEmulator) -> None:
    sock, decoder = _raw_connect(nucleus)
    with sock:
        sock.sendall(encode_message(Message((Header.int32(":message-type", 0),), b"{}")))
        assert rpc_fields(_next(sock, decoder))[0] == MessageType.PROTOCOL_ERROR
        assert sock.recv(1) == b""  # and the connection is closed


@pytest.mark.parametrize(
    ("key_path", "found", "value"),
    [((), True, {"A": {"b": 1}, "c": None}), (("a",), True, {"b": 1}), (("A", "B"), True, 1),
     (("c",), True, None), (("x",), False, None), (("A", "b", "deeper"), False, None)],
)
def test_lookup_is_case_insensitive(key_path: tuple[str, ...], found: bool, value: object) -> None:
    assert lookup({"A": {"b": 1}, "c": None}, key_path) == (found, value)


@pytest.mark.parametrize(
    ("old", "new", "paths"),
    [({"a": 1}, {"a": 1}, []), ({"a": 1}, {"a": 2}, [("a",)]),
     ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}}, [("a", "c")]),
     ({"a": 1}, {}, [("a",)]), ({}, {"n": {"x": 1}}, [("n",)]),
     ({"a": {"b": 1}}, {"a": 5}, [("a",)])],
)
def test_changed_paths(old: dict[str, object], new: dict[str, object],
                       paths: list[tuple[str, ...]]) -> None:
    assert changed_paths(old, new) == paths


def test_deep_merge_keeps_siblings_and_does_not_alias() -> None:
    base = {"a": {"b": 1, "c": 2}, "l": [1]}
    merged = deep_merge(base, {"a": {"c": 3}, "d": 4})
    assert merged == {"a": {"b": 1, "c": 3}, "l": [1], "d": 4}
    merged["l"].append(2)
    assert base["l"] == [1]


@pytest.mark.parametrize(
    ("operation", "resource", "expected"),
    [("PublishToIoTCore", "r/x/y", True), ("PublishToIoTCore", "r/x", False),
     ("SubscribeToIoTCore", "r/x/y", False), ("PublishToTopic", "p/#", True),
     ("PublishToTopic", "p/a", False), ("SubscribeToTopic", "any", True)],
)
def test_authorized(operation: str, resource: str, expected: bool) -> None:
    access = {"AWS.Greengrass.IPC.MqttProxy": {"p1": {
        "Operations": ["aws.greengrass#PublishToIoTCore"], "Resources": ["r/+/y"]}},
        "aws.greengrass.ipc.pubsub": {
            "p2": {"operations": ["aws.greengrass#PublishToTopic"], "resources": ["p/#"]},
            "p3": {"operations": ["aws.greengrass#SubscribeToTopic"], "resources": ["*"]}}}
    assert authorized(access, operation, resource) is expected
