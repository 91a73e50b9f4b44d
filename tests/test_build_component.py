"""What the component builds produce: the GDK layout, the code artifact's contents, the install."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from onnx_factory import fake_model_folder
from script_loader import load_script

REPO = Path(__file__).resolve().parents[1]


build_component = load_script("scripts/build_component.py")
check_recipes = load_script("scripts/check_recipes.py")
bootstrap = load_script("recipes/inference/bootstrap.py")


@pytest.fixture(scope="module")
def app_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("build") / "greengrass-build"
    built = build_component.build("inference", out)
    (artifact,) = built.artifacts
    return Path(artifact)


# --- the code artifact -----------------------------------------------------------------------


def test_app_zip_holds_the_package_requirements_and_bootstrap_only(app_zip: Path) -> None:
    assert app_zip.name == "inspector-app.zip"
    assert app_zip.parent.parts[-2:] == ("com.inspector.Inference", "1.0.0")
    names = zipfile.ZipFile(app_zip).namelist()

    for needed in ("inspector/__init__.py", "inspector/__main__.py", "inspector/cli.py",
                   "inspector/commands/run.py", "inspector/settings.py",
                   "inspector/integrity.py", "inspector/errors.py", "inspector/py.typed",
                   "requirements.txt", "bootstrap.py"):
        assert needed in names, needed
    outside = [n for n in names if not n.startswith("inspector/")]
    assert sorted(outside) == ["bootstrap.py", "requirements.txt"]
    for name in names:
        parts = name.split("/")
        banned = {"tests", "testing", "synth", "bench", "models", "__pycache__"}
        assert not banned & set(parts), name
        assert not re.match(r"(test_.*|.*_test)\.py$", parts[-1]), name
        assert not name.endswith((".onnx", ".pt", ".pyc", ".jsonl")), name
        assert name.endswith((".py", ".json", ".txt", "py.typed")), name


def test_app_zip_has_every_package_module_a_device_needs(app_zip: Path) -> None:
    """Every .py of src/inspector is shipped unless it lives in an excluded folder."""
    names = set(zipfile.ZipFile(app_zip).namelist())
    package = REPO / "src" / "inspector"
    for path in package.rglob("*.py"):
        rel = path.relative_to(package)
        if set(rel.parts[:-1]) & build_component.PACKAGE_EXCLUDED_DIRS:
            continue
        assert f"inspector/{rel.as_posix()}" in names, rel


def test_inspector_runs_from_the_artifact_alone(app_zip: Path, tmp_path: Path) -> None:
    """Unzipped as Greengrass does, with PYTHONPATH as the Run step sets it: the CLI and every
    shipped module import (nothing left behind that they need), from the artifact, not src/."""
    app = tmp_path / "inspector-app"
    zipfile.ZipFile(app_zip).extractall(app)
    modules = sorted(
        name[:-3].replace("/", ".").removesuffix(".__init__")
        for name in zipfile.ZipFile(app_zip).namelist()
        if name.startswith("inspector/") and name.endswith(".py")
        and not name.endswith("__main__.py")
    )
    probe = (
        "import importlib, sys, inspector\n"
        f"assert inspector.__file__.startswith({str(app)!r}), inspector.__file__\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "banned = [m for m in sys.modules if m.split('.')[:2] in "
        "(['inspector', 'testing'], ['inspector', 'synth'], ['inspector', 'bench'])]\n"
        "assert not banned, banned\n"
        "print('ok', len(" + repr(modules) + "))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(app), "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run([sys.executable, "-c", probe], env=env, cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    help_run = subprocess.run([sys.executable, "-u", "-m", "inspector", "run", "--help"],
                              env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=120, check=False)
    assert help_run.returncode == 0, help_run.stderr
    assert "--config" in help_run.stdout


def test_app_zip_is_reproducible(app_zip: Path, tmp_path: Path) -> None:
    again = build_component.build("inference", tmp_path / "again")
    assert Path(again.artifacts[0]).read_bytes() == app_zip.read_bytes()


def test_requirements_pin_every_runtime_dependency_within_pyproject() -> None:
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = {canonicalize_name(Requirement(d).name): Requirement(d).specifier
              for d in project["dependencies"]}
    pinned: dict[str, str] = {}
    ranged: dict[str, Requirement] = {}
    for line in (REPO / "recipes" / "inference" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in wanted, f"{req.name} is not a runtime dependency in pyproject.toml"
        assert req.marker is not None, line
        if req.marker.evaluate({"python_version": "3.11"}):
            (spec,) = list(req.specifier)
            assert spec.operator == "==", f"{line}: pin an exact version for Python >= 3.11"
            assert wanted[name].contains(spec.version), f"{line} is outside {wanted[name]}"
            pinned[name] = spec.version
        else:
            assert req.marker.evaluate({"python_version": "3.10"}), line
            ranged[name] = req
    assert set(pinned) == set(wanted), "every runtime dependency pinned for Python >= 3.11"
    assert set(ranged) == set(wanted), "every runtime dependency listed for Python 3.10"


# --- the model artifact ----------------------------------------------------------------------

MODEL = "com.inspector.ScratchModel"


def _two_models(folder: Path, tag: str = "") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    fp32, int8 = folder / "a.onnx", folder / "b.onnx"
    fp32.write_bytes(f"fp32 model {tag}".encode())
    int8.write_bytes(f"int8 model {tag}".encode())
    return fp32, int8


def _install_script(recipe: dict[str, object]) -> tuple[dict[str, str], str]:
    (manifest, *_) = recipe["Manifests"]  # type: ignore[misc]
    install = manifest["Lifecycle"]["Install"]
    return dict(install["Setenv"]), str(install["Script"])


def _run_install(recipe_path: Path, artifact_dir: Path) -> subprocess.CompletedProcess[str]:
    """The model's Install step as the nucleus runs it: {artifacts:path} replaced as plain text
    in the Setenv values, the Script given to `sh -c` (aws-greengrass-nucleus ShellRunner ->
    Exec.withShell -> UnixPlatform.ShDecorator), cwd the work folder."""
    import yaml

    setenv, script = _install_script(yaml.safe_load(recipe_path.read_text()))
    env = {**os.environ}
    for key, value in setenv.items():
        env[key] = value.replace("{artifacts:path}", str(artifact_dir))
    work = artifact_dir.parent / "work"
    work.mkdir(exist_ok=True)
    return subprocess.run(["sh", "-c", script], env=env, cwd=work, capture_output=True,
                          text=True, timeout=60, check=False)


def test_build_model_component_ships_both_models_and_their_description(tmp_path: Path) -> None:
    import yaml

    fp32, int8 = _two_models(tmp_path / "src")
    recipe_path = build_component.build_model_component(
        tmp_path / "out", version="1.3.0", fp32=fp32, int8=int8, name="scratch-yolov8n")
    assert recipe_path == (tmp_path / "out" / "recipes" / "recipe.yaml").absolute()
    artifact_dir = tmp_path / "out" / "artifacts" / MODEL / "1.3.0"
    assert sorted(p.name for p in artifact_dir.iterdir()) == [
        "model.json", "scratch-yolov8n-int8.onnx", "scratch-yolov8n.onnx"]
    assert (artifact_dir / "scratch-yolov8n.onnx").read_bytes() == fp32.read_bytes()
    assert (artifact_dir / "scratch-yolov8n-int8.onnx").read_bytes() == int8.read_bytes()
    description = json.loads((artifact_dir / "model.json").read_text())
    assert description == {
        "schema": "inspector.model-artifact/1",
        "component": MODEL,
        "version": "1.3.0",
        "name": "scratch-yolov8n",
        "files": {
            "fp32": {"file": "scratch-yolov8n.onnx", "bytes": fp32.stat().st_size,
                     "sha256": hashlib.sha256(fp32.read_bytes()).hexdigest()},
            "int8": {"file": "scratch-yolov8n-int8.onnx", "bytes": int8.stat().st_size,
                     "sha256": hashlib.sha256(int8.read_bytes()).hexdigest()},
        },
    }

    text = recipe_path.read_text()
    recipe = yaml.safe_load(text)
    assert (recipe["ComponentName"], str(recipe["ComponentVersion"])) == (MODEL, "1.3.0")
    assert "ComponentConfiguration" not in recipe, "nothing a core could keep from a version"
    for manifest in recipe["Manifests"]:
        assert sorted(a["URI"].rsplit("/", 1)[-1] for a in manifest["Artifacts"]) == sorted(
            p.name for p in artifact_dir.iterdir())
        assert {a["Permission"]["Read"] for a in manifest["Artifacts"]} == {"ALL"}
    setenv, script = _install_script(recipe)
    assert setenv == {"INSPECTOR_MODEL_DIR": "{artifacts:path}"}
    assert "{" not in script, "no recipe variable in the shell line"
    for path in artifact_dir.iterdir():  # each digest is a literal of the Install step
        assert f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}" in script
    for token in build_component.MODEL_TOKENS:
        assert token not in text


def test_model_install_step_passes_the_built_files_and_names_both_digests_of_a_changed_one(
    tmp_path: Path,
) -> None:
    fp32, int8 = _two_models(tmp_path / "src")
    root = tmp_path / "greengrass root"  # a space in the Greengrass root
    recipe_path = build_component.build_model_component(
        root, version="1.3.0", fp32=fp32, int8=int8, name="m")
    artifact_dir = root / "artifacts" / MODEL / "1.3.0"
    ok = _run_install(recipe_path, artifact_dir)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.count(" OK") == 3

    expected = hashlib.sha256(int8.read_bytes()).hexdigest()
    (artifact_dir / "m-int8.onnx").write_bytes(b"tampered")
    bad = _run_install(recipe_path, artifact_dir)
    assert bad.returncode == 1
    actual = hashlib.sha256(b"tampered").hexdigest()
    assert f"m-int8.onnx: sha256 is '{actual}' but this version was built with {expected}" \
        in bad.stderr
    (artifact_dir / "model.json").unlink()
    missing = _run_install(recipe_path, artifact_dir)
    assert missing.returncode == 1 and "model.json: sha256 is ''" in missing.stderr


def test_registry_records_a_new_version_and_refuses_other_bytes_for_it(tmp_path: Path) -> None:
    registry = tmp_path / "published.json"
    fp32, int8 = _two_models(tmp_path / "v1")
    build_component.build_model_component(tmp_path / "out", version="1.3.0", fp32=fp32,
                                          int8=int8, name="m", registry=registry)
    recorded = json.loads(registry.read_text())
    artifact_dir = tmp_path / "out" / "artifacts" / MODEL / "1.3.0"
    assert recorded == {"1.3.0": {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                                  for p in sorted(artifact_dir.iterdir())}}
    # The same bytes build again (a CI rebuild, a GDK build after a script build).
    build_component.build_model_component(tmp_path / "out2", version="1.3.0", fp32=fp32,
                                          int8=int8, name="m", registry=registry)

    other_fp32, other_int8 = _two_models(tmp_path / "v2", tag="retrained")
    with pytest.raises(build_component.BuildError) as refused:
        build_component.build_model_component(tmp_path / "out3", version="1.3.0",
                                              fp32=fp32, int8=other_int8, name="m",
                                              registry=registry)
    message = str(refused.value)
    assert "1.3.0 was already built with other bytes" in message
    assert f"m-int8.onnx: built now {hashlib.sha256(other_int8.read_bytes()).hexdigest()}" \
        in message
    assert "m.onnx:" not in message, "only the file that changed is named"
    assert "new version" in message
    assert not (tmp_path / "out3").exists(), "nothing written for a refused build"
    assert json.loads(registry.read_text()) == recorded

    build_component.build_model_component(tmp_path / "out4", version="1.4.0", fp32=other_fp32,
                                          int8=other_int8, name="m", registry=registry)
    assert list(json.loads(registry.read_text())) == ["1.3.0", "1.4.0"]


def test_build_model_component_refuses_bad_input(tmp_path: Path) -> None:
    fp32, int8 = _two_models(tmp_path / "src")
    out = tmp_path / "out"
    cases: list[tuple[dict[str, object], str]] = [
        ({"version": "latest"}, "must be MAJOR.MINOR.PATCH"),
        ({"name": "../x"}, "model name '../x'"),
        ({"int8": fp32}, "are the same bytes"),
        ({"int8": tmp_path / "missing.onnx"}, "int8 model .* not found"),
    ]
    for change, expected in cases:
        kwargs: dict[str, object] = {"version": "1.3.0", "fp32": fp32, "int8": int8, "name": "m"}
        kwargs.update(change)
        with pytest.raises(build_component.BuildError, match=expected):
            build_component.build_model_component(out, **kwargs)  # type: ignore[arg-type]
    bad_registry = tmp_path / "published.json"
    bad_registry.write_text('{"1.2.0": "not a mapping"}')
    with pytest.raises(build_component.BuildError, match="expected"):
        build_component.build_model_component(out, version="1.3.0", fp32=fp32, int8=int8,
                                              name="m", registry=bad_registry)


def test_model_build_ships_both_precisions_of_the_manifest(tmp_path: Path) -> None:
    models = fake_model_folder(tmp_path / "models")
    built = build_component.build("model", tmp_path / "out", models_dir=models)
    gdk = json.loads((REPO / "recipes" / "model" / "gdk-config.json").read_text())
    version = gdk["component"][MODEL]["version"]
    assert [Path(a).name for a in built.artifacts] == [
        "scratch-yolov8n.onnx", "scratch-yolov8n-int8.onnx", "model.json"]
    for artifact in built.artifacts:
        assert Path(artifact).parent.parts[-2:] == (MODEL, version)
    assert Path(built.artifacts[0]).read_bytes() == (models / "scratch-fp32.onnx").read_bytes()
    assert Path(built.artifacts[1]).read_bytes() == (models / "scratch-int8.onnx").read_bytes()
    description = json.loads(Path(built.artifacts[2]).read_text())
    assert (description["version"], description["name"]) == (version, "scratch-yolov8n")
    # --precision (and INSPECTOR_MODEL_PRECISION) are still accepted: they change nothing.
    again = build_component.build("model", tmp_path / "int8", models_dir=models,
                                  precision="int8")
    assert [Path(a).read_bytes() for a in again.artifacts] == [
        Path(a).read_bytes() for a in built.artifacts]


def test_committed_registry_holds_the_models_in_the_repository(tmp_path: Path) -> None:
    """recipes/model/published.json agrees with models/ as committed: the CLI build (guard on)
    passes, and rebuilding the recorded version changes nothing."""
    registry = tmp_path / "published.json"
    shutil.copy(REPO / "recipes" / "model" / "published.json", registry)
    before = registry.read_text()
    rc = build_component.main(["model", "--out", str(tmp_path / "out"),
                               "--registry", str(registry)])
    assert rc == 0
    assert registry.read_text() == before
    version = json.loads((REPO / "recipes" / "model" / "gdk-config.json").read_text())[
        "component"][MODEL]["version"]
    assert version in json.loads(before)


def test_model_build_cli_refuses_a_recorded_version_with_other_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models = fake_model_folder(tmp_path / "models")  # other bytes than the recorded 1.2.0
    registry = tmp_path / "published.json"
    shutil.copy(REPO / "recipes" / "model" / "published.json", registry)
    rc = build_component.main(["model", "--out", str(tmp_path / "out"), "--models-dir",
                               str(models), "--registry", str(registry)])
    assert rc == 1
    assert "was already built with other bytes" in caplog.text
    assert build_component.main(["model", "--out", str(tmp_path / "out"), "--models-dir",
                                 str(models), "--no-registry"]) == 0


def test_model_build_without_manifest_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with pytest.raises(build_component.BuildError, match=r"manifest\.json not found"):
        build_component.build("model", tmp_path / "out", models_dir=tmp_path / "models")


def test_model_build_refuses_a_file_that_differs_from_the_manifest(tmp_path: Path) -> None:
    models = fake_model_folder(tmp_path / "models")
    (models / "scratch-int8.onnx").write_bytes(b"tampered")
    with pytest.raises(build_component.BuildError, match="sha256 is"):
        build_component.build("model", tmp_path / "out", models_dir=models)


def test_model_build_refuses_a_missing_precision(tmp_path: Path) -> None:
    models = fake_model_folder(tmp_path / "models", precisions=("fp32",))
    with pytest.raises(build_component.BuildError, match="no int8 model"):
        build_component.build("model", tmp_path / "out", models_dir=models)


# --- as GDK runs it: the custom build command, in the component folder of a fresh copy ---------


def _fresh_copy(tmp_path: Path) -> Path:
    """The tracked files a clone has that the builds read (no greengrass-build, no caches)."""
    clone = tmp_path / "clone"
    ignore = shutil.ignore_patterns("greengrass-build", "zip-build", "__pycache__", "*.pyc")
    for folder in ("recipes", "scripts", "src"):
        shutil.copytree(REPO / folder, clone / folder, ignore=ignore, symlinks=True)
    for file in ("pyproject.toml", "gdk-config.json"):
        shutil.copy(REPO / file, clone / file)
    (clone / "recipe.yaml").symlink_to(os.readlink(REPO / "recipe.yaml"))
    fake_model_folder(clone / "models")
    # Fake models are not the recorded 1.2.0: start this clone with an empty registry.
    (clone / "recipes" / "model" / "published.json").write_text("{}\n")
    return clone


def test_gdk_custom_build_commands_produce_what_gdk_publishes(tmp_path: Path) -> None:
    clone = _fresh_copy(tmp_path)
    for kind in ("inference", "model"):
        folder = clone if kind == "inference" else clone / "recipes" / kind  # GDK projects
        config = json.loads((folder / "gdk-config.json").read_text())
        ((name, body),) = config["component"].items()
        command = list(body["build"]["custom_build_command"])
        assert command[0] == "python3"
        command[0] = sys.executable  # the python3 that has PyYAML, as gdk's own environment does
        # GDK first empties greengrass-build and creates these two folders, then runs the command
        # as is, in the folder of gdk-config.json.
        (folder / "greengrass-build" / "recipes").mkdir(parents=True)
        (folder / "greengrass-build" / "artifacts" / name / body["version"]).mkdir(parents=True)
        subprocess.run(command, cwd=folder, check=True, capture_output=True, timeout=120)
        # gdk component publish reads exactly this file and uploads exactly this folder.
        assert (folder / "greengrass-build" / "recipes" / "recipe.yaml").is_file()
        artifacts = folder / "greengrass-build" / "artifacts" / name / body["version"]
        assert sorted(p.name for p in artifacts.iterdir()) == (
            ["inspector-app.zip"] if kind == "inference"
            else ["model.json", "scratch-yolov8n-int8.onnx", "scratch-yolov8n.onnx"]
        )
    assert check_recipes.check(clone, built=True) == []
    # The GDK build records the model version it built, for the guard of the next build.
    recorded = json.loads((clone / "recipes" / "model" / "published.json").read_text())
    assert list(recorded) == ["1.2.0"]


# --- the install step --------------------------------------------------------------------------


def _installed(name: str) -> str:
    from importlib import metadata

    return metadata.version(name)


def test_bootstrap_reuses_an_environment_that_satisfies_the_requirements(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The test interpreter satisfies the requirements: an environment on its packages, nothing
    installed; the next start checks that environment (by importing) and installs nothing, also
    after requirements.txt changed in a way it still satisfies (no hash of a version string)."""
    caplog.set_level("INFO", logger="inspector.bootstrap")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"PyYAML=={_installed('PyYAML')}\n"
                            f"tenacity>=1.0; python_version >= '3.0'\n")
    link = tmp_path / "work" / "venv"
    argv = ["--venv", str(link), "--requirements", str(requirements)]

    assert bootstrap.main(argv) == 0
    first = link.resolve()
    assert link.is_symlink() and (first / "bin" / "python3").exists()
    stamp = json.loads((first / bootstrap.STAMP).read_text())
    assert stamp["how"] == "system-site-packages"
    probe = subprocess.run([str(link / "bin" / "python3"), "-c", "import yaml, tenacity"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert probe.returncode == 0, probe.stderr
    caplog.clear()

    assert bootstrap.main(argv) == 0
    assert "nothing to install" in caplog.text
    assert link.resolve() == first

    requirements.write_text(f"# reordered, commented\ntenacity\nPyYAML>={_installed('PyYAML')}\n")
    caplog.clear()
    assert bootstrap.main(argv) == 0
    assert "nothing to install" in caplog.text and link.resolve() == first


def test_bootstrap_never_trusts_an_unfinished_environment(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# none\n")
    key = bootstrap.install_key(requirements.read_bytes())
    unfinished = tmp_path / "work" / "venvs" / key[: bootstrap.KEY_CHARS]
    (unfinished / "bin").mkdir(parents=True)
    (unfinished / "bin" / "python3").write_text("")  # no stamp, no python: interrupted
    assert bootstrap.read_stamp(unfinished) is None
    assert not bootstrap.satisfies(unfinished, requirements)


def test_bootstrap_refuses_an_old_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bootstrap, "MIN_PYTHON", (99, 0))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("")
    assert bootstrap.main(["--venv", str(tmp_path / "venv"), "--requirements",
                           str(requirements)]) == 2
    assert not (tmp_path / "venv").exists()


@pytest.mark.parametrize(
    ("installed", "op", "wanted", "expected"),
    [
        ("2.4.6", "==", "2.4.6", True),
        ("2.4.6", "==", "2.4", False),
        ("2.4.0", "==", "2.4", True),
        ("2.4.6", "==", "2.4.*", True),
        ("2.5.0", "==", "2.4.*", False),
        ("2.2.9", "<", "2.3", True),
        ("2.3.0", "<", "2.3", False),
        ("1.17.1", ">=", "1.17", True),
        ("4.66.0", "~=", "4.65", True),
        ("5.0", "~=", "4.65", False),
        ("6.0.4", "!=", "6.0.4", False),
        ("5.0.0.93", ">=", "4.8", True),
    ],
)
def test_bootstrap_version_comparison(installed: str, op: str, wanted: str,
                                      expected: bool) -> None:
    assert bootstrap.version_matches(installed, op, wanted) is expected


def test_bootstrap_reads_the_shipped_requirements_for_this_python() -> None:
    text = (REPO / "recipes" / "inference" / "requirements.txt").read_text()
    wanted = dict(bootstrap.requirements_of(text))
    assert set(wanted) == {"numpy", "onnxruntime", "opencv-python-headless", "watchdog",
                           "awsiotsdk", "stream-manager", "pydantic", "PyYAML", "tenacity"}
    if sys.version_info >= (3, 11):
        assert wanted["numpy"][0][0] == "==", "the pins, not the 3.10 ranges"
    with pytest.raises(bootstrap.Unreadable):
        bootstrap.requirements_of("numpy; platform_machine == 'x86_64'\n")


def test_bootstrap_reads_the_ranges_on_python_3_10(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ubuntu 22.04 / JetPack 6: the markers select pyproject's ranges, not the 3.11 pins."""
    monkeypatch.setattr(bootstrap.sys, "version_info", (3, 10, 12, "final", 0))
    text = (REPO / "recipes" / "inference" / "requirements.txt").read_text()
    wanted = dict(bootstrap.requirements_of(text))
    assert wanted["numpy"] == [(">=", "1.24"), ("<", "2.3")]
    assert all(op != "==" for specs in wanted.values() for op, _ in specs)


def test_bootstrap_check_names_what_is_missing(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("inspector-no-such-package==1.0\nPyYAML==0.1\ntenacity\n")
    result = subprocess.run([sys.executable, str(REPO / "recipes" / "inference" / "bootstrap.py"),
                             "--check", str(requirements)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "inspector-no-such-package is not installed",
        f"PyYAML {_installed('PyYAML')} is installed, requirements.txt wants ==0.1",
    ]
    requirements.write_text("tenacity\n")
    assert bootstrap.unmet(requirements.read_text()) == []


# --- wheels for air-gapped devices (the install from them: tests/test_lifecycle_scripts.py) ---


def test_bundled_requirements_follow_the_device_python_not_the_builder() -> None:
    text = (REPO / "recipes" / "inference" / "requirements.txt").read_text()
    for_311 = build_component.target_requirements(text, "3.11")
    for_310 = build_component.target_requirements(text, "3.10")
    assert "numpy==2.4.6" in for_311 and not any(";" in line for line in for_311)
    assert "numpy<2.3,>=1.24" in for_310 or "numpy>=1.24,<2.3" in for_310
    assert len(for_311) == len(for_310) == 9  # tqdm is the bench's, not the device's


def test_bundle_options_are_refused_when_incomplete(tmp_path: Path) -> None:
    with pytest.raises(SystemExit):
        build_component.main(["inference", "--out", str(tmp_path), "--platform", "any"])
    with pytest.raises(build_component.BuildError, match="at least one --platform"):
        build_component.bundle_wheels(REPO / "recipes" / "inference" / "requirements.txt",
                                      tmp_path / "w", build_component.WheelBundle(()))
