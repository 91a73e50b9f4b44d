#!/usr/bin/env python3
"""Build a Greengrass component into the layout the GDK CLI produces, with or without GDK.

    python3 scripts/build_component.py inference        # com.inspector.Inference
    python3 scripts/build_component.py model            # com.inspector.ScratchModel

Each component is a GDK project: a gdk-config.json beside its one recipe.yaml. The main one,
com.inspector.Inference, is the repository's top level (``gdk component build`` at the root); its
recipe.yaml there is a link to recipes/inference/recipe.yaml, the only copy kept by hand, beside
requirements.txt and bootstrap.py. com.inspector.ScratchModel is recipes/model/. gdk-config.json
declares a ``custom`` build whose command is this script, so ``gdk component build`` run in the
project folder and this script run anywhere write the same thing:

    <project>/greengrass-build/recipes/recipe.yaml          the recipe, tokens filled in
    <project>/greengrass-build/artifacts/<Name>/<Version>/  the artifacts

``gdk component publish`` then uploads the artifacts and rewrites the s3://BUCKET_NAME/... URIs.

inference: ``inspector-app.zip`` = the ``inspector`` package (no tests, no test emulators, no
synthetic-image generator, no models, no caches) + requirements.txt (pinned runtime deps) +
bootstrap.py (the install step).
model: BOTH models of models/manifest.json (fp32 and INT8), each checked against the sha256 in
the manifest, plus ``model.json`` (schema inspector.model-artifact/1: the component version, the
model name, each precision's file, sha256 and size); the recipe's Install step gets the three
digests as literals. A version already recorded in recipes/model/published.json with other
bytes is refused (a published version never changes: bump it); a new version is recorded there
(commit the file). ``--no-registry`` builds without that guard (throwaway builds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
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

MODEL_COMPONENT = "com.inspector.ScratchModel"
MODEL_TOKENS = ("MODEL_FP32_FILE", "MODEL_INT8_FILE", "MODEL_CHECKSUMS")
MODEL_JSON = "model.json"
MODEL_ARTIFACT_SCHEMA = "inspector.model-artifact/1"
PRECISIONS = ("fp32", "int8")
REGISTRY = REPO / "recipes" / "model" / "published.json"
_TOKEN_RE = re.compile(r"\b(" + "|".join(MODEL_TOKENS) + r")\b")
_VERSION_RE = re.compile(r"\d+\.\d+\.\d+")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
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


def project_dir(kind: str, repo: Path = REPO) -> Path:
    """The GDK project folder of a component: the repository's top level for the main
    (inference) component, recipes/<kind>/ for the others."""
    return repo if kind == "inference" else repo / "recipes" / kind


def load_component(kind: str, repo: Path = REPO) -> Component:
    folder = project_dir(kind, repo)
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
    if not _VERSION_RE.fullmatch(version):
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
    recipe = read_recipe(path)
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
    try:
        shown = source.resolve().relative_to(REPO).as_posix()
    except ValueError:
        shown = source.name
    header = f"# Generated by scripts/build_component.py from {shown}; do not edit.\n"
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


@dataclass(frozen=True)
class WheelBundle:
    """Runtime wheels to ship inside the code artifact, for cores without a package index."""

    platforms: tuple[str, ...]
    python_version: str = "3.11"
    find_links: Path | None = None  # a local wheel folder instead of the index (offline builds)


def _requirement_class() -> Any:
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip carries its own copy
        from pip._vendor.packaging.requirements import Requirement
    return Requirement


def target_requirements(text: str, python_version: str) -> list[str]:
    """The requirement lines that apply to a device's Python, markers evaluated for it.

    pip download evaluates markers against the Python running it, not --python-version
    (pypa/pip#6117, #11010): the build evaluates them itself and hands pip plain lines."""
    requirement_class = _requirement_class()
    environment = {"python_version": python_version,
                   "python_full_version": f"{python_version}.0"}
    lines = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        requirement = requirement_class(line)
        if requirement.marker is None or requirement.marker.evaluate(environment):
            requirement.marker = None
            lines.append(str(requirement))
    return lines


def bundle_wheels(requirements: Path, dest: Path, bundle: WheelBundle) -> list[Path]:
    """pip download the wheels that requirements.txt needs on each target platform into
    ``dest`` (binary wheels only: a device may have no compiler)."""
    if not bundle.platforms:
        raise BuildError("--bundle-wheels needs at least one --platform "
                         "(e.g. manylinux2014_x86_64, manylinux2014_aarch64)")
    if not re.fullmatch(r"3\.\d+", bundle.python_version):
        raise BuildError(f"--python-version {bundle.python_version!r}: use MAJOR.MINOR, e.g. 3.11")
    if "{}.{}".format(*sys.version_info[:2]) != bundle.python_version:
        logger.warning("bundling wheels for Python %s with Python %s: pip evaluates the markers "
                       "of indirect dependencies for the Python running it; build with the "
                       "device's Python version when you can", bundle.python_version,
                       sys.version.split()[0])
    lines = target_requirements(requirements.read_text(encoding="utf-8"), bundle.python_version)
    dest.mkdir(parents=True, exist_ok=True)
    pinned = dest.parent / "requirements-target.txt"
    pinned.write_text("\n".join(lines) + "\n", encoding="utf-8")
    source = ["--no-index", "--find-links", str(bundle.find_links)] if bundle.find_links else []
    for platform in bundle.platforms:
        command = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check",
                   "--no-input", "--only-binary=:all:", "--platform", platform,
                   "--python-version", bundle.python_version, "--implementation", "cp",
                   *source, "--dest", str(dest), "-r", str(pinned)]
        logger.info("wheels for %s, Python %s: %s", platform, bundle.python_version,
                    " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BuildError(f"pip download for {platform} failed:\n{result.stdout}"
                             f"{result.stderr}")
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        raise BuildError(f"pip download wrote no wheels into {dest}")
    return wheels


