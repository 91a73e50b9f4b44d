"""The component configuration over IPC: read at start, validated before a deployment, applied live.

    source = ConfigSource(ipc, overrides={}, apply=service.apply_settings)
    settings = source.read()              # GetConfiguration -> Settings (ConfigError if invalid)
    source.start()                        # validation hook + live updates

- ``SubscribeToValidateConfigurationUpdates``: every proposed configuration is checked with the
  same rules as at start (``proposal_problems``) and answered ACCEPTED, or REJECTED with a message
  naming each bad key; the nucleus then does not apply it. The topics the component would publish
  on (results per ``PublishTarget``, metrics) must also be allowed by the component's own
  ``accessControl`` (the proposal's: the nucleus's DynamicComponentConfigurationValidator sends
  the whole proposed ``configuration``, accessControl included; else the current one read with
  GetConfiguration of the ``accessControl`` key, answered with the subtree's map by
  ConfigStoreIPCEventStreamAgent), matched as the nucleus matches them
  (``inspector.greengrass.access``): otherwise the nucleus would refuse every result.
- ``SubscribeToConfigurationUpdate``: the nucleus sends one event per changed key; they are
  coalesced for ``debounce_s``, the whole configuration is read again and handed to ``apply``
  (``Service.apply_settings``: thresholds, topics and uploads between two images; a new model is
  loaded and swapped in between two images). A configuration that is invalid anyway (a deployment
  whose validation timed out) is logged and the running one is kept.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from inspector.errors import ConfigError, IpcError, IpcRejected
from inspector.greengrass.access import allowed
from inspector.settings import RESERVED_KEYS, Settings, settings_only, validated
from inspector.sinks.mqtt import render_topic

logger = logging.getLogger(__name__)


class ConfigIpc(Protocol):
    """What the source needs of ``inspector.greengrass.ipc.IpcClient``."""

    def get_configuration(self, key_path: list[str] | None = None) -> dict[str, Any]: ...
    def subscribe_to_configuration_update(
        self, on_update: Callable[[list[str]], None]) -> None: ...
    def subscribe_to_validate_configuration_updates(
        self, on_proposal: Callable[[str, dict[str, Any]], None]) -> None: ...
    def send_configuration_validity_report(
        self, deployment_id: str, *, accepted: bool, message: str = "") -> None: ...


def proposed_settings(
    configuration: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> tuple[Settings | None, list[tuple[str, str]]]:
    """The settings a component configuration describes (the command line's ``overrides`` laid
    over it), or None and every problem as (key, message). The settings model's own validation
    (``settings.validated``), the same as check-config and ``inspector run --config``: one set of
    rules, one wording."""
    return validated({**settings_only(configuration), **(overrides or {})})


def proposal_problems(
    configuration: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> list[tuple[str, str]]:
    """Every problem of a component configuration as (key, message); empty when it is valid."""
    return proposed_settings(configuration, overrides)[1]


def read_access_control(ipc: ConfigIpc) -> Any:
    """The component's own ``accessControl`` (None when it has none); raises IpcError."""

    try:
        value = ipc.get_configuration(["accessControl"])
    except IpcRejected:  # ResourceNotFoundError: no such key
        return None
    if isinstance(value, dict) and set(value) == {"accessControl"}:
        value = value["accessControl"]  # an answer that repeats the key
    if isinstance(value, str):  # a deployment may hold it as a JSON string
        import json

        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value or None


def access_problems(
    settings: Settings | Mapping[str, Any], access_control: Any, thing_name: str
) -> list[tuple[str, str]]:
    """(key, message) for every topic the settings publish on that ``access_control`` does not
    allow (results per PublishTarget on IoT Core / pub/sub, metrics on IoT Core)."""

    data = settings.to_mapping() if isinstance(settings, Settings) else dict(settings)
    target = str(data.get("PublishTarget", "iotcore"))
    wanted: list[tuple[str, str]] = []
    if target in ("iotcore", "both"):
        wanted.append(("PublishResultsOnTopic", "PublishToIoTCore"))
    if target in ("pubsub", "both"):
        wanted.append(("PubSubTopic", "PublishToTopic"))
    if data.get("MetricsTopic") and float(data.get("MetricsIntervalSeconds", 1) or 0) > 0:
        wanted.append(("MetricsTopic", "PublishToIoTCore"))
    problems = []
    for key, operation in wanted:
        template = data.get(key)
        if not isinstance(template, str):
            continue
        try:
            topic = render_topic(template, thing_name or "{thingName}")
        except ValueError:
            continue  # reported by proposal_problems
        if not allowed(access_control, operation, topic):
            problems.append((key, f"topic {topic!r} is not allowed by this component's "
                                  f"accessControl (aws.greengrass#{operation})"))
    return problems


