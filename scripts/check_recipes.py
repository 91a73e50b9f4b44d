#!/usr/bin/env python3
"""Check the Greengrass recipes and GDK configurations (CI runs this; the GDK CLI cannot).

    python scripts/check_recipes.py                 # the sources in recipes/*/
    python scripts/check_recipes.py --built         # also the built recipes in greengrass-build/

For every GDK project: the top level (gdk-config.json + recipe.yaml, a link to
recipes/inference/recipe.yaml: the main component, built by `gdk component build` at the root) and
every recipes/<kind>/ folder holding a gdk-config.json (the model):
- gdk-config.json: one component, author, a fixed version, a build GDK 1.6 can run from a fresh
  clone (custom: a command list; zip: zip_name and explicit excludes), publish bucket and region;
- recipe.yaml (and no recipe.json beside it): YAML that parses, RecipeFormatVersion 2020-01-25,
  the required keys, the same name and version as gdk-config.json;
- manifests for Linux x86_64 (amd64) and aarch64, artifact URIs that `gdk component publish`
  rewrites (s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/<file>);
- every {...} recipe variable is one Greengrass knows: {artifacts:path},
  {artifacts:decompressedPath}, {work:path}, {kernel:rootPath}, {iot:thingName},
  {configuration:/Key} with Key in the DefaultConfiguration, and {Dep:artifacts:path},
  {Dep:artifacts:decompressedPath}, {Dep:configuration:/Key} for a direct dependency Dep (whose
  key must exist and, for artifact paths, whose artifacts must be readable by ALL);
- accessControl: policy ids unique across all recipes, publish operations only, and resources
  exactly the topics the DefaultConfiguration configures (TOPIC_KEYS);
- lifecycle scripts: no recipe variable in a shell line ({configuration:...} or a path: the
  nucleus pastes them as plain text into `sh -c`; pass them with Setenv), and every expansion of
  a Setenv variable double-quoted;
and per component: the inference DefaultConfiguration has every key of inspector.settings and
nothing else, and validates; it depends on the model component (HARD, a range holding the
model's version) and on StreamManager (SOFT); the model recipe keeps no configuration, ships the
fp32 and INT8 .onnx and model.json readable by ALL, and its Install step checks them against
literal sha256 lines (built: they match the files, and model.json describes them).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECIPE_FORMAT = "2020-01-25"
REQUIRED_KEYS = ("RecipeFormatVersion", "ComponentName", "ComponentVersion", "Manifests")
# The only top-level keys the recipe format has (GDK's schema refuses any other).
KNOWN_KEYS = frozenset({*REQUIRED_KEYS, "ComponentDescription", "ComponentPublisher",
                        "ComponentConfiguration", "ComponentDependencies", "ComponentType",
                        "ComponentSource", "Lifecycle"})
ARCHITECTURES = ("amd64", "aarch64")  # Greengrass's names for Linux x86_64 and aarch64
GDK_URI_PREFIX = "s3://BUCKET_NAME/COMPONENT_NAME/COMPONENT_VERSION/"
STREAM_MANAGER = "aws.greengrass.StreamManager"
MODEL_TOKENS = ("MODEL_FP32_FILE", "MODEL_INT8_FILE", "MODEL_CHECKSUMS")
MODEL_FILE_TOKENS = ("MODEL_FP32_FILE", "MODEL_INT8_FILE")
MODEL_JSON = "model.json"
MODEL_ARTIFACT_SCHEMA = "inspector.model-artifact/1"
# A line of the model's Install step: "<sha256>  <file>", as the build writes it.
_CHECKSUM_LINE = re.compile(r"^\s*([0-9a-f]{64})  (\S+)\s*$", re.MULTILINE)

MQTT = "aws.greengrass.ipc.mqttproxy"
PUBSUB = "aws.greengrass.ipc.pubsub"
PUBLISH_OPERATION = {
    MQTT: "aws.greengrass#PublishToIoTCore",
    PUBSUB: "aws.greengrass#PublishToTopic",
}
# Every DefaultConfiguration key naming a topic, and the IPC service that publishes on it. A new
# *Topic key fails the check until it is listed here.
TOPIC_KEYS = {"PublishResultsOnTopic": MQTT, "MetricsTopic": MQTT, "PubSubTopic": PUBSUB}

SIMPLE_VARIABLES = frozenset(
    {"artifacts:path", "artifacts:decompressedPath", "work:path", "kernel:rootPath",
     "iot:thingName"}
)
DEPENDENCY_PATHS = frozenset({"artifacts:path", "artifacts:decompressedPath"})
# {anything:anything}: what the nucleus may try to interpolate. Shell ${VAR} has no colon.
_VARIABLE_RE = re.compile(r"\{([^{}\s]*:[^{}\s]*)\}")
_VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")


@dataclass
class Component:
    kind: str
    folder: Path
    gdk: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] = field(default_factory=dict)
    name: str = ""
    version: str = ""

    @property
    def defaults(self) -> dict[str, Any]:
        config = self.recipe.get("ComponentConfiguration") or {}
        return dict(config.get("DefaultConfiguration") or {})


class Report:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def add(self, where: Path | str, message: str) -> None:
        self.problems.append(f"{where}: {message}")


def _rel(path: Path, repo: Path) -> str:
    try:
        return str(path.relative_to(repo))
    except ValueError:
        return str(path)


# --- loading ---------------------------------------------------------------------------------


def gdk_projects(repo: Path) -> list[tuple[str, Path]]:
    """(kind, folder) of every GDK project: the top level (the main component, inference) and
    recipes/<kind>/ (the others)."""
    projects = [("inference", repo)] if (repo / "gdk-config.json").is_file() else []
    for config in sorted((repo / "recipes").glob("*/gdk-config.json")):
        projects.append((config.parent.name, config.parent))
    return projects


def load_components(repo: Path, report: Report) -> list[Component]:
    components = []
    seen: dict[str, Path] = {}
    for kind, folder in gdk_projects(repo):
        config_path = folder / "gdk-config.json"
        if kind in seen:
            report.add(_rel(config_path, repo), f"a second GDK project for {kind} (the other: "
                       f"{_rel(seen[kind] / 'gdk-config.json', repo)}): keep one")
            continue
        seen[kind] = folder
        component = Component(kind, folder)
        where = _rel(config_path, repo)
        try:
            component.gdk = json.loads(config_path.read_text(encoding="utf-8"))
        except ValueError as exc:
            report.add(where, f"not JSON: {exc}")
            continue
        check_gdk_config(component, where, report)
        recipe_path = folder / "recipe.yaml"
        if (folder / "recipe.json").exists():
            report.add(_rel(folder / "recipe.json", repo),
                       "both recipe.json and recipe.yaml: GDK refuses that")
        if not recipe_path.is_file():
            report.add(_rel(folder, repo) + "/", "no recipe.yaml beside gdk-config.json")
            continue
        if folder == repo:
            source = repo / "recipes" / "inference" / "recipe.yaml"
            if not recipe_path.is_symlink() or recipe_path.resolve() != source.resolve():
                report.add("recipe.yaml", "must be a link to recipes/inference/recipe.yaml "
                           "(GDK reads ./recipe.yaml; one copy is kept by hand)")
        recipe = parse_yaml(recipe_path, _rel(recipe_path, repo), report)
        if recipe is not None:
            component.recipe = recipe
            components.append(component)
    if not components:
        report.add("gdk-config.json", "no GDK project (gdk-config.json + recipe.yaml) found")
    return components


def _strict_loader() -> Any:
    """A SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return StrictLoader


