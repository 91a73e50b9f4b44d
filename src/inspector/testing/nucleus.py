"""An emulator of the Greengrass nucleus IPC server, for tests and laptops.

It listens on a Unix socket and speaks event-stream RPC exactly as the nucleus does, so the
unmodified ``awsiot.greengrasscoreipc`` clients (V1 and V2) connect to it. Operations served:
PublishToIoTCore, SubscribeToIoTCore, PublishToTopic, SubscribeToTopic, GetConfiguration,
UpdateConfiguration, SubscribeToConfigurationUpdate, SubscribeToValidateConfigurationUpdates,
SendConfigurationValidityReport, SubscribeToComponentUpdates, DeferComponentUpdate and
UpdateState; any other operation is answered with a ``ServiceError`` (as a nucleus without that
service would).

Deployments, as the nucleus runs them (each rule cites the nucleus source it models):
``deploy_configuration`` computes a component's configuration from its running one, the recipe's
DefaultConfiguration and the deployment's ``reset``/``merge`` (``ipcrules.resolve_configuration``)
and sends it to validators first when the version stays; ``notify_component_update`` sends
PreComponentUpdateEvent and honours DeferComponentUpdate; ``post_component_update`` ends it.

What it records: ``calls`` (every operation request), ``published`` (PublishToIoTCore and
PublishToTopic messages) and ``states`` (UpdateState values). Fault knobs: ``reject_connect``,
``delay_s[op]`` (``math.inf`` = never answer), ``error_for[op]`` (an error shape name),
``fail_next(op, ...)``, ``drop_connections()`` and ``restart()``. With
``enforce_access_control=True`` publish/subscribe calls are checked against the component's
``accessControl`` configuration, as the nucleus checks the recipe's policies.

Example::

    with NucleusEmulator(config={"MyComponent": {"threshold": 0.5}}) as nucleus:
        env = nucleus.env  # hand it to the component process
        ...
        result = nucleus.update_config("MyComponent", {"threshold": 0.7})
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import logging
import math
import os
import secrets
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from inspector.testing.eventstream import (
    Header,
    Message,
    MessageFlag,
    MessageType,
    rpc_message,
)
from inspector.testing.ipcrules import (
    ACCESS_SERVICES,
    SERVICE_PREFIX,
    authorized,
    changed_paths,
    deep_merge,
    lookup,
    resolve_configuration,
    topic_matches,
)
from inspector.testing.recording import Recording
from inspector.testing.rpcserver import RpcConnection, RpcServer

logger = logging.getLogger(__name__)

MAX_SOCKET_PATH_BYTES = 107  # sun_path is 108 bytes including the terminating NUL
ERROR_SHAPES = frozenset({
    "ServiceError", "UnauthorizedError", "ResourceNotFoundError", "InvalidArgumentsError",
    "ConflictError", "FailedUpdateConditionCheckError", "InvalidTokenError",
    "ComponentNotFoundError",
})


@dataclass(frozen=True)
class Call:
    """One operation request as the emulator received it (payload already JSON-decoded)."""

    operation: str  # short name, e.g. "PublishToIoTCore"
    request: dict[str, Any]
    component: str
    time_s: float  # time.monotonic() at receipt


@dataclass(frozen=True)
class PublishedMessage:
    """A message a component published: to IoT Core (MQTT) or to local pub/sub."""

    operation: str  # "PublishToIoTCore" | "PublishToTopic"
    topic: str
    payload: bytes  # the MQTT payload; for a PublishToTopic jsonMessage, its JSON text
    component: str
    qos: str | None = None  # "0" | "1" for PublishToIoTCore
    json_message: Any = None  # PublishToTopic jsonMessage.message, else None
    request: dict[str, Any] = field(default_factory=dict, repr=False)

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass(frozen=True)
class Deferral:
    """A DeferComponentUpdate a component sent for one PreComponentUpdateEvent."""

    component: str
    deployment_id: str
    message: str | None
    recheck_after_ms: int | None


@dataclass
class UpdateNotice:
    """The outcome of :meth:`NucleusEmulator.notify_component_update`.

    ``rounds``: PreComponentUpdateEvents sent (1 + the rechecks); ``deferrals``: every answer
    with a recheck time over 0; ``silent``: components that did not answer a round within the
    deployment's timeout (the nucleus then goes ahead without them).
    """

    deployment_id: str
    rounds: int = 0
    deferrals: list[Deferral] = field(default_factory=list)
    silent: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of :meth:`NucleusEmulator.update_config`.

    ``status`` is "ACCEPTED" or "REJECTED" (from the components' reports), "TIMED_OUT" (a
    validator did not answer in time, or disconnected: like the nucleus, the update proceeds) or
    "NO_VALIDATORS" (nobody subscribed: the update proceeds).
    """

    status: str
    message: str | None
    applied: bool
    deployment_id: str
    configuration: dict[str, Any] | None = field(default=None, compare=False, repr=False)


