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

from script_loader import load_script

REPO = Path(__file__).resolve().parents[1]


build_component = load_script("scripts/build_component.py")
check_recipes = load_script("scripts/check_recipes.py")
bootstrap = load_script("recipes/inference/bootstrap.py")


def _fake_models(folder: Path, precisions: tuple[str, ...] = ("fp32", "int8")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for precision in precisions:
        name = f"scratch-{precision}.onnx"
        data = f"fake onnx {precision}".encode()
        (folder / name).write_bytes(data)
        entries.append({"file": name, "name": "scratch-yolov8n", "version": "1.2.0",
                        "precision": precision, "sha256": hashlib.sha256(data).hexdigest(),
                        "input_size": [640, 640], "classes": ["scratch"]})
    manifest = {"default": "scratch-fp32.onnx", "models": entries}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return folder


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


def test_model_build_ships_the_default_model_and_fills_the_recipe(tmp_path: Path) -> None:
    import yaml

    models = _fake_models(tmp_path / "models")
    built = build_component.build("model", tmp_path / "out", models_dir=models)
    (artifact,) = built.artifacts
    assert Path(artifact).name == "scratch-fp32.onnx"
    gdk = json.loads((REPO / "recipes" / "model" / "gdk-config.json").read_text())
    version = gdk["component"]["com.inspector.ScratchModel"]["version"]
    assert Path(artifact).parent.parts[-2:] == ("com.inspector.ScratchModel", version)
    recipe = yaml.safe_load(Path(built.recipe).read_text())
    config = recipe["ComponentConfiguration"]["DefaultConfiguration"]
    assert config == {
        "ModelName": "scratch-yolov8n",
        "ModelVersion": "1.2.0",
        "ModelFile": "scratch-fp32.onnx",
        "ModelSha256": hashlib.sha256(b"fake onnx fp32").hexdigest(),
        "ModelPrecision": "fp32",
    }
    uris = {a["URI"] for m in recipe["Manifests"] for a in m["Artifacts"]}
    assert uris == {"s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/scratch-fp32.onnx"}
    assert "MODEL_" not in Path(built.recipe).read_text().replace("Model", "")


def test_model_build_int8_option(tmp_path: Path) -> None:
    models = _fake_models(tmp_path / "models")
    built = build_component.build("model", tmp_path / "out", models_dir=models, precision="int8")
    assert Path(built.artifacts[0]).name == "scratch-int8.onnx"
    assert "ModelPrecision: int8" in Path(built.recipe).read_text()


def test_model_build_without_manifest_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    with pytest.raises(build_component.BuildError, match=r"manifest\.json not found"):
        build_component.build("model", tmp_path / "out", models_dir=tmp_path / "models")


def test_model_build_refuses_a_file_that_differs_from_the_manifest(tmp_path: Path) -> None:
    models = _fake_models(tmp_path / "models")
    (models / "scratch-fp32.onnx").write_bytes(b"tampered")
    with pytest.raises(build_component.BuildError, match="sha256 is"):
        build_component.build("model", tmp_path / "out", models_dir=models)


def test_model_build_refuses_a_missing_precision(tmp_path: Path) -> None:
    models = _fake_models(tmp_path / "models", precisions=("fp32",))
    with pytest.raises(build_component.BuildError, match="no int8 model"):
        build_component.build("model", tmp_path / "out", models_dir=models, precision="int8")


# --- as GDK runs it: the custom build command, in the component folder of a fresh copy ---------


def _fresh_copy(tmp_path: Path) -> Path:
    """The tracked files a clone has that the builds read (no greengrass-build, no caches)."""
    clone = tmp_path / "clone"
    ignore = shutil.ignore_patterns("greengrass-build", "zip-build", "__pycache__", "*.pyc")
    for folder in ("recipes", "scripts", "src"):
        shutil.copytree(REPO / folder, clone / folder, ignore=ignore)
    shutil.copy(REPO / "pyproject.toml", clone / "pyproject.toml")
    _fake_models(clone / "models")
    return clone


def test_gdk_custom_build_commands_produce_what_gdk_publishes(tmp_path: Path) -> None:
    clone = _fresh_copy(tmp_path)
    for kind in ("inference", "model"):
        folder = clone / "recipes" / kind
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
            ["inspector-app.zip"] if kind == "inference" else ["scratch-fp32.onnx"]
        )
    assert check_recipes.check(clone, built=True) == []


# --- the install step --------------------------------------------------------------------------


@pytest.mark.slow
def test_bootstrap_builds_once_and_skips_when_nothing_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="inspector.bootstrap")
    requirements = tmp_path / "requirements.txt"
    first_requirements = "# no packages: a venv without pip is enough for this test\n"
    requirements.write_text(first_requirements)
    link = tmp_path / "work" / "venv"

    assert bootstrap.main(["--venv", str(link), "--requirements", str(requirements)]) == 0
    first = link.resolve()
    assert link.is_symlink() and (first / "bin" / "python3").exists()
    stamp = json.loads((first / bootstrap.STAMP).read_text())
    assert stamp["requirements_sha256"] == hashlib.sha256(requirements.read_bytes()).hexdigest()
    caplog.clear()

    assert bootstrap.main(["--venv", str(link), "--requirements", str(requirements)]) == 0
    assert "nothing to install" in caplog.text
    assert link.resolve() == first

    requirements.write_text("# changed requirements: a new environment\n")
    assert bootstrap.main(["--venv", str(link), "--requirements", str(requirements)]) == 0
    second = link.resolve()
    assert second != first
    assert first.exists(), "the previous environment is kept for a rollback"

    requirements.write_text(first_requirements)  # a rollback to the first release
    caplog.clear()
    assert bootstrap.main(["--venv", str(link), "--requirements", str(requirements)]) == 0
    assert link.resolve() == first and "already built" in caplog.text

    requirements.write_text("# a third set of requirements\n")
    assert bootstrap.main(["--venv", str(link), "--requirements", str(requirements)]) == 0
    third = link.resolve()
    venvs = sorted(p.name for p in (tmp_path / "work" / "venvs").iterdir())
    assert venvs == sorted([third.name, first.name]), "only the last used previous one is kept"
    assert not second.exists()


def test_bootstrap_never_trusts_an_unfinished_environment(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# none\n")
    key = bootstrap.install_key(requirements.read_bytes())
    unfinished = tmp_path / "work" / "venvs" / key[: bootstrap.KEY_CHARS]
    (unfinished / "bin").mkdir(parents=True)
    (unfinished / "bin" / "python3").write_text("")  # no stamp: an interrupted install
    assert not bootstrap.is_ready(unfinished, key)


def test_bootstrap_refuses_an_old_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bootstrap, "MIN_PYTHON", (99, 0))
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("")
    assert bootstrap.main(["--venv", str(tmp_path / "venv"), "--requirements",
                           str(requirements)]) == 2
    assert not (tmp_path / "venv").exists()