def parse_yaml(path: Path, where: str, report: Report) -> dict[str, Any] | None:
    import yaml

    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_strict_loader())
    except (OSError, yaml.YAMLError) as exc:
        report.add(where, f"YAML does not parse: {exc}")
        return None
    if not isinstance(data, dict):
        report.add(where, "not a YAML mapping")
        return None
    return data


def check_gdk_config(component: Component, where: str, report: Report) -> None:
    gdk = component.gdk
    if not isinstance(gdk.get("gdk_version"), str):
        report.add(where, "gdk_version missing")
    entries = gdk.get("component")
    if not isinstance(entries, dict) or len(entries) != 1:
        report.add(where, "'component' must hold exactly one component")
        return
    component.name, body = next(iter(entries.items()))
    for key in ("author", "version", "build", "publish"):
        if key not in body:
            report.add(where, f"{component.name}: '{key}' missing")
    component.version = str(body.get("version", ""))
    if not _VERSION_RE.match(component.version):
        report.add(where, f"version {component.version!r}: use a fixed MAJOR.MINOR.PATCH "
                   "(NEXT_PATCH needs the cloud to build)")
    build = body.get("build") or {}
    system = build.get("build_system")
    if system == "custom":
        command = build.get("custom_build_command")
        if not (isinstance(command, list) and command and all(isinstance(c, str) for c in command)):
            report.add(where, "custom_build_command must be a non-empty list of strings")
        else:
            for arg in command:
                if arg.endswith(".py") and not (component.folder / arg).resolve().is_file():
                    report.add(where, f"custom_build_command names {arg}, which does not exist")
    elif system == "zip":
        options = build.get("options") or {}
        if "zip_name" not in options:
            report.add(where, "zip build without options.zip_name")
        if not isinstance(options.get("excludes"), list):
            report.add(where, "zip build without explicit options.excludes "
                       "(the defaults drop every file named test*)")
    else:
        report.add(where, f"build_system {system!r}: expected 'custom' or 'zip'")
    publish = body.get("publish") or {}
    for key in ("bucket", "region"):
        if not publish.get(key):
            report.add(where, f"publish.{key} missing")