class _OperationError(Exception):
    def __init__(self, shape: str, message: str, **fields: str) -> None:
        super().__init__(message)
        self.shape = shape
        self.payload: dict[str, Any] = {"message": message, **fields}


@dataclass
class _Injected:
    shape: str
    message: str
    times: int


@dataclass
class _Stream:
    stream_id: int
    operation: str
    conn: RpcConnection
    kind: str = ""  # "iotcore" | "topic" | "config" | "validate" | "updates"; "" = one-shot
    ready: bool = False  # the response went out: events may follow
    topic: str = ""
    key_path: tuple[str, ...] = ()
    component: str = ""
    receive_mode: str = "RECEIVE_ALL_MESSAGES"


@dataclass
class _PendingValidation:
    component: str
    deployment_id: str
    waiting: set[int]  # ids of the connections still to report
    reports: list[tuple[str, str | None]] = field(default_factory=list)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: Any, what: str) -> bytes:
    if text is None:
        return b""
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _OperationError("InvalidArgumentsError", f"{what} is not base64") from exc


class NucleusEmulator(Recording):
    """The Greengrass nucleus IPC server, emulated. Thread-safe; a context manager.

    Args:
        socket_path: where to listen; default a fresh short path under /tmp (a Unix socket path
            must stay under 108 bytes, pytest's tmp_path often does not).
        svcuid: the token of ``component_name``; default a random one.
        component_name: the component the token belongs to.
        config: component name -> its configuration (what GetConfiguration serves).
        thing_name, region: the values ``env`` hands to the component.
        validation_timeout_s: how long ``update_config`` waits for validity reports.
        enforce_access_control: authorize publish/subscribe calls against the ``accessControl``
            key of the caller's configuration (the recipe's DefaultConfiguration), as the nucleus
            does: a call no policy allows fails with ``UnauthorizedError``.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str] | None = None,
        *,
        svcuid: str | None = None,
        component_name: str = "com.example.Component",
        config: dict[str, dict[str, Any]] | None = None,
        thing_name: str = "emulated-thing",
        region: str = "us-east-1",
        validation_timeout_s: float = 5.0,
        enforce_access_control: bool = False,
    ) -> None:
        self._own_dir: str | None = None
        if socket_path is None:
            self._own_dir = tempfile.mkdtemp(prefix="ggipc-", dir="/tmp")
            socket_path = os.path.join(self._own_dir, "ipc.socket")
        self.socket_path = os.fspath(socket_path)
        if len(os.fsencode(self.socket_path)) > MAX_SOCKET_PATH_BYTES:
            raise ValueError(
                f"socket path is {len(os.fsencode(self.socket_path))} bytes, over "
                f"{MAX_SOCKET_PATH_BYTES}: pick a shorter one (e.g. under /tmp)"
            )
        self.svcuid = svcuid or secrets.token_urlsafe(24)
        self.component_name = component_name
        self.thing_name = thing_name
        self.region = region
        self.validation_timeout_s = validation_timeout_s
        self.enforce_access_control = enforce_access_control
        # token -> component; add_component() adds more
        self.tokens: dict[str, str] = {self.svcuid: component_name}
        self.config: dict[str, dict[str, Any]] = copy.deepcopy(config or {})
        self.config.setdefault(component_name, {})
        self.versions: dict[str, str] = {}  # component -> version deployed (deploy_configuration)

        # recordings
        self.calls: list[Call] = []
        self.published: list[PublishedMessage] = []
        self.states: list[str] = []
        self.component_states: dict[str, list[str]] = {}  # UpdateState values by component
        self.validations: list[ValidationResult] = []
        self.update_notices: list[UpdateNotice] = []
        self.deferrals: list[Deferral] = []
        # (component, deploymentId) -> the answer to the PreComponentUpdateEvent of this round;
        # None while it is awaited (LifecycleIPCEventStreamAgent.deferUpdateFuturesMap)
        self._defer_waiting: dict[tuple[str, str], Deferral | None] = {}

        # fault knobs: plain attributes, change them at any time
        self.reject_connect = False
        self.delay_s: dict[str, float] = {}
        self.error_for: dict[str, str] = {}
        self._injected: dict[str, list[_Injected]] = {}

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._pending: dict[str, _PendingValidation] = {}
        self._server = RpcServer(
            self.socket_path, authenticate=self._authenticate, on_request=self._on_request,
            on_stream_closed=self._on_stream_closed, on_disconnect=self._on_disconnect,
        )
        self.connect_count = 0  # accepted CONNECTs since construction

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> NucleusEmulator:
        if self._server.running:
            return self
        self._server.start()
        logger.info("nucleus emulator listening on %s", self.socket_path)
        return self

    def stop(self) -> None:
        """Stop listening and drop every connection; recordings and configuration stay."""
        self._server.stop()

    def close(self) -> None:
        """stop() and remove the temporary socket folder this emulator created."""
        self.stop()
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None

    def restart(self, down_s: float = 0.2) -> None:
        """Drop all connections, stay unreachable for ``down_s`` seconds, listen again."""
        logger.info("nucleus emulator restarting (down %.2f s)", down_s)
        self.stop()
        time.sleep(down_s)
        self.start()

    def __enter__(self) -> NucleusEmulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._server.running

    @property
    def env(self) -> dict[str, str]:
        """The environment variables the nucleus gives a component process."""
        return {
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": self.socket_path,
            "SVCUID": self.svcuid,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": self.svcuid,
            "AWS_IOT_THING_NAME": self.thing_name,
            "AWS_REGION": self.region,
            "AWS_DEFAULT_REGION": self.region,
        }

    def add_component(self, name: str, config: dict[str, Any] | None = None) -> str:
        """Register another component; returns its token (its SVCUID)."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = name
            self.config.setdefault(name, copy.deepcopy(config or {}))
        return token

    # ------------------------------------------------------------- fault knobs

    def drop_connections(self) -> None:
        """Close every client connection now (the clients see a disconnect)."""
        dropped = self._server.drop_connections()
        if dropped:
            logger.info("nucleus emulator dropped %d connection(s)", dropped)

    def fail_next(
        self, operation: str, shape: str = "ServiceError", *, times: int = 1,
        message: str = "injected by the nucleus emulator",
    ) -> None:
        """Answer the next ``times`` calls of ``operation`` with the error ``shape``."""
        shape = _short(shape)
        if shape not in ERROR_SHAPES:
            raise ValueError(f"unknown error shape {shape!r}; one of {sorted(ERROR_SHAPES)}")
        with self._lock:
            queue = self._injected.setdefault(_short(operation), [])
            queue.append(_Injected(shape, message, times))

    # ------------------------------------------------------------------ queries

    def wait_for_published(self, count: int = 1, timeout_s: float = 5.0) -> list[PublishedMessage]:
        """Wait until at least ``count`` messages were published; returns them all."""
        self.wait_until(lambda: len(self.published) >= count, timeout_s)
        with self._lock:
            if len(self.published) < count:
                raise TimeoutError(f"{len(self.published)} of {count} messages published")
            return list(self.published)

    def subscriber_count(self, operation: str | None = None) -> int:
        """Open subscriptions (of one operation, e.g. "SubscribeToConfigurationUpdate")."""
        wanted = _short(operation) if operation else None
        return sum(
            1 for stream in self._subscriptions() if wanted is None or stream.operation == wanted
        )

    @property
    def connection_count(self) -> int:
        return sum(1 for c in self._server.connections() if c.principal is not None)

    # ------------------------------------------------------- emulator-side events

    def update_config(
        self, component: str, new_config: dict[str, Any], *, merge: bool = False,
        timeout_s: float | None = None,
    ) -> ValidationResult:
        """Deploy a new configuration the way the nucleus does.

        1. Sends the proposed configuration to the component's SubscribeToValidateConfiguration-
           Updates subscribers and waits (``timeout_s``, default ``validation_timeout_s``) for
           their SendConfigurationValidityReport.
        2. Only if none rejected: applies it (replace, or deep-merge with ``merge=True``) and sends
           a configurationUpdateEvent per changed key to SubscribeToConfigurationUpdate subscribers.
        """
        with self._lock:
            current = self.config.get(component, {})
            proposed = deep_merge(current, new_config) if merge else copy.deepcopy(new_config)
        return self._validate_and_apply(component, proposed, timeout_s, validate=True)

    def deploy_configuration(
        self, component: str, *, version: str, default_configuration: dict[str, Any] | None,
        reset: list[str] | tuple[str, ...] = (), merge: dict[str, Any] | None = None,
        timeout_s: float | None = None, apply: bool = True,
    ) -> ValidationResult:
        """A deployment of ``component`` at ``version``, configuration-wise, as the nucleus does it.

        The configuration is resolved from the running one, the recipe's ``default_configuration``
        and the deployment's configurationUpdate (``reset`` JSON pointers, then ``merge``): see
        ``ipcrules.resolve_configuration``. Validators are asked only when the version stays and
        the configuration changes (DynamicComponentConfigurationValidator.getComponentsToValidate:
        a component whose version changes restarts and reads its configuration anyway). With
        ``apply=False`` nothing changes (``result.configuration`` is what would be applied).
        """
        with self._lock:
            current = self.config.get(component)
            same_version = self.versions.get(component) == version
        proposed, problems = resolve_configuration(
            current if component in self.versions or current else None,
            default_configuration, reset=reset, merge=merge,
        )
        for problem in problems:
            logger.error("deployment of %s %s: %s", component, version, problem)
        if not apply:
            return ValidationResult("NOT_APPLIED", None, False, "", proposed)
        changed = current is None or bool(changed_paths(current, proposed))
        result = self._validate_and_apply(
            component, proposed, timeout_s, validate=same_version and changed,
        )
        if result.applied:
            with self._lock:
                self.versions[component] = version
        return result

    def validate_configuration(
        self, component: str, proposed: dict[str, Any], timeout_s: float | None = None,
    ) -> ValidationResult:
        """Only step 1 of ``update_config``: ask the component's validators, apply nothing."""
        return self._validate_and_apply(component, proposed, timeout_s, validate=True,
                                        apply=False)

    def _validate_and_apply(
        self, component: str, proposed: dict[str, Any], timeout_s: float | None, *,
        validate: bool, apply: bool = True,
    ) -> ValidationResult:
        timeout = self.validation_timeout_s if timeout_s is None else timeout_s
        with self._lock:
            validators = [
                s for s in self._subscriptions()
                if validate and s.kind == "validate" and s.component == component
            ]
            deployment_id = str(uuid.uuid4())
            pending = _PendingValidation(
                component, deployment_id, {s.conn.number for s in validators}
            )
            if validators:
                self._pending[deployment_id] = pending
        event = {"validateConfigurationUpdateEvent": {
            "configuration": proposed, "deploymentId": deployment_id,
        }}
        for stream in validators:
            self._send_event(stream, "ValidateConfigurationUpdateEvents", event)
        status, message = "NO_VALIDATORS", None
        if validators:
            done = self.wait_until(lambda: not pending.waiting, timeout)
            with self._lock:
                self._pending.pop(deployment_id, None)
                rejected = [m for s, m in pending.reports if s != "ACCEPTED"]
            if rejected:
                status, message = "REJECTED", rejected[0]
            elif not done or len(pending.reports) < len(validators):
                status = "TIMED_OUT"  # silent, or gone without a report: the update proceeds
            else:
                status = "ACCEPTED"
                message = next((m for _, m in pending.reports if m), None)
        applied = apply and status != "REJECTED"
        result = ValidationResult(status, message, applied, deployment_id, proposed)
        logger.info("configuration update of %s: %s %s", component, status, message or "")
        if applied:
            self._apply_config(component, proposed)
        with self._changed:
            self.validations.append(result)
            self._changed.notify_all()
        return result

    def notify_component_update(
        self, deployment_id: str | None = None, *, timeout_s: float = 60.0,
        is_ggc_restarting: bool = False,
    ) -> UpdateNotice:
        """Tell the SubscribeToComponentUpdates subscribers that a deployment is about to update
        components, and wait until they let it go. Blocks; returns what happened.

        Modelled on UpdateSystemPolicyService.startup/getTimeToReCheck and
        LifecycleIPCEventStreamAgent.sendPreComponentUpdateEvent (aws-greengrass-nucleus,
        src/main/java/com/aws/greengrass/lifecyclemanager/UpdateSystemPolicyService.java): each
        round sends a PreComponentUpdateEvent {deploymentId, isGgcRestarting} to every subscriber
        and waits up to ``timeout_s`` (the deployment's componentUpdatePolicy timeoutInSeconds,
        60 by default) for each one's DeferComponentUpdate. If the longest recheckAfterMs is over
        0, the nucleus sleeps that long and starts another round; otherwise (all answered 0, or
        the silent ones ran out of time) the update goes ahead. A component may defer again and
        again: the nucleus sets no overall limit. The real nucleus polls the answers once a
        second; this one wakes on each answer.
        """
        notice = UpdateNotice(deployment_id or str(uuid.uuid4()))
        while True:
            streams = [s for s in self._subscriptions() if s.kind == "updates"]
            components = sorted({s.component for s in streams})
            if not components:
                break
            with self._changed:
                self._defer_waiting = {(c, notice.deployment_id): None for c in components}
            notice.rounds += 1
            event = {"preUpdateEvent": {"deploymentId": notice.deployment_id,
                                        "isGgcRestarting": is_ggc_restarting}}
            for stream in streams:
                self._send_event(stream, "ComponentUpdatePolicyEvents", event)
            self.wait_until(
                lambda: all(v is not None for v in self._defer_waiting.values()), timeout_s
            )
            with self._changed:
                answers = dict(self._defer_waiting)
                self._defer_waiting = {}
            silent = [c for (c, _), answer in answers.items() if answer is None]
            notice.silent += silent
            recheck_ms = 0
            for answer in answers.values():
                if answer is not None and answer.recheck_after_ms:
                    notice.deferrals.append(answer)
                    recheck_ms = max(recheck_ms, answer.recheck_after_ms)
            if silent:
                logger.info("component update %s: no answer from %s in %.0f s; going ahead "
                            "without them", notice.deployment_id, ", ".join(silent), timeout_s)
            if recheck_ms <= 0:
                break
            logger.info("component update %s deferred for %d ms", notice.deployment_id,
                        recheck_ms)
            time.sleep(recheck_ms / 1000.0)
        with self._changed:
            self.update_notices.append(notice)
            self._changed.notify_all()
        return notice

    def post_component_update(self, deployment_id: str) -> int:
        """Send PostComponentUpdateEvent {deploymentId} to every SubscribeToComponentUpdates
        subscriber (UpdateSystemPolicyService.runUpdateActions, after the update ran); returns
        how many got it."""
        count = 0
        for stream in self._subscriptions():
            if stream.kind == "updates":
                self._send_event(stream, "ComponentUpdatePolicyEvents",
                                 {"postUpdateEvent": {"deploymentId": deployment_id}})
                count += 1
        return count

    def set_config(self, component: str, new_config: dict[str, Any]) -> None:
        """Apply a configuration without validation (events still go to update subscribers)."""
        self._apply_config(component, copy.deepcopy(new_config))

    def publish_from_cloud(self, topic: str, payload: bytes) -> int:
        """Deliver an MQTT message from IoT Core to matching SubscribeToIoTCore subscribers."""
        return self._deliver_iot_core(topic, payload)

    def publish_local(self, topic: str, message: Any) -> int:
        """Deliver a local pub/sub message (bytes: binaryMessage, else jsonMessage)."""
        return self._deliver_topic(topic, message, source=None)

    # --------------------------------------------------------- server callbacks

    def _authenticate(self, conn: RpcConnection, message: Message) -> str | None:
        try:
            token = json.loads(message.payload or b"{}").get("authToken")
        except (ValueError, AttributeError):
            token = None
        component = self.tokens.get(token) if isinstance(token, str) else None
        if self.reject_connect or component is None:
            logger.info("nucleus emulator: connection %d rejected (%s)", conn.number,
                        "reject_connect" if self.reject_connect else "bad token")
            return None
        with self._changed:
            self.connect_count += 1
            self._changed.notify_all()
        logger.debug("nucleus emulator: %s connected (connection %d)", component, conn.number)
        return component

    def _on_request(
        self, conn: RpcConnection, stream_id: int, operation: str, message: Message
    ) -> None:
        stream = _Stream(stream_id, _short(operation), conn)
        with self._lock:
            conn.streams[stream_id] = stream
        self._dispatch(stream, message)

    def _on_stream_closed(self, conn: RpcConnection, stream_id: int) -> None:
        with self._changed:
            conn.streams.pop(stream_id, None)
            self._changed.notify_all()

    def _on_disconnect(self, conn: RpcConnection) -> None:
        with self._changed:
            for pending in self._pending.values():
                pending.waiting.discard(conn.number)
            self._changed.notify_all()

    # -------------------------------------------------------------- operations

    def _dispatch(self, stream: _Stream, message: Message) -> None:
        try:
            request = json.loads(message.payload or b"{}")
            if not isinstance(request, dict):
                raise ValueError("not an object")
        except ValueError:
            request = {"_unparsed": message.payload.decode("utf-8", "replace")}
        assert stream.conn.principal is not None
        with self._changed:
            call = Call(stream.operation, request, stream.conn.principal, time.monotonic())
            self.calls.append(call)
            self._changed.notify_all()
        delay = self.delay_s.get(stream.operation, 0.0)
        if delay > 0:
            threading.Thread(
                target=self._delayed, args=(stream, request, delay), daemon=True,
                name=f"nucleus-delay-{stream.operation}",
            ).start()
        else:
            self._execute(stream, request)

    def _delayed(self, stream: _Stream, request: dict[str, Any], delay: float) -> None:
        closed = stream.conn.closed.wait(None if math.isinf(delay) else delay)
        if not closed:
            self._execute(stream, request)

    def _execute(self, stream: _Stream, request: dict[str, Any]) -> None:
        operation = stream.operation
        try:
            injected = self._take_injected(operation)
            if injected is not None:
                raise _OperationError(injected[0], injected[1])
            handler = self._handlers().get(operation)
            if handler is None:
                raise _OperationError(
                    "ServiceError", f"operation {operation} is not served by the nucleus emulator"
                )
            response = handler(stream, request)
        except _OperationError as exc:
            logger.info("nucleus emulator: %s -> %s: %s", operation, exc.shape, exc)
            self._send_error(stream, exc)
            return
        if stream.conn.streams.get(stream.stream_id) is not stream:
            return  # the client closed the stream meanwhile
        terminate = not stream.kind
        # The response and the ready flag under one lock: a client holding its response always
        # finds its subscription counted, and an event listed afterwards follows the response.
        with self._changed:
            stream.conn.send(rpc_message(
                MessageType.APPLICATION_MESSAGE, stream.stream_id,
                MessageFlag.TERMINATE_STREAM if terminate else MessageFlag.NONE,
                _json_headers(f"{operation}Response"), json.dumps(response).encode(),
            ))
            if terminate:
                stream.conn.streams.pop(stream.stream_id, None)
            else:
                stream.ready = True
            self._changed.notify_all()

    def _take_injected(self, operation: str) -> tuple[str, str] | None:
        with self._lock:
            queue = self._injected.get(operation)
            if queue:
                head = queue[0]
                head.times -= 1
                if head.times <= 0:
                    queue.pop(0)
                return head.shape, head.message
        shape = self.error_for.get(operation)
        if shape:
            return _short(shape), "injected by the nucleus emulator"
        return None

    def _send_error(self, stream: _Stream, error: _OperationError) -> None:
        stream.conn.send(rpc_message(
            MessageType.APPLICATION_ERROR, stream.stream_id, MessageFlag.TERMINATE_STREAM,
            _json_headers(error.shape), json.dumps(error.payload).encode(),
        ))
        with self._lock:
            stream.conn.streams.pop(stream.stream_id, None)

    def _send_event(self, stream: _Stream, shape: str, payload: dict[str, Any]) -> None:
        stream.conn.send(rpc_message(
            MessageType.APPLICATION_MESSAGE, stream.stream_id, MessageFlag.NONE,
            _json_headers(shape), json.dumps(payload).encode(),
        ))

    def _handlers(self) -> dict[str, Callable[[_Stream, dict[str, Any]], dict[str, Any]]]:
        return {
            "PublishToIoTCore": self._publish_to_iot_core,
            "SubscribeToIoTCore": self._subscribe_to_iot_core,
            "PublishToTopic": self._publish_to_topic,
            "SubscribeToTopic": self._subscribe_to_topic,
            "GetConfiguration": self._get_configuration,
            "UpdateConfiguration": self._update_configuration,
            "SubscribeToConfigurationUpdate": self._subscribe_to_configuration_update,
            "SubscribeToValidateConfigurationUpdates": self._subscribe_to_validate,
            "SendConfigurationValidityReport": self._send_validity_report,
            "SubscribeToComponentUpdates": self._subscribe_to_component_updates,
            "DeferComponentUpdate": self._defer_component_update,
            "UpdateState": self._update_state,
        }

    def _record_publish(self, published: PublishedMessage) -> None:
        with self._changed:
            self.published.append(published)
            self._changed.notify_all()
        logger.info(
            "%s from %s: topic=%s qos=%s %d bytes", published.operation, published.component,
            published.topic, published.qos, len(published.payload),
        )

    def _publish_to_iot_core(self, stream: _Stream, request: dict[str, Any]) -> dict[str, Any]:
        topic = request.get("topicName")
        if not isinstance(topic, str) or not topic:
            raise _OperationError("InvalidArgumentsError", "topicName is required")
        if "+" in topic or "#" in topic:
            raise _OperationError("InvalidArgumentsError", "a publish topic cannot hold wildcards")
        qos = request.get("qos")
        if qos not in (None, "0", "1"):
            raise _OperationError("InvalidArgumentsError", f"qos must be '0' or '1', not {qos!r}")
        payload = _unb64(request.get("payload"), "payload")
        assert stream.conn.principal is not None
        self._authorize(stream, topic)
        self._record_publish(PublishedMessage(
            "PublishToIoTCore", topic, payload, stream.conn.principal, qos=qos, request=request,
        ))
        self._deliver_iot_core(topic, payload)
        return {}

    def _subscribe_to_iot_core(self, stream: _Stream, request: dict[str, Any]) -> dict[str, Any]:
        topic = request.get("topicName")
        if not isinstance(topic, str) or not topic:
            raise _OperationError("InvalidArgumentsError", "topicName is required")
        self._authorize(stream, topic)
        stream.kind, stream.topic = "iotcore", topic
        return {}

    def _publish_to_topic(self, stream: _Stream, request: dict[str, Any]) -> dict[str, Any]:
        topic = request.get("topic")
        publish = request.get("publishMessage")
        if not isinstance(topic, str) or not topic or not isinstance(publish, dict):
            raise _OperationError("InvalidArgumentsError", "topic and publishMessage are required")
        assert stream.conn.principal is not None
        self._authorize(stream, topic)
        message: Any
        if isinstance(publish.get("jsonMessage"), dict):
            message = publish["jsonMessage"].get("message")
            record = PublishedMessage(
                "PublishToTopic", topic, json.dumps(message).encode(), stream.conn.principal,
                json_message=message, request=request,
            )
        elif isinstance(publish.get("binaryMessage"), dict):
            message = _unb64(publish["binaryMessage"].get("message"), "binaryMessage.message")
            record = PublishedMessage(
                "PublishToTopic", topic, message, stream.conn.principal, request=request,
            )
        else:
            raise _OperationError("InvalidArgumentsError", "publishMessage needs a message")
        self._record_publish(record)
        self._deliver_topic(topic, message, source=stream.conn)
        return {}

    def _subscribe_to_topic(self, stream: _Stream, request: dict[str, Any]) -> dict[str, Any]:
        topic = request.get("topic")
        if not isinstance(topic, str) or not topic:
            raise _OperationError("InvalidArgumentsError", "topic is required")
        self._authorize(stream, topic)
        stream.kind, stream.topic = "topic", topic
        stream.receive_mode = str(request.get("receiveMode") or "RECEIVE_ALL_MESSAGES")
        return {"topicName": topic}

    def _authorize(self, stream: _Stream, resource: str) -> None:
        if not self.enforce_access_control:
            return
        component = stream.conn.principal
        assert component is not None
        with self._lock:
            found, access = lookup(self.config.get(component, {}), ("accessControl",))
        if not authorized(access if found else None, stream.operation, resource):
            raise _OperationError(
                "UnauthorizedError",
                f"Principal {component} is not authorized to perform "
                f"{ACCESS_SERVICES[stream.operation]}:{SERVICE_PREFIX}{stream.operation} on "
                f"resource {resource}",
            )

    def _component_arg(self, stream: _Stream, request: dict[str, Any]) -> str:
        name = request.get("componentName") or stream.conn.principal
        assert isinstance(name, str)
        return name

    @staticmethod
    def _key_path(request: dict[str, Any]) -> tuple[str, ...]:
        key_path = request.get("keyPath") or []
        if not isinstance(key_path, list) or not all(isinstance(k, str) for k in key_path):
            raise _OperationError("InvalidArgumentsError", "keyPath must be a list of strings")
        return tuple(key_path)

    def _get_configuration(self, stream: _Stream, request: dict[str, Any]) -> dict[str, Any]:
        component = self._component_arg(stream, request)
        key_path = self._key_path(request)
        with self._lock:
            if component not in self.config:
                raise _OperationError(
                    "ResourceNotFoundError", f"component {component} has no configuration",
                    resourceType="Component", resourceName=component,
                )
            found, value = lookup(self.config[component], key_path)
            value = copy.deepcopy(value)
        if not found:
            raise _OperationError(
                "ResourceNotFoundError", "Key not found", resourceType="Configuration",
                resourceName="/".join(key_path),
            )
        if not isinstance(value, dict):
            # a leaf comes back wrapped in its own key, as the nucleus does
            value = {key_path[-1]: value}
        return {"componentName": component, "value": value}

    def _update_configuration(self, stream: _Stream, request: dict[str, Any]) -> dict[str, Any]:
        component = stream.conn.principal
        assert component is not None
        key_path = self._key_path(request)
        value = request.get("valueToMerge")
        if value is None:
            raise _OperationError("InvalidArgumentsError", "valueToMerge is required")
        update: Any = value
        for key in reversed(key_path):
            update = {key: update}
        with self._lock:
            current = self.config.get(component, {})
            if not isinstance(update, dict):
                raise _OperationError("InvalidArgumentsError", "the root must be an object")
            proposed = deep_merge(current, update)
        self._apply_config(component, proposed)
        return {}

    def _subscribe_to_configuration_update(
        self, stream: _Stream, request: dict[str, Any],
    ) -> dict[str, Any]:
        component = self._component_arg(stream, request)
        key_path = self._key_path(request)
        with self._lock:
            found, _ = lookup(self.config.get(component, {}), key_path)
        if component not in self.config or not found:
            raise _OperationError(
                "ResourceNotFoundError", "Key not found", resourceType="Configuration",
                resourceName="/".join(key_path),
            )
        stream.kind, stream.component, stream.key_path = "config", component, key_path
        return {}

    def _subscribe_to_validate(self, stream: _Stream, request: dict[str, Any]) -> dict[str, Any]:
        assert stream.conn.principal is not None
        stream.kind, stream.component = "validate", stream.conn.principal
        return {}

    def _send_validity_report(self, stream: _Stream, request: dict[str, Any]) -> dict[str, Any]:
        report = request.get("configurationValidityReport")
        if not isinstance(report, dict) or report.get("status") not in ("ACCEPTED", "REJECTED"):
            raise _OperationError(
                "InvalidArgumentsError", "configurationValidityReport.status must be given"
            )
        deployment_id = report.get("deploymentId")
        with self._changed:
            candidates = [
                p for p in self._pending.values()
                if p.component == stream.conn.principal
                and (deployment_id is None or p.deployment_id == deployment_id)
            ]
            if not candidates:
                raise _OperationError(
                    "InvalidArgumentsError",
                    "Validation request either timed out or was never made",
                )
            pending = candidates[0]
            pending.reports.append((report["status"], report.get("message")))
            pending.waiting.discard(stream.conn.number)
            self._changed.notify_all()
        return {}

    def _subscribe_to_component_updates(
        self, stream: _Stream, request: dict[str, Any],
    ) -> dict[str, Any]:
        assert stream.conn.principal is not None
        stream.kind, stream.component = "updates", stream.conn.principal
        return {}

    def _defer_component_update(self, stream: _Stream, request: dict[str, Any]) -> dict[str, Any]:
        # LifecycleIPCEventStreamAgent.deferComponentUpdate: the caller must be subscribed, the
        # deploymentId must be given and must name the round being waited for
        component = stream.conn.principal
        assert component is not None
        if not any(s.kind == "updates" and s.component == component
                   for s in self._subscriptions()):
            raise _OperationError("InvalidArgumentsError",
                                  "Component is not subscribed to component update events")
        deployment_id = request.get("deploymentId")
        if not isinstance(deployment_id, str):
            raise _OperationError("InvalidArgumentsError",
                                  "Cannot defer the update, the deployment ID provided was null")
        recheck = request.get("recheckAfterMs")
        deferral = Deferral(component, deployment_id, request.get("message"),
                            None if recheck is None else int(recheck))
        with self._changed:
            key = (component, deployment_id)
            if self._defer_waiting.get(key, deferral) is not None:
                raise _OperationError("ServiceError",
                                      "Time limit to respond to PreComponentUpdateEvent exceeded")
            self._defer_waiting[key] = deferral
            self.deferrals.append(deferral)
            self._changed.notify_all()
        logger.info("DeferComponentUpdate from %s: %s ms (%s)", component,
                    deferral.recheck_after_ms, deferral.message or "")
        return {}

    def _update_state(self, stream: _Stream, request: dict[str, Any]) -> dict[str, Any]:
        state = request.get("state")
        if state not in ("RUNNING", "ERRORED"):
            raise _OperationError(
                "InvalidArgumentsError", f"state must be RUNNING or ERRORED, not {state!r}"
            )
        with self._changed:
            self.states.append(state)
            self.component_states.setdefault(stream.conn.principal or "", []).append(state)
            self._changed.notify_all()
        logger.info("UpdateState from %s: %s", stream.conn.principal, state)
        return {}

    # -------------------------------------------------------------- delivery

    def _subscriptions(self) -> Iterator[_Stream]:
        connections = self._server.connections()
        with self._lock:
            streams = [
                s for conn in connections for s in conn.streams.values() if s.kind and s.ready
            ]
        return iter(streams)

    def _deliver_iot_core(self, topic: str, payload: bytes) -> int:
        count = 0
        event = {"message": {"topicName": topic, "payload": _b64(payload)}}
        for stream in self._subscriptions():
            if stream.kind == "iotcore" and topic_matches(stream.topic, topic):
                self._send_event(stream, "IoTCoreMessage", event)
                count += 1
        return count

    def _deliver_topic(self, topic: str, message: Any, source: RpcConnection | None) -> int:
        body: dict[str, Any]
        if isinstance(message, bytes | bytearray):
            body = {"binaryMessage": {"message": _b64(bytes(message)), "context": {"topic": topic}}}
        else:
            body = {"jsonMessage": {"message": message, "context": {"topic": topic}}}
        count = 0
        for stream in self._subscriptions():
            if stream.kind != "topic" or not topic_matches(stream.topic, topic):
                continue
            if stream.receive_mode == "RECEIVE_MESSAGES_FROM_OTHERS" and stream.conn is source:
                continue
            self._send_event(stream, "SubscriptionResponseMessage", body)
            count += 1
        return count

    def _apply_config(self, component: str, new_config: dict[str, Any]) -> None:
        with self._lock:
            old = self.config.get(component, {})
            self.config[component] = new_config
            changed = changed_paths(old, new_config)
        for path in changed:
            for stream in self._subscriptions():
                if stream.kind != "config" or stream.component != component:
                    continue
                n = min(len(path), len(stream.key_path))
                if path[:n] != stream.key_path[:n]:
                    continue
                self._send_event(stream, "ConfigurationUpdateEvents", {
                    "configurationUpdateEvent": {"componentName": component, "keyPath": list(path)},
                })


def _short(name: str) -> str:
    return name[len(SERVICE_PREFIX):] if name.startswith(SERVICE_PREFIX) else name


def _json_headers(shape: str) -> tuple[Header, ...]:
    return (
        Header.string(":content-type", "application/json"),
        Header.string("service-model-type", SERVICE_PREFIX + _short(shape)),
    )
