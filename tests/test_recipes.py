"""scripts/check_recipes.py: the repository's recipes pass, and each kind of mistake is caught."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from script_loader import load_script

REPO = Path(__file__).resolve().parents[1]
INFERENCE = "com.inspector.Inference"
MODEL = "com.inspector.ScratchModel"


check_recipes = load_script("scripts/check_recipes.py")


def test_repository_recipes_pass() -> None:
    assert check_recipes.check(REPO) == []


def test_gdk_at_the_top_level_builds_the_inference_component() -> None:
    """Issue 16 item 11: `gdk component build` at the root builds com.inspector.Inference. GDK
    reads exactly ./recipe.yaml (or .json) beside ./gdk-config.json (gdk/common/config/
    GDKProject.py): here a link to the one recipe kept by hand."""
    config = json.loads((REPO / "gdk-config.json").read_text())
    assert list(config["component"]) == [INFERENCE]
    command = config["component"][INFERENCE]["build"]["custom_build_command"]
    assert command == ["python3", "scripts/build_component.py", "inference"]
    assert (REPO / "recipe.yaml").resolve() == (REPO / "recipes" / "inference" / "recipe.yaml")
    assert yaml.safe_load((REPO / "recipe.yaml").read_text())["ComponentName"] == INFERENCE
    assert not (REPO / "recipe.json").exists()
    assert not (REPO / "recipes" / "inference" / "gdk-config.json").exists()
    assert (REPO / "recipes" / "model" / "gdk-config.json").is_file()


def test_check_runs_as_a_script_and_ci_runs_it() -> None:
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "check_recipes.py")],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "recipe check: OK" in result.stdout
    ci = (REPO / ".ci" / "run").read_text()
    assert "scripts/check_recipes.py" in ci


def test_inference_configuration_has_every_settings_key() -> None:
    from inspector.settings import Settings

    recipe = yaml.safe_load((REPO / "recipes" / "inference" / "recipe.yaml").read_text())
    defaults = dict(recipe["ComponentConfiguration"]["DefaultConfiguration"])
    defaults.pop("accessControl")
    assert set(defaults) == set(Settings.model_fields)
    Settings.from_mapping(defaults)


def test_access_control_allows_the_service_exactly_its_publishes() -> None:
    """Judged by the nucleus emulator's authorization rules (inspector.testing.ipcrules)."""
    from inspector.testing.ipcrules import authorized

    recipe = yaml.safe_load((REPO / "recipes" / "inference" / "recipe.yaml").read_text())
    config = _defaults(recipe)
    access = config["accessControl"]
    assert authorized(access, "PublishToIoTCore", config["PublishResultsOnTopic"])
    assert authorized(access, "PublishToIoTCore", config["MetricsTopic"])
    assert authorized(access, "PublishToTopic", config["PubSubTopic"])
    assert not authorized(access, "PublishToIoTCore", "inspector/other")
    assert not authorized(access, "PublishToTopic", config["MetricsTopic"])
    assert not authorized(access, "SubscribeToIoTCore", config["PublishResultsOnTopic"])
    assert not authorized(access, "SubscribeToTopic", config["PubSubTopic"])


def test_docs_describe_every_setting() -> None:
    from inspector.settings import Settings

    doc = (REPO / "docs" / "greengrass.md").read_text()
    missing = [key for key in Settings.model_fields if f"| `{key}` |" not in doc]
    assert not missing, f"docs/greengrass.md's configuration table lacks {missing}"


def test_run_step_hands_the_model_folder_to_the_service_through_setenv() -> None:
    recipe = yaml.safe_load((REPO / "recipes" / "inference" / "recipe.yaml").read_text())
    for manifest in recipe["Manifests"]:
        run = manifest["Lifecycle"]["Run"]
        assert run["Setenv"]["INSPECTOR_MODEL_DIR"] == f"{{{MODEL}:artifacts:path}}"
        assert run["Setenv"]["PYTHONPATH"] == "{artifacts:decompressedPath}/inspector-app"
        assert run["Script"] == 'exec "$INSPECTOR_VENV/bin/python3" -u -m inspector run'


def test_model_recipe_keeps_no_configuration() -> None:
    """A core keeps a component's configuration across versions: nothing that identifies a
    model version may live there (issue 17, item 1)."""
    recipe = yaml.safe_load((REPO / "recipes" / "model" / "recipe.yaml").read_text())
    assert "ComponentConfiguration" not in recipe


