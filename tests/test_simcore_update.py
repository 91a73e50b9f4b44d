"""Model updates on a running core, through the simulated core: the real model component build
(build_model_component), the real inference code artifact (inspector-app.zip) and recipe, the
service started by the core as ``python -m inspector run`` against the nucleus emulator.

Both recipes run as built, Install steps included: the core puts the test interpreter first on
PATH, it already satisfies requirements.txt, so the inference Install (bootstrap.py) builds its
environment on it without the network (which is closed here: proxies point at a closed port)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from inspector.testing.nucleus import NucleusEmulator
from inspector.testing.simcore import SimulatedCore
from inspector.types import Size
from nucleus_render import pinned_requirements
from onnx_factory import (
    INPUT_NAME,
    IR_VERSION,
    OPSET,
    OUTPUT_NAME,
    constant_head_model,
    head_tensor,
    ultralytics_metadata,
    write_model,
)
from script_loader import REPO, load_script

build_component = load_script("scripts/build_component.py")

MODEL, INFERENCE = "com.inspector.ScratchModel", "com.inspector.Inference"
INPUT = Size(64, 96)
TOPIC = "inspector/results"

pytestmark = pytest.mark.timeout(180)

NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0"}


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def tiny_model(path: Path, score: float, tag: str) -> Path:
    raw = head_tensor([(48.0, 32.0, 20.0, 10.0, score)])
    return write_model(path, constant_head_model(raw, input_size=INPUT, name=tag, version=tag))


def slow_model(path: Path, tag: str, *, size: int = 1024, steps: int = 16) -> Path:
    """One box (score 0.9) after ``steps`` matrix products that depend on the input (so
    onnxruntime cannot fold them away): a tenth of a second or more per image, so that images
    are still in flight when a deployment asks."""
    head = np.zeros((1, 5, 1), np.float32)
    head[0, :, 0] = (48.0, 32.0, 20.0, 10.0, 0.9)
    rotation = np.linalg.qr(np.random.default_rng(0).standard_normal((size, size)))[0]
    nodes = [helper.make_node("ReduceMax", [INPUT_NAME], ["m"], keepdims=0),
             helper.make_node("Mul", ["zero", "m"], ["zm"]),
             helper.make_node("Add", ["rot", "zm"], ["y0"])]
    nodes += [helper.make_node("MatMul", [f"y{k}", "rot"], [f"y{k + 1}"]) for k in range(steps)]
    nodes += [helper.make_node("ReduceSum", [f"y{steps}"], ["s"], keepdims=0),
              helper.make_node("Mul", ["zero", "s"], ["zs"]),
              helper.make_node("Add", ["head", "zs"], [OUTPUT_NAME])]
    graph = helper.make_graph(
        nodes, "slow",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT,
                                       [1, 3, INPUT.height, INPUT.width])],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, [1, 5, 1])],
        initializer=[numpy_helper.from_array(head, "head"),
                     numpy_helper.from_array(rotation.astype(np.float32), "rot"),
                     numpy_helper.from_array(np.zeros((), np.float32), "zero")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    for key, value in ultralytics_metadata(input_size=INPUT, name=tag, version=tag).items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    return write_model(path, model)


def build_model(out: Path, version: str, score: float, *, slow: bool = False) -> Path:
    fp32 = (slow_model if slow else lambda p, t: tiny_model(p, score, t))(
        out.parent / f"src-{version}" / "fp32.onnx", f"fp32-{version}")
    int8 = tiny_model(out.parent / f"src-{version}" / "int8.onnx", score, f"int8-{version}")
    build_component.build_model_component(out, version=version, fp32=fp32, int8=int8,
                                          name="scratch-test", registry=None)
    return out


def build_inference(out: Path) -> Path:
    # pinned to what this interpreter has, so the Install finds it satisfied whatever CI installed
    requirements = pinned_requirements(out.parent / "requirements-pinned.txt")
    build_component.build("inference", out, REPO, requirements=requirements)
    return out


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("builds")
    out = {"inference": build_inference(base / "inference"),
           "1.2.0": build_model(base / "model-1.2.0", "1.2.0", 0.9, slow=True),
           "1.3.0": build_model(base / "model-1.3.0", "1.3.0", 0.8)}
    tampered = base / "model-1.3.0-tampered"
    shutil.copytree(out["1.3.0"], tampered)
    onnx_file = tampered / "artifacts" / MODEL / "1.3.0" / "scratch-test.onnx"
    data = bytearray(onnx_file.read_bytes())
    data[-1] ^= 0x01  # other bytes than the recipe's literal sha256 and model.json say
    onnx_file.write_bytes(bytes(data))
    out["1.3.0-tampered"] = tampered
    return out


@pytest.fixture
def core(builds: dict[str, Path]) -> Iterator[tuple[SimulatedCore, Path]]:
    root = Path(tempfile.mkdtemp(prefix="simcore-", dir="/tmp"))
    os.chmod(root, 0o755)
    watch = root / "images"
    watch.mkdir()
    os.chmod(watch, 0o777)  # the component's user writes its state folder there
    try:
        with NucleusEmulator(component_name="sim.Core", thing_name="line-7") as nucleus, \
                SimulatedCore(root / "greengrass", nucleus, startup_s=90.0,
                              extra_env={"ORT_DISABLE_TELEMETRY": "1", **NO_NETWORK},
                              external={"aws.greengrass.StreamManager": "2.1.0"}) as sim:
            sim.import_build(builds["inference"])
            sim.import_build(builds["1.2.0"])
            config = {"ImageDirectory": str(watch), "StableSeconds": 0.1, "IntraOpThreads": 1,
                      "MetricsIntervalSeconds": 0, "ShutdownSeconds": 5.0}
            result = sim.deploy({MODEL: "1.2.0", INFERENCE: "1.0.0"},
                                configuration={INFERENCE: {"merge": config}})
            assert result.status == "SUCCEEDED", (result.reason, sim.log(MODEL),
                                                  sim.log(INFERENCE))
            assert nucleus.component_states[INFERENCE] == ["RUNNING"], sim.log(INFERENCE)
            yield sim, watch
    finally:
        shutil.rmtree(root, ignore_errors=True)


def results(nucleus: NucleusEmulator) -> list[dict[str, Any]]:
    return [m.json() for m in list(nucleus.published)
            if m.operation == "PublishToIoTCore" and m.topic == TOPIC]


def write_image(folder: Path, name: str) -> None:
    ok, data = cv2.imencode(".png", np.full((INPUT.height, INPUT.width, 3), 200, np.uint8))
    assert ok
    temp = folder / f".{name}.part"
    temp.write_bytes(data.tobytes())
    os.replace(temp, folder / name)


class Camera(threading.Thread):
    """Writes ``count`` images, one every ``every_s``, while a deployment runs (once
    ``start_when()`` holds, if given)."""

    def __init__(self, folder: Path, prefix: str, count: int, every_s: float = 0.05,
                 start_when: Callable[[], bool] | None = None) -> None:
        super().__init__(daemon=True)
        self.folder, self.count, self.every_s = folder, count, every_s
        self.start_when = start_when
        self.names = [f"{prefix}{i:03d}.png" for i in range(count)]

    def run(self) -> None:
        deadline = time.monotonic() + 60
        while self.start_when is not None and not self.start_when():
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        for name in self.names:
            write_image(self.folder, name)
            time.sleep(self.every_s)


def check_each_image_once(nucleus: NucleusEmulator, names: list[str], log: str) -> list[str]:
    """Wait for every result; each image exactly once, no repeat; returns their versions in
    publish order."""
    wait_until(lambda: {r["image"]["name"] for r in results(nucleus)} >= set(names), 60,
               f"results of {len(names)} images\n{log[-3000:]}")
    published = results(nucleus)
    counts = Counter(r["image"]["name"] for r in published)
    assert all(counts[n] == 1 for n in names), {n: c for n, c in counts.items() if c != 1}
    assert not [r for r in published if r.get("repeat")]
    return [r["model"]["version"] for r in published]


def test_new_model_version_is_verified_loaded_and_named_without_losing_an_image(
    core: tuple[SimulatedCore, Path], builds: dict[str, Path],
) -> None:
    sim, watch = core
    nucleus = sim.nucleus
    before = [f"a{i}.png" for i in range(10)]  # ~0.15 s each: well over a second of work
    for name in before:
        write_image(watch, name)
    wait_until(lambda: len(results(nucleus)) >= 1, 60, "a first result")
    first_run = sim.process(INFERENCE)

    # 1.2.0 takes a tenth of a second or more per image: when the deployment asks, images are
    # in flight and the service defers; the camera goes on while it defers and restarts
    sim.import_build(builds["1.3.0"])
    camera = Camera(watch, "b", 10, start_when=lambda: bool(nucleus.deferrals))
    camera.start()
    result = sim.deploy({MODEL: "1.3.0"})
    camera.join()
    assert result.status == "SUCCEEDED", (result.reason, sim.log(MODEL))
    assert result.restarted == [MODEL, INFERENCE]  # HARD dependency on the model
    notice = result.notice
    assert notice is not None and notice.silent == [] and notice.rounds >= 2
    assert notice.deferrals and all(d.component == INFERENCE and d.recheck_after_ms == 2000
                                    and "image(s) in flight" in (d.message or "")
                                    for d in notice.deferrals)
    assert nucleus.deferrals[-1].recheck_after_ms == 0  # let go by the service, not timed out
    assert first_run is not None and first_run.returncode == 0  # stopped by SIGTERM, cleanly
    last = "c0.png"
    write_image(watch, last)

    log = sim.log(INFERENCE)
    versions = check_each_image_once(nucleus, [*before, *camera.names, last], log)
    by_name = {r["image"]["name"]: r["model"]["version"] for r in results(nucleus)}
    assert {by_name[n] for n in before} == {"1.2.0"}  # in flight at the ask: all delivered
    switch = versions.index("1.3.0")
    assert set(versions[switch:]) == {"1.3.0"}  # no 1.2.0 result after the first 1.3.0 one
    final = next(r for r in results(nucleus) if r["image"]["name"] == last)
    assert (final["model"]["name"], final["model"]["version"]) == ("scratch-test", "1.3.0")
    new_file = sim.artifacts_path(MODEL, "1.3.0") / "scratch-test.onnx"
    assert f"model {new_file}: sha256" in log and "verified" in log
    assert "model component com.inspector.ScratchModel 1.3.0: fp32 file" in log
    assert "sha256 " in sim.log(MODEL) and " OK" in sim.log(MODEL)  # the Install's own check
    assert sorted(p.name for p in watch.iterdir()) == [".inspector"]  # every image settled


def test_tampered_model_version_is_refused_and_the_old_model_keeps_running(
    core: tuple[SimulatedCore, Path], builds: dict[str, Path],
) -> None:
    sim, watch = core
    nucleus = sim.nucleus
    sim.import_build(builds["1.3.0-tampered"])
    camera = Camera(watch, "t", 10)
    camera.start()
    result = sim.deploy({MODEL: "1.3.0"})
    camera.join()
    # The model component's Install compares each file with the sha256 its recipe was built
    # with (literals): the deployment fails and the nucleus rolls it back to 1.2.0.
    assert result.status == "FAILED_ROLLBACK_COMPLETE", result.reason
    assert result.failed_component == MODEL and "Install exited with 1" in result.reason
    assert sim.versions == {MODEL: "1.2.0", INFERENCE: "1.0.0"}
    model_log = sim.log(MODEL)
    assert "scratch-test.onnx: sha256 is" in model_log and "was built with" in model_log
    wait_until(lambda: nucleus.component_states[INFERENCE][-1:] == ["RUNNING"]
               and len(nucleus.component_states[INFERENCE]) == 2, 60, "the service back")
    last = "u0.png"
    write_image(watch, last)
    versions = check_each_image_once(nucleus, [*camera.names, last], sim.log(INFERENCE))
    assert set(versions) == {"1.2.0"}
    running = sim.process(INFERENCE)
    assert running is not None and running.poll() is None


def test_install_built_the_environment_offline(core: tuple[SimulatedCore, Path]) -> None:
    sim, _ = core
    venv = sim.work_path(INFERENCE) / "venv"
    assert (venv / "bin" / "python3").exists()
    log = sim.log(INFERENCE)
    assert "1.0.0: install" in log and "install failed" not in log
    assert "nothing to install" in log  # bootstrap.py reused the interpreter, no pip


def test_switch_to_int8_is_a_configuration_merge_applied_live(
    core: tuple[SimulatedCore, Path],
) -> None:
    sim, watch = core
    nucleus = sim.nucleus
    running = sim.process(INFERENCE)
    # a configuration the service rejects: the deployment fails and nothing changes
    refused = sim.deploy({}, configuration={INFERENCE: {"merge": {"ModelPrecision": "int4"}}})
    assert refused.status == "FAILED_NO_STATE_CHANGE" and "ModelPrecision" in refused.reason
    assert nucleus.config[INFERENCE]["ModelPrecision"] == "fp32"

    result = sim.deploy({}, configuration={INFERENCE: {"merge": {"ModelPrecision": "int8"}}})
    assert result.status == "SUCCEEDED", result.reason
    assert result.restarted == []  # nothing restarts
    assert result.notice is not None and result.notice.silent == []  # asked all the same
    assert nucleus.validations[-1].status == "ACCEPTED"  # the service checked the proposal
    int8_file = sim.artifacts_path(MODEL, "1.2.0") / "scratch-test-int8.onnx"
    wait_until(lambda: f"model {int8_file}: sha256" in sim.log(INFERENCE), 30, "the INT8 load")
    write_image(watch, "i0.png")
    wait_until(lambda: any(r["image"]["name"] == "i0.png" for r in results(nucleus)), 60,
               "the INT8 result")
    result_model = next(r for r in results(nucleus) if r["image"]["name"] == "i0.png")["model"]
    assert result_model["version"] == "1.2.0"
    assert result_model["sha256"] == hashlib.sha256(int8_file.read_bytes()).hexdigest()
    assert sim.process(INFERENCE) is running and running is not None and running.poll() is None