# --- recipes ---------------------------------------------------------------------------------


def check_recipe(component: Component, where: str, report: Report, built: bool = False) -> None:
    recipe = component.recipe
    for key in REQUIRED_KEYS:
        if key not in recipe:
            report.add(where, f"required key {key} missing")
    known = {k.lower() for k in KNOWN_KEYS}
    for key in recipe:
        if str(key).lower() not in known:
            report.add(where, f"unknown top-level key {key!r}")
    if str(recipe.get("RecipeFormatVersion")) != RECIPE_FORMAT:
        report.add(where, f"RecipeFormatVersion must be {RECIPE_FORMAT}")
    name, version = recipe.get("ComponentName"), str(recipe.get("ComponentVersion"))
    if (name, version) != (component.name, component.version):
        report.add(where, f"recipe is {name} {version} but gdk-config.json says "
                   f"{component.name} {component.version}")
    manifests = recipe.get("Manifests") or []
    architectures = set()
    for index, manifest in enumerate(manifests):
        platform = (manifest or {}).get("Platform") or {}
        if platform.get("os") != "linux":
            report.add(where, f"Manifests[{index}]: Platform.os must be linux")
        architectures.add(platform.get("architecture"))
        for artifact in (manifest or {}).get("Artifacts") or []:
            uri = str(artifact.get("URI", ""))
            if not built and not uri.startswith(GDK_URI_PREFIX):
                report.add(where, f"artifact URI {uri!r} must start with {GDK_URI_PREFIX} "
                           "so that gdk component publish rewrites it")
        if not (manifest or {}).get("Lifecycle") and component.kind == "inference":
            report.add(where, f"Manifests[{index}]: no Lifecycle")
    for arch in ARCHITECTURES:
        if arch not in architectures:
            report.add(where, f"no manifest for linux/{arch}")


