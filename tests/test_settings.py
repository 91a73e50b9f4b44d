"""The settings model: recipe keys, validation with key paths, paths, files, check-config."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from inspector.errors import ConfigError
from inspector.settings import (
    LIVE_KEYS,
    RELOAD_KEYS,
    RESTART_KEYS,
    Settings,
    describe,
    read_config_file,
    resolve_paths,
    validate_mapping,
)
from inspector.types import Thresholds

FIXED_NAMES = {"ImageDirectory", "ModelPath", "ConfidenceThreshold", "IouThreshold",
               "PublishResultsOnTopic", "UploadBucket"}
GREENGRASS_NAMES = {"PublishTarget", "PubSubTopic", "MetricsTopic", "MetricsIntervalSeconds",
                    "UploadKeyTemplate", "UploadMaxRetries", "ModelSha256"}
EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "example.yaml"


def test_only_the_image_directory_is_required():
    settings = Settings.from_mapping({"ImageDirectory": "/data/in"})
    assert settings.ModelPath == ""
    assert settings.ConfidenceThreshold == 0.25
    assert settings.Extensions == ("jpg", "jpeg", "png", "bmp", "tif", "tiff")
    assert settings.ProcessedAction == "move"
    assert not settings.Recursive


def test_fixed_and_greengrass_names_exist_and_every_field_is_described():
    fields = Settings.model_fields
    assert set(fields) >= FIXED_NAMES | GREENGRASS_NAMES
    for name, info in fields.items():
        assert info.description, name
        assert name[0].isupper(), name
    assert [row[0] for row in describe()] == list(fields)


def test_every_problem_is_listed_with_its_key_path():
    problems = dict(validate_mapping({
        "ImageDirectory": "",
        "ConfidenceThreshold": 1.5,
        "IouThreshold": -0.1,
        "Extensions": ["jpg", ""],
        "ProcessedAction": "shred",
        "PublishTarget": "email",
        "UploadKeyTemplate": "{device}/{nope}",
        "ModelSha256": "abc",
        "Colour": "red",
    }))
    assert set(problems) == {
        "ImageDirectory", "ConfidenceThreshold", "IouThreshold", "Extensions",
        "ProcessedAction", "PublishTarget", "UploadKeyTemplate", "ModelSha256", "Colour",
    }
    assert "nope" in problems["UploadKeyTemplate"]
    assert "unknown setting" in problems["Colour"]


def test_from_mapping_raises_config_error_with_pairs():
    with pytest.raises(ConfigError) as caught:
        Settings.from_mapping({"ImageDirectory": "/x", "QueueSize": 0})
    assert caught.value.errors and caught.value.errors[0][0] == "QueueSize"
    assert validate_mapping(["not", "a", "mapping"]) [0][0] == ""  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [0.0, 1.0])
def test_thresholds_accept_their_bounds(threshold: float):
    s = Settings.from_mapping(
        {"ImageDirectory": "/x", "ConfidenceThreshold": threshold, "IouThreshold": threshold}
    )
    assert s.ConfidenceThreshold == threshold


def test_frozen_and_strings_coerced_like_greengrass_sends_them():
    s = Settings.from_mapping({"ImageDirectory": "/x", "ConfidenceThreshold": "0.5",
                               "QueueSize": "4", "Recursive": "true",
                               "Extensions": [".JPG", "png", "jpg"]})
    assert (s.ConfidenceThreshold, s.QueueSize, s.Recursive) == (0.5, 4, True)
    assert s.Extensions == ("jpg", "png")
    with pytest.raises(ValidationError):
        s.ConfidenceThreshold = 0.1  # type: ignore[misc]


def test_round_trip_replace_and_changed_keys():
    s = Settings.from_mapping({"ImageDirectory": "/x"})
    assert Settings.from_mapping(s.to_mapping()) == s
    t = s.replace(ConfidenceThreshold=0.6, PublishResultsOnTopic="plant/line1")
    assert t.changed_keys(s) == {"ConfidenceThreshold", "PublishResultsOnTopic"}
    assert t.changed_keys(s) <= LIVE_KEYS
    with pytest.raises(ConfigError):
        s.replace(IouThreshold=2)


def test_every_key_says_how_a_running_service_takes_its_change():
    """The key sets come from the fields' own markers; every field has exactly one."""
    assert set(Settings.model_fields) == LIVE_KEYS | RELOAD_KEYS | RESTART_KEYS
    assert not (LIVE_KEYS & RELOAD_KEYS or LIVE_KEYS & RESTART_KEYS or RELOAD_KEYS & RESTART_KEYS)
    # thresholds (MaxDetections too) go to post-processing: never a new model session
    assert {"ConfidenceThreshold", "IouThreshold", "MaxDetections"} <= LIVE_KEYS
    assert {"ModelPath", "ModelSha256", "ExecutionProviders", "IntraOpThreads"} <= RELOAD_KEYS
    assert {"ImageDirectory", "QueueSize", "StateDirectory"} <= RESTART_KEYS


