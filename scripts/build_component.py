#!/usr/bin/env python3
"""Build a Greengrass component into the layout the GDK CLI produces, with or without GDK.

    python3 scripts/build_component.py inference        # com.inspector.Inference
    python3 scripts/build_component.py model [--precision int8]   # com.inspector.ScratchModel

Each component's folder, recipes/<kind>/, holds its gdk-config.json and its one recipe.yaml (the
only copy kept by hand). gdk-config.json declares a ``custom`` build whose command is this script,
so ``gdk component build`` run in that folder and this script run anywhere write the same thing:

    recipes/<kind>/greengrass-build/recipes/recipe.yaml          the recipe, tokens filled in
    recipes/<kind>/greengrass-build/artifacts/<Name>/<Version>/  the artifacts

``gdk component publish`` then uploads the artifacts and rewrites the s3://BUCKET_NAME/... URIs.

inference: ``inspector-app.zip`` = the ``inspector`` package (no tests, no test emulators, no
synthetic-image generator, no models, no caches) + requirements.txt (pinned runtime deps) +
bootstrap.py (the install step).
model: the ONNX file named by models/manifest.json (its ``default``, or the entry of the
requested precision: ``--precision`` or INSPECTOR_MODEL_PRECISION), checked against the sha256
in the manifest; the recipe's MODEL_* tokens become its name, version, file, sha256, precision.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("build_component")

REPO = Path(__file__).resolve().parents[1]
KINDS = ("inference", "model")
APP_ZIP = "inspector-app.zip"
PRECISION_ENV = "INSPECTOR_MODEL_PRECISION"

# What goes into the code artifact: the package's Python sources and data files, minus what only
# tests (testing/: the nucleus and StreamManager emulators), the synthetic-image demo (synth/),
# the benchmark (bench/: it needs both; users bench with a pip install of the package) or
# the bundled demo model (models/) need. A new top-level data type must be added here on
# purpose (tests/test_build_component.py lists the archive).
PACKAGE_SUFFIXES = frozenset({".py", ".json"})
PACKAGE_FILES = frozenset({"py.typed"})
PACKAGE_EXCLUDED_DIRS = frozenset({"__pycache__", "bench", "models", "synth", "testing", "tests"})

MODEL_TOKENS = ("MODEL_NAME", "MODEL_VERSION", "MODEL_FILE", "MODEL_SHA256", "MODEL_PRECISION")
_TOKEN_RE = re.compile(r"\b(" + "|".join(MODEL_TOKENS) + r")\b")
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed: the same sources give the same zip, byte for byte


class BuildError(Exception):
    """A component cannot be built; the message says what to do."""


@dataclass(frozen=True)
class Component:
    kind: str
    folder: Path
    name: str
    version: str


@dataclass(frozen=True)
class Built:
    recipe: Path
    artifacts: tuple[Path, ...]


def load_component(kind: str, repo: Path = REPO) -> Component:
    folder = repo / "recipes" / kind
    config_path = folder / "gdk-config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"cannot read {config_path}: {exc}") from exc
    components = config.get("component") or {}
    if len(components) != 1:
        raise BuildError(f"{config_path}: 'component' must have exactly one entry")
    name, body = next(iter(components.items()))
    version = str(body.get("version", ""))
    if not re.fullmatch(r"\d+\.\d+\.\d+", version):
        raise BuildError(f"{config_path}: version {version!r} must be a fixed MAJOR.MINOR.PATCH")
    return Component(kind, folder, name, version)


def _yaml() -> Any:
    try:
        import yaml
    except ImportError as exc:  # GDK itself depends on PyYAML; a bare python3 may lack it
        raise BuildError("PyYAML is needed to build: python3 -m pip install PyYAML") from exc
    return yaml


def load_recipe(component: Component) -> dict[str, Any]:
    path = component.folder / "recipe.yaml"
    yaml = _yaml()
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BuildError(f"cannot read {path}: {exc}") from exc
    if not isinstance(recipe, dict):
        raise BuildError(f"{path}: not a YAML mapping")
    got = (recipe.get("ComponentName"), str(recipe.get("ComponentVersion")))
    if got != (component.name, component.version):
        raise BuildError(
            f"{path} says {got[0]} {got[1]} but gdk-config.json says "
            f"{component.name} {component.version}: make them agree"
        )
    return recipe


def dump_recipe(recipe: dict[str, Any], path: Path, source: Path) -> None:
    """Write the built recipe: plain YAML, anchors expanded, multi-line scripts as blocks."""
    yaml = _yaml()

    class Dumper(yaml.SafeDumper):  # type: ignore[name-defined]
        def ignore_aliases(self, data: Any) -> bool:
            return True

    def text(dumper: Any, value: str) -> Any:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    body = yaml.dump(recipe, Dumper=Dumper, sort_keys=False, width=1000, allow_unicode=True)
    header = f"# Generated by scripts/build_component.py from {source.name}; do not edit.\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("---\n" + header + body, encoding="utf-8")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# --- inference -------------------------------------------------------------------------------


def package_files(package_dir: Path) -> Iterator[tuple[Path, str]]:
    """(file, name in the zip) for every file of the package that a device needs, sorted."""
    for path in sorted(package_dir.rglob("*")):
        rel = path.relative_to(package_dir)
        if any(part in PACKAGE_EXCLUDED_DIRS for part in rel.parts[:-1]):
            continue
        if not path.is_file():
            continue
        if path.suffix in PACKAGE_SUFFIXES or path.name in PACKAGE_FILES:
            yield path, f"inspector/{rel.as_posix()}"
        elif path.suffix not in {".pyc", ".pyo", ".onnx"}:
            logger.warning("not packaged (unknown file type): %s", path)


def _zip_add(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.external_attr = 0o644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    archive.writestr(info, data)


def build_app_zip(repo: Path, target: Path) -> list[str]:
    """Write inspector-app.zip; return the names it holds."""
    package_dir = repo / "src" / "inspector"
    component_dir = repo / "recipes" / "inference"
    if not (package_dir / "__main__.py").is_file():
        raise BuildError(f"{package_dir} is not the inspector package (no __main__.py)")
    entries: list[tuple[str, bytes]] = [
        (name, path.read_bytes()) for path, name in package_files(package_dir)
    ]
    for extra in ("requirements.txt", "bootstrap.py"):
        source = component_dir / extra
        if not source.is_file():
            raise BuildError(f"missing {source}")
        entries.append((extra, source.read_bytes()))
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in sorted(entries):
            _zip_add(archive, name, data)
    return sorted(name for name, _ in entries)


def build_inference(component: Component, out: Path, repo: Path) -> Built:
    recipe = load_recipe(component)
    artifact_dir = out / "artifacts" / component.name / component.version
    names = build_app_zip(repo, artifact_dir / APP_ZIP)
    logger.info("%s: %d files in %s", component.name, len(names), APP_ZIP)
    built_recipe = out / "recipes" / "recipe.yaml"
    dump_recipe(recipe, built_recipe, component.folder / "recipe.yaml")
    return Built(built_recipe, (artifact_dir / APP_ZIP,))


# --- model -----------------------------------------------------------------------------------


def select_model(manifest: dict[str, Any], precision: str | None, where: Path) -> dict[str, Any]:
    models = manifest.get("models")
    if not isinstance(models, list) or not models:
        raise BuildError(f"{where}: no 'models' list")
    if precision:
        matches = [m for m in models if str(m.get("precision", "")).lower() == precision]
        if not matches:
            have = sorted({str(m.get("precision")) for m in models})
            raise BuildError(f"{where}: no {precision} model (precisions: {have})")
        return dict(matches[0])
    default = manifest.get("default")
    matches = [m for m in models if m.get("file") == default]
    if not matches:
        raise BuildError(f"{where}: 'default' {default!r} is not the file of any listed model")
    return dict(matches[0])


def model_values(models_dir: Path, precision: str | None) -> tuple[Path, dict[str, str]]:
    """The model file to ship and the values of the recipe's MODEL_* tokens."""
    manifest_path = models_dir / "manifest.json"
    if not manifest_path.is_file():
        raise BuildError(
            f"{manifest_path} not found: export a model first (scripts/export_model.py, "
            "scripts/quantize_model.py write models/*.onnx and models/manifest.json), or pass "
            "--models-dir"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise BuildError(f"{manifest_path}: not JSON: {exc}") from exc
    entry = select_model(manifest, precision, manifest_path)
    for key in ("file", "name", "version", "sha256"):
        if not str(entry.get(key, "")).strip():
            raise BuildError(f"{manifest_path}: model entry {entry!r} has no {key!r}")
    file_name = str(entry["file"])
    if Path(file_name).name != file_name or not file_name.endswith(".onnx"):
        raise BuildError(f"{manifest_path}: model file {file_name!r} must be a bare *.onnx name")
    model_path = models_dir / file_name
    if not model_path.is_file():
        raise BuildError(f"{model_path} not found (listed in {manifest_path})")
    actual = sha256_file(model_path)
    declared = str(entry["sha256"]).strip().lower()
    if actual != declared:
        raise BuildError(
            f"{model_path}: sha256 is {actual} but {manifest_path} says {declared}; "
            "re-export the model or fix the manifest"
        )
    values = {
        "MODEL_NAME": str(entry["name"]),
        "MODEL_VERSION": str(entry["version"]),
        "MODEL_FILE": file_name,
        "MODEL_SHA256": actual,
        "MODEL_PRECISION": str(entry.get("precision", "fp32")).lower(),
    }
    return model_path, values


def fill_tokens(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: fill_tokens(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [fill_tokens(value, values) for value in node]
    if isinstance(node, str):
        return _TOKEN_RE.sub(lambda match: values[match.group(1)], node)
    return node


def build_model(
    component: Component, out: Path, models_dir: Path, precision: str | None
) -> Built:
    recipe = load_recipe(component)
    model_path, values = model_values(models_dir, precision)
    artifact_dir = out / "artifacts" / component.name / component.version
    artifact_dir.mkdir(parents=True, exist_ok=True)
    target = artifact_dir / model_path.name
    shutil.copyfile(model_path, target)
    if sha256_file(target) != values["MODEL_SHA256"]:
        raise BuildError(f"{target}: copy differs from {model_path}")
    logger.info("%s: %s (%s, sha256 %s)", component.name, model_path.name,
                values["MODEL_PRECISION"], values["MODEL_SHA256"])
    built_recipe = out / "recipes" / "recipe.yaml"
    dump_recipe(fill_tokens(recipe, values), built_recipe, component.folder / "recipe.yaml")
    return Built(built_recipe, (target,))


# --- entry point -----------------------------------------------------------------------------


def build(
    kind: str,
    out: Path | None = None,
    repo: Path = REPO,
    models_dir: Path | None = None,
    precision: str | None = None,
) -> Built:
    """Build one component into ``out`` (default: its folder's greengrass-build/)."""
    if kind not in KINDS:
        raise BuildError(f"unknown component kind {kind!r}; one of {KINDS}")
    component = load_component(kind, repo)
    out = (out or component.folder / "greengrass-build").absolute()
    # Only what this build owns is cleared: never a whole --out folder someone pointed us at.
    shutil.rmtree(out / "recipes", ignore_errors=True)
    shutil.rmtree(out / "artifacts" / component.name, ignore_errors=True)
    if kind == "inference":
        return build_inference(component, out, repo)
    return build_model(component, out, models_dir or repo / "models", precision)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument(
        "--out", type=Path, help="build folder (default recipes/<kind>/greengrass-build)"
    )
    parser.add_argument(
        "--models-dir", type=Path, help="folder of manifest.json and *.onnx (default models/)"
    )
    parser.add_argument(
        "--precision", choices=("fp32", "int8"), default=os.environ.get(PRECISION_ENV) or None,
        help=f"model precision to ship (default: the manifest's default; env {PRECISION_ENV})",
    )
    args = parser.parse_args(argv)
    try:
        precision = args.precision.lower() if args.precision else None
        built = build(args.kind, args.out, REPO, args.models_dir, precision)
    except BuildError as exc:
        logger.error("%s", exc)
        return 1
    print(f"recipe:   {built.recipe}")
    for artifact in built.artifacts:
        print(f"artifact: {artifact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
