"""Local deployment (scripts/deploy_local.sh --dry-run) and fleet deployment (deploy_fleet.py)."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from onnx_factory import fake_model_folder
from script_loader import load_script

REPO = Path(__file__).resolve().parents[1]
INFERENCE = "com.inspector.Inference"
MODEL = "com.inspector.ScratchModel"
STREAM_MANAGER = "aws.greengrass.StreamManager"
GROUP_ARN = "arn:aws:iot:eu-west-1:123456789012:thinggroup/line-1"


deploy_fleet = load_script("scripts/deploy_fleet.py")


# --- local -----------------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_deploy_local_dry_run_stages_both_components_and_prints_the_command(
    tmp_path: Path,
) -> None:
    models = fake_model_folder(tmp_path / "models", version="1.0.0")
    stage = tmp_path / "stage"
    env = {**os.environ, "PYTHON": sys.executable}
    env["PATH"] = os.pathsep.join(  # no gdk here even where one is installed
        p for p in env.get("PATH", "").split(os.pathsep) if not (Path(p) / "gdk").exists()
    )
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "deploy_local.sh"), "--dry-run",
         "--stage-dir", str(stage), "--models-dir", str(models),
         "--build-dir", str(tmp_path / "build"), "--cli", "/greengrass/v2/bin/greengrass-cli",
         "--registry", str(tmp_path / "published.json")],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout

    staged = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_file())
    assert staged == [
        "artifacts/com.inspector.Inference/1.0.0/inspector-app.zip",
        "artifacts/com.inspector.ScratchModel/1.2.0/model.json",
        "artifacts/com.inspector.ScratchModel/1.2.0/scratch-yolov8n-int8.onnx",
        "artifacts/com.inspector.ScratchModel/1.2.0/scratch-yolov8n.onnx",
        "recipes/com.inspector.Inference-1.0.0.yaml",
        "recipes/com.inspector.ScratchModel-1.2.0.yaml",
    ]
    shipped = stage / "artifacts/com.inspector.ScratchModel/1.2.0/scratch-yolov8n.onnx"
    assert shipped.read_bytes() == (models / "scratch-fp32.onnx").read_bytes()

    printed = result.stdout.strip().splitlines()[-1]
    argv = shlex.split(printed)
    if argv[0] == "sudo":
        argv = argv[1:]
    assert argv == [
        "/greengrass/v2/bin/greengrass-cli", "deployment", "create",
        "--recipeDir", str(stage / "recipes"), "--artifactDir", str(stage / "artifacts"),
        "--merge", "com.inspector.ScratchModel=1.2.0", "--merge", "com.inspector.Inference=1.0.0",
    ]
    # Nothing was deployed and the work tree's build folders were not touched.
    assert "dry run" in result.stdout


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_deploy_local_precision_is_a_settings_merge_not_another_build(tmp_path: Path) -> None:
    models = fake_model_folder(tmp_path / "models", version="1.0.0")
    stage = tmp_path / "stage"
    user = {"com.inspector.Inference": {"MERGE": {"ImageDirectory": "/data/camera"}}}
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "deploy_local.sh"), "--dry-run", "--no-gdk",
         "--stage-dir", str(stage), "--models-dir", str(models), "--build-dir",
         str(tmp_path / "build"), "--registry", str(tmp_path / "published.json"),
         "--precision", "int8", "--update-config", json.dumps(user)],
        capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable},
        timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    argv = shlex.split(result.stdout.strip().splitlines()[-1])
    update = json.loads(argv[argv.index("--update-config") + 1])
    assert update == {"com.inspector.Inference": {"MERGE": {
        "ImageDirectory": "/data/camera", "ModelPrecision": "int8"}}}
    # The same model version, both files, whatever the precision.
    shipped = sorted(p.name for p in (stage / "artifacts" / MODEL / "1.2.0").iterdir())
    assert shipped == ["model.json", "scratch-yolov8n-int8.onnx", "scratch-yolov8n.onnx"]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_deploy_local_help_is_the_header_only() -> None:
    result = subprocess.run(["bash", str(REPO / "scripts" / "deploy_local.sh"), "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0
    assert result.stdout.startswith("Deploy both components")
    assert "--precision int8|fp32" in result.stdout
    assert "set -euo" not in result.stdout and "#" not in result.stdout.splitlines()[0]


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_deploy_local_fails_clearly_without_a_model(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    result = subprocess.run(
        ["bash", str(REPO / "scripts" / "deploy_local.sh"), "--dry-run",
         "--stage-dir", str(tmp_path / "stage"), "--models-dir", str(tmp_path / "models"),
         "--build-dir", str(tmp_path / "build")],
        capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable},
        timeout=120, check=False,
    )
    assert result.returncode != 0
    assert "manifest.json not found" in result.stdout + result.stderr


# --- fleet -----------------------------------------------------------------------------------


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> Any:
    boto3 = pytest.importorskip("boto3")
    for key in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    return boto3.client("greengrassv2", region_name="eu-west-1")


def _expected_document(**overrides: Any) -> dict[str, Any]:
    template = json.loads((REPO / "deployments" / "fleet-deployment.json").read_text())
    return deploy_fleet.build_document(
        template, GROUP_ARN, overrides.get("inference", "1.0.0"), overrides.get("model", "1.2.0"),
        overrides.get("stream_manager", "2.3.0"), None, overrides.get("merge"),
        overrides.get("reset"),
    )


def test_fleet_document_has_both_components_streammanager_and_policies() -> None:
    document = _expected_document()
    assert document["targetArn"] == GROUP_ARN
    assert set(document["components"]) == {
        "com.inspector.Inference", "com.inspector.ScratchModel", "aws.greengrass.StreamManager"
    }
    policies = document["deploymentPolicies"]
    assert policies["failureHandlingPolicy"] == "ROLLBACK"
    assert policies["componentUpdatePolicy"]["action"] == "NOTIFY_COMPONENTS"
    job = document["iotJobConfiguration"]
    assert job["jobExecutionsRolloutConfig"]["exponentialRate"]["baseRatePerMinute"] >= 1
    assert job["abortConfig"]["criteriaList"][0]["action"] == "CANCEL"


def test_deploy_fleet_calls_create_deployment(
    client: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from botocore.stub import Stubber

    expected = _expected_document(model="1.2.0")  # StreamManager 2.3.0: 3.0.1 is out of range
    with Stubber(client) as stub:
        stub.add_response(
            "list_component_versions",
            {"componentVersions": [  # greater versions first, as the service lists them
                {"componentName": STREAM_MANAGER, "componentVersion": version,
                 "arn": f"arn:aws:greengrass:eu-west-1:aws:components:{STREAM_MANAGER}:"
                        f"versions:{version}"}
                for version in ("3.0.1", "2.3.0", "2.2.1")]},
            {"arn": "arn:aws:greengrass:eu-west-1:aws:components:aws.greengrass.StreamManager",
             "maxResults": 100},
        )
        stub.add_response(
            "create_deployment",
            {"deploymentId": "d-123", "iotJobId": "job-1",
             "iotJobArn": "arn:aws:iot:eu-west-1:123456789012:job/job-1"},
            expected,  # Stubber also validates the document against the service model
        )
        rc = deploy_fleet.main(
            ["--thing-group-arn", GROUP_ARN, "--model-version", "1.2.0",
             "--stream-manager-version", "latest"], client=client
        )
        stub.assert_no_pending_responses()
    assert rc == 0
    assert json.loads(capsys.readouterr().out)["deploymentId"] == "d-123"


def test_deploy_fleet_names_real_versions_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 17 item 7: never "latest" in a document. Components: gdk-config.json's versions;
    StreamManager: the pinned one, inside the inference recipe's range for it."""
    import yaml

    assert deploy_fleet.main(["--thing-group-arn", GROUP_ARN, "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "latest" not in printed
    components = json.loads(printed)["components"]
    versions = {name: body["componentVersion"] for name, body in components.items()}
    for kind, name in (("inference", INFERENCE), ("model", MODEL)):
        project = REPO if kind == "inference" else REPO / "recipes" / kind
        gdk = json.loads((project / "gdk-config.json").read_text())
        assert versions[name] == gdk["component"][name]["version"]
    assert versions[STREAM_MANAGER] == deploy_fleet.STREAM_MANAGER_VERSION
    recipe = yaml.safe_load((REPO / "recipes" / "inference" / "recipe.yaml").read_text())
    requirement = recipe["ComponentDependencies"][STREAM_MANAGER]["VersionRequirement"]
    check_recipes = load_script("scripts/check_recipes.py")
    assert check_recipes.version_satisfies(versions[STREAM_MANAGER], requirement)
    # Only the user's settings of the inference component are ever merged.
    assert all("configurationUpdate" not in body for body in components.values())


def test_deploy_fleet_dry_run_refuses_latest() -> None:
    assert deploy_fleet.main(["--thing-group-arn", GROUP_ARN, "--dry-run",
                              "--stream-manager-version", "latest"]) == 2


def test_deploy_fleet_switches_the_precision_with_a_settings_merge(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from inspector.settings import Settings

    if "ModelPrecision" not in Settings.model_fields:
        pytest.skip("ModelPrecision is the runtime side's setting (branch liferun), not merged")
    assert deploy_fleet.main(["--thing-group-arn", GROUP_ARN, "--dry-run",
                              "--precision", "int8"]) == 0
    components = json.loads(capsys.readouterr().out)["components"]
    merge = json.loads(components[INFERENCE]["configurationUpdate"]["merge"])
    assert merge == {"ModelPrecision": "int8"}
    assert set(components[INFERENCE]["configurationUpdate"]) == {"merge"}
    assert all("configurationUpdate" not in body
               for name, body in components.items() if name != INFERENCE)
    assert deploy_fleet.main(["--thing-group-arn", GROUP_ARN, "--dry-run", "--precision",
                              "int8", "--config-merge", '{"ModelPrecision": "fp32"}']) == 2


def test_deploy_fleet_model_only_update_keeps_the_inference_version(client: Any) -> None:
    from botocore.stub import Stubber

    merge = json.dumps({"ImageDirectory": "/data/camera", "UploadBucket": "defects"},
                       sort_keys=True)
    expected = _expected_document(inference="1.0.0", model="1.2.0", stream_manager="2.2.1",
                                  merge=merge)
    with Stubber(client) as stub:
        stub.add_response("create_deployment", {"deploymentId": "d-2"}, expected)
        rc = deploy_fleet.main(
            ["--thing-group-arn", GROUP_ARN, "--inference-version", "1.0.0",
             "--model-version", "1.2.0", "--stream-manager-version", "2.2.1",
             "--config-merge", '{"UploadBucket": "defects", "ImageDirectory": "/data/camera"}'],
            client=client,
        )
        stub.assert_no_pending_responses()
    assert rc == 0


def test_deploy_fleet_resets_keys_before_its_merge(client: Any) -> None:
    """--config-reset goes into configurationUpdate.reset beside the merge; the Stubber checks
    the request against greengrassv2's own API model."""
    from botocore.stub import Stubber

    merge = json.dumps({"ImageDirectory": "/data/camera"})
    expected = _expected_document(merge=merge, reset=["/InferenceWorkers", "/uploadbucket"])
    update = expected["components"]["com.inspector.Inference"]["configurationUpdate"]
    assert update == {"reset": ["/InferenceWorkers", "/uploadbucket"], "merge": merge}
    with Stubber(client) as stub:
        stub.add_response("create_deployment", {"deploymentId": "d-3"}, expected)
        rc = deploy_fleet.main(
            ["--thing-group-arn", GROUP_ARN, "--inference-version", "1.0.0", "--model-version",
             "1.2.0", "--config-reset", "/InferenceWorkers", "--config-reset", "/uploadbucket",
             "--config-merge", '{"ImageDirectory": "/data/camera"}'],
            client=client,
        )
        stub.assert_no_pending_responses()
    assert rc == 0


@pytest.mark.parametrize("pointer", ["InferenceWorkers", "/NoSuchKey"])
def test_deploy_fleet_refuses_a_reset_of_no_setting(pointer: str) -> None:
    assert deploy_fleet.main(["--thing-group-arn", GROUP_ARN, "--config-reset", pointer,
                              "--dry-run"]) == 2


def test_deploy_fleet_reports_a_service_error(client: Any) -> None:
    from botocore.stub import Stubber

    with Stubber(client) as stub:
        stub.add_client_error("create_deployment", "ResourceNotFoundException",
                              "component version not found", 404)
        rc = deploy_fleet.main(
            ["--thing-group-arn", GROUP_ARN, "--stream-manager-version", "2.3.0"], client=client
        )
    assert rc == 1


def test_deploy_fleet_dry_run_prints_the_document_without_calling(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class NoCalls:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"dry run called {name}")

    rc = deploy_fleet.main(
        ["--thing-group-arn", GROUP_ARN, "--stream-manager-version", "2.3.0", "--dry-run"],
        client=NoCalls(),
    )
    assert rc == 0
    assert json.loads(capsys.readouterr().out) == _expected_document()


@pytest.mark.parametrize(
    "argv",
    [
        ["--thing-group-arn", "arn:aws:iot:eu-west-1:123456789012:thing/line-1"],
        ["--thing-group-arn", GROUP_ARN, "--model-version", "latest"],
        ["--thing-group-arn", GROUP_ARN, "--config-merge", '{"NoSuchKey": 1}'],
        ["--thing-group-arn", GROUP_ARN, "--config-merge", '{"ConfidenceThreshold": 2}'],
        ["--thing-group-arn", GROUP_ARN, "--config-merge", '{"PublishResultsOnTopic": "x/y"}'],
        ["--thing-group-arn", GROUP_ARN, "--config-merge", "not json"],
    ],
)
def test_deploy_fleet_refuses_bad_input_before_calling(argv: list[str]) -> None:
    assert deploy_fleet.main([*argv, "--stream-manager-version", "2.3.0", "--dry-run"]) == 2


def test_a_new_default_reaches_an_updated_device_only_through_the_reset() -> None:
    """The recipe's InferenceWorkers default went from 0 to 1. Under the nucleus's rules
    (``ipcrules.resolve_configuration``: reset, then the new version's defaults only where a key
    is missing, then merge), a device that ran the old default keeps 0 after the update, and
    the document ``deploy_fleet --config-reset /InferenceWorkers`` builds gives it 1."""
    import yaml

    from inspector.testing.ipcrules import resolve_configuration

    recipe = yaml.safe_load((REPO / "recipes" / "inference" / "recipe.yaml").read_text())
    defaults = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    assert defaults["InferenceWorkers"] == 1
    running = {**defaults, "InferenceWorkers": 0}  # as a device of the earlier version runs
    kept, _ = resolve_configuration(running, defaults)
    assert kept["InferenceWorkers"] == 0
    document = _expected_document(reset=deploy_fleet.read_config_reset(["/InferenceWorkers"]))
    update = document["components"]["com.inspector.Inference"]["configurationUpdate"]
    updated, problems = resolve_configuration(running, defaults, reset=update["reset"],
                                              merge=json.loads(update.get("merge", "{}")))
    assert not problems and updated["InferenceWorkers"] == 1
    assert {k: v for k, v in updated.items() if k != "InferenceWorkers"} == {
        k: v for k, v in running.items() if k != "InferenceWorkers"}
