"""A thin wrapper around the Greengrass IPC client: timeouts, retries and reconnection.

    ipc = IpcClient(connect_ipc)           # connect_ipc(on_disconnect) -> GreengrassCoreIPCClientV2
    ipc.start(wait_s=30)                   # first connection (raises IpcUnavailable)
    ipc.publish_to_iot_core("a/b", b"{}")  # QoS 1, answered within timeout_s or IpcTimeout
    ipc.close()

Every call uses the SDK's ``*_async`` form and waits ``timeout_s`` for the answer (the synchronous
forms wait forever on a silent nucleus). Calls are retried with exponential backoff (tenacity) on
``IpcUnavailable`` and on the nucleus's ``ServiceError``; a timeout is never retried here, since
the call may have happened (the caller decides: the MQTT sink re-sends from its spool).

When the connection drops (nucleus restart), a keeper thread reconnects with backoff, opens the
subscriptions again and tells the ``on_reconnect`` listeners (the MQTT sink flushes its spool).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from awscrt.exceptions import AwsCrtError
from awsiot.eventstreamrpc import (
    ConnectionClosedError,
    EventStreamError,
    EventStreamOperationError,
    StreamClosedError,
)
from awsiot.greengrasscoreipc import model
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    stop_when_event_set,
    wait_exponential,
)

from inspector.errors import IpcError, IpcRejected, IpcTimeout, IpcUnavailable

logger = logging.getLogger(__name__)

# connect(on_disconnect) -> a connected GreengrassCoreIPCClientV2; raises when it cannot connect
Connector = Callable[[Callable[[], None]], Any]


@dataclass
class _Subscription:
    name: str
    open: Callable[[Any], tuple[concurrent.futures.Future[Any], Any]]  # client -> (fut, op)
    operation: Any = None


class IpcClient:
    """Timeouts, retries and reconnection around a ``GreengrassCoreIPCClientV2``. Thread-safe."""

    def __init__(
        self,
        connect: Connector,
        *,
        timeout_s: float = 10.0,
        attempts: int = 3,
        backoff_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._connect = connect
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self._lock = threading.Lock()
        self._client: Any = None
        self._generation = 0  # changes with every connection
        self._connected = threading.Event()
        self._wake = threading.Event()  # the keeper has something to do
        self._closing = threading.Event()
        self._subscriptions: list[_Subscription] = []
        self._listeners: list[Callable[[], None]] = []
        self._keeper: threading.Thread | None = None
        self.reconnects = 0

    # --- connection --------------------------------------------------------------------------

    def start(self, wait_s: float = 30.0) -> None:
        """Connect (retrying with backoff for up to ``wait_s``) and start the keeper thread.

        Says at once that it is connecting, and after the first failed attempt why and for how
        long it keeps trying, so a missing nucleus is never a silent wait.
        """
        logger.info("connecting to the Greengrass nucleus (retrying for up to %.0f s)", wait_s)
        failures = 0

        def before_sleep(state: Any) -> None:
            nonlocal failures
            failures += 1
            error = state.outcome.exception() if state.outcome is not None else None
            logger.log(logging.WARNING if failures == 1 else logging.DEBUG,
                       "cannot connect to the Greengrass nucleus yet (%r); retrying for up to "
                       "%.0f s", error, wait_s)

        try:
            for attempt in Retrying(
                stop=stop_after_delay(wait_s) | stop_when_event_set(self._closing),
                wait=self._wait(), reraise=True, sleep=self._sleep, before_sleep=before_sleep,
            ):
                with attempt:
                    self._open()
        except Exception as exc:
            raise IpcUnavailable(f"cannot connect to the Greengrass nucleus: {exc!r}") from exc
        self._keeper = threading.Thread(target=self._keep, name="ipc-keeper", daemon=True)
        self._keeper.start()

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float | None = None) -> bool:
        return self._connected.wait(timeout_s)

    def on_reconnect(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` (on the keeper thread) after every reconnection."""
        with self._lock:
            self._listeners.append(listener)

    def close(self) -> None:
        self._closing.set()
        self._wake.set()
        with self._lock:
            operations = [s.operation for s in self._subscriptions if s.operation is not None]
        # Close the streams first: a stream closing after the client shut its executor makes
        # the SDK raise from its network thread ("cannot schedule new futures after shutdown").
        for operation in operations:
            try:
                operation.close().result(1.0)
            except Exception:
                logger.debug("closing a subscription failed", exc_info=True)
        with self._lock:
            client, self._client = self._client, None
            self._connected.clear()
        if client is not None:
            _close_quietly(client)
        if self._keeper is not None:
            self._keeper.join(timeout=2.0)

    def _sleep(self, seconds: float) -> None:
        self._closing.wait(seconds)

    def _wait(self) -> Any:
        return wait_exponential(multiplier=self.backoff_s, min=self.backoff_s,
                                max=self.backoff_max_s)

    def _open(self) -> None:
        with self._lock:
            generation = self._generation + 1
        client = self._connect(lambda: self._lost(generation))
        with self._lock:
            old, self._client = self._client, client
            self._generation = generation
            self._connected.set()
        if old is not None:
            _close_quietly(old)
        logger.info("connected to the Greengrass nucleus")

    def _lost(self, generation: int | None = None) -> None:
        """The connection of ``generation`` (None: the current one) is gone."""
        with self._lock:
            if generation is not None and generation != self._generation:
                return
            if not self._connected.is_set():
                return
            self._connected.clear()
        if not self._closing.is_set():
            logger.warning("lost the connection to the Greengrass nucleus; reconnecting")
        self._wake.set()

    def _keep(self) -> None:
        while not self._closing.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._closing.is_set():
                return
            try:
                if not self._connected.is_set():
                    if not self._reconnect():
                        return
                    self._notify()
                self._resubscribe()
            except Exception:  # the keeper must outlive any one failure
                logger.exception("IPC keeper: unexpected error; trying again")
                self._closing.wait(self.backoff_max_s)
                self._wake.set()

    def _reconnect(self) -> bool:
        try:
            for attempt in Retrying(
                stop=stop_when_event_set(self._closing), wait=self._wait(), reraise=True,
                sleep=self._sleep,
                before_sleep=lambda state: logger.debug(
                    "reconnect failed: %r", state.outcome.exception() if state.outcome else None),
            ):
                with attempt:
                    self._open()
        except Exception:
            return False  # closing
        self.reconnects += 1
        with self._lock:
            for sub in self._subscriptions:
                sub.operation = None  # those streams died with the connection
        return not self._closing.is_set()

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for listener in listeners:
            try:
                listener()
            except Exception:
                logger.exception("reconnect listener failed")

    def _resubscribe(self) -> None:
        with self._lock:
            pending = [s for s in self._subscriptions if s.operation is None]
        for sub in pending:
            if not self._connected.is_set():
                self._wake.set()
                return
            try:
                self._subscribe(sub)
            except IpcError as exc:
                logger.warning("%s: cannot subscribe again yet: %s", sub.name, exc)
                if not isinstance(exc, IpcRejected):
                    timer = threading.Timer(self.backoff_max_s, self._wake.set)
                    timer.daemon = True
                    timer.start()

    # --- calls -------------------------------------------------------------------------------

    def call(self, name: str, start: Callable[[Any], concurrent.futures.Future[Any]],
             *, attempts: int | None = None, timeout_s: float | None = None) -> Any:
        """Run ``start(client)`` -> future, wait for it; retried on IpcUnavailable/ServiceError."""
        retry = retry_if_exception_type(IpcUnavailable) | retry_if_exception_type(_Retryable)
        try:
            for attempt in Retrying(
                stop=stop_after_attempt(attempts or self.attempts), wait=self._wait(),
                retry=retry, reraise=True,
            ):
                with attempt:
                    return self._call_once(name, start, timeout_s)
        except _Retryable as exc:
            raise IpcError(str(exc)) from exc.__cause__
        except RetryError as exc:  # pragma: no cover - reraise=True re-raises the last error
            raise IpcError(str(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _call_once(self, name: str, start: Callable[[Any], concurrent.futures.Future[Any]],
                   timeout_s: float | None) -> Any:
        with self._lock:
            client, generation = self._client, self._generation
        if client is None or not self._connected.is_set():
            self._wake.set()
            raise IpcUnavailable(f"{name}: not connected to the nucleus")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            future = start(client)
            return future.result(timeout)
        except concurrent.futures.TimeoutError as exc:
            raise IpcTimeout(f"{name}: no answer from the nucleus in {timeout:g} s") from exc
        except model.ServiceError as exc:
            raise _Retryable(f"{name}: nucleus ServiceError: {exc.message}") from exc
        except model.GreengrassCoreIPCError as exc:
            shape = type(exc).__name__
            raise IpcRejected(f"{name}: {shape}: {getattr(exc, 'message', exc)}") from exc
        except (ConnectionClosedError, StreamClosedError, EventStreamError,
                EventStreamOperationError, AwsCrtError, OSError, RuntimeError) as exc:
            # awscrt raises AwsCrtError (AWS_ERROR_IO_OPERATION_CANCELLED: the write was cut by
            # the disconnect) or a bare RuntimeError ("event stream rpc connection has been
            # closed"): the request may or may not have reached the nucleus
            self._lost(generation)
            raise IpcUnavailable(f"{name}: connection lost: {exc!r}") from exc

    def publish_to_iot_core(self, topic: str, payload: bytes, *, qos: str = "1",
                            attempts: int | None = None) -> None:
        self.call(
            "PublishToIoTCore",
            lambda c: c.publish_to_iot_core_async(topic_name=topic, qos=qos, payload=payload),
            attempts=attempts,
        )

    def publish_to_topic(self, topic: str, message: dict[str, Any], *,
                         attempts: int | None = None) -> None:
        body = model.PublishMessage(json_message=model.JsonMessage(message=message))
        self.call(
            "PublishToTopic",
            lambda c: c.publish_to_topic_async(topic=topic, publish_message=body),
            attempts=attempts,
        )

    def get_configuration(self, key_path: list[str] | None = None) -> dict[str, Any]:
        """This component's configuration (or the value under ``key_path``)."""
        response = self.call(
            "GetConfiguration", lambda c: c.get_configuration_async(key_path=key_path or [])
        )
        value = response.value if response is not None else None
        return dict(value or {})

    def update_state(self, state: str) -> None:
        """``RUNNING`` or ``ERRORED``."""
        self.call("UpdateState", lambda c: c.update_state_async(state=state))

    def send_configuration_validity_report(
        self, deployment_id: str, *, accepted: bool, message: str = ""
    ) -> None:
        report = model.ConfigurationValidityReport(
            status=(model.ConfigurationValidityStatus.ACCEPTED if accepted
                    else model.ConfigurationValidityStatus.REJECTED),
            deployment_id=deployment_id,
            message=message or None,
        )
        self.call(
            "SendConfigurationValidityReport",
            lambda c: c.send_configuration_validity_report_async(
                configuration_validity_report=report),
        )

    # --- subscriptions -----------------------------------------------------------------------

    def subscribe_to_configuration_update(
        self, on_update: Callable[[list[str]], None]
    ) -> None:
        """``on_update(key_path)`` for every changed key of this component's configuration
        (on the SDK's thread pool); kept open across reconnections."""

        def event(ev: Any) -> None:
            update = getattr(ev, "configuration_update_event", None)
            on_update(list(getattr(update, "key_path", None) or []))

        self._add_subscription(_Subscription(
            "SubscribeToConfigurationUpdate",
            lambda c: c.subscribe_to_configuration_update_async(
                key_path=[], on_stream_event=event, on_stream_error=self._stream_error,
                on_stream_closed=self._stream_closed),
        ))

    def subscribe_to_validate_configuration_updates(
        self, on_proposal: Callable[[str, dict[str, Any]], None]
    ) -> None:
        """``on_proposal(deployment_id, configuration)`` for every proposed deployment; the
        callback answers with ``send_configuration_validity_report``."""

        def event(ev: Any) -> None:
            proposal = getattr(ev, "validate_configuration_update_event", None)
            if proposal is None:
                return
            on_proposal(str(proposal.deployment_id or ""), dict(proposal.configuration or {}))

        self._add_subscription(_Subscription(
            "SubscribeToValidateConfigurationUpdates",
            lambda c: c.subscribe_to_validate_configuration_updates_async(
                on_stream_event=event, on_stream_error=self._stream_error,
                on_stream_closed=self._stream_closed),
        ))

    def subscribe_to_component_updates(
        self, on_event: Callable[[str, str, bool], None]
    ) -> None:
        """``on_event(kind, deployment_id, is_ggc_restarting)`` for every component-update
        event: kind "pre" (PreComponentUpdateEvent: answer with ``defer_component_update``) or
        "post" (PostComponentUpdateEvent); kept open across reconnections."""

        def event(ev: Any) -> None:
            pre = getattr(ev, "pre_update_event", None)
            post = getattr(ev, "post_update_event", None)
            if pre is not None:
                on_event("pre", str(pre.deployment_id or ""), bool(pre.is_ggc_restarting))
            elif post is not None:
                on_event("post", str(post.deployment_id or ""), False)

        self._add_subscription(_Subscription(
            "SubscribeToComponentUpdates",
            lambda c: c.subscribe_to_component_updates_async(
                on_stream_event=event, on_stream_error=self._stream_error,
                on_stream_closed=self._stream_closed),
        ))

    def defer_component_update(
        self, deployment_id: str, *, recheck_after_ms: int, message: str = ""
    ) -> None:
        """Answer a PreComponentUpdateEvent: ask again in ``recheck_after_ms`` (0 = go ahead)."""
        self.call(
            "DeferComponentUpdate",
            lambda c: c.defer_component_update_async(
                deployment_id=deployment_id, message=message or None,
                recheck_after_ms=recheck_after_ms),
            attempts=1,  # a late answer is a ServiceError that retrying cannot fix
        )

    def _add_subscription(self, sub: _Subscription) -> None:
        """Open it now, or (when the nucleus does not answer) later: never raises."""
        with self._lock:
            self._subscriptions.append(sub)
        try:
            self._subscribe(sub)
        except IpcError as exc:
            logger.warning("%s: not subscribed yet (%s); trying again", sub.name, exc)
            timer = threading.Timer(self.backoff_max_s, self._wake.set)
            timer.daemon = True
            timer.start()

    def _subscribe(self, sub: _Subscription) -> None:
        holder: list[Any] = []

        def start(client: Any) -> concurrent.futures.Future[Any]:
            future, operation = sub.open(client)
            holder.append(operation)
            return future

        self.call(sub.name, start)
        with self._lock:
            sub.operation = holder[-1] if holder else None
        logger.info("subscribed: %s", sub.name)

    def _stream_error(self, error: Exception) -> bool:
        logger.warning("IPC subscription error: %r", error)
        return True  # close the stream; it is opened again

    def _stream_closed(self) -> None:
        if self._closing.is_set():
            return
        with self._lock:
            for sub in self._subscriptions:
                if sub.operation is not None and _closed(sub.operation):
                    sub.operation = None
        self._wake.set()


class _Retryable(Exception):
    """Internal: a nucleus ServiceError, worth another attempt."""


def _closed(operation: Any) -> bool:
    future = getattr(operation, "_closed_future", None)
    return bool(future is not None and future.done())


def _close_quietly(client: Any) -> None:
    try:
        client.close(executor_wait=False)
    except Exception:  # already closed, or closing after a failure
        logger.debug("closing the IPC client failed", exc_info=True)
