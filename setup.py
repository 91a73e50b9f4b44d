"""Packaging hook: the wheel carries the bundled models and the inference recipe.

The models live at the repository's top level (``models/``, next to the training scripts that
write them) and the recipe in ``recipes/inference/``, outside the ``inspector`` package, so
``package-data`` cannot name them. This ``build_py`` copies the manifest and every ``.onnx`` file
it lists into ``inspector/bundled/models/`` of the build, and the recipe to
``inspector/bundled/inference-recipe.yaml`` (``inspector emulate`` serves its
DefaultConfiguration). An installed package looks there first; an editable install reads the
checkout's folders instead. Everything else about the package is in pyproject.toml.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
MODELS = HERE / "models"
RECIPE = HERE / "recipes" / "inference" / "recipe.yaml"
BUNDLE = ("inspector", "bundled")


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
        bundle = Path(self.build_lib, *BUNDLE)
        (bundle / "models").mkdir(parents=True, exist_ok=True)
        for path in bundled_files():
            shutil.copyfile(path, bundle / "models" / path.name)
        shutil.copyfile(RECIPE, bundle / "inference-recipe.yaml")


setup(cmdclass={"build_py": BuildPyWithModels})
