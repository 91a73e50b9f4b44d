"""``inspector run`` under Greengrass, as a subprocess, against both emulators and the real SDKs.

The service finds the nucleus environment (socket, SVCUID, thing name, StreamManager port) and
takes everything else from the component configuration the nucleus emulator serves. The model's
score is the brightest pixel of the input: white images are defects at ConfidenceThreshold 0.6,
dark ones (and the grey letterbox padding, 114/255) pass.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from jsonschema import Draft202012Validator

from inspector.result import load_schema
from inspector.testing.fixtures import Greengrass, running_greengrass
from inspector.types import Size
from onnx_factory import (
    constant_head_model,
    head_tensor,
    max_pixel_model,
    write_model,
)

COMPONENT = "com.inspector.Inference"
THING = "line-7"
INPUT = Size(64, 96)
BRIGHT, DARK = 255, 40

pytestmark = pytest.mark.timeout(120)


def brightness_model(name: str = "bright", version: str = "7") -> onnx.ModelProto:
    """One box (cx 48, cy 32, w 20, h 10) whose score is the input's maximum (0..1)."""
    return max_pixel_model(INPUT, name=name, version=version, box=(48.0, 32.0, 20.0, 10.0))


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_model(tmp_path_factory.mktemp("model") / "bright.onnx", brightness_model())


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.05)


def write_image(folder: Path, name: str, value: int) -> bytes:
    ok, data = cv2.imencode(".png", np.full((INPUT.height, INPUT.width, 3), value, np.uint8))
    assert ok
    temp = folder / f".{name}.part"
    temp.write_bytes(data.tobytes())
    os.replace(temp, folder / name)
    return data.tobytes()


class Component:
    """The service as Greengrass starts it: ``python -m inspector run``, nucleus env only."""

    def __init__(self, gg: Greengrass, tmp_path: Path, extra_env: dict[str, str] | None = None):
        self.gg = gg
        self.tmp_path = tmp_path
        self.env = {**os.environ, **gg.env, "AWS_IOT_THING_NAME": THING,
                    "PYTHONUNBUFFERED": "1", "ORT_DISABLE_TELEMETRY": "1", **(extra_env or {})}
        self.logs: list[Path] = []
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *, wait_running: bool = True) -> Component:
        log = self.tmp_path / f"component-{len(self.logs)}.log"
        self.logs.append(log)
        states_before = len(self.gg.nucleus.states)
        with open(log, "wb") as out:
            proc = self.proc = subprocess.Popen(
                [sys.executable, "-m", "inspector", "run"], env=self.env, stdout=out,
                stderr=subprocess.STDOUT,
            )
        if wait_running:
            wait_until(lambda: len(self.gg.nucleus.states) > states_before
                       or proc.poll() is not None, 60, "UpdateState")
            assert self.gg.nucleus.states[-1] == "RUNNING", self.log_text()
        return self

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def wait_exit(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout=timeout)

    def log_text(self) -> str:
        return "".join(p.read_text("utf-8", "replace") for p in self.logs if p.exists())

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def greengrass(tmp_path: Path, model_path: Path) -> Iterator[tuple[Greengrass, Path]]:
    watch = tmp_path / "watch"
    watch.mkdir()
    config = {
        "ImageDirectory": str(watch),
        "ModelPath": str(model_path),
        "AllowUnverifiedModel": True,
        "ConfidenceThreshold": 0.6,
        "StableSeconds": 0.2,
        "ProcessedAction": "delete",
        "PublishResultsOnTopic": "factory/{thingName}/results",
        "UploadBucket": "defects-bucket",
        "UploadMaxRetries": 2,
        "MetricsIntervalSeconds": 0.5,
        "accessControl": {"aws.greengrass.ipc.mqttproxy": {f"{COMPONENT}:mqttproxy:1": {
            "operations": ["aws.greengrass#PublishToIoTCore"],
            "resources": ["factory/+/results", "inspector/metrics"]}}},
    }
    with running_greengrass(tmp_path, config=config, component_name=COMPONENT,
                            thing_name=THING) as gg:
        yield gg, watch


@pytest.fixture
def component(greengrass: tuple[Greengrass, Path], tmp_path: Path) -> Iterator[Component]:
    gg, _ = greengrass
    comp = Component(gg, tmp_path)
    yield comp
    comp.kill()