def test_thresholds_are_one_value():
    s = Settings.from_mapping({"ImageDirectory": "/x", "ConfidenceThreshold": 0.4,
                               "IouThreshold": 0.5, "MaxDetections": 7})
    assert s.thresholds == Thresholds(conf=0.4, iou=0.5, max_det=7)
    assert s.replace(MaxDetections=8).thresholds != s.thresholds


def test_paths_default_under_a_hidden_state_folder():
    p = resolve_paths(Settings.from_mapping({"ImageDirectory": "/in"}))
    assert p.state == Path("/in/.inspector")
    assert (p.done, p.failed, p.held, p.outbox) == tuple(
        Path("/in/.inspector") / n for n in ("done", "failed", "held", "outbox")
    )
    assert p.results == Path("/in/.inspector/results.jsonl")
    q = resolve_paths(Settings.from_mapping(
        {"ImageDirectory": "/in", "StateDirectory": "/var/lib/insp", "DoneDirectory": "/done",
         "ResultsFile": "/r.jsonl"}))
    assert (q.done, q.failed, q.results) == (
        Path("/done"), Path("/var/lib/insp/failed"), Path("/r.jsonl"))
    assert q.state in q.own_folders()


def test_read_yaml_json_and_recipe_wrapped_files(tmp_path: Path):
    (tmp_path / "a.yaml").write_text("ImageDirectory: /in\nQueueSize: 3\n")
    (tmp_path / "b.json").write_text(json.dumps(
        {"ComponentConfiguration": {"DefaultConfiguration": {"ImageDirectory": "/in"}}}))
    (tmp_path / "c.yaml").write_text("- a\n- b\n")
    (tmp_path / "d.json").write_text("{not json")
    assert read_config_file(tmp_path / "a.yaml") == {"ImageDirectory": "/in", "QueueSize": 3}
    assert read_config_file(tmp_path / "b.json") == {"ImageDirectory": "/in"}
    for bad in ("c.yaml", "d.json", "missing.yaml"):
        with pytest.raises(ConfigError):
            read_config_file(tmp_path / bad)


def test_example_config_is_valid():
    Settings.from_mapping(read_config_file(EXAMPLE))


def test_example_config_is_generated_from_the_settings_model():
    """config/example.yaml is `inspector check-config --example`: a key added to the model and
    not to the file (SpoolMaxMessages once) fails here."""
    from inspector.settings import example_yaml

    assert EXAMPLE.read_text("utf-8") == example_yaml(), (
        "config/example.yaml differs from the settings model: regenerate it with "
        "`inspector check-config --example > config/example.yaml`")
    assert set(read_config_file(EXAMPLE)) == set(Settings.model_fields)
    example = _cli("check-config", "--example")
    assert example.returncode == 0 and example.stdout == example_yaml()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    return subprocess.run([sys.executable, "-m", "inspector", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_check_config_lists_every_error_and_exits_nonzero(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ImageDirectory: /in\nConfidenceThreshold: 7\nIouThreshold: x\nTypo: 1\n")
    done = _cli("check-config", str(bad))
    assert done.returncode == 1
    for key in ("ConfidenceThreshold", "IouThreshold", "Typo"):
        assert f"  {key}: " in done.stderr
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "inference" / "recipe.yaml"
    if recipe.exists():
        assert read_config_file(recipe)["ImageDirectory"]
        assert validate_mapping(read_config_file(recipe)) == []
    good = _cli("check-config", str(EXAMPLE))
    assert good.returncode == 0, good.stderr
    assert "OK" in good.stdout
    keys = _cli("check-config", "--keys")
    assert keys.returncode == 0 and "UploadKeyTemplate\t" in keys.stdout


def test_greengrass_access_control_and_comma_lists():
    data = {
        "ImageDirectory": "/x",
        "Extensions": "jpg, PNG",
        "ExecutionProviders": "CPUExecutionProvider",
        "accessControl": {"aws.greengrass.ipc.mqttproxy": {}},
    }
    assert validate_mapping(data) == []
    s = Settings.from_mapping(data)
    assert s.Extensions == ("jpg", "png")
    assert s.ExecutionProviders == ("CPUExecutionProvider",)
    assert "accessControl" not in s.to_mapping()