def strings(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(location, text) of every string in a recipe: keys and values."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield f"{path}/{key}", str(key)
            yield from strings(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings(value, f"{path}[{index}]")
    elif isinstance(node, str):
        yield path, node


def pointer_exists(config: dict[str, Any], pointer: str) -> bool:
    if not pointer.startswith("/"):
        return False
    node: Any = config
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def artifacts_readable_by_all(recipe: dict[str, Any]) -> bool:
    artifacts = [a for m in recipe.get("Manifests") or [] for a in (m or {}).get("Artifacts") or []]
    return bool(artifacts) and all(
        str((a.get("Permission") or {}).get("Read", "")).upper() == "ALL" for a in artifacts
    )


def check_variables(
    component: Component, by_name: dict[str, Component], where: str, report: Report
) -> None:
    dependencies = set((component.recipe.get("ComponentDependencies") or {}).keys())
    for location, text in strings(component.recipe):
        for variable in _VARIABLE_RE.findall(text):
            problem = variable_problem(variable, component, dependencies, by_name)
            if problem:
                report.add(where, f"{location}: {{{variable}}} {problem}")


def variable_problem(
    variable: str, component: Component, dependencies: set[str], by_name: dict[str, Component]
) -> str | None:
    if variable in SIMPLE_VARIABLES:
        return None
    if variable.startswith("configuration:"):
        pointer = variable[len("configuration:"):]
        if pointer_exists(component.defaults, pointer):
            return None
        return f"names {pointer!r}, which is not in this recipe's DefaultConfiguration"
    owner, _, rest = variable.partition(":")
    if owner not in dependencies:
        return "is not a Greengrass recipe variable (nor one of a direct dependency)"
    dependency = by_name.get(owner)
    if rest in DEPENDENCY_PATHS:
        if dependency is not None and not artifacts_readable_by_all(dependency.recipe):
            return f"reads {owner}'s artifacts, which are not Permission.Read ALL"
        return None
    if rest.startswith("configuration:"):
        pointer = rest[len("configuration:"):]
        if dependency is None or pointer_exists(dependency.defaults, pointer):
            return None
        return f"names {pointer!r}, which is not in {owner}'s DefaultConfiguration"
    return f"{rest!r} is not a variable a dependency exposes"


def configured_topics(defaults: dict[str, Any], where: str, report: Report) -> dict[str, set[str]]:
    topics: dict[str, set[str]] = {MQTT: set(), PUBSUB: set()}
    for key, value in defaults.items():
        if key == "accessControl" or not key.endswith("Topic"):
            continue
        if key not in TOPIC_KEYS:
            report.add(where, f"DefaultConfiguration.{key} looks like a topic but is not in "
                       "check_recipes.TOPIC_KEYS: say which IPC service publishes on it")
            continue
        if value:
            topics[TOPIC_KEYS[key]].add(str(value))
    return topics


def check_access_control(
    component: Component, where: str, report: Report, policy_ids: dict[str, str]
) -> None:
    defaults = component.defaults
    access = defaults.get("accessControl") or {}
    topics = configured_topics(defaults, where, report)
    granted: dict[str, set[str]] = {MQTT: set(), PUBSUB: set()}
    for service, policies in access.items():
        if service not in PUBLISH_OPERATION:
            report.add(where, f"accessControl.{service}: this component only publishes "
                       f"({', '.join(PUBLISH_OPERATION)})")
            continue
        for policy_id, policy in (policies or {}).items():
            owner = policy_ids.setdefault(policy_id, component.name)
            if owner != component.name:
                report.add(where, f"policy id {policy_id!r} is already used by {owner}")
            if not str(policy_id).startswith(component.name + ":"):
                report.add(where, f"policy id {policy_id!r}: prefix it with the component name "
                           "(ids must be unique on a device)")
            operations = list((policy or {}).get("operations") or [])
            if operations != [PUBLISH_OPERATION[service]]:
                report.add(where, f"{policy_id}: operations {operations} must be exactly "
                           f"[{PUBLISH_OPERATION[service]}]")
            granted[service].update(str(r) for r in (policy or {}).get("resources") or [])
    for service in (MQTT, PUBSUB):
        extra = sorted(granted[service] - topics[service])
        missing = sorted(topics[service] - granted[service])
        if extra:
            report.add(where, f"{service} grants {extra}, which no *Topic setting configures")
        if missing:
            report.add(where, f"{service} does not grant the configured topic(s) {missing}")


def check_settings_keys(component: Component, where: str, report: Report) -> None:
    try:
        from inspector.settings import Settings
    except ImportError as exc:
        report.add(where, f"cannot import inspector.settings to compare keys: {exc}")
        return
    from inspector.errors import ConfigError

    defaults = component.defaults
    defaults.pop("accessControl", None)
    fields = set(Settings.model_fields)
    missing = sorted(fields - set(defaults))
    extra = sorted(set(defaults) - fields)
    if missing:
        report.add(where, f"DefaultConfiguration lacks settings key(s) {missing}")
    if extra:
        report.add(where, f"DefaultConfiguration has key(s) {extra} that inspector.settings "
                   "does not know (it forbids extra keys)")
    if not missing and not extra:
        try:
            Settings.from_mapping(defaults)
        except ConfigError as exc:
            report.add(where, f"DefaultConfiguration is not valid settings: {exc}")


def version_satisfies(version: str, requirement: str) -> bool | None:
    """Whether ``version`` meets a space-separated list of comparators; None if unreadable."""
    match = _VERSION_RE.match(version)
    if not match:
        return None
    have = tuple(int(part) for part in match.groups())
    for comparator in requirement.split():
        found = re.fullmatch(r"(>=|<=|>|<|=)?(\d+)\.(\d+)\.(\d+)", comparator)
        if not found:
            return None
        op = found.group(1) or "="
        want = tuple(int(found.group(i)) for i in (2, 3, 4))
        ok = {">=": have >= want, "<=": have <= want, ">": have > want, "<": have < want,
              "=": have == want}[op]
        if not ok:
            return False
    return True


def check_inference(
    component: Component, by_name: dict[str, Component], where: str, report: Report
) -> None:
    check_settings_keys(component, where, report)
    dependencies = component.recipe.get("ComponentDependencies") or {}
    if STREAM_MANAGER not in dependencies:
        report.add(where, f"no dependency on {STREAM_MANAGER}")
    elif str((dependencies[STREAM_MANAGER] or {}).get("DependencyType", "HARD")).upper() != "SOFT":
        report.add(where, f"{STREAM_MANAGER} must be a SOFT dependency: uploads are optional "
                   "(off by default), and a HARD one restarts inspection with every "
                   "StreamManager restart")
    model = next((c for c in by_name.values() if c.kind == "model"), None)
    if model is None:
        report.add(where, "no model component (recipes/model/) to depend on")
        return
    dependency = dependencies.get(model.name)
    if not dependency:
        report.add(where, f"no dependency on the model component {model.name}")
        return
    if str(dependency.get("DependencyType", "HARD")).upper() != "HARD":
        report.add(where, f"{model.name} must be a HARD dependency: a new model version must "
                   "restart the service so that it loads the new file")
    requirement = str(dependency.get("VersionRequirement", ""))
    if not any(op in requirement for op in ("<", "^", "~")):
        report.add(where, f"{model.name}: VersionRequirement {requirement!r} should be a range "
                   "with an upper bound, so that a new model deploys without a new inference "
                   "version and an incompatible one does not")
    verdict = version_satisfies(model.version, requirement)
    if verdict is None:
        report.add(where, f"{model.name}: cannot read VersionRequirement {requirement!r} "
                   "(use comparators such as '>=1.0.0 <2.0.0')")
    elif not verdict:
        report.add(where, f"{model.name} {model.version} does not satisfy {requirement!r}")


def model_artifacts(recipe: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for m in recipe.get("Manifests") or [] for a in (m or {}).get("Artifacts") or []]


def lifecycle_steps(recipe: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], str]]:
    """(where, the step's Setenv with its Lifecycle's, Script) of every lifecycle step."""
    lifecycles = [("Lifecycle", recipe.get("Lifecycle"))] + [
        (f"Manifests[{i}]/Lifecycle", (m or {}).get("Lifecycle"))
        for i, m in enumerate(recipe.get("Manifests") or [])
    ]
    for where, lifecycle in lifecycles:
        if not isinstance(lifecycle, dict):
            continue
        shared = dict(lifecycle.get("Setenv") or {})
        for step, body in lifecycle.items():
            if step == "Setenv":
                continue
            if isinstance(body, str):
                yield f"{where}/{step}", shared, body
            elif isinstance(body, dict) and isinstance(body.get("Script"), str):
                env = {**shared, **dict(body.get("Setenv") or {})}
                yield f"{where}/{step}/Script", env, body["Script"]


