"""The device's CLI (the code artifact unzipped as Greengrass does) lists only what it can run:
``emulate``, ``demo`` and ``bench`` need modules the artifact leaves out, so they are marked with
what to install, and running one says so instead of a ModuleNotFoundError traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile

import pytest

from script_loader import load_script

build_component = load_script("scripts/build_component.py")


@pytest.fixture(scope="module")
def device_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    out = tmp_path_factory.mktemp("build")
    (artifact,) = build_component.build("inference", out / "greengrass-build").artifacts
    app = out / "inspector-app"
    zipfile.ZipFile(artifact).extractall(app)
    assert not (app / "inspector" / "testing").exists()  # what makes this a device
    return {**os.environ, "PYTHONPATH": str(app), "PYTHONDONTWRITEBYTECODE": "1"}


def cli(env: dict[str, str], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "inspector", *argv], env=env,
                          capture_output=True, text=True, timeout=60, cwd="/")


def test_the_device_help_marks_what_needs_more(device_env: dict[str, str]) -> None:
    shown = cli(device_env, "--help")
    assert shown.returncode == 0, shown.stderr
    text = " ".join(shown.stdout.split())  # argparse wraps the help lines
    for verb in ("demo", "emulate", "bench"):
        assert f"{verb} " in text
    assert text.count("(not installed here; needs: pip install 'inspector[test]')") == 3
    assert "run watch a directory" in text and "not installed here" not in text.split(
        "demo")[0]  # predict, run, check-config are complete


@pytest.mark.parametrize("verb", ["emulate", "demo", "bench"])
def test_running_what_the_device_lacks_says_what_to_install(
    device_env: dict[str, str], verb: str
) -> None:
    done = cli(device_env, verb)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "ModuleNotFoundError" not in done.stderr
    assert f"inspector {verb}: not available in this installation" in done.stderr
    assert "pip install 'inspector[test]'" in done.stderr


def test_the_full_package_lists_them_plainly() -> None:
    from inspector.cli import build_parser

    help_text = build_parser().format_help()
    assert "emulate" in help_text and "not installed here" not in help_text
