"""Packaging hook: the wheel carries the bundled models.

The models live at the repository's top level (``models/``, next to the training scripts that
write them), outside the ``inspector`` package, so ``package-data`` cannot name them. This
``build_py`` copies the manifest and every ``.onnx`` file it lists into
``inspector/bundled_models/`` of the build; ``inspector.models.resolve_models_dir`` looks there
first in an installed package. An editable install reads ``models/`` of the checkout instead.
Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
TARGET = ("inspector", "bundled_models")


def bundled_files() -> list[Path]:
    """The manifest and the model files it lists; none when the checkout has no models yet."""
    manifest = MODELS / "manifest.json"
    if not manifest.is_file():
        return []
    listed = [m["file"] for m in json.loads(manifest.read_text("utf-8")).get("models", [])]
    missing = [name for name in listed if not (MODELS / name).is_file()]
    if missing:
        raise SystemExit(f"models/manifest.json lists files that are missing: {missing}")
    return [manifest, *(MODELS / name for name in listed)]


class BuildPyWithModels(build_py):
    def run(self) -> None:
        super().run()
        if self.editable_mode:  # the checkout's models/ is found directly
            return
        target = Path(self.build_lib, *TARGET)
        target.mkdir(parents=True, exist_ok=True)
        for path in bundled_files():
            shutil.copyfile(path, target / path.name)


setup(cmdclass={"build_py": BuildPyWithModels})