def describe_problems(problems: list[tuple[str, str]]) -> str:
    return "; ".join(f"{key}: {msg}" for key, msg in problems)


def settings_from_configuration(
    configuration: Mapping[str, Any], overrides: Mapping[str, Any] | None = None
) -> Settings:
    """The settings a component configuration describes; ConfigError naming every bad key."""
    settings, problems = proposed_settings(configuration, overrides)
    if settings is None:
        raise ConfigError(
            f"invalid component configuration: {describe_problems(problems)}", problems
        )
    return settings


class ConfigSource:
    """See the module docstring. ``apply`` runs on this source's own thread."""

    def __init__(
        self,
        ipc: ConfigIpc,
        *,
        apply: Callable[[Settings], Any],
        overrides: Mapping[str, Any] | None = None,
        debounce_s: float = 0.2,
        thing_name: str = "",
    ) -> None:
        self.ipc = ipc
        self.thing_name = thing_name
        self.apply = apply
        self.overrides = dict(overrides or {})
        self.debounce_s = debounce_s
        self.rejected = 0
        self.applied = 0
        self._pending = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def read(self) -> Settings:
        """GetConfiguration -> Settings; raises ConfigError (or an IpcError)."""
        return settings_from_configuration(self.ipc.get_configuration(), self.overrides)

    def start(self) -> ConfigSource:
        self.ipc.subscribe_to_validate_configuration_updates(self._validate)
        self.ipc.subscribe_to_configuration_update(self._changed)
        self._thread = threading.Thread(target=self._loop, name="config-updates", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        self._pending.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)

    def _validate(self, deployment_id: str, configuration: dict[str, Any]) -> None:

        settings, problems = proposed_settings(configuration, self.overrides)
        if settings is not None:
            problems = self._access_problems(configuration, settings)
        if problems:
            self.rejected += 1
            message = f"inspector rejects this configuration: {describe_problems(problems)}"
            logger.warning("deployment %s rejected: %s", deployment_id, describe_problems(problems))
        else:
            message = "configuration accepted"
            logger.info("deployment %s: proposed configuration accepted", deployment_id)
        try:
            self.ipc.send_configuration_validity_report(
                deployment_id, accepted=not problems, message=message)
        except IpcError as exc:
            logger.error("cannot answer the validation of deployment %s: %s", deployment_id, exc)

    def _access_problems(self, configuration: Mapping[str, Any], settings: Settings
                         ) -> list[tuple[str, str]]:
        access = next((v for k, v in configuration.items() if k.lower() in RESERVED_KEYS), None)
        if access is None:
            try:
                access = read_access_control(self.ipc)
            except IpcError as exc:
                logger.warning("cannot read this component's accessControl; topics not checked "
                               "against it: %s", exc)
                return []
        return access_problems(settings, access, self.thing_name)

    def _changed(self, key_path: list[str]) -> None:
        logger.debug("configuration changed: %s", "/".join(key_path) or "<root>")
        self._pending.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._pending.wait()
            if self._stop.is_set():
                return
            self._stop.wait(self.debounce_s)  # one deployment = one event per changed key
            self._pending.clear()
            self.refresh()

    def refresh(self) -> bool:
        """Read the configuration again and apply it; False when it was not applied."""

        try:
            settings = self.read()
        except ConfigError as exc:
            logger.error("configuration update not applied, keeping the running settings: %s",
                         exc)
            return False
        except IpcError as exc:
            logger.error("cannot read the updated configuration: %s", exc)
            return False
        try:
            self.apply(settings)
        except Exception as exc:
            logger.error("configuration update not applied, keeping the running settings: %s",
                         exc)
            return False
        self.applied += 1
        return True
