"""The simulated core: layout, recipe variables, users, deployments and rollback, with small shell
components (fast; they need only sh)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from inspector.testing.nucleus import NucleusEmulator
from inspector.testing.simcore import SimulatedCore, satisfies

LIB, APP = "com.example.Lib", "com.example.App"
T = 10.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def root() -> Iterator[Path]:
    """A core root other users can reach (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="simcore-", dir="/tmp"))
    os.chmod(folder, 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def nucleus() -> Iterator[NucleusEmulator]:
    with NucleusEmulator(component_name="sim.Core", thing_name="line 7") as emulator:
        yield emulator


def write_build(build: Path, recipe: dict[str, Any], artifacts: dict[str, bytes]) -> Path:
    """A GDK-style build folder: recipes/<x>.yaml and artifacts/<name>/<version>/<files>."""
    name, version = recipe["ComponentName"], recipe["ComponentVersion"]
    (build / "recipes").mkdir(parents=True, exist_ok=True)
    (build / "recipes" / f"{name}-{version}.yaml").write_text(yaml.safe_dump(recipe))
    folder = build / "artifacts" / name / version
    folder.mkdir(parents=True, exist_ok=True)
    for file, data in artifacts.items():
        (folder / file).write_bytes(data)
    return build


def zip_bytes(files: dict[str, str]) -> bytes:
    path = Path(tempfile.mkstemp(suffix=".zip")[1])
    with zipfile.ZipFile(path, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    data = path.read_bytes()
    path.unlink()
    return data


def lib_recipe(version: str, defaults: dict[str, Any], install: str = "true") -> dict[str, Any]:
    return {
        "RecipeFormatVersion": "2020-01-25", "ComponentName": LIB, "ComponentVersion": version,
        "ComponentConfiguration": {"DefaultConfiguration": defaults},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Install": {"Script": install,
                                      "Setenv": {"DATA": "{artifacts:decompressedPath}/data"}}},
            "Artifacts": [{"URI": "s3://BUCKET/LIB/VERSION/data.zip", "Unarchive": "ZIP",
                           "Permission": {"Read": "ALL"}}],
        }],
    }


APP_RUN = """\
env | sort > "$WORK/env.txt"
id -u > "$WORK/uid"
pwd > "$WORK/pwd"
cat "$LIB_DIR/hello.txt" > "$WORK/hello"
trap 'echo term >> "$WORK/term"; exit 0' TERM
while true; do sleep 0.05; done
"""


def app_recipe() -> dict[str, Any]:
    return {
        "RecipeFormatVersion": "2020-01-25", "ComponentName": APP, "ComponentVersion": "1.0.0",
        "ComponentDependencies": {LIB: {"VersionRequirement": ">=1.0.0 <2.0.0",
                                        "DependencyType": "HARD"}},
        "ComponentConfiguration": {"DefaultConfiguration": {"Mode": "fast", "List": [1, 2]}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {
                "Setenv": {"WORK": "{work:path}", "ROOT": "{kernel:rootPath}",
                           "THING": "{iot:thingName}", "MODE": "{configuration:/Mode}",
                           "LIST": "{configuration:/List}", "MISSING": "{configuration:/Nope}",
                           "LIB_DIR": "{com.example.Lib:artifacts:decompressedPath}/data",
                           "LIB_OBJ": "{com.example.Lib:configuration:/Obj}",
                           "LIB_FLAG": "{com.example.Lib:configuration:/Flag}",
                           "NOT_DEP": "{com.example.Other:artifacts:path}"},
                "Run": {"Script": APP_RUN, "Setenv": {"MODE": "step wins"}},
            },
        }],
    }


def read_env(core: SimulatedCore) -> dict[str, str]:
    path = core.work_path(APP) / "env.txt"
    deadline = time.monotonic() + T
    while not (path.exists() and path.read_text().endswith("\n")):
        assert time.monotonic() < deadline, core.log(APP)
        time.sleep(0.02)
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def wait_file(path: Path) -> str:
    deadline = time.monotonic() + T
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} never written"
        time.sleep(0.02)
    return path.read_text()


@pytest.fixture
def builds(tmp_path: Path) -> Path:
    data = zip_bytes({"hello.txt": "hello from lib"})
    defaults = {"Greeting": "hi", "Obj": {"a": 1}, "Flag": True}
    write_build(tmp_path / "lib100", lib_recipe("1.0.0", defaults), {"data.zip": data})
    write_build(tmp_path / "lib110", lib_recipe("1.1.0", {**defaults, "Greeting": "hello",
                                                          "New": 5}), {"data.zip": data})
    write_build(tmp_path / "lib120", lib_recipe("1.2.0", defaults, install="exit 7"),
                {"data.zip": data})
    write_build(tmp_path / "app", app_recipe(), {})
    return tmp_path


