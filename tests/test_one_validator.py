"""One validator: check-config, ``inspector run --config`` and the Greengrass validation hook
(through the nucleus emulator, real awsiotsdk client) reject the same settings with the same key
path and message, because all three ask the settings model. And ``--set`` reads values by type."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from inspector.cli import main
from inspector.commands.run import add_settings_arguments, settings_from_args
from inspector.errors import ConfigError
from inspector.greengrass.clients import connect_ipc
from inspector.greengrass.config import ConfigSource
from inspector.greengrass.ipc import IpcClient
from inspector.settings import validate_mapping
from inspector.testing.fixtures import running_nucleus
from inspector.testing.nucleus import NucleusEmulator

pytestmark = pytest.mark.timeout(60)
COMPONENT = "com.inspector.Inference"

# (bad settings, key path, words of the message)
BAD = [
    ({"PublishResultsOnTopic": "plant/#"}, "PublishResultsOnTopic", "wildcards + or #"),
    ({"PubSubTopic": "line/+/results"}, "PubSubTopic", "wildcards + or #"),
    ({"MetricsTopic": "$aws/things/t/metrics"}, "MetricsTopic", "reserved by AWS IoT"),
    ({"PublishResultsOnTopic": "t" * 300}, "PublishResultsOnTopic", "too long for AWS IoT"),
    ({"PublishResultsOnTopic": "a/b/c/d/e/f/g/h/i"}, "PublishResultsOnTopic", "more than 8 levels"),
    ({"PublishResultsOnTopic": "plant//x"}, "PublishResultsOnTopic", "empty level"),
    ({"ModelPath": "/nowhere/model.onnx"}, "ModelPath", "no such model file"),
    ({"ConfidenceThreshold": 1.5}, "ConfidenceThreshold", "less than or equal to 1"),
    ({"ConfidenceThreshhold": 0.5}, "ConfidenceThreshhold", "did you mean ConfidenceThreshold?"),
    ({"UploadKeyTemplate": "{bucket}/{name}"}, "UploadKeyTemplate", "unknown placeholder"),
]


@pytest.fixture(scope="module")
def hook() -> Iterator[tuple[NucleusEmulator, ConfigSource]]:
    """A nucleus emulator with a running config source answering its validation events."""
    base = {"ImageDirectory": "/data/images"}
    with running_nucleus(None, config=base, component_name=COMPONENT) as nucleus, \
            pytest.MonkeyPatch.context() as patch:
        for key, value in nucleus.env.items():
            patch.setenv(key, value)
        client = IpcClient(connect_ipc, timeout_s=2.0, backoff_max_s=0.3)
        client.start(wait_s=5)
        source = ConfigSource(client, apply=lambda settings: None).start()
        try:
            yield nucleus, source
        finally:
            source.close()
            client.close()


def expected(change: dict[str, Any], key: str, words: str) -> str:
    problems = validate_mapping({"ImageDirectory": "/data/images", **change})
    assert len(problems) == 1 and problems[0][0] == key and words in problems[0][1], problems
    return f"{key}: {problems[0][1]}"


@pytest.mark.parametrize(("change", "key", "words"), BAD, ids=[b[1] + "-" + b[2] for b in BAD])
def test_check_config_run_and_the_validation_hook_agree(
    change: dict[str, Any], key: str, words: str, tmp_path: Path, capsys,
    hook: tuple[NucleusEmulator, ConfigSource],
) -> None:
    line = expected(change, key, words)
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump({"ImageDirectory": str(tmp_path / "in"), **change}))

    assert main(["check-config", str(config)]) == 1
    checked = capsys.readouterr().err
    assert f"  {line}\n" in checked

    assert main(["run", "--config", str(config), "--once"]) == 2
    ran = capsys.readouterr().err
    assert f"  {line}\n" in ran

    nucleus, _ = hook
    result = nucleus.update_config(COMPONENT, change, merge=True)
    assert result.status == "REJECTED"
    assert result.message == f"inspector rejects this configuration: {line}"
    assert key not in nucleus.config[COMPONENT] or nucleus.config[COMPONENT][key] != change[key]


def _settings(*sets: str) -> Any:
    parser = argparse.ArgumentParser()
    add_settings_arguments(parser)
    args = parser.parse_args(["--watch", "/data/images", *[f"--set={s}" for s in sets]])
    return settings_from_args(args)


def test_set_reads_values_by_the_settings_type() -> None:
    settings = _settings("DeviceName=1234", "PubSubTopic=on", "Recursive=on", "QueueSize=16",
                         "Extensions=jpg, png", "ExecutionProviders=[CPUExecutionProvider]")
    assert settings.DeviceName == "1234"  # text stays text, not the number 1234
    assert settings.PubSubTopic == "on"  # not the YAML boolean
    assert settings.Recursive is True and settings.QueueSize == 16
    assert settings.Extensions == ("jpg", "png")
    assert settings.ExecutionProviders == ("CPUExecutionProvider",)
    assert _settings("DeviceName=on").DeviceName == "on"


@pytest.mark.parametrize(("item", "hint"), [
    ("ConfidenceThreshhold=0.3", "did you mean ConfidenceThreshold?"),
    ("confidencethreshold=0.3", "did you mean ConfidenceThreshold?"),
    ("Extension=png", "did you mean Extensions?"),
    ("Colour=red", "see `inspector check-config --keys`"),
])
def test_a_misspelt_key_gets_the_closest_valid_name(item: str, hint: str) -> None:
    with pytest.raises(ConfigError) as info:
        _settings(item)
    assert f"{item.split('=')[0]}: unknown setting; {hint}" in str(info.value)