def results(gg: Greengrass, operation: str = "PublishToIoTCore") -> list[dict[str, Any]]:
    return [m.json() for m in list(gg.nucleus.published)
            if m.operation == operation and m.topic == f"factory/{THING}/results"]


def result_names(gg: Greengrass) -> set[str]:
    return {r["image"]["name"] for r in results(gg)}


def successes(gg: Greengrass) -> dict[str, Any]:
    return {u.key: u for u in list(gg.stream_manager.uploads) if u.status == "Success"}


def held_files(watch: Path) -> list[str]:
    held = watch / ".inspector" / "held"
    return sorted(p.name for p in held.iterdir()) if held.exists() else []


def test_results_published_and_defects_uploaded(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    gg, watch = greengrass
    gg.nucleus.config[COMPONENT]["PublishTarget"] = "both"
    component.start()
    images = {f"img{i}.png": write_image(watch, f"img{i}.png", BRIGHT if i % 2 else DARK)
              for i in range(6)}
    wait_until(lambda: len(results(gg)) >= 6 and len(successes(gg)) >= 3, 30, "results")
    wait_until(lambda: not held_files(watch) and not any(watch.glob("*.png")), 10, "settled")

    iot = results(gg)
    assert sorted(r["image"]["name"] for r in iot) == sorted(images)  # one message per image
    validator = Draft202012Validator(load_schema())
    for result in iot:
        validator.validate(result)
        assert result["device"] == THING
        assert result["verdict"] == ("defect" if result["image"]["name"] in
                                     {"img1.png", "img3.png", "img5.png"} else "pass")
    assert {m.qos for m in gg.nucleus.published if m.operation == "PublishToIoTCore"
            and "results" in m.topic} == {"1"}
    assert len(results(gg, "PublishToTopic")) == 0  # the local topic is its own
    local = [m for m in gg.nucleus.published if m.operation == "PublishToTopic"]
    assert sorted(m.json_message["image"]["name"] for m in local) == sorted(images)

    uploads = successes(gg)
    assert len(uploads) == 3 and len(gg.stream_manager.uploads) == 3
    for key, upload in uploads.items():
        name = Path(upload.input_url).name
        assert key.startswith(f"inspector/{THING}/") and key.endswith(".png")
        assert upload.path is not None and upload.path.read_bytes() == images[name]
        assert upload.user_metadata["verdict"] == "defect"
        assert upload.user_metadata["detections"] == "1"
        assert upload.user_metadata["model-version"] == "7"
    # streams created once, never per upload
    creates = [r for op, r in gg.stream_manager.requests if op == "CreateMessageStream"]
    assert len(creates) == 2

    wait_until(lambda: any(m.topic == "inspector/metrics" for m in gg.nucleus.published), 10,
               "metrics")
    metrics = [m.json() for m in gg.nucleus.published if m.topic == "inspector/metrics"][-1]
    assert metrics["model"]["name"] == "bright" and metrics["model"]["version"] == "7"
    assert set(metrics["latency_ms"]["total"]) == {"p50", "p95"}
    for key in ("images", "defects", "failures", "queue_depth", "uptime_s"):
        assert key in metrics
    assert component.stop() == 0


def test_configuration_update_applied_live_and_invalid_rejected(
    greengrass: tuple[Greengrass, Path], component: Component, tmp_path: Path
) -> None:
    gg, watch = greengrass
    component.start()
    write_image(watch, "a.png", DARK)
    wait_until(lambda: "a.png" in result_names(gg), 30, "a.png")

    outcome = gg.nucleus.update_config(COMPONENT, {"ConfidenceThreshold": 0.1}, merge=True)
    assert outcome.status == "ACCEPTED"
    wait_until(lambda: "settings changed: ConfidenceThreshold" in component.log_text(), 10)
    write_image(watch, "b.png", DARK)
    wait_until(lambda: "b.png" in result_names(gg), 30, "b.png")

    for bad, key in (({"ConfidenceThreshold": 1.5}, "ConfidenceThreshold"),
                     ({"ConfidenceTreshold": 0.5}, "ConfidenceTreshold"),
                     ({"PublishResultsOnTopic": "results/#"}, "PublishResultsOnTopic")):
        outcome = gg.nucleus.update_config(COMPONENT, bad, merge=True)
        assert outcome.status == "REJECTED" and not outcome.applied
        assert outcome.message is not None and key in outcome.message
    assert gg.nucleus.config[COMPONENT]["ConfidenceThreshold"] == 0.1
    write_image(watch, "c.png", DARK)
    wait_until(lambda: "c.png" in result_names(gg), 30, "c.png")

    # a new model path, mid-burst: loaded and swapped between two images, none lost
    other = write_model(tmp_path / "other.onnx", constant_head_model(
        head_tensor([(48.0, 32.0, 20.0, 10.0, 0.05)]), input_size=INPUT, name="other",
        version="2"))
    burst = [f"e{i}.png" for i in range(10)]
    for name in burst:
        write_image(watch, name, BRIGHT)
    assert gg.nucleus.update_config(COMPONENT, {"ModelPath": str(other)},
                                    merge=True).status == "ACCEPTED"
    wait_until(lambda: "settings changed: ModelPath" in component.log_text(), 10)
    write_image(watch, "d.png", BRIGHT)
    wait_until(lambda: result_names(gg) >= {"d.png", *burst}, 30, "d.png and the burst")
    models = [r["model"]["name"] for r in results(gg) if r["image"]["name"] in burst]
    assert len(models) == 10 and set(models) <= {"bright", "other"}
    assert models == sorted(models)  # bright until the swap, then other

    by_name = {r["image"]["name"]: r for r in results(gg)}
    assert by_name["a.png"]["verdict"] == "pass"  # dark (0.16) at 0.6
    assert by_name["b.png"]["verdict"] == "defect"  # dark (0.16) at 0.1
    assert by_name["c.png"]["verdict"] == "defect"  # the rejected 1.5 never applied
    assert by_name["d.png"]["model"]["name"] == "other"
    assert by_name["d.png"]["verdict"] == "pass"
    assert component.stop() == 0


def test_nucleus_restart_mid_burst_loses_no_result(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    gg, watch = greengrass
    gg.nucleus.config[COMPONENT]["UploadBucket"] = ""
    component.start()
    names = [f"burst{i:02d}.png" for i in range(40)]
    for name in names[:20]:
        write_image(watch, name, DARK)
    wait_until(lambda: len(results(gg)) >= 5, 30, "first results")
    gg.nucleus.restart(down_s=1.0)  # every connection dropped, then listening again
    for name in names[20:]:
        write_image(watch, name, DARK)
    wait_until(lambda: result_names(gg) >= set(names), 60, "every result")
    assert gg.nucleus.connect_count >= 2
    # configuration updates, validation, component updates
    wait_until(lambda: gg.nucleus.subscriber_count() == 3, 10, "subscriptions again")
    assert "lost the connection to the Greengrass nucleus" in component.log_text()
    assert component.stop() == 0
    spool = watch / ".inspector" / "spool"
    assert not list(spool.glob("*.json"))


def test_sigterm_while_reporting_running_stops_gracefully(
    greengrass: tuple[Greengrass, Path], tmp_path: Path
) -> None:
    """The nucleus may stop a component the moment it reports RUNNING. The UpdateState answer is
    held back, so SIGTERM arrives while the service waits for it: the service stops cleanly
    (exit 0, the stop logged), it is not killed by the signal (-15)."""
    gg, _ = greengrass
    gg.nucleus.delay_s["UpdateState"] = 1.0
    comp = Component(gg, tmp_path).start(wait_running=False)
    wait_until(lambda: any(c.operation.endswith("UpdateState") for c in gg.nucleus.calls), 60,
               "UpdateState asked")
    assert comp.stop() == 0, comp.log_text()
    assert "SIGTERM received" in comp.log_text()


def test_kill_9_as_soon_as_a_result_reaches_the_nucleus_loses_nothing(
    greengrass: tuple[Greengrass, Path], tmp_path: Path
) -> None:
    """The MQTT sink publishes from memory while it spools (express publish), so the nucleus
    can have a result before it is durable on the device. A kill -9 at that moment, whichever
    step the service is in: nothing is lost and every second copy is either the same message
    sent again from the spool or a new inspection marked ``repeat: true``."""
    gg, watch = greengrass
    gg.nucleus.config[COMPONENT]["UploadBucket"] = ""
    names = [f"k{i}.png" for i in range(3)]
    comps = []
    try:
        for name in names:
            comp = Component(gg, tmp_path)
            comps.append(comp)
            comp.start()
            write_image(watch, name, DARK)
            wait_until(lambda n=name: n in result_names(gg), 30, f"{name} published")
            comp.kill()  # SIGKILL the moment its result reached the nucleus
        last = Component(gg, tmp_path)
        comps.append(last)
        last.start()
        spool = watch / ".inspector" / "spool"
        wait_until(lambda: not any(watch.glob("k*.png")) and not list(spool.glob("*.json")),
                   30, "every image settled, the spool empty")
        assert last.stop() == 0
    finally:
        for comp in comps:
            comp.kill()
    sent = [m for m in list(gg.nucleus.published) if m.topic == f"factory/{THING}/results"]
    by_name: dict[str, list[Any]] = {}
    for message in sent:
        by_name.setdefault(message.json()["image"]["name"], []).append(message)
    assert sorted(by_name) == names
    for copies in by_name.values():
        first = copies[0].json()
        assert first["repeat"] is False
        for again in copies[1:]:
            result = again.json()
            assert result == first or result["repeat"] is True, (first, result)


def test_stream_manager_down_then_back_every_defect_uploaded(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    gg, watch = greengrass
    gg.stream_manager.stop()
    component.start()
    names = [f"d{i}.png" for i in range(4)]
    for name in names:
        write_image(watch, name, BRIGHT)
    wait_until(lambda: len(results(gg)) >= 4, 30, "results")
    wait_until(lambda: "cannot reach StreamManager" in component.log_text(), 10)
    # kept until uploaded (a result can reach the nucleus before its image is moved to held:
    # the MQTT publish starts while the spool entry is written, the hold comes after it)
    wait_until(lambda: sorted(held_files(watch)) == names, 10, "every defect held")
    gg.stream_manager.fail_uploads = 1  # and the first export fails: retried
    gg.stream_manager.start()
    wait_until(lambda: len(successes(gg)) >= 4, 60, "uploads")
    wait_until(lambda: not held_files(watch), 10, "held released")
    assert sorted(Path(u.input_url).name for u in successes(gg).values()) == names
    assert [u.status for u in gg.stream_manager.uploads].count("Failure") == 1
    assert component.stop() == 0


def test_upload_failing_past_retries_goes_to_failed_folder(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    gg, watch = greengrass
    gg.nucleus.config[COMPONENT]["UploadMaxRetries"] = 1
    gg.nucleus.config[COMPONENT]["UploadRetryHours"] = 0  # the old rule: retries, no window
    gg.stream_manager.fail_uploads = lambda task: "doomed" in task.key
    component.start()
    write_image(watch, "doomed.png", BRIGHT)
    write_image(watch, "fine.png", BRIGHT)
    failed = watch / ".inspector" / "failed"
    wait_until(lambda: (failed / "doomed.png").exists(), 60, "doomed.png failed")
    wait_until(lambda: len(successes(gg)) == 1 and not held_files(watch), 30, "fine.png")
    reason = (failed / "doomed.png.reason.txt").read_text()
    assert "upload failed 2 time(s)" in reason
    assert [u.status for u in gg.stream_manager.uploads].count("Failure") == 2
    assert "doomed.png: upload to s3://defects-bucket/" in component.log_text()
    assert component.stop() == 0


def test_pending_uploads_survive_a_component_restart(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    gg, watch = greengrass
    gg.stream_manager.stop()
    component.start()
    for name in ("p0.png", "p1.png"):
        write_image(watch, name, BRIGHT)
    wait_until(lambda: len(held_files(watch)) == 2 and len(results(gg)) == 2, 30, "held")
    assert component.stop() == 0
    gg.stream_manager.start()
    component.start()
    wait_until(lambda: len(successes(gg)) == 2 and not held_files(watch), 60, "uploads")
    assert len(results(gg)) == 2  # resumed uploads are not published again
    assert component.stop() == 0


def test_unloadable_model_reports_errored_and_exits(
    greengrass: tuple[Greengrass, Path], component: Component, tmp_path: Path
) -> None:
    gg, _ = greengrass
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    gg.nucleus.config[COMPONENT]["ModelPath"] = str(broken)
    component.start(wait_running=False)
    assert component.wait_exit() == 3
    assert gg.nucleus.states == ["ERRORED"]
    assert "fatal: cannot load the model" in component.log_text()
    assert "broken.onnx" in component.log_text()


def test_tampered_model_reports_errored_and_exits(
    greengrass: tuple[Greengrass, Path], tmp_path: Path, model_path: Path
) -> None:
    gg, _ = greengrass
    gg.nucleus.config[COMPONENT]["ModelPath"] = ""  # the model component's file, as deployed
    tampered = tmp_path / "deployed.onnx"
    tampered.write_bytes(model_path.read_bytes() + b"\0")
    comp = Component(gg, tmp_path, {"INSPECTOR_MODEL_PATH": str(tampered),
                                    "INSPECTOR_MODEL_SHA256": "ab" * 32})
    try:
        comp.start(wait_running=False)
        assert comp.wait_exit() == 3
    finally:
        comp.kill()
    assert gg.nucleus.states == ["ERRORED"]
    log = comp.log_text()
    assert "sha256 mismatch" in log and "ab" * 32 in log


def test_invalid_configuration_reports_errored(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    gg, _ = greengrass
    gg.nucleus.config[COMPONENT]["IouThreshold"] = "high"
    component.start(wait_running=False)
    assert component.wait_exit() == 2
    assert gg.nucleus.states == ["ERRORED"]
    assert "IouThreshold" in component.log_text()


def test_results_spooled_while_the_nucleus_is_away_are_sent_after_a_restart(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    gg, watch = greengrass
    gg.nucleus.config[COMPONENT]["UploadBucket"] = ""
    gg.nucleus.config[COMPONENT]["ShutdownSeconds"] = 1.0  # don't wait out the silent nucleus
    component.start()
    gg.nucleus.delay_s["PublishToIoTCore"] = float("inf")  # a silent nucleus: timeouts
    write_image(watch, "s0.png", DARK)
    write_image(watch, "s1.png", DARK)
    wait_until(lambda: len(list((watch / ".inspector" / "spool").glob("*.json"))) == 2, 30,
               "spooled")
    assert component.stop() == 0
    assert len(list((watch / ".inspector" / "spool").glob("*.json"))) == 2
    gg.nucleus.delay_s.clear()
    component.start()
    wait_until(lambda: {"s0.png", "s1.png"} <= result_names(gg), 30, "re-sent")
    wait_until(lambda: not list((watch / ".inspector" / "spool").glob("*.json")), 10)
    assert component.stop() == 0
    # a publish that timed out is sent again: the cloud may see it twice (same key)
    sent = [(r["device"], r["image"]["name"], r["image"]["sha256"], r["time"])
            for r in results(gg)]
    assert len(set(sent)) == 2


def test_the_recipe_grants_exactly_what_the_component_publishes(
    tmp_path: Path, model_path: Path
) -> None:
    """With the recipe's own DefaultConfiguration and the nucleus enforcing accessControl, every
    publish (results to IoT Core and pub/sub, metrics) is authorized."""
    import yaml

    recipe = yaml.safe_load(
        (Path(__file__).parents[1] / "recipes" / "inference" / "recipe.yaml").read_text())
    config = dict(recipe["ComponentConfiguration"]["DefaultConfiguration"])
    watch = tmp_path / "watch"
    watch.mkdir()
    config.update(ImageDirectory=str(watch), ModelPath=str(model_path), StableSeconds=0.2,
                  AllowUnverifiedModel=True,
                  PublishTarget="both", MetricsIntervalSeconds=0.3, ConfidenceThreshold=0.6)
    with running_greengrass(tmp_path, config=config, component_name=COMPONENT,
                            thing_name=THING, enforce_access_control=True) as gg:
        comp = Component(gg, tmp_path)
        try:
            comp.start()
            write_image(watch, "x.png", BRIGHT)
            wait_until(lambda: {m.operation for m in gg.nucleus.published
                                if m.topic == config["PublishResultsOnTopic"]}
                       == {"PublishToIoTCore", "PublishToTopic"}, 30, "results")
            wait_until(lambda: any(m.topic == config["MetricsTopic"]
                                   for m in gg.nucleus.published), 10, "metrics")
            assert comp.stop() == 0
        finally:
            comp.kill()
        log = comp.log_text()
        assert "Unauthorized" not in log and "refused" not in log


def test_a_full_spool_refuses_the_result_and_says_so(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    gg, watch = greengrass
    gg.nucleus.config[COMPONENT]["UploadBucket"] = ""
    gg.nucleus.config[COMPONENT]["ShutdownSeconds"] = 1.0
    gg.nucleus.config[COMPONENT]["SpoolMaxMessages"] = 1
    component.start()
    gg.nucleus.delay_s["PublishToIoTCore"] = float("inf")  # nothing is acknowledged
    write_image(watch, "f0.png", DARK)
    wait_until(lambda: len(list((watch / ".inspector" / "spool").glob("*.json"))) == 1, 30,
               "spooled")
    write_image(watch, "f1.png", DARK)
    wait_until(lambda: "f1.png" in component.log_text() and "is full" in component.log_text(),
               30, "refusal logged")
    assert component.stop() == 0
    assert len(list((watch / ".inspector" / "spool").glob("*.json"))) == 1
    refusal = next(line for line in component.log_text().splitlines() if "is full" in line)
    assert "f1.png" in refusal and "limits 1 messages" in refusal


# --- custody under faults (issue 12) -----------------------------------------------------------

def metrics_messages(gg: Greengrass) -> list[dict[str, Any]]:
    return [m.json() for m in list(gg.nucleus.published) if m.topic == "inspector/metrics"]


def test_refused_publishes_are_dead_lettered_named_counted_and_images_accounted(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    """Fault 1: the nucleus refuses the results topic (not in accessControl). Nothing is lost:
    each result lands in the dead-letter file, named in an ERROR line and counted."""
    gg, watch = greengrass
    config = gg.nucleus.config[COMPONENT]
    config["UploadBucket"] = ""
    config["accessControl"] = {"aws.greengrass.ipc.mqttproxy": {f"{COMPONENT}:mqttproxy:1": {
        "operations": ["aws.greengrass#PublishToIoTCore"], "resources": ["inspector/metrics"]}}}
    gg.nucleus.enforce_access_control = True
    component.start()
    startup = component.log_text()
    assert "PublishResultsOnTopic: topic 'factory/line-7/results' is not allowed" in startup
    names = [f"r{i}.png" for i in range(3)]
    for i, name in enumerate(names):
        write_image(watch, name, DARK if i else BRIGHT)
    dead = watch / ".inspector" / "spool" / "dead-letter.jsonl"
    wait_until(lambda: dead.exists() and len(dead.read_text().splitlines()) == 3, 30, "dead")
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert sorted(x["image"] for x in letters) == names
    assert all("UnauthorizedError" in x["error"] and x["topic"] == f"factory/{THING}/results"
               for x in letters)
    assert sorted(json.loads(x["payload"])["image"]["name"] for x in letters) == names
    log = component.log_text()
    for name in names:
        assert any("ERROR" in line and name in line and str(dead) in line
                   for line in log.splitlines()), name
    wait_until(lambda: any(m.get("dead_letters") == 3 for m in metrics_messages(gg)), 10,
               "dead_letters in the metrics")
    # accounted: 3 in, 3 settled (a dead letter can be written, by the publisher, a moment
    # before its image is moved), and not retried forever (the line comes before the unspool)
    wait_until(lambda: not list(watch.glob("*.png")), 10, "every image settled")
    wait_until(lambda: not list((watch / ".inspector" / "spool").glob("*.json")), 10, "unspooled")
    assert results(gg) == []
    # the validation hook refuses a topic the component's accessControl does not allow
    outcome = gg.nucleus.update_config(COMPONENT, {"MetricsTopic": "elsewhere/metrics"},
                                       merge=True)
    assert outcome.status == "REJECTED" and "accessControl" in (outcome.message or "")
    assert gg.nucleus.states == ["RUNNING"]
    assert component.stop() == 0


def test_results_that_cannot_be_spooled_keep_the_image_and_report_errored(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    """Rule 1 under Greengrass: a spool that cannot take a result (full, nucleus silent) keeps
    the image; after SinkStallSeconds the component reports ERRORED and exits 6."""
    gg, watch = greengrass
    config = gg.nucleus.config[COMPONENT]
    config.update(UploadBucket="", ShutdownSeconds=1.0, SpoolMaxMessages=1, SinkStallSeconds=2)
    component.start()
    gg.nucleus.delay_s["PublishToIoTCore"] = float("inf")  # nothing is acknowledged
    write_image(watch, "g0.png", DARK)
    wait_until(lambda: len(list((watch / ".inspector" / "spool").glob("*.json"))) == 1, 30,
               "spooled")
    write_image(watch, "g1.png", DARK)
    assert component.wait_exit(60) == 6
    assert gg.nucleus.states == ["RUNNING", "ERRORED"]
    assert sorted(p.name for p in watch.glob("*.png")) == ["g1.png"]  # kept, not done
    log = component.log_text()
    assert any("ERROR" in line and "g1.png" in line and "is full" in line
               for line in log.splitlines())
    assert "exiting with code 6" in log and "1 inspected image(s) kept undelivered" in log
    spooled = [json.loads(p.read_text()) for p in (watch / ".inspector" / "spool").glob("*.json")]
    assert [m["image"] for m in spooled] == ["g0.png"]  # delivered (durable) or kept: no loss


def test_uploads_retry_over_their_window_then_fail_counted(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    """Fault 4: a failing upload is retried with backoff for UploadRetryHours (here 3 s), past
    UploadMaxRetries, then failed/ -- counted in the metrics and the stop line."""
    gg, watch = greengrass
    config = gg.nucleus.config[COMPONENT]
    config.update(UploadMaxRetries=0, UploadRetryHours=3 / 3600)
    gg.stream_manager.fail_uploads = lambda task: "doomed" in task.key
    component.start()
    write_image(watch, "doomed.png", BRIGHT)
    write_image(watch, "fine.png", BRIGHT)
    failed = watch / ".inspector" / "failed"
    wait_until(lambda: (failed / "doomed.png").exists(), 60, "doomed.png failed")
    wait_until(lambda: len(successes(gg)) == 1 and not held_files(watch), 30, "fine.png")
    failures = [u.status for u in gg.stream_manager.uploads].count("Failure")
    assert failures >= 3  # retried over the window, not once (UploadMaxRetries 0)
    assert f"upload failed {failures} time(s)" in (failed / "doomed.png.reason.txt").read_text()
    wait_until(lambda: any(m["uploads"]["failed"] == 1 and m["failures"] == 1
                           and m["held_now"] == 0 for m in metrics_messages(gg)), 10, "metrics")
    last = metrics_messages(gg)[-1]
    assert last["uploads"]["retried"] == failures - 1 and last["held"] == 2
    assert component.stop() == 0
    stop_line = next(x for x in component.log_text().splitlines() if "stopped (signal)" in x)
    assert "1 failed" in stop_line and "0 still held (2 held in all)" in stop_line
    assert f"s3: 1 uploaded, {failures - 1} retried, 1 failed, 0 pending" in stop_line


def test_transient_upload_failures_past_the_old_limit_still_upload(
    greengrass: tuple[Greengrass, Path], component: Component
) -> None:
    gg, watch = greengrass
    gg.nucleus.config[COMPONENT].update(UploadMaxRetries=1)  # once: gave up after 2 failures
    failures = {"n": 0}

    def flaky(task: Any) -> bool:
        failures["n"] += 1
        return failures["n"] <= 3

    gg.stream_manager.fail_uploads = flaky
    component.start()
    write_image(watch, "flaky.png", BRIGHT)
    wait_until(lambda: len(successes(gg)) == 1 and not held_files(watch), 60, "uploaded")
    assert not (watch / ".inspector" / "failed").exists() or not list(
        (watch / ".inspector" / "failed").iterdir())
    assert [u.status for u in gg.stream_manager.uploads].count("Failure") == 3
    assert component.stop() == 0


def test_a_second_service_on_the_folder_reports_errored(
    greengrass: tuple[Greengrass, Path], component: Component, tmp_path: Path
) -> None:
    gg, watch = greengrass
    holder = subprocess.Popen(  # a standalone service (its lock) already on the folder
        [sys.executable, "-c", "import sys, time; from inspector.lock import FolderLock; "
         "FolderLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(60)",
         str(watch)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        component.start(wait_running=False)
        assert component.wait_exit() == 2
    finally:
        holder.kill()
        holder.wait()
    assert gg.nucleus.states[-1] == "ERRORED"
    log = component.log_text()
    assert f"ImageDirectory {watch} is already being inspected" in log
    assert f"pid {holder.pid}" in log
