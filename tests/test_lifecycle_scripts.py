"""The built recipes' lifecycle scripts, run as the nucleus runs them (tests/nucleus_render.py):
hostile configuration values run nothing, a Greengrass root with a space (and shell syntax) in
its path works, and the inference Install step succeeds with the network blocked, from a bundle
of wheels or from an environment that already satisfies requirements.txt."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import sys
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from nucleus_render import Core, pinned_requirements
from script_loader import load_script

REPO = Path(__file__).resolve().parents[1]
INFERENCE = "com.inspector.Inference"
MODEL = "com.inspector.ScratchModel"
PROBE = "inspector-offline-probe"

build_component = load_script("scripts/build_component.py")


def _payloads(canary: Path) -> list[str]:
    """Values that run `touch` wherever a shell parses them (each in its own way)."""
    return [
        f'"; touch {canary}/dquote; #',
        f"'; touch {canary}/squote; '",
        f"$(touch {canary}/dollar)",
        f"`touch {canary}/backtick`",
        f"x\ntouch {canary}/newline",
        f"x && touch {canary}/and",
    ]


def _hostile(node: Any, payloads: Iterator[str]) -> Any:
    if isinstance(node, str):
        return next(payloads)
    if isinstance(node, list):
        return [_hostile(value, payloads) for value in node]
    if isinstance(node, dict):
        return {key: _hostile(value, payloads) for key, value in node.items()}
    return node


def _cycle(values: list[str]) -> Iterator[str]:
    while True:
        yield from values


def _python_first(folder: Path) -> dict[str, str]:
    """An environment whose python3 is this interpreter (a wrapper, not a symlink: a symlinked
    venv python would lose its site-packages)."""
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "python3"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "SVCUID", "PYTHON", "INSPECTOR_", "PIP_"))}
    env["PATH"] = f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"
    return env


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A local port that refuses connections (bound, never listening) for the whole test."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield int(sock.getsockname()[1])
    sock.close()


def _offline(env: dict[str, str], port: int) -> dict[str, str]:
    blocked = f"http://127.0.0.1:{port}"
    return {**env, "PIP_INDEX_URL": f"{blocked}/simple", "HTTP_PROXY": blocked,
            "HTTPS_PROXY": blocked, "http_proxy": blocked, "https_proxy": blocked,
            "PIP_RETRIES": "0", "PIP_TIMEOUT": "3", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _deploy(core: Core, built: dict[str, Path]) -> None:
    """Lay the built artifacts out as the nucleus does after downloading them."""
    model_dir = core.artifacts(MODEL)
    model_dir.mkdir(parents=True)
    for file in built["model_artifacts"].iterdir():
        (model_dir / file.name).write_bytes(file.read_bytes())
    app_zip = built["app_zip"]
    core.artifacts(INFERENCE).mkdir(parents=True)
    (core.artifacts(INFERENCE) / app_zip.name).write_bytes(app_zip.read_bytes())
    with zipfile.ZipFile(app_zip) as archive:  # Unarchive: ZIP -> <decompressed>/<zip stem>/
        archive.extractall(core.unarchived(INFERENCE) / app_zip.stem)


def _build(tmp: Path, requirements: Path, bundle: Any = None) -> dict[str, Path]:
    (tmp / "src").mkdir(parents=True)
    (tmp / "src" / "a.onnx").write_bytes(b"fp32 bytes")
    (tmp / "src" / "b.onnx").write_bytes(b"int8 bytes")
    model_recipe = build_component.build_model_component(
        tmp / "model", version="1.3.0", fp32=tmp / "src" / "a.onnx",
        int8=tmp / "src" / "b.onnx", name="scratch-yolov8n")
    inference = build_component.build("inference", tmp / "inference",
                                      requirements=requirements, bundle=bundle)
    return {
        "model_recipe": model_recipe,
        "model_artifacts": model_recipe.parents[1] / "artifacts" / MODEL / "1.3.0",
        "inference_recipe": Path(inference.recipe),
        "app_zip": Path(inference.artifacts[0]),
    }


def _recipe(path: Path) -> dict[str, Any]:
    recipe: dict[str, Any] = yaml.safe_load(path.read_text())
    return recipe


def _core(root: Path, inference: dict[str, Any], configuration: dict[str, Any]) -> Core:
    return Core(root, versions={INFERENCE: str(inference["ComponentVersion"]), MODEL: "1.3.0"},
                configuration=configuration)


def test_hostile_configuration_runs_nothing_and_a_root_with_spaces_works(
    tmp_path: Path,
) -> None:
    canary = tmp_path / "canary"
    canary.mkdir()
    built = _build(tmp_path / "build", pinned_requirements(tmp_path / "requirements.txt"))
    inference, model = _recipe(built["inference_recipe"]), _recipe(built["model_recipe"])
    payloads = _payloads(canary)
    defaults = inference["ComponentConfiguration"]["DefaultConfiguration"]
    configuration = {
        INFERENCE: _hostile(defaults, _cycle(payloads)),
        # Keys a deployment may merge into the model component although it declares none.
        MODEL: {"ModelFile": payloads[0], "ModelSha256": payloads[2], "x": payloads[3]},
    }
    # A Greengrass root whose path a shell would split and expand.
    root = tmp_path / "green grass $(touch pwned-root) 'q'"
    core = _core(root, inference, configuration)
    _deploy(core, built)
    env = _python_first(tmp_path / "bin")

    for recipe in (inference, model):
        rendered = str(core.lifecycle(recipe))
        assert not any(p in rendered for p in payloads), "configuration reached a lifecycle"

    checked = core.run_step(model, "Install", env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(" OK") == 3

    installed = core.run_step(inference, "Install", env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    venv = core.work(INFERENCE) / "venv"
    assert (venv / "bin" / "python3").exists()

    # Run: the exec reaches the service (from the artifact, on PYTHONPATH, in the venv). Outside
    # Greengrass (no IPC socket variable) it stops at once: no image directory.
    ran = core.run_step(inference, "Run", env, timeout=120)
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "no image directory" in ran.stderr + ran.stdout

    assert sorted(p.name for p in canary.iterdir()) == []
    assert not [p for p in tmp_path.rglob("pwned*")], "the root path was expanded by a shell"


def test_the_harness_does_catch_a_configuration_value_in_a_shell_line(tmp_path: Path) -> None:
    """Control: the same rendering and `sh -c`, on a step that pastes configuration into the
    shell line (as the recipes did before issue 17), does run the payload."""
    canary = tmp_path / "canary"
    canary.mkdir()
    payloads = _payloads(canary)
    recipe = {"ComponentName": INFERENCE, "Manifests": [{"Lifecycle": {
        "Run": {"Script": "echo {configuration:/DeviceName}"},
        "Install": {"Script": 'echo "{configuration:/DeviceName}"'},
        "Shutdown": {"Script": "echo '{configuration:/DeviceName}'"},
    }}]}
    for payload in payloads:
        core = Core(tmp_path / "gg", versions={INFERENCE: "1.0.0"},
                    configuration={INFERENCE: {"DeviceName": payload}})
        for step in ("Run", "Install", "Shutdown"):  # unquoted, "quoted", 'quoted'
            core.run_step(recipe, step)
    ran = sorted(p.name for p in canary.iterdir())
    assert ran == ["and", "backtick", "dollar", "dquote", "newline", "squote"]


# --- offline installs ------------------------------------------------------------------------


def _probe_wheel(folder: Path, version: str) -> Path:
    """A tiny pure-Python wheel of a dummy requirement, written by hand (no network, no build
    backend)."""
    folder.mkdir(parents=True, exist_ok=True)
    package = PROBE.replace("-", "_")
    info = f"{package}-{version}.dist-info"
    files = {
        f"{package}/__init__.py": f'VERSION = "{version}"\n'.encode(),
        f"{info}/METADATA": (f"Metadata-Version: 2.1\nName: {PROBE}\nVersion: {version}\n"
                             ).encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
        f"{info}/top_level.txt": f"{package}\n".encode(),
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = folder / f"{package}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return wheel


@pytest.mark.slow
def test_install_offline_from_the_bundled_wheels(tmp_path: Path, closed_port: int) -> None:
    """build_component.py inference --bundle-wheels (here from a local wheel folder, as an
    offline build does), then the Install step with the package index and proxies pointed at a
    closed port: pip installs from inspector-app/wheels with --no-index."""
    local = tmp_path / "local-wheels"
    _probe_wheel(local, "1.0.0")
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{PROBE}==1.0.0; python_version >= '3.10'\n")
    bundle = build_component.WheelBundle(("manylinux2014_x86_64", "manylinux2014_aarch64"),
                                         "{}.{}".format(*sys.version_info[:2]), local)
    built = _build(tmp_path / "build", requirements, bundle)
    names = zipfile.ZipFile(built["app_zip"]).namelist()
    assert "wheels/inspector_offline_probe-1.0.0-py3-none-any.whl" in names

    inference = _recipe(built["inference_recipe"])
    core = _core(tmp_path / "gg root", inference, {})
    _deploy(core, built)
    env = _offline(_python_first(tmp_path / "bin"), closed_port)
    installed = core.run_step(inference, "Install", env)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "from the bundled wheels" in installed.stdout
    python = core.work(INFERENCE) / "venv" / "bin" / "python3"
    import subprocess

    probe = subprocess.run([str(python), "-c", "import inspector_offline_probe as p; "
                            "print(p.VERSION)"], capture_output=True, text=True, timeout=60,
                           check=False)
    assert probe.stdout.strip() == "1.0.0", probe.stderr

    again = core.run_step(inference, "Install", env)  # the next start, still offline
    assert again.returncode == 0 and "nothing to install" in again.stdout, again.stdout


def test_install_offline_when_the_environment_already_satisfies_the_requirements(
    tmp_path: Path, closed_port: int
) -> None:
    """No bundle, no network: python3 already has the packages, so nothing is installed; the
    next start (a reboot without network) checks the environment and installs nothing."""
    built = _build(tmp_path / "build", pinned_requirements(tmp_path / "requirements.txt"))
    inference = _recipe(built["inference_recipe"])
    core = _core(tmp_path / "gg root", inference, {})
    _deploy(core, built)
    env = _offline(_python_first(tmp_path / "bin"), closed_port)
    first = core.run_step(inference, "Install", env)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "nothing to install" in first.stdout
    again = core.run_step(inference, "Install", env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "satisfies requirements.txt (versions checked, modules imported): nothing to " \
        "install" in again.stdout


@pytest.mark.slow
def test_install_offline_without_a_bundle_fails_clearly_and_keeps_the_environment(
    tmp_path: Path, closed_port: int
) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"PyYAML=={metadata.version('PyYAML')}\n")
    built = _build(tmp_path / "build", requirements)
    inference = _recipe(built["inference_recipe"])
    core = _core(tmp_path / "gg root", inference, {})
    _deploy(core, built)
    env = _offline(_python_first(tmp_path / "bin"), closed_port)
    assert core.run_step(inference, "Install", env).returncode == 0
    venv = core.work(INFERENCE) / "venv"
    before = venv.resolve()

    # A new release needs a package this device does not have, and there is no network.
    app = core.unarchived(INFERENCE) / "inspector-app"
    (app / "requirements.txt").write_text(f"{PROBE}==1.0.0\n")
    failed = core.run_step(inference, "Install", env)
    assert failed.returncode == 1
    assert "installing the runtime dependencies failed" in failed.stdout
    assert "--bundle-wheels" in failed.stdout
    assert venv.resolve() == before, "the environment in use is kept"
