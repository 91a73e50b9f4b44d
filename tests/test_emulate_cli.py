"""``inspector emulate`` as a subprocess, and the fixtures' ``.env`` used by another process."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

from awsiot.greengrasscoreipc import connect
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2

from inspector.testing.fixtures import running_greengrass, running_nucleus

ENV_NAMES = {
    "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT", "SVCUID",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "STREAM_MANAGER_SERVER_PORT", "AWS_IOT_THING_NAME",
    "AWS_REGION",
}

# What a component does at start-up, in a separate process: both real clients, from env only.
COMPONENT_SCRIPT = textwrap.dedent("""
    import json, os, sys
    from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
    from stream_manager import MessageStreamDefinition, StrategyOnFull, StreamManagerClient

    ipc = GreengrassCoreIPCClientV2()
    value = ipc.get_configuration_async(key_path=["threshold"]).result(5).value
    ipc.publish_to_iot_core_async(
        topic_name="inspector/" + os.environ["AWS_IOT_THING_NAME"], qos="1",
        payload=json.dumps(value).encode()).result(5)
    ipc.close()
    with StreamManagerClient() as sm:
        sm.create_message_stream(MessageStreamDefinition(
            name="Uploads", strategy_on_full=StrategyOnFull.OverwriteOldestData))
        sm.append_message("Uploads", b"hello")
    print("ok")
""")


def run_component(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", COMPONENT_SCRIPT], env={**os.environ, **env},
        capture_output=True, text=True, timeout=60,
    )


def test_emulate_prints_env_and_serves_a_real_client(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"threshold": 0.4}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector", "emulate", "--config", str(config),
         "--s3-dir", str(tmp_path / "s3"), "--thing-name", "line-7", "--component", "x.Y",
         "--watch-config"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert proc.stdout is not None
        env: dict[str, str] = {}
        for line in proc.stdout:
            if line.startswith("export "):
                name, _, value = line[len("export "):].strip().partition("=")
                env[name] = shlex.split(value)[0]
            if env.keys() >= ENV_NAMES:
                break
        assert env.keys() >= ENV_NAMES, f"emulate exited with {proc.poll()}"
        assert env["SVCUID"] == env["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        assert env["AWS_IOT_THING_NAME"] == "line-7"
        result = run_component(env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "ok"
        assert_redeploys_on_change(env, config)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "PublishToIoTCore from x.Y: topic=inspector/line-7" in output


def assert_redeploys_on_change(env: dict[str, str], config: Path) -> None:
    """--watch-config: editing the file deploys it; subscribers get an update event."""
    ipc = GreengrassCoreIPCClientV2(client=connect(
        ipc_socket=env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"],
        authtoken=env["SVCUID"]))
    try:
        updated = threading.Event()
        _, operation = ipc.subscribe_to_configuration_update_async(
            on_stream_event=lambda event: updated.set())
        operation.get_response().result(5)
        config.write_text(json.dumps({"threshold": 0.9}))
        stat = config.stat()
        os.utime(config, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
        assert updated.wait(10)
        value = ipc.get_configuration_async(key_path=["threshold"]).result(5).value
        assert value == {"threshold": 0.9}
    finally:
        ipc.close()


def test_emulate_rejects_a_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    result = subprocess.run(
        [sys.executable, "-m", "inspector", "emulate", "--config", str(bad)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "expected a mapping" in result.stderr


RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "inference" / "recipe.yaml"


def start_emulate(tmp_path: Path, *argv: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "inspector", "emulate", *argv], cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    env: dict[str, str] = {}
    for line in proc.stdout:
        assert line.startswith("export "), f"not an export line on stdout: {line!r}"
        name, _, value = line[len("export "):].strip().partition("=")
        env[name] = shlex.split(value)[0]
        if name == "AWS_DEFAULT_REGION":
            break
    assert env.keys() >= ENV_NAMES, f"emulate exited with {proc.poll()}"
    return proc, env


def served_configuration(env: dict[str, str]) -> dict[str, object]:
    ipc = GreengrassCoreIPCClientV2(client=connect(
        ipc_socket=env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"],
        authtoken=env["SVCUID"]))
    try:
        response = ipc.get_configuration_async().result(5)
        assert response.component_name == "com.inspector.Inference"
        return dict(response.value)
    finally:
        ipc.close()


def test_emulate_without_arguments_serves_the_recipe_defaults(tmp_path: Path) -> None:
    """As a core after a deployment without configuration changes: the recipe's
    DefaultConfiguration, under the recipe's component name."""
    import yaml

    defaults = yaml.safe_load(RECIPE.read_text())["ComponentConfiguration"]["DefaultConfiguration"]
    proc, env = start_emulate(tmp_path)
    try:
        assert served_configuration(env) == defaults
    finally:
        proc.send_signal(signal.SIGTERM)
        _, log = proc.communicate(timeout=20)
    assert proc.returncode == 0, log
    assert "emulating Greengrass for com.inspector.Inference" in log  # logs on stderr


def test_emulate_merges_a_yaml_file_over_the_defaults(tmp_path: Path) -> None:
    import yaml

    defaults = yaml.safe_load(RECIPE.read_text())["ComponentConfiguration"]["DefaultConfiguration"]
    config = tmp_path / "site.yaml"
    config.write_text("# a site's settings\nImageDirectory: /srv/camera\nQueueSize: 4\n"
                      "accessControl:\n  aws.greengrass.ipc.pubsub: {}\n")
    proc, env = start_emulate(tmp_path, "--config", str(config))
    try:
        served = served_configuration(env)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
    assert served["ImageDirectory"] == "/srv/camera" and served["QueueSize"] == 4
    assert served["ConfidenceThreshold"] == defaults["ConfidenceThreshold"]
    access = served["accessControl"]
    assert isinstance(access, dict) and "aws.greengrass.ipc.mqttproxy" in access  # merged


def test_fixture_env_drives_a_component_process(tmp_path: Path) -> None:
    with running_greengrass(tmp_path, config={"threshold": 0.6}, thing_name="t1") as gg:
        assert gg.env.keys() >= ENV_NAMES
        result = run_component(gg.env)
        assert result.returncode == 0, result.stderr
        (message,) = gg.nucleus.published
        assert (message.topic, message.json()) == ("inspector/t1", {"threshold": 0.6})
        assert gg.stream_manager.messages("Uploads") == [b"hello"]


def test_running_nucleus_falls_back_to_a_short_socket_path(tmp_path: Path) -> None:
    deep = tmp_path / ("d" * 120)
    with running_nucleus(deep) as nucleus:
        assert len(nucleus.socket_path.encode()) <= 107
        assert os.path.exists(nucleus.socket_path)
    assert not os.path.exists(nucleus.socket_path)