# --- mutations: each must be reported ---------------------------------------------------------


def _copy_repo(tmp_path: Path) -> Path:
    clone = tmp_path / "repo"
    shutil.copytree(REPO / "recipes", clone / "recipes",
                    ignore=shutil.ignore_patterns("greengrass-build", "__pycache__"))
    shutil.copytree(REPO / "scripts", clone / "scripts",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "gdk-config.json", clone / "gdk-config.json")
    (clone / "recipe.yaml").symlink_to(os.readlink(REPO / "recipe.yaml"))
    return clone


def _edit_recipe(kind: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(repo: Path) -> None:
        path = repo / "recipes" / kind / "recipe.yaml"
        recipe = yaml.safe_load(path.read_text())
        change(recipe)
        path.write_text(yaml.safe_dump(recipe, sort_keys=False))

    return apply


def _edit_gdk(kind: str, change: Callable[[dict[str, Any]], None]) -> Callable[[Path], None]:
    def apply(repo: Path) -> None:
        path = (repo if kind == "inference" else repo / "recipes" / kind) / "gdk-config.json"
        config = json.loads(path.read_text())
        (body,) = config["component"].values()
        change(body)
        path.write_text(json.dumps(config))

    return apply


def _defaults(recipe: dict[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    return config


def _run_script(recipe: dict[str, Any], extra: str) -> None:
    for manifest in recipe["Manifests"]:
        manifest["Lifecycle"]["Run"]["Script"] += f"\n{extra}"


def _mqtt_policy(recipe: dict[str, Any]) -> dict[str, Any]:
    policies = _defaults(recipe)["accessControl"]["aws.greengrass.ipc.mqttproxy"]
    policy: dict[str, Any] = policies[f"{INFERENCE}:mqttproxy:1"]
    return policy


def _duplicate_yaml_key(repo: Path) -> None:
    path = repo / "recipes" / "inference" / "recipe.yaml"
    text = path.read_text()
    path.write_text(text.replace("    QueueSize: 8\n", "    QueueSize: 8\n    QueueSize: 9\n"))


def _drop_aarch64(recipe: dict[str, Any]) -> None:
    recipe["Manifests"] = [m for m in recipe["Manifests"]
                           if m["Platform"]["architecture"] != "aarch64"]


def _model_policy_reusing_the_inference_id(recipe: dict[str, Any]) -> None:
    recipe.setdefault("ComponentConfiguration", {}).setdefault("DefaultConfiguration", {})
    _defaults(recipe)["accessControl"] = {"aws.greengrass.ipc.mqttproxy": {
        f"{INFERENCE}:mqttproxy:1": {"operations": ["aws.greengrass#PublishToIoTCore"],
                                     "resources": ["x"]}}}


def _model_read_owner(recipe: dict[str, Any]) -> None:
    for manifest in recipe["Manifests"]:
        for artifact in manifest["Artifacts"]:
            artifact["Permission"]["Read"] = "OWNER"


MUTATIONS: dict[str, tuple[Callable[[Path], object], str]] = {
    "unknown variable": (
        _edit_recipe("inference", lambda r: _run_script(r, "echo {foo:bar}")),
        "{foo:bar} is not a Greengrass recipe variable",
    ),
    "unknown own configuration key": (
        _edit_recipe("inference", lambda r: _run_script(r, "echo {configuration:/Nope}")),
        "'/Nope', which is not in this recipe's DefaultConfiguration",
    ),
    "unknown dependency configuration key": (
        _edit_recipe("inference",
                     lambda r: _run_script(r, f"echo {{{MODEL}:configuration:/Nope}}")),
        f"not in {MODEL}'s DefaultConfiguration",
    ),
    "variable of a component that is not a dependency": (
        _edit_recipe("inference", lambda r: _run_script(r, "echo {other.Thing:artifacts:path}")),
        "nor one of a direct dependency",
    ),
    "dependency artifacts not readable by all": (
        _edit_recipe("model", _model_read_owner),
        "which are not Permission.Read ALL",
    ),
    "topic changed without its policy": (
        _edit_recipe("inference", lambda r: _defaults(r).update(MetricsTopic="plant/metrics")),
        "does not grant the configured topic(s) ['plant/metrics']",
    ),
    "policy grants a topic nobody configures": (
        _edit_recipe("inference", lambda r: _mqtt_policy(r)["resources"].append("inspector/#")),
        "grants ['inspector/#'], which no *Topic setting configures",
    ),
    "policy grants another operation": (
        _edit_recipe("inference", lambda r: _mqtt_policy(r)["operations"].append(
            "aws.greengrass#SubscribeToIoTCore")),
        "must be exactly [aws.greengrass#PublishToIoTCore]",
    ),
    "policy id reused by another component": (
        _edit_recipe("model", _model_policy_reusing_the_inference_id),
        f"policy id '{INFERENCE}:mqttproxy:1' is already used",
    ),
    "settings key missing": (
        _edit_recipe("inference", lambda r: _defaults(r).pop("QueueSize")),
        "lacks settings key(s) ['QueueSize']",
    ),
    "unknown settings key": (
        _edit_recipe("inference", lambda r: _defaults(r).update(Colour="red")),
        "has key(s) ['Colour'] that inspector.settings does not know",
    ),
    "invalid settings value": (
        _edit_recipe("inference", lambda r: _defaults(r).update(ConfidenceThreshold=2)),
        "not valid settings",
    ),
    "recipe version differs from gdk-config": (
        _edit_gdk("inference", lambda b: b.update(version="1.0.1")),
        "but gdk-config.json says",
    ),
    "NEXT_PATCH cannot build offline": (
        _edit_gdk("model", lambda b: b.update(version="NEXT_PATCH")),
        "use a fixed MAJOR.MINOR.PATCH",
    ),
    "zip build without excludes": (
        _edit_gdk("inference", lambda b: b.update(build={"build_system": "zip",
                                                        "options": {"zip_name": "x"}})),
        "without explicit options.excludes",
    ),
    "missing aarch64 manifest": (
        _edit_recipe("inference", _drop_aarch64),
        "no manifest for linux/aarch64",
    ),
    "model outside the dependency range": (
        _edit_recipe("inference", lambda r: r["ComponentDependencies"][MODEL].update(
            VersionRequirement=">=2.0.0 <3.0.0")),
        "does not satisfy '>=2.0.0 <3.0.0'",
    ),
    "model dependency without an upper bound": (
        _edit_recipe("inference", lambda r: r["ComponentDependencies"][MODEL].update(
            VersionRequirement=">=1.0.0")),
        "should be a range with an upper bound",
    ),
    "no StreamManager dependency": (
        _edit_recipe("inference", lambda r: r["ComponentDependencies"].pop(
            "aws.greengrass.StreamManager")),
        "no dependency on aws.greengrass.StreamManager",
    ),
    "model version identity kept as configuration": (
        _edit_recipe("model", lambda r: r.update(ComponentConfiguration={
            "DefaultConfiguration": {"ModelSha256": "ab" * 32}})),
        "DefaultConfiguration.ModelSha256: the model component keeps no configuration",
    ),
    "model ships one precision only": (
        _edit_recipe("model", lambda r: [m["Artifacts"].pop(1) for m in r["Manifests"]]),
        "expected the fp32 and INT8 .onnx files and model.json",
    ),
    "model Install without the literal digests": (
        _edit_recipe("model", lambda r: [m["Lifecycle"]["Install"].update(
            Script="sha256sum -c sums.txt") for m in r["Manifests"]]),
        "no MODEL_CHECKSUMS token",
    ),
    "configuration value in a shell line": (
        _edit_recipe("inference", lambda r: _run_script(r, "echo {configuration:/DeviceName}")),
        "{configuration:/DeviceName} in a shell line",
    ),
    "path variable in a shell line": (
        _edit_recipe("inference", lambda r: _run_script(r, "ls {work:path}")),
        "{work:path} in a shell line",
    ),
    "top-level recipe.yaml a copy, not the link": (
        lambda repo: ((repo / "recipe.yaml").unlink(),
                      shutil.copy(repo / "recipes" / "inference" / "recipe.yaml",
                                  repo / "recipe.yaml")),
        "must be a link to recipes/inference/recipe.yaml",
    ),
    "second GDK project for the inference component": (
        lambda repo: shutil.copy(repo / "gdk-config.json",
                                 repo / "recipes" / "inference" / "gdk-config.json"),
        "a second GDK project for inference",
    ),
    "StreamManager a HARD dependency": (
        _edit_recipe("inference", lambda r: r["ComponentDependencies"][
            "aws.greengrass.StreamManager"].update(DependencyType="HARD")),
        "must be a SOFT dependency",
    ),
    "model a SOFT dependency": (
        _edit_recipe("inference", lambda r: r["ComponentDependencies"][MODEL].update(
            DependencyType="SOFT")),
        "must be a HARD dependency",
    ),
    "unquoted Setenv path": (
        _edit_recipe("inference", lambda r: _run_script(r, "ls $INSPECTOR_VENV/bin")),
        "$INSPECTOR_VENV is not double-quoted",
    ),
    "artifact URI that publish would not rewrite": (
        _edit_recipe("inference", lambda r: r["Manifests"][0]["Artifacts"][0].update(
            URI="s3://my-bucket/inspector-app.zip")),
        "must start with s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/",
    ),
    "duplicate YAML key": (_duplicate_yaml_key, "duplicate key 'QueueSize'"),
    "unknown top-level key": (
        _edit_recipe("model", lambda r: r.update(ComponentAuthor="me")),
        "unknown top-level key 'ComponentAuthor'",
    ),
    "second recipe file": (
        lambda repo: (repo / "recipes" / "model" / "recipe.json").write_text("{}"),
        "both recipe.json and recipe.yaml",
    ),
}


@pytest.mark.parametrize("case", sorted(MUTATIONS))
def test_check_reports(case: str, tmp_path: Path) -> None:
    mutate, expected = MUTATIONS[case]
    repo = _copy_repo(tmp_path)
    assert check_recipes.check(repo) == []  # the copy is clean before the mutation
    mutate(repo)
    problems = check_recipes.check(repo)
    assert any(expected in problem for problem in problems), problems


def test_built_check_refuses_leftover_tokens_and_a_wrong_digest(tmp_path: Path) -> None:
    repo = _copy_repo(tmp_path)
    build = repo / "recipes" / "model" / "greengrass-build"
    (build / "recipes").mkdir(parents=True)
    shutil.copy(repo / "recipes" / "model" / "recipe.yaml", build / "recipes" / "recipe.yaml")
    problems = check_recipes.check(repo, built=True)
    assert any("build token MODEL_CHECKSUMS left" in p for p in problems), problems

    build_component = load_script("scripts/build_component.py")
    (tmp_path / "a.onnx").write_bytes(b"fp32")
    (tmp_path / "b.onnx").write_bytes(b"int8")
    version = yaml.safe_load((repo / "recipes" / "model" / "recipe.yaml").read_text())[
        "ComponentVersion"]
    build_component.build_model_component(build, version=version, fp32=tmp_path / "a.onnx",
                                          int8=tmp_path / "b.onnx", name="m")
    assert not [p for p in check_recipes.check(repo, built=True) if "model" in p]
    artifacts = build / "artifacts" / MODEL / version
    (artifacts / "m-int8.onnx").write_bytes(b"a model whose digest is another")
    problems = check_recipes.check(repo, built=True)
    assert any("m-int8.onnx has sha256" in p and "the recipe declares" in p
               for p in problems), problems
    assert any("model.json says" in p for p in problems), problems
    assert not any("left in the built recipe" in p for p in problems), problems


@pytest.mark.parametrize(
    ("script", "unquoted"),
    [
        ('exec "$A/bin/python3" -u', []),
        ("exec $A/bin/python3", ["A"]),
        ('echo "${A}" ${B:-x}', ["B"]),
        ("echo '$A' \\$B", []),
        ("cat <<'EOF'\n$A\nEOF\necho $B", ["B"]),
        ('echo "$A" # $B', []),
    ],
)
def test_unquoted_expansions(script: str, unquoted: list[str]) -> None:
    assert check_recipes.unquoted_expansions(script) == unquoted


@pytest.mark.parametrize(
    ("version", "requirement", "expected"),
    [
        ("1.0.0", ">=1.0.0 <2.0.0", True),
        ("1.9.3", ">=1.0.0 <2.0.0", True),
        ("2.0.0", ">=1.0.0 <2.0.0", False),
        ("0.9.9", ">=1.0.0 <2.0.0", False),
        ("1.0.0", "1.0.0", True),
        ("1.0.0", "^1.0.0", None),
    ],
)
def test_version_requirement(version: str, requirement: str, expected: bool | None) -> None:
    assert check_recipes.version_satisfies(version, requirement) is expected