def build_app_zip(
    repo: Path, target: Path, requirements: Path | None = None, wheels: list[Path] | None = None
) -> list[str]:
    """Write inspector-app.zip; return the names it holds. ``requirements`` replaces
    recipes/inference/requirements.txt; ``wheels`` go to wheels/ (installed by bootstrap.py with
    pip --no-index)."""
    package_dir = repo / "src" / "inspector"
    component_dir = repo / "recipes" / "inference"
    if not (package_dir / "__main__.py").is_file():
        raise BuildError(f"{package_dir} is not the inspector package (no __main__.py)")
    entries: list[tuple[str, bytes]] = [
        (name, path.read_bytes()) for path, name in package_files(package_dir)
    ]
    sources = {"requirements.txt": requirements or component_dir / "requirements.txt",
               "bootstrap.py": component_dir / "bootstrap.py"}
    for extra, source in sources.items():
        if not source.is_file():
            raise BuildError(f"missing {source}")
        entries.append((extra, source.read_bytes()))
    wheel_names = [f"wheels/{wheel.name}" for wheel in wheels or []]
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in sorted(entries):
            _zip_add(archive, name, data)
        for wheel, name in zip(wheels or [], wheel_names, strict=True):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_STORED  # a wheel is a zip already
            archive.writestr(info, wheel.read_bytes())
    return sorted([name for name, _ in entries] + wheel_names)


def build_inference(
    component: Component,
    out: Path,
    repo: Path,
    requirements: Path | None = None,
    bundle: WheelBundle | None = None,
) -> Built:
    recipe = load_recipe(component)
    artifact_dir = out / "artifacts" / component.name / component.version
    wheels: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="inspector-wheels-") as tmp:
        if bundle is not None:
            source = requirements or repo / "recipes" / "inference" / "requirements.txt"
            wheels = bundle_wheels(source, Path(tmp) / "wheels", bundle)
        names = build_app_zip(repo, artifact_dir / APP_ZIP, requirements, wheels)
    logger.info("%s: %d files in %s (%d wheels)", component.name, len(names), APP_ZIP,
                len(wheels))
    built_recipe = out / "recipes" / "recipe.yaml"
    dump_recipe(recipe, built_recipe, component.folder / "recipe.yaml")
    return Built(built_recipe, (artifact_dir / APP_ZIP,))


# --- model -----------------------------------------------------------------------------------


