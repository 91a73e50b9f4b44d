"""Component configuration: validation rules, and the IPC config source (validation hook, live
updates) against the nucleus emulator with the real awsiotsdk client."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from inspector.errors import ConfigError
from inspector.greengrass.clients import connect_ipc
from inspector.greengrass.config import (
    ConfigSource,
    proposal_problems,
    settings_from_configuration,
)
from inspector.greengrass.ipc import IpcClient
from inspector.settings import Settings
from inspector.testing.fixtures import running_nucleus
from inspector.testing.nucleus import NucleusEmulator

pytestmark = pytest.mark.timeout(60)
COMPONENT = "com.example.Inspector"
# what the recipe grants: the default results and metrics topics
GRANTS = {"aws.greengrass.ipc.mqttproxy": {"com.example.Inspector:mqttproxy:1": {
    "operations": ["aws.greengrass#PublishToIoTCore"],
    "resources": ["inspector/results", "inspector/metrics"]}}}
BASE = {"ImageDirectory": "/data/images", "accessControl": GRANTS}


def test_valid_configuration_ignores_access_control() -> None:
    assert proposal_problems(BASE) == []
    settings = settings_from_configuration(BASE, {"ConfidenceThreshold": 0.4})
    assert settings.ImageDirectory == "/data/images" and settings.ConfidenceThreshold == 0.4


@pytest.mark.parametrize(("change", "key", "words"), [
    ({"ConfidenceThreshold": 1.5}, "ConfidenceThreshold", "less than or equal to 1"),
    ({"ConfidenceThreshhold": 0.5}, "ConfidenceThreshhold", "did you mean ConfidenceThreshold?"),
    ({"UploadKeyTemplate": "{bucket}/{name}"}, "UploadKeyTemplate", "unknown placeholder"),
    ({"PublishResultsOnTopic": "a/#"}, "PublishResultsOnTopic", "wildcards"),
    ({"PubSubTopic": "a/{device}"}, "PubSubTopic", "unknown placeholder"),
    ({"MetricsTopic": "m/+/x"}, "MetricsTopic", "wildcards"),
    ({"ModelPath": "/nowhere/model.onnx"}, "ModelPath", "no such model file"),
    ({"ImageDirectory": ""}, "ImageDirectory", "at least 1"),
])
def test_invalid_configurations_name_the_key(change: dict[str, Any], key: str,
                                             words: str) -> None:
    problems = proposal_problems({**BASE, **change})
    assert problems and problems[0][0] == key and words in problems[0][1]
    with pytest.raises(ConfigError) as info:
        settings_from_configuration({**BASE, **change})
    assert key in str(info.value)


def test_empty_metrics_topic_means_off() -> None:
    assert proposal_problems({**BASE, "MetricsTopic": ""}) == []


# --- the config source over IPC --------------------------------------------------------------

@pytest.fixture
def nucleus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[NucleusEmulator]:
    with running_nucleus(tmp_path, config=dict(BASE), component_name=COMPONENT) as emulator:
        for key, value in emulator.env.items():
            monkeypatch.setenv(key, value)
        yield emulator


@pytest.fixture
def ipc(nucleus: NucleusEmulator) -> Iterator[IpcClient]:
    client = IpcClient(connect_ipc, timeout_s=2.0, backoff_max_s=0.3)
    client.start(wait_s=5)
    yield client
    client.close()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


class Applied:
    def __init__(self, fail: bool = False) -> None:
        self.settings: list[Settings] = []
        self.fail = fail
        self.lock = threading.Lock()

    def __call__(self, settings: Settings) -> None:
        if self.fail:
            raise RuntimeError("model cannot be loaded")
        with self.lock:
            self.settings.append(settings)


def test_reads_validates_and_applies_live(ipc: IpcClient, nucleus: NucleusEmulator) -> None:
    applied = Applied()
    source = ConfigSource(ipc, apply=applied, overrides={"StableSeconds": 0.5},
                          debounce_s=0.05)
    settings = source.read()
    assert settings.ImageDirectory == "/data/images" and settings.StableSeconds == 0.5
    source.start()

    rejected = nucleus.update_config(COMPONENT, {"IouThreshold": -1}, merge=True)
    assert rejected.status == "REJECTED" and "IouThreshold" in (rejected.message or "")
    assert nucleus.config[COMPONENT].get("IouThreshold") is None
    assert source.rejected == 1

    accepted = nucleus.update_config(
        COMPONENT, {"ConfidenceThreshold": 0.7, "IouThreshold": 0.3}, merge=True)
    assert accepted.status == "ACCEPTED"
    wait_until(lambda: len(applied.settings) == 1)
    new = applied.settings[0]
    assert (new.ConfidenceThreshold, new.IouThreshold, new.StableSeconds) == (0.7, 0.3, 0.5)
    # two changed keys, two events: coalesced into one apply. A later update is applied after
    # any second apply of the first would have been (one thread, in order): then count.
    assert nucleus.update_config(COMPONENT, {"ConfidenceThreshold": 0.6},
                                 merge=True).status == "ACCEPTED"
    wait_until(lambda: any(s.ConfidenceThreshold == 0.6 for s in applied.settings))
    assert [s.ConfidenceThreshold for s in applied.settings] == [0.7, 0.6]
    assert source.applied == 2
    source.close()


def test_a_topic_outside_access_control_is_rejected(
    ipc: IpcClient, nucleus: NucleusEmulator
) -> None:
    """The nucleus would refuse every publish on such a topic: the deployment is refused first."""
    source = ConfigSource(ipc, apply=Applied(), debounce_s=0.05, thing_name="line-7").start()
    refused = nucleus.update_config(COMPONENT, {"PublishResultsOnTopic": "plant1/results"},
                                    merge=True)
    assert refused.status == "REJECTED" and not refused.applied
    assert "PublishResultsOnTopic" in (refused.message or "")
    assert "'plant1/results' is not allowed" in (refused.message or "")
    refused = nucleus.update_config(COMPONENT, {"PublishTarget": "both"}, merge=True)
    assert refused.status == "REJECTED" and "PubSubTopic" in (refused.message or "")
    # the same change with a matching grant (MQTT wildcards count for mqttproxy) is accepted
    grant = {"aws.greengrass.ipc.mqttproxy": {"com.example.Inspector:mqttproxy:1": {
        "operations": ["aws.greengrass#PublishToIoTCore"],
        "resources": ["plant1/+/results", "plant1/results", "inspector/metrics"]}}}
    accepted = nucleus.update_config(COMPONENT, {"PublishResultsOnTopic": "plant1/{thingName}/"
                                                 "results", "accessControl": grant}, merge=True)
    assert accepted.status == "ACCEPTED", accepted.message
    assert source.rejected == 2
    source.close()


def test_access_problems_read_the_components_own_access_control(
    ipc: IpcClient, nucleus: NucleusEmulator
) -> None:
    from inspector.greengrass.config import access_problems, read_access_control

    access = read_access_control(ipc)
    assert access == GRANTS
    settings = Settings.from_mapping({"ImageDirectory": "/x", "MetricsTopic": "m/{thingName}"})
    problems = access_problems(settings, access, "line-7")
    assert [key for key, _ in problems] == ["MetricsTopic"] and "'m/line-7'" in problems[0][1]
    assert access_problems(settings.replace(MetricsTopic=""), access, "line-7") == []


def test_an_invalid_configuration_applied_anyway_keeps_the_running_one(
    ipc: IpcClient, nucleus: NucleusEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    applied = Applied()
    source = ConfigSource(ipc, apply=applied, debounce_s=0.05).start()
    nucleus.set_config(COMPONENT, {**BASE, "QueueSize": 0})  # no validation (timed out)
    # the update must be seen and refused (logged) before "nothing applied" means anything
    wait_until(lambda: "configuration update not applied" in caplog.text)
    assert "QueueSize" in caplog.text
    assert applied.settings == [] and source.applied == 0
    assert source.refresh() is False
    source.close()


def test_apply_failure_is_logged_not_fatal(ipc: IpcClient, nucleus: NucleusEmulator,
                                           caplog: pytest.LogCaptureFixture) -> None:
    source = ConfigSource(ipc, apply=Applied(fail=True), debounce_s=0.05).start()
    nucleus.update_config(COMPONENT, {"ConfidenceThreshold": 0.5}, merge=True)
    wait_until(lambda: "keeping the running settings" in caplog.text)
    assert "model cannot be loaded" in caplog.text
    source.close()