def test_layout_variables_environment_and_user(
    root: Path, nucleus: NucleusEmulator, builds: Path
) -> None:
    run_as = "nobody:nogroup" if os.geteuid() == 0 else None
    with SimulatedCore(root, nucleus, run_as=run_as, startup_s=0.3) as core:
        for name in ("lib100", "app"):
            core.import_build(builds / name)
        result = core.deploy({LIB: "1.0.0", APP: "1.0.0"})
        assert result.status == "SUCCEEDED", (result.reason, core.log(LIB), core.log(APP))
        assert result.restarted == [LIB, APP]  # dependencies first
        env = read_env(core)

        # the nucleus's layout
        name_hash = hashlib.sha256(LIB.encode()).hexdigest()
        assert (root / "packages/recipes" / f"{name_hash}@1.0.0.recipe.yaml").is_file()
        assert (root / "packages/artifacts" / LIB / "1.0.0" / "data.zip").is_file()
        unzipped = root / "packages/artifacts-unarchived" / LIB / "1.0.0" / "data" / "hello.txt"
        assert unzipped.read_text() == "hello from lib"
        assert oct(unzipped.stat().st_mode & 0o777) == oct(0o444)  # Read: ALL

        # variables, Setenv (the step's wins), the nucleus's environment
        assert env["WORK"] == str(root / "work" / APP) == wait_file(
            core.work_path(APP) / "pwd").strip()
        assert env["ROOT"] == str(root) and env["THING"] == "line 7"
        assert env["MODE"] == "step wins" and env["LIST"] == "[1,2]"
        assert env["MISSING"] == "{configuration:/Nope}"  # left as is, like the nucleus
        assert env["LIB_DIR"] == str(unzipped.parent)
        assert env["LIB_OBJ"] == '{"a":1}' and env["LIB_FLAG"] == "true"
        assert env["NOT_DEP"] == "{com.example.Other:artifacts:path}"  # not a dependency
        assert env["SVCUID"] == env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] == core.tokens[APP]
        assert nucleus.tokens[env["SVCUID"]] == APP
        assert env["AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"] == nucleus.socket_path
        assert env["PATH"].split(os.pathsep)[0] == str(core.path_first)
        assert wait_file(core.work_path(APP) / "hello") == "hello from lib"
        uid = wait_file(core.work_path(APP) / "uid").strip()
        if run_as:
            assert core.run_as == ("nobody", "nogroup") and uid == "65534"
            assert (core.work_path(APP)).stat().st_uid == 65534
        else:
            assert uid == str(os.geteuid())


def test_new_version_keeps_configuration_restarts_hard_dependants_and_rolls_back(
    root: Path, nucleus: NucleusEmulator, builds: Path
) -> None:
    with SimulatedCore(root, nucleus, startup_s=0.3) as core:
        for name in ("lib100", "lib110", "lib120", "app"):
            core.import_build(builds / name)
        assert core.deploy({LIB: "1.0.0", APP: "1.0.0"}).status == "SUCCEEDED"
        first = core.process(APP)
        assert first is not None
        read_env(core)

        # a new Lib version: existing values kept, new keys added; App (HARD) restarted
        (core.work_path(APP) / "env.txt").unlink()
        result = core.deploy({LIB: "1.1.0"})
        assert result.status == "SUCCEEDED", result.reason
        assert result.restarted == [LIB, APP]
        assert wait_file(core.work_path(APP) / "term") == "term\n"  # SIGTERM, then a new Run
        assert first.poll() == 0
        assert nucleus.config[LIB] == {"Greeting": "hi", "Obj": {"a": 1}, "Flag": True, "New": 5}
        assert read_env(core)["LIB_DIR"].endswith(f"{LIB}/1.1.0/data")

        # a reset brings the new default back; a config-only change restarts nothing
        second = core.process(APP)
        result = core.deploy({}, configuration={LIB: {"reset": ["/Greeting"]},
                                                APP: {"merge": {"Mode": "slow"}}})
        assert result.status == "SUCCEEDED" and nucleus.config[LIB]["Greeting"] == "hello"
        # App's Setenv reads /Mode: its rendered lifecycle changed, so the nucleus restarts it
        assert result.restarted == [APP] and nucleus.config[APP]["Mode"] == "slow"
        assert core.process(APP) is not second

        # an Install that fails: rolled back to 1.1.0, App running again
        result = core.deploy({LIB: "1.2.0"})
        assert result.status == "FAILED_ROLLBACK_COMPLETE"
        assert result.failed_component == LIB and "exited with 7" in result.reason
        assert core.versions == {LIB: "1.1.0", APP: "1.0.0"}
        assert nucleus.versions[LIB] == "1.1.0" and nucleus.config[LIB]["New"] == 5
        running = core.process(APP)
        assert running is not None and running.poll() is None
        assert "install failed with exit code 7" in core.log(LIB)

        # removing App stops it; its configuration goes with it
        removed = core.deploy({}, remove=(APP,))
        assert removed.status == "SUCCEEDED" and core.versions == {LIB: "1.1.0"}
        assert running.wait(T) == 0 and core.process(APP) is None
        assert APP not in nucleus.config and APP not in nucleus.versions