def select_model(manifest: dict[str, Any], precision: str, where: Path) -> dict[str, Any]:
    """The manifest's entry of one precision."""
    models = manifest.get("models")
    if not isinstance(models, list) or not models:
        raise BuildError(f"{where}: no 'models' list")
    matches = [m for m in models if str(m.get("precision", "")).lower() == precision]
    if not matches:
        have = sorted({str(m.get("precision")) for m in models})
        raise BuildError(f"{where}: no {precision} model (precisions: {have}); every version "
                         f"of the model component ships both {' and '.join(PRECISIONS)}")
    return dict(matches[0])


def manifest_models(models_dir: Path, version: str) -> tuple[dict[str, Path], str]:
    """The fp32 and INT8 files of models/manifest.json, each checked against its sha256, and the
    model's name (the fp32 entry's)."""
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
    files: dict[str, Path] = {}
    names: dict[str, str] = {}
    for precision in PRECISIONS:
        entry = select_model(manifest, precision, manifest_path)
        for key in ("file", "name", "sha256"):
            if not str(entry.get(key, "")).strip():
                raise BuildError(f"{manifest_path}: {precision} entry has no {key!r}")
        file_name = str(entry["file"])
        if Path(file_name).name != file_name or not file_name.endswith(".onnx"):
            raise BuildError(
                f"{manifest_path}: model file {file_name!r} must be a bare *.onnx name"
            )
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
        if str(entry.get("version", version)) != version:
            logger.warning("%s: the manifest calls the %s model version %s; the component "
                           "version is %s", manifest_path, precision, entry.get("version"),
                           version)
        files[precision] = model_path
        names[precision] = str(entry["name"])
    return files, names["fp32"]