def unquoted_expansions(script: str) -> list[str]:
    """The $NAME / ${NAME} of a POSIX sh script that stand outside double quotes (field
    splitting and globbing apply there). Quoted heredoc bodies (<<'EOF') are skipped."""
    found: list[str] = []
    quote = ""
    i = 0
    heredoc: str | None = None
    lines = script.split("\n")
    text_lines: list[str] = []
    for line in lines:  # drop the bodies of quoted heredocs: nothing expands there
        if heredoc is not None:
            if line.strip() == heredoc:
                heredoc = None
            continue
        text_lines.append(line)
        match = re.search(r"<<-?\s*'([A-Za-z_]+)'", line)
        if match:
            heredoc = match.group(1)
    text = "\n".join(text_lines)
    while i < len(text):
        char = text[i]
        if quote == "'":
            if char == "'":
                quote = ""
        elif char == "\\":
            i += 1
        elif char == '"':
            quote = "" if quote == '"' else '"'
        elif char == "'" and not quote:
            quote = "'"
        elif char == "#" and not quote and (i == 0 or text[i - 1] in " \t\n;"):
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        elif char == "$" and quote != '"':
            match = re.match(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text[i:])
            if match:
                found.append(match.group(1))
        i += 1
    return found


def check_scripts(component: Component, where: str, report: Report) -> None:
    """No recipe variable in a shell line (configuration values, paths: all through Setenv) and
    every expansion of a Setenv variable double-quoted."""
    for location, env, script in lifecycle_steps(component.recipe):
        for variable in _VARIABLE_RE.findall(script):
            kind = "a configuration value" if "configuration:" in variable else "a path"
            report.add(where, f"{location}: {{{variable}}} in a shell line: the nucleus pastes "
                       f"it as plain text into `sh -c`, so {kind} with a quote, `$` or space "
                       "runs or splits; pass it with Setenv and use \"$NAME\"")
        for name in unquoted_expansions(script):
            if name in env:
                report.add(where, f"{location}: ${name} is not double-quoted (a Greengrass "
                           "root with a space splits it)")