def test_missing_dependency_fails_with_no_state_change(
    root: Path, nucleus: NucleusEmulator, builds: Path
) -> None:
    with SimulatedCore(root, nucleus, startup_s=0.3) as core:
        core.import_build(builds / "app")
        result = core.deploy({APP: "1.0.0"})
        assert result.status == "FAILED_NO_STATE_CHANGE" and LIB in result.reason
        assert core.versions == {} and core.process(APP) is None


@pytest.mark.parametrize(("version", "requirement", "ok"), [
    ("1.2.0", ">=1.0.0 <2.0.0", True), ("2.0.0", ">=1.0.0 <2.0.0", False),
    ("1.2.0", "1.2.0", True), ("1.2.1", "=1.2.0", False), ("3.1.0", "*", True),
    ("0.9.0", ">=1.0.0 || <1.0.0", True),
])
def test_version_requirements(version: str, requirement: str, ok: bool) -> None:
    assert satisfies(version, requirement) is ok


def test_command_line_deploys_and_stops_on_sigterm(root: Path, builds: Path) -> None:
    command = [sys.executable, "-m", "inspector.testing.simcore", "--root", str(root),
               "--build", str(builds / "lib100"), "--build", str(builds / "app"),
               "--merge", f"{LIB}=1.0.0", "--merge", f"{APP}=1.0.0", "--startup-s", "0.3",
               "--update-config", json.dumps({APP: {"MERGE": {"List": [3]}}})]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        assert proc.stdout is not None
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("deployment "):
                break
        assert "SUCCEEDED" in lines[-1], "".join(lines)
        assert f"imported {LIB} 1.0.0\n" in lines
        env_file = root / "work" / APP / "env.txt"
        deadline = time.monotonic() + T
        while "LIST=" not in (env_file.read_text() if env_file.exists() else ""):
            assert time.monotonic() < deadline, "env.txt never written"
            time.sleep(0.02)
        assert "LIST=[3]\n" in env_file.read_text()  # the configuration merge, rendered into Setenv
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0 and "stopping" in rest
    assert wait_file(root / "work" / APP / "term") == "term\n"  # the core stopped its component


def old_model_recipe(version: str, file: str, data: bytes) -> dict[str, Any]:
    """The model recipe as it was before issue 17: the file's name and sha256 in the
    DefaultConfiguration, checked by the Install step through {configuration:...}."""
    return {
        "RecipeFormatVersion": "2020-01-25", "ComponentName": "com.example.OldModel",
        "ComponentVersion": version,
        "ComponentConfiguration": {"DefaultConfiguration": {
            "ModelFile": file, "ModelSha256": hashlib.sha256(data).hexdigest()}},
        "Manifests": [{
            "Platform": {"os": "linux"},
            "Lifecycle": {"Install": {"Script": (
                'echo "{configuration:/ModelSha256}  {artifacts:path}/{configuration:/ModelFile}"'
                " | sha256sum -c -")}},
            "Artifacts": [{"URI": f"s3://B/C/V/{file}", "Unarchive": "NONE",
                           "Permission": {"Read": "ALL"}}],
        }],
    }


def test_reproduces_issue_17_item_1_with_the_old_model_recipe(
    root: Path, nucleus: NucleusEmulator, tmp_path: Path
) -> None:
    """A new version of the old recipe fails on a core that runs the previous one (the nucleus
    keeps 1.2.0's ModelFile/ModelSha256), and succeeds on a fresh core: what the simulated
    core must catch, since the configuration rules decide it."""
    old, new = b"model 1.2.0 bytes", b"model 1.3.0 bytes"
    write_build(tmp_path / "m12", old_model_recipe("1.2.0", "m-1.2.0.onnx", old),
                {"m-1.2.0.onnx": old})
    write_build(tmp_path / "m13", old_model_recipe("1.3.0", "m-1.3.0.onnx", new),
                {"m-1.3.0.onnx": new})
    with SimulatedCore(root, nucleus, startup_s=0.3) as core:
        core.import_build(tmp_path / "m12")
        core.import_build(tmp_path / "m13")
        assert core.deploy({"com.example.OldModel": "1.2.0"}).status == "SUCCEEDED"
        result = core.deploy({"com.example.OldModel": "1.3.0"})
        assert result.status == "FAILED_ROLLBACK_COMPLETE"
        assert "m-1.2.0.onnx" in core.log("com.example.OldModel")  # 1.3.0 checked 1.2.0's name
        # only a reset of the kept keys makes it pass
        fixed = core.deploy({"com.example.OldModel": "1.3.0"},
                            configuration={"com.example.OldModel": {"reset": [""]}})
        assert fixed.status == "SUCCEEDED", core.log("com.example.OldModel")