def model_artifact(version: str, name: str, files: dict[str, tuple[str, str, int]]) -> bytes:
    """model.json: what one version of the model component ships, written from its bytes."""
    document = {
        "schema": MODEL_ARTIFACT_SCHEMA,
        "component": MODEL_COMPONENT,
        "version": version,
        "name": name,
        "files": {
            precision: {"file": file_name, "sha256": sha256, "bytes": size}
            for precision, (file_name, sha256, size) in files.items()
        },
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def read_registry(path: Path) -> dict[str, dict[str, str]]:
    """published.json: {version: {file name: sha256}} of every version built for publishing."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BuildError(f"cannot read the registry {path}: {exc}") from exc
    if not isinstance(data, dict) or not all(
        _VERSION_RE.fullmatch(str(version)) and isinstance(files, dict)
        and all(isinstance(f, str) and isinstance(d, str) for f, d in files.items())
        for version, files in data.items()
    ):
        raise BuildError(f"{path}: expected {{\"MAJOR.MINOR.PATCH\": {{file: sha256}}}}")
    return data


def guard_version(registry: Path, version: str, digests: dict[str, str]) -> None:
    """Refuse a version recorded in ``registry`` with other bytes; record a new one."""
    recorded = read_registry(registry)
    before = recorded.get(version)
    if before is None:
        recorded[version] = dict(sorted(digests.items()))
        ordered = {v: recorded[v] for v in sorted(recorded, key=_version_key)}
        registry.parent.mkdir(parents=True, exist_ok=True)
        registry.write_text(json.dumps(ordered, indent=2) + "\n", encoding="utf-8")
        logger.info("recorded %s %s in %s: commit it", MODEL_COMPONENT, version, registry)
        return
    if before == digests:
        return
    changes = []
    for file_name in sorted(set(before) | set(digests)):
        old, new = before.get(file_name), digests.get(file_name)
        if old != new:
            changes.append(
                f"{file_name}: built now {new or '(absent)'}, recorded {old or '(absent)'}"
            )
    raise BuildError(
        f"{MODEL_COMPONENT} {version} was already built with other bytes (recorded in "
        f"{registry}): " + "; ".join(changes) + ". A published version never changes (cores "
        "that have it keep it, and the cloud refuses to publish it again): give the new files "
        "a new version (ComponentVersion in recipes/model/recipe.yaml and version in "
        f"recipes/model/gdk-config.json). Only if {version} was never published: delete its "
        f"entry from {registry.name} and build again."
    )


def read_recipe(path: Path) -> dict[str, Any]:
    yaml = _yaml()
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise BuildError(f"cannot read {path}: {exc}") from exc
    if not isinstance(recipe, dict):
        raise BuildError(f"{path}: not a YAML mapping")
    return recipe


def build_model_component(
    out_dir: Path,
    *,
    version: str,
    fp32: Path,
    int8: Path,
    name: str,
    registry: Path | None = None,
    recipe: Path | None = None,
) -> Path:
    """Build one version of com.inspector.ScratchModel into ``out_dir`` (GDK's greengrass-build/).

    Writes ``artifacts/com.inspector.ScratchModel/<version>/`` = ``<name>.onnx`` (a copy of
    ``fp32``), ``<name>-int8.onnx`` (of ``int8``) and model.json, and ``recipes/recipe.yaml``:
    the ``recipe`` template (default recipes/model/recipe.yaml) at ``version`` with the three
    sha256 as literals in its Install step. With a ``registry`` (published.json), a version
    recorded there with other bytes is refused and a new one is recorded. Returns the recipe.
    """
    if not _VERSION_RE.fullmatch(version):
        raise BuildError(f"model component version {version!r} must be MAJOR.MINOR.PATCH")
    if not _NAME_RE.fullmatch(name) or name.endswith(".onnx"):
        raise BuildError(f"model name {name!r}: use letters, digits, '.', '_', '-' (no .onnx)")
    sources = {"fp32": Path(fp32), "int8": Path(int8)}
    targets = {"fp32": f"{name}.onnx", "int8": f"{name}-int8.onnx"}
    files: dict[str, tuple[str, str, int]] = {}
    for precision, source in sources.items():
        if not source.is_file():
            raise BuildError(f"{precision} model {source} not found")
        files[precision] = (targets[precision], sha256_file(source), source.stat().st_size)
    if files["fp32"][1] == files["int8"][1]:
        raise BuildError(f"{sources['fp32']} and {sources['int8']} are the same bytes: the "
                         "INT8 model must be the quantized one")
    description = model_artifact(version, name, files)
    digests = {file_name: sha256 for file_name, sha256, _ in files.values()}
    digests[MODEL_JSON] = hashlib.sha256(description).hexdigest()
    if registry is not None:
        guard_version(registry, version, digests)

    template_path = recipe or REPO / "recipes" / "model" / "recipe.yaml"
    template = read_recipe(template_path)
    template["ComponentVersion"] = version
    checksums = "\n".join(f"{digests[f]}  {f}" for f in (*targets.values(), MODEL_JSON))
    values = {"MODEL_FP32_FILE": targets["fp32"], "MODEL_INT8_FILE": targets["int8"],
              "MODEL_CHECKSUMS": checksums}

    artifact_dir = Path(out_dir).absolute() / "artifacts" / MODEL_COMPONENT / version
    shutil.rmtree(artifact_dir, ignore_errors=True)
    artifact_dir.mkdir(parents=True)
    for precision, source in sources.items():
        target = artifact_dir / targets[precision]
        shutil.copyfile(source, target)
        if sha256_file(target) != files[precision][1]:
            raise BuildError(f"{target}: copy differs from {source}")
        logger.info("%s %s: %s (%s, sha256 %s)", MODEL_COMPONENT, version, target.name,
                    precision, files[precision][1])
    (artifact_dir / MODEL_JSON).write_bytes(description)
    built_recipe = Path(out_dir).absolute() / "recipes" / "recipe.yaml"
    dump_recipe(fill_tokens(template, values), built_recipe, template_path)
    return built_recipe


def fill_tokens(node: Any, values: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: fill_tokens(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [fill_tokens(value, values) for value in node]
    if isinstance(node, str):
        return _TOKEN_RE.sub(lambda match: values[match.group(1)], node)
    return node


def build_model(
    component: Component, out: Path, models_dir: Path, registry: Path | None
) -> Built:
    load_recipe(component)  # its name and version agree with gdk-config.json
    models, name = manifest_models(models_dir, component.version)
    recipe = build_model_component(
        out, version=component.version, fp32=models["fp32"], int8=models["int8"], name=name,
        registry=registry, recipe=component.folder / "recipe.yaml",
    )
    artifact_dir = out / "artifacts" / component.name / component.version
    artifacts = (artifact_dir / f"{name}.onnx", artifact_dir / f"{name}-int8.onnx",
                 artifact_dir / MODEL_JSON)
    return Built(recipe, artifacts)


# --- entry point -----------------------------------------------------------------------------


def build(
    kind: str,
    out: Path | None = None,
    repo: Path = REPO,
    models_dir: Path | None = None,
    precision: str | None = None,
    registry: Path | None = None,
    requirements: Path | None = None,
    bundle: WheelBundle | None = None,
) -> Built:
    """Build one component into ``out`` (default: its folder's greengrass-build/).

    inference: ``requirements`` replaces recipes/inference/requirements.txt in the artifact (a
    site's own pins); ``bundle`` puts the runtime wheels for the target platforms into it.

    ``registry``: the model versions already built (recipes/model/published.json); None builds
    the model without the guard. ``precision`` is accepted for old callers and ignored: every
    model version ships both precisions.
    """
    if kind not in KINDS:
        raise BuildError(f"unknown component kind {kind!r}; one of {KINDS}")
    component = load_component(kind, repo)
    out = (out or component.folder / "greengrass-build").absolute()
    # Only what this build owns is cleared: never a whole --out folder someone pointed us at.
    shutil.rmtree(out / "recipes", ignore_errors=True)
    shutil.rmtree(out / "artifacts" / component.name, ignore_errors=True)
    if kind == "inference":
        return build_inference(component, out, repo, requirements, bundle)
    if precision:
        logger.info("--precision %s: every model version ships both fp32 and INT8; a device "
                    "picks one with the inference setting ModelPrecision", precision)
    return build_model(component, out, models_dir or repo / "models", registry)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(name)s: %(message)s")
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument(
        "--out", type=Path,
        help="build folder (default greengrass-build/ of the GDK project: the top level for "
        "inference, recipes/model/ for model)"
    )
    parser.add_argument(
        "--models-dir", type=Path, help="folder of manifest.json and *.onnx (default models/)"
    )
    parser.add_argument(
        "--precision", choices=("fp32", "int8"), default=os.environ.get(PRECISION_ENV) or None,
        help=f"ignored (env {PRECISION_ENV}): every model version ships both precisions; "
        "choose one per device with the inference setting ModelPrecision",
    )
    parser.add_argument(
        "--registry", type=Path, default=REGISTRY,
        help="model versions already built, {version: {file: sha256}} (default "
        "recipes/model/published.json): a recorded version with other bytes is refused, a new "
        "one is recorded",
    )
    parser.add_argument(
        "--no-registry", action="store_true",
        help="build the model without the registry guard (a throwaway build, never to publish)",
    )
    wheels = parser.add_argument_group("inference: offline and air-gapped devices")
    wheels.add_argument(
        "--bundle-wheels", action="store_true",
        help="put the runtime wheels into the code artifact (inspector-app/wheels/): the "
        "install step then uses pip --no-index, no network",
    )
    wheels.add_argument(
        "--platform", action="append", default=[], metavar="TAG",
        help="wheel platform of the devices (repeatable), e.g. manylinux2014_x86_64 "
        "manylinux2014_aarch64",
    )
    wheels.add_argument("--python-version", default="3.11", metavar="X.Y",
                        help="the devices' python3 (default 3.11)")
    wheels.add_argument("--find-links", type=Path, metavar="DIR",
                        help="take the wheels from this folder, not the package index")
    wheels.add_argument("--requirements", type=Path, metavar="FILE",
                        help="ship this requirements file instead of "
                        "recipes/inference/requirements.txt")
    args = parser.parse_args(argv)
    bundle = None
    if args.bundle_wheels:
        bundle = WheelBundle(tuple(args.platform), args.python_version, args.find_links)
    elif args.platform or args.find_links:
        parser.error("--platform and --find-links go with --bundle-wheels")
    try:
        precision = args.precision.lower() if args.precision else None
        registry = None if args.no_registry else args.registry
        built = build(args.kind, args.out, REPO, args.models_dir, precision, registry,
                      args.requirements, bundle)
    except BuildError as exc:
        logger.error("%s", exc)
        return 1
    print(f"recipe:   {built.recipe}")
    for artifact in built.artifacts:
        print(f"artifact: {artifact}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