def check_model(component: Component, where: str, report: Report, built: bool) -> None:
    for key in component.defaults:
        report.add(where, f"DefaultConfiguration.{key}: the model component keeps no "
                   "configuration (a core keeps configuration across versions, so it would "
                   "outlive the version it describes); ship it in model.json")
    for index, manifest in enumerate(component.recipe.get("Manifests") or []):
        artifacts = list((manifest or {}).get("Artifacts") or [])
        names = sorted(str(a.get("URI", "")).rsplit("/", 1)[-1] for a in artifacts)
        onnx = [n for n in names if n.endswith(".onnx") or n in MODEL_FILE_TOKENS]
        if len(onnx) != 2 or MODEL_JSON not in names or len(names) != 3:
            report.add(where, f"Manifests[{index}]: artifacts {names}: expected the fp32 and "
                       f"INT8 .onnx files and {MODEL_JSON}")
        for artifact in artifacts:
            uri = str(artifact.get("URI", ""))
            if str((artifact.get("Permission") or {}).get("Read", "")).upper() != "ALL":
                report.add(where, f"artifact {uri!r} needs Permission.Read ALL (the inference "
                           "component reads it)")
            if str(artifact.get("Unarchive", "NONE")).upper() != "NONE":
                report.add(where, f"artifact {uri!r} must not be unarchived")
        install = ((manifest or {}).get("Lifecycle") or {}).get("Install")
        script = install.get("Script") if isinstance(install, dict) else install
        if not isinstance(script, str):
            report.add(where, f"Manifests[{index}]: no Install Script checking the files")
            continue
        listed = sorted(f for _, f in _CHECKSUM_LINE.findall(script))
        if built and listed != names:
            report.add(where, f"Manifests[{index}]: the Install step checks {listed}, the "
                       f"artifacts are {names}: every file needs its literal sha256 line")
        if not built and "MODEL_CHECKSUMS" not in script:
            report.add(where, f"Manifests[{index}]: the Install step has no MODEL_CHECKSUMS "
                       "token for the build to fill with the literal digests")
    if built:
        for location, text in strings(component.recipe):
            for token in MODEL_TOKENS:
                if re.search(rf"\b{token}\b", text):
                    report.add(where, f"{location}: build token {token} left in the built recipe")


def check_built_model(recipe: dict[str, Any], artifact_dir: Path, where: str,
                      report: Report) -> None:
    """Every file matches the literal digest of the Install step; model.json describes the two
    models as they are, under this component version."""
    from inspector.integrity import sha256_file

    for manifest in recipe.get("Manifests") or []:
        install = ((manifest or {}).get("Lifecycle") or {}).get("Install")
        script = install.get("Script", "") if isinstance(install, dict) else str(install or "")
        for declared, file_name in _CHECKSUM_LINE.findall(script):
            path = artifact_dir / file_name
            if path.is_file() and sha256_file(path) != declared:
                report.add(where, f"{file_name} has sha256 {sha256_file(path)}, the recipe "
                           f"declares {declared}")
    description = artifact_dir / MODEL_JSON
    try:
        model = json.loads(description.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        report.add(where, f"{MODEL_JSON}: cannot read: {exc}")
        return
    if model.get("schema") != MODEL_ARTIFACT_SCHEMA:
        report.add(where, f"{MODEL_JSON}: schema {model.get('schema')!r}, expected "
                   f"{MODEL_ARTIFACT_SCHEMA}")
    if str(model.get("version")) != str(recipe.get("ComponentVersion")):
        report.add(where, f"{MODEL_JSON}: version {model.get('version')!r} is not the "
                   f"component version {recipe.get('ComponentVersion')}")
    files = model.get("files") or {}
    if sorted(files) != ["fp32", "int8"]:
        report.add(where, f"{MODEL_JSON}: files {sorted(files)}, expected fp32 and int8")
    for precision, entry in files.items():
        path = artifact_dir / str((entry or {}).get("file", ""))
        if not path.is_file():
            report.add(where, f"{MODEL_JSON}: the {precision} file {path.name!r} is not shipped")
        elif sha256_file(path) != (entry or {}).get("sha256"):
            report.add(where, f"{MODEL_JSON}: {path.name} has sha256 {sha256_file(path)}, "
                       f"{MODEL_JSON} says {(entry or {}).get('sha256')}")


def check_built(component: Component, repo: Path, report: Report) -> None:
    """The recipe and artifacts in <folder>/greengrass-build (after a GDK or script build)."""
    build_dir = component.folder / "greengrass-build"
    recipe_path = build_dir / "recipes" / "recipe.yaml"
    where = _rel(recipe_path, repo)
    recipe = parse_yaml(recipe_path, where, report) if recipe_path.is_file() else None
    if recipe is None:
        report.add(where, "not built: run scripts/build_component.py "
                   f"{component.kind} (or gdk component build)")
        return
    built = Component(component.kind, component.folder, component.gdk, recipe,
                      component.name, component.version)
    check_recipe(built, where, report, built=True)
    artifact_dir = build_dir / "artifacts" / component.name / component.version
    for manifest in recipe.get("Manifests") or []:
        for artifact in (manifest or {}).get("Artifacts") or []:
            file_name = str(artifact.get("URI", "")).rsplit("/", 1)[-1]
            if not (artifact_dir / file_name).is_file():
                report.add(where, f"artifact {file_name} not in {_rel(artifact_dir, repo)}")
    if component.kind == "model":
        check_model(built, where, report, built=True)
        check_built_model(recipe, artifact_dir, where, report)
    check_scripts(built, where, report)


def check(repo: Path = REPO, built: bool = False) -> list[str]:
    """Every problem found, as 'where: what' lines; empty when the recipes are fine."""
    report = Report()
    components = load_components(repo, report)
    by_name = {c.name: c for c in components}
    kinds = {c.kind for c in components}
    for kind, place in (("inference", "gdk-config.json at the top level"),
                        ("model", "recipes/model/")):
        if components and kind not in kinds:
            report.add(place, f"no {kind} component")
    policy_ids: dict[str, str] = {}
    for component in components:
        where = _rel(component.folder / "recipe.yaml", repo)
        if component.folder == repo:
            where = "recipes/inference/recipe.yaml"  # the source behind the top-level link
        check_recipe(component, where, report)
        check_variables(component, by_name, where, report)
        check_access_control(component, where, report, policy_ids)
        check_scripts(component, where, report)
        if component.kind == "inference":
            check_inference(component, by_name, where, report)
        elif component.kind == "model":
            check_model(component, where, report, built=False)
        if built:
            check_built(component, repo, report)
    return report.problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repo", type=Path, default=REPO)
    parser.add_argument("--built", action="store_true",
                        help="also check recipes/*/greengrass-build (build them first)")
    args = parser.parse_args(argv)
    src = args.repo / "src"
    if src.is_dir() and str(src) not in sys.path:
        sys.path.insert(0, str(src))  # inspector.settings, when the package is not installed
    problems = check(args.repo, built=args.built)
    for problem in problems:
        print(f"recipe check: {problem}", file=sys.stderr)
    if problems:
        print(f"recipe check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("recipe check: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
