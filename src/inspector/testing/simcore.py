"""A simulated Greengrass core: GDK build output deployed and run as the nucleus would, no device.

    with NucleusEmulator(component_name="sim.Core") as nucleus, \\
            SimulatedCore(root, nucleus, thing_name="line-7") as core:
        core.import_build(Path("recipes/model/greengrass-build"))
        core.import_build(Path("recipes/inference/greengrass-build"))
        result = core.deploy({"com.inspector.ScratchModel": "1.2.0",
                              "com.inspector.Inference": "1.0.0"},
                             configuration={"com.inspector.Inference": {
                                 "merge": {"ImageDirectory": "/tmp/images"}}})
        assert result.status == "SUCCEEDED", result.reason
        print(core.log("com.inspector.Inference"))

What it does, and the nucleus source each behaviour is modelled on (aws-greengrass-nucleus,
src/main/java/com/aws/greengrass/...):

- **Layout** (``util/NucleusPaths.java``, ``componentmanager/ComponentStore.java``):
  ``packages/recipes/<sha256 of name>@<version>.recipe.yaml``,
  ``packages/artifacts/<name>/<version>/<file>``,
  ``packages/artifacts-unarchived/<name>/<version>/<zip stem>/`` (``Unarchive: ZIP``),
  ``work/<name>/`` (the steps' working directory), ``logs/<name>.log``. Artifact files get the
  recipe's ``Permission`` (``componentmanager/models/Permission.java``: OWNER = owner+group read,
  ALL = everyone) and, when we are root, the component user as owner
  (``lifecyclemanager/RunWithPathOwnershipHandler.java``); the work folder is the user's, 0700.
- **Recipe variables** (``componentmanager/KernelConfigResolver.java``: the two regexes, same-
  component first, then cross-component): ``{artifacts:path}``, ``{artifacts:decompressedPath}``,
  ``{work:path}``, ``{kernel:rootPath}``, ``{iot:thingName}``, ``{configuration:/json/pointer}``
  (a value's text: JSON text for an object or list, ``true``/``false`` for booleans; a missing
  key leaves the placeholder as it is), and ``{<Dependency>:artifacts:path}``,
  ``{<Dependency>:configuration:/...}``... only for DIRECT dependencies (else left in place).
  Applied to the whole lifecycle, ``Setenv`` values included.
- **Steps** (``lifecyclemanager/ShellRunner.java``, ``util/platforms/unix/UnixPlatform.java``):
  each Script runs as ``sh -c <script>`` in ``work/<name>`` with the lifecycle's and the step's
  ``Setenv`` (the step's win), ``SVCUID`` / ``AWS_CONTAINER_AUTHORIZATION_TOKEN`` (the
  component's own token), the IPC socket, ``AWS_IOT_THING_NAME``, ``AWS_REGION`` (and HOME =
  the work folder, where the nucleus's ``sudo -H`` gives the user's home). When we are
  root, as ``nobody:nogroup`` through ``setpriv`` (the nucleus uses ``sudo -u ggc_user``), if
  that user can run the first interpreter on PATH; otherwise as the current user, with a warning
  and ``run_as`` = None (e.g. a pyenv Python under /root, which other users cannot reach).
  ``path_first`` (default: the running interpreter's bin folder) goes first on PATH, so the
  Install's ``python3`` already satisfies the requirements. Timeouts: Install 120 s unless the
  step says; Shutdown: SIGTERM to the process group, SIGKILL after 15 s (``GreengrassService``
  defaults).
- **Deployments** (``deployment/DeploymentConfigMerger.java``, ``deployment/activator/
  DefaultActivator.java``, ``lifecyclemanager/UpdateSystemPolicyService.java``): configuration per
  ``NucleusEmulator.deploy_configuration`` (existing values kept across versions, new default
  keys added, ``reset`` then ``merge``); with ``NOTIFY_COMPONENTS`` (the default) subscribed
  components are asked first, for every deployment, and may defer (``notify_component_update``);
  configuration-only changes go to the component's validators and a rejection fails the
  deployment with no change;
  a component whose version or rendered lifecycle changed, or that has a HARD dependency on
  one, is stopped (dependants first), installed and started again (dependencies first); an
  Install that fails (or a Run that exits non-zero / reports ERRORED within ``startup_s``) rolls
  the whole deployment back to the previous versions and configuration (failureHandlingPolicy
  ROLLBACK, the default). PostComponentUpdateEvent closes it.

What it cannot check without a real core: downloads from S3 and their Digest check, the cloud's
recipe validation, other platforms' manifests, ``RequiresPrivilege``, ``Startup``/``bootstrap``
steps, resource limits, the nucleus's retries of an ERRORED component (3, then BROKEN), the
nucleus's own restart, the logs' rotation, TES credentials and the real StreamManager.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from inspector.testing.nucleus import NucleusEmulator, UpdateNotice

logger = logging.getLogger(__name__)

DEFAULT_INSTALL_TIMEOUT_S = 120.0  # GreengrassService: install and startup default to 120 s
DEFAULT_SHUTDOWN_TIMEOUT_S = 15.0
COMPONENT_USER = ("nobody", "nogroup")

# KernelConfigResolver: group 1 = namespace, group 2 = key (a JSON pointer for "configuration");
# Java's \w is ASCII-only, hence re.ASCII.
_SAME = re.compile(r"\{([.\w-]+):([^:}]*)}", re.ASCII)
_CROSS = re.compile(r"\{([.\w-]+):([.\w-]+):([^:}]*)}", re.ASCII)


class SimCoreError(Exception):
    """A recipe or build folder the simulated core cannot use."""


# ---------------------------------------------------------------------------------- recipes


def _ci(mapping: Any, key: str, default: Any = None) -> Any:
    """``mapping[key]`` with recipe keys' case-insensitivity."""
    if not isinstance(mapping, Mapping):
        return default
    for k, v in mapping.items():
        if str(k).lower() == key.lower():
            return v
    return default


def _machine() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "amd64": "amd64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
        machine, machine)


@dataclass(frozen=True)
class Artifact:
    file: str  # the last part of the URI
    unarchive: str  # "NONE" | "ZIP"
    read: str  # "OWNER" | "ALL" | "NONE"
    execute: str


@dataclass(frozen=True)
class Recipe:
    name: str
    version: str
    dependencies: dict[str, tuple[str, str]]  # name -> (VersionRequirement, HARD|SOFT)
    defaults: dict[str, Any]
    lifecycle: dict[str, Any]
    artifacts: tuple[Artifact, ...]
    text: str

    @classmethod
    def parse(cls, text: str, where: str = "<recipe>") -> Recipe:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise SimCoreError(f"{where}: not YAML/JSON: {exc}") from exc
        name, version = _ci(data, "ComponentName"), _ci(data, "ComponentVersion")
        if not isinstance(name, str) or not isinstance(version, str):
            raise SimCoreError(f"{where}: ComponentName and ComponentVersion are required")
        dependencies = {}
        for dep, spec in (_ci(data, "ComponentDependencies") or {}).items():
            dependencies[str(dep)] = (str(_ci(spec, "VersionRequirement", "*")),
                                      str(_ci(spec, "DependencyType", "HARD")).upper())
        defaults = _ci(_ci(data, "ComponentConfiguration") or {}, "DefaultConfiguration") or {}
        manifest = _pick_manifest(_ci(data, "Manifests") or [], where)
        lifecycle = dict(_ci(manifest, "Lifecycle") or _ci(data, "Lifecycle") or {})
        artifacts = []
        for raw in _ci(manifest, "Artifacts") or []:
            uri = str(_ci(raw, "URI", ""))
            permission = _ci(raw, "Permission") or {}
            artifacts.append(Artifact(
                file=uri.rstrip("/").rsplit("/", 1)[-1],
                unarchive=str(_ci(raw, "Unarchive", "NONE")).upper(),
                read=str(_ci(permission, "Read", "OWNER")).upper(),
                execute=str(_ci(permission, "Execute", "NONE")).upper(),
            ))
        return cls(name, version, dependencies, copy.deepcopy(defaults), lifecycle,
                   tuple(artifacts), text)


def _pick_manifest(manifests: list[Any], where: str) -> Mapping[str, Any]:
    """The first manifest whose Platform fits this machine (os linux, our architecture)."""
    for manifest in manifests:
        plat = _ci(manifest, "Platform") or {}
        os_name = str(_ci(plat, "os", "*")).lower()
        arch = str(_ci(plat, "architecture", "*")).lower()
        if os_name in ("linux", "*", "all") and arch in (_machine(), "*", "all"):
            return manifest
    if manifests:
        raise SimCoreError(f"{where}: no manifest for linux/{_machine()}")
    return {}


def _version_key(version: str) -> tuple[int, ...]:
    core = version.split("-", 1)[0].split("+", 1)[0]
    return tuple(int(p) if p.isdigit() else 0 for p in core.split("."))


def satisfies(version: str, requirement: str) -> bool:
    """Whether ``version`` meets a recipe VersionRequirement made of space-separated comparators
    (``>=1.0.0 <2.0.0``, ``=1.2.0``, ``1.2.0``, ``*``; ``||`` between alternatives)."""
    have = _version_key(version)
    for alternative in requirement.split("||"):
        ok = True
        for term in alternative.split():
            match = re.fullmatch(r"(>=|<=|>|<|=)?v?([0-9.]+[^ ]*)|\*", term)
            if match is None:
                raise SimCoreError(f"VersionRequirement {requirement!r}: cannot read {term!r}")
            if term == "*":
                continue
            op, want = match.group(1) or "=", _version_key(match.group(2))
            ok = ok and {">=": have >= want, "<=": have <= want, ">": have > want,
                         "<": have < want, "=": have == want}[op]
        if ok:
            return True
    return False


# ------------------------------------------------------------------------------ the core


@dataclass
class DeploymentResult:
    """``status``: SUCCEEDED, FAILED_NO_STATE_CHANGE (refused before anything changed: a missing
    dependency, a configuration a validator rejected) or FAILED_ROLLBACK_COMPLETE."""

    deployment_id: str
    status: str
    reason: str = ""
    failed_component: str = ""
    notice: UpdateNotice | None = None
    restarted: list[str] = field(default_factory=list)


@dataclass
class _Running:
    name: str
    version: str
    process: subprocess.Popen[bytes] | None = None
    states_seen: int = 0


class SimulatedCore:
    """See the module docstring. A context manager; ``close()`` stops every component."""

    def __init__(
        self,
        root: Path,
        nucleus: NucleusEmulator,
        *,
        thing_name: str | None = None,
        run_as: str | None = "auto",
        path_first: Path | None = None,
        extra_env: Mapping[str, str] | None = None,
        external: Mapping[str, str] | None = None,
        startup_s: float = 1.0,
    ) -> None:
        """``run_as``: "auto" (nobody:nogroup when we are root and that user can run the
        interpreter, else the current user), "user:group", or None (the current user).
        ``external``: components the core counts as present without running them (e.g.
        {"aws.greengrass.StreamManager": "2.1.0"} when a StreamManagerEmulator stands in).
        ``startup_s``: how long a started Run must live (or report RUNNING sooner) to count as
        started."""
        self.root = Path(root).absolute()
        self.nucleus = nucleus
        self.thing_name = thing_name or nucleus.thing_name
        self.path_first = Path(path_first) if path_first else Path(sys.executable).parent
        self.extra_env = dict(extra_env or {})
        self.external = dict(external or {})
        self.startup_s = startup_s
        self.recipes: dict[tuple[str, str], Recipe] = {}
        self.versions: dict[str, str] = {}  # what is deployed
        self.running: dict[str, _Running] = {}
        self.tokens: dict[str, str] = {}
        self.deployments: list[DeploymentResult] = []
        self._lock = threading.RLock()
        for folder in ("packages/recipes", "packages/artifacts", "packages/artifacts-unarchived",
                       "work", "logs"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        self._chmod(self.root, 0o755)
        self._open_socket_to_others()
        self.run_as = self._pick_user(run_as)

    # ------------------------------------------------------------------ setup

    def __enter__(self) -> SimulatedCore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            names = self._order(list(self.running))
        for name in reversed(names):
            self._stop(name)

    def _chmod(self, path: Path, mode: int) -> None:
        with contextlib.suppress(OSError):
            os.chmod(path, mode)

    def _open_socket_to_others(self) -> None:
        # Permissions.setIpcSocketPermission: the socket is readable and writable by everyone;
        # the token authenticates. Its folder must be reachable too.
        socket_path = Path(self.nucleus.socket_path)
        if os.geteuid() == 0:
            self._chmod(socket_path.parent, 0o755)
            self._chmod(socket_path, 0o666)

    def _pick_user(self, run_as: str | None) -> tuple[str, str] | None:
        if run_as is None or os.geteuid() != 0:
            if run_as not in (None, "auto"):
                logger.warning("simulated core: not root, steps run as the current user")
            return None
        if shutil.which("setpriv") is None:
            logger.warning("simulated core: no setpriv; steps run as root")
            return None
        user = COMPONENT_USER if run_as == "auto" else tuple(run_as.split(":", 1))
        if len(user) != 2:
            raise ValueError(f"run_as {run_as!r}: expected user:group")
        if run_as == "auto":
            # The same python3 (same prefix) for that user as for us, through PATH? A pyenv
            # Python under /root, say, is not reachable by others: the shell then finds another.
            probe = [
                "sh", "-c", 'exec python3 -c "import sys; print(sys.prefix, sys.base_prefix)"',
            ]
            env = {"PATH": f"{self.path_first}{os.pathsep}{os.environ.get('PATH', '')}"}
            mine = subprocess.run(probe, capture_output=True, timeout=30, check=False, cwd="/",
                                  env=env)
            theirs = subprocess.run([*self._setpriv(user), *probe], capture_output=True,
                                    timeout=30, check=False, cwd="/", env=env)
            if theirs.returncode != 0 or theirs.stdout != mine.stdout:
                logger.warning(
                    "simulated core: %s does not get the python3 of %s (%s); steps run as "
                    "root instead", ":".join(user), self.path_first,
                    (theirs.stdout or theirs.stderr).decode(errors="replace").strip()[-200:])
                return None
        return user[0], user[1]

    @staticmethod
    def _setpriv(user: tuple[str, str]) -> list[str]:
        return ["setpriv", f"--reuid={user[0]}", f"--regid={user[1]}", "--clear-groups"]

    # ---------------------------------------------------------------- the store

    def import_build(self, build_dir: Path) -> list[tuple[str, str]]:
        """Take the recipes (``recipes/*.yaml|json``) and artifacts (``artifacts/<name>/
        <version>/``) a GDK build wrote (as ``greengrass-cli deployment create --recipeDir
        --artifactDir`` does); returns the (name, version) imported."""
        build_dir = Path(build_dir)
        imported = []
        for recipe_path in sorted((build_dir / "recipes").iterdir()):
            if recipe_path.suffix.lower() not in (".yaml", ".yml", ".json"):
                continue
            recipe = Recipe.parse(recipe_path.read_text("utf-8"), str(recipe_path))
            source = build_dir / "artifacts" / recipe.name / recipe.version
            self._store(recipe, source)
            imported.append((recipe.name, recipe.version))
        if not imported:
            raise SimCoreError(f"{build_dir}/recipes holds no recipe")
        return imported

    def _store(self, recipe: Recipe, source: Path) -> None:
        name_hash = hashlib.sha256(recipe.name.encode()).hexdigest()
        recipe_file = self.root / "packages/recipes" / f"{name_hash}@{recipe.version}.recipe.yaml"
        recipe_file.write_text(recipe.text, "utf-8")
        target = self.artifacts_path(recipe.name, recipe.version)
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(self.decompressed_path(recipe.name, recipe.version), ignore_errors=True)
        target.mkdir(parents=True)
        for artifact in recipe.artifacts:
            src = source / artifact.file
            if not src.is_file():
                raise SimCoreError(f"{recipe.name} {recipe.version}: artifact {artifact.file} "
                                   f"not in {source}")
            shutil.copyfile(src, target / artifact.file)
            if artifact.unarchive == "ZIP":
                dest = self.decompressed_path(recipe.name, recipe.version) / Path(
                    artifact.file).stem
                with zipfile.ZipFile(target / artifact.file) as archive:
                    archive.extractall(dest)
        with self._lock:
            self.recipes[(recipe.name, recipe.version)] = recipe

    def artifacts_path(self, name: str, version: str) -> Path:
        return self.root / "packages/artifacts" / name / version

    def decompressed_path(self, name: str, version: str) -> Path:
        return self.root / "packages/artifacts-unarchived" / name / version

    def work_path(self, name: str) -> Path:
        return self.root / "work" / name

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text("utf-8", "replace") if path.exists() else ""

    def _prepare_files(self, recipe: Recipe) -> None:
        """Artifact permissions and owners, the work folder (see the module docstring)."""
        for folder in (self.artifacts_path(recipe.name, recipe.version),
                       self.decompressed_path(recipe.name, recipe.version)):
            for directory in [folder.parent, folder.parent.parent]:
                self._chmod(directory, 0o755)
        modes = {}
        for artifact in recipe.artifacts:
            mode = 0o400
            if artifact.read in ("OWNER", "ALL") or artifact.execute in ("OWNER", "ALL"):
                mode |= 0o040
            if artifact.read == "ALL" or artifact.execute == "ALL":
                mode |= 0o004
            if artifact.execute in ("OWNER", "ALL"):
                mode |= 0o110
            if artifact.execute == "ALL":
                mode |= 0o001
            modes[artifact.file] = mode
            self._set_tree(self.artifacts_path(recipe.name, recipe.version) / artifact.file, mode)
            if artifact.unarchive == "ZIP":
                self._set_tree(self.decompressed_path(recipe.name, recipe.version)
                               / Path(artifact.file).stem, mode)
        for folder in (self.artifacts_path(recipe.name, recipe.version),
                       self.decompressed_path(recipe.name, recipe.version)):
            if folder.exists():
                self._chmod(folder, 0o755)
        work = self.work_path(recipe.name)
        work.mkdir(parents=True, exist_ok=True)
        self._chmod(work, 0o700)
        if self.run_as is not None:
            for path in [work, *work.rglob("*")]:
                with contextlib.suppress(OSError):
                    shutil.chown(path, *self.run_as)

    def _set_tree(self, path: Path, file_mode: int) -> None:
        if not path.exists():
            return
        paths = [path, *path.rglob("*")] if path.is_dir() else [path]
        for item in paths:
            self._chmod(item, 0o755 if item.is_dir() else file_mode)
            if self.run_as is not None:
                with contextlib.suppress(OSError):
                    shutil.chown(item, *self.run_as)

    # ------------------------------------------------------------- deployments

    def deploy(
        self,
        components: Mapping[str, str],
        *,
        configuration: Mapping[str, Mapping[str, Any]] | None = None,
        remove: tuple[str, ...] = (),
        action: str = "NOTIFY_COMPONENTS",
        timeout_s: float = 60.0,
    ) -> DeploymentResult:
        """One deployment: ``components`` = {name: version} merged into what runs (``--merge
        Name=Version``), ``configuration`` = {name: {"merge": {...}, "reset": ["/key", ...]}},
        ``remove`` = names to remove. ``action``/``timeout_s`` = its componentUpdatePolicy."""
        deployment_id = str(uuid.uuid4())
        configuration = configuration or {}
        with self._lock:
            before = dict(self.versions)
            target = {k: v for k, v in {**before, **components}.items() if k not in remove}
            old_configs = {name: copy.deepcopy(self.nucleus.config.get(name))
                           for name in {*before, *target}}
        problem = self._check_dependencies(target)
        if problem:
            return self._finish(DeploymentResult(deployment_id, "FAILED_NO_STATE_CHANGE",
                                                 problem))
        # the configuration each component will have
        configs: dict[str, dict[str, Any]] = {}
        for name, version in target.items():
            update = configuration.get(name) or {}
            preview = self.nucleus.deploy_configuration(
                name, version=version, default_configuration=self.recipes[(name, version)].defaults,
                reset=list(update.get("reset") or ()), merge=update.get("merge"), apply=False)
            assert preview.configuration is not None
            configs[name] = preview.configuration
        lifecycles = {name: self._render(name, target, configs) for name in target}
        old_lifecycles = {name: self._render(name, before, {
            n: old_configs.get(n) or {} for n in before}) for name in before}
        changed = {name for name in target
                   if before.get(name) != target[name]
                   or lifecycles[name] != old_lifecycles.get(name)}
        changed |= {name for name in before if name not in target}
        restart = self._with_hard_dependants(changed, target)
        config_only = [name for name in target if name not in restart
                       and configs[name] != (old_configs.get(name) or {})]

        result = DeploymentResult(deployment_id, "SUCCEEDED", restarted=self._order(
            [n for n in restart if n in target], target))
        if action == "NOTIFY_COMPONENTS":
            # DeploymentConfigMerger.mergeInNewConfig queues the update action (and so the
            # PreComponentUpdateEvent) for every NOTIFY_COMPONENTS deployment, whatever it changes
            result.notice = self.nucleus.notify_component_update(deployment_id,
                                                                 timeout_s=timeout_s)
        try:
            for name in config_only:
                verdict = self.nucleus.validate_configuration(name, configs[name])
                if verdict.status == "REJECTED":
                    result.status, result.failed_component = "FAILED_NO_STATE_CHANGE", name
                    result.reason = f"{name} rejected its configuration: {verdict.message}"
                    return self._finish(result)
            failure = self._activate(target, configs, restart, before)
            if failure is not None:
                result.failed_component, result.reason = failure
                logger.error("deployment %s failed (%s: %s); rolling back", deployment_id,
                             *failure)
                self._rollback(before, old_configs, restart)
                result.status = "FAILED_ROLLBACK_COMPLETE"
            return self._finish(result)
        finally:
            if result.notice is not None:
                self.nucleus.post_component_update(deployment_id)

    def _finish(self, result: DeploymentResult) -> DeploymentResult:
        logger.info("deployment %s: %s %s", result.deployment_id, result.status, result.reason)
        with self._lock:
            self.deployments.append(result)
        return result

    def _check_dependencies(self, target: Mapping[str, str]) -> str:
        for name, version in target.items():
            recipe = self.recipes.get((name, version))
            if recipe is None:
                return f"{name} {version}: no such recipe imported"
            for dep, (requirement, _) in recipe.dependencies.items():
                have = target.get(dep) or self.external.get(dep)
                if have is None:
                    return (f"{name} {version} needs {dep} ({requirement}), which is not "
                            "deployed (nor named as external: a stand-in such as an emulator)")
                if not satisfies(have, requirement):
                    return f"{name} {version} needs {dep} {requirement}, not {have}"
        return ""

    def _with_hard_dependants(self, changed: set[str], target: Mapping[str, str]) -> set[str]:
        restart = set(changed)
        grew = True
        while grew:
            grew = False
            for name, version in target.items():
                if name in restart:
                    continue
                deps = self.recipes[(name, version)].dependencies
                if any(dep in restart and kind == "HARD" for dep, (_, kind) in deps.items()):
                    restart.add(name)
                    grew = True
        return restart

    def _order(self, names: list[str], versions: Mapping[str, str] | None = None) -> list[str]:
        """Dependencies before dependants (by the recipes of ``versions``, default: deployed)."""
        if versions is None:
            with self._lock:
                versions = {**self.versions}
        ordered: list[str] = []

        def visit(name: str, path: tuple[str, ...] = ()) -> None:
            if name in ordered or name in path:
                return
            version = versions.get(name)
            recipe = self.recipes.get((name, version)) if version else None
            for dep in (recipe.dependencies if recipe else {}):
                if dep in names:
                    visit(dep, (*path, name))
            ordered.append(name)

        for name in sorted(names):
            visit(name)
        return ordered

    def _activate(
        self, target: Mapping[str, str], configs: Mapping[str, dict[str, Any]],
        restart: set[str], before: Mapping[str, str],
    ) -> tuple[str, str] | None:
        stop_order = self._order([n for n in restart if n in self.running])
        for name in reversed(stop_order):
            self._stop(name)
        with self._lock:
            self.versions = dict(target)
        for name in before:
            if name not in target:  # removed: its configuration goes with it
                self.nucleus.versions.pop(name, None)
                self.nucleus.config.pop(name, None)
        self._set_configs(target, configs)
        for name in self._order([n for n in restart if n in target]):
            failure = self._start(name, target[name], self._render(name, target, configs))
            if failure:
                return name, failure
        return None

    def _set_configs(self, versions: Mapping[str, str],
                     configs: Mapping[str, dict[str, Any]]) -> None:
        """Exactly the configurations computed for the deployment (events to subscribers)."""
        for name, version in versions.items():
            self.nucleus.set_config(name, configs[name])
            self.nucleus.versions[name] = version

    def _rollback(self, before: Mapping[str, str], old_configs: Mapping[str, Any],
                  touched: set[str]) -> None:
        for name in reversed(self._order(list(self.running))):
            if name in touched:
                self._stop(name)
        with self._lock:
            self.versions = dict(before)
        configs = {name: old_configs.get(name) or {} for name in before}
        self._set_configs(before, configs)
        for name in self._order([n for n in before if n in touched]):
            failure = self._start(name, before[name], self._render(name, before, configs))
            if failure:
                logger.error("rollback: %s %s does not start either: %s", name, before[name],
                             failure)

    # -------------------------------------------------------------- rendering

    def _render(self, name: str, versions: Mapping[str, str],
                configs: Mapping[str, Any]) -> dict[str, Any]:
        version = versions.get(name)
        if version is None:
            return {}
        recipe = self.recipes[(name, version)]
        deps = set(recipe.dependencies)
        rendered: dict[str, Any] = self._interpolate(
            copy.deepcopy(recipe.lifecycle), name, version, deps, versions, configs)
        return rendered

    def _interpolate(self, value: Any, name: str, version: str, deps: set[str],
                     versions: Mapping[str, str], configs: Mapping[str, Any]) -> Any:
        if isinstance(value, dict):
            return {k: self._interpolate(v, name, version, deps, versions, configs)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [self._interpolate(v, name, version, deps, versions, configs) for v in value]
        if not isinstance(value, str):
            return value
        text = value
        for match in list(_SAME.finditer(text)):
            namespace, key = match.group(1), match.group(2)
            if namespace == "configuration":
                found = config_text(configs.get(name) or {}, key)
            else:
                found = self._system(name, version, namespace, key)
            if found is not None:
                text = text.replace(match.group(0), found)
        for match in list(_CROSS.finditer(text)):
            other, namespace, key = match.groups()
            if other not in deps or other not in versions:
                logger.error("%s: cannot interpolate %s: %s is not a direct dependency",
                             name, match.group(0), other)
                continue
            if namespace == "configuration":
                found = config_text(configs.get(other) or {}, key)
            else:
                found = self._system(other, versions[other], namespace, key)
            if found is not None:
                text = text.replace(match.group(0), found)
        return text

    def _system(self, name: str, version: str, namespace: str, key: str) -> str | None:
        table = {
            ("artifacts", "path"): lambda: self.artifacts_path(name, version),
            ("artifacts", "decompressedPath"): lambda: self.decompressed_path(name, version),
            ("work", "path"): lambda: self.work_path(name),
            ("kernel", "rootPath"): lambda: self.root,
            ("iot", "thingName"): lambda: self.thing_name,
        }
        make = table.get((namespace, key))
        return None if make is None else str(make())

    # ------------------------------------------------------------- processes

    def _token(self, name: str) -> str:
        with self._lock:
            if name not in self.tokens:
                self.tokens[name] = self.nucleus.add_component(name)
            return self.tokens[name]

    def component_env(self, name: str) -> dict[str, str]:
        """The environment the core gives ``name``'s steps (before Setenv)."""
        token = self._token(name)
        return {
            "PATH": f"{self.path_first}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "LANG": os.environ.get("LANG", "C.UTF-8"),
            "HOME": str(self.work_path(name)),
            "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT": self.nucleus.socket_path,
            "SVCUID": token,
            "AWS_CONTAINER_AUTHORIZATION_TOKEN": token,
            "AWS_IOT_THING_NAME": self.thing_name,
            "AWS_REGION": self.nucleus.region,
            "AWS_DEFAULT_REGION": self.nucleus.region,
            **self.extra_env,
        }

    def _step(self, lifecycle: Mapping[str, Any], step: str) -> tuple[str, dict[str, str],
                                                                       float | None] | None:
        raw = _ci(lifecycle, step)
        if raw is None:
            return None
        env = {str(k): str(v) for k, v in (_ci(lifecycle, "Setenv") or {}).items()}
        if isinstance(raw, str):
            return raw, env, None
        env.update({str(k): str(v) for k, v in (_ci(raw, "Setenv") or {}).items()})
        timeout = _ci(raw, "Timeout")
        script = _ci(raw, "Script")
        if not isinstance(script, str):
            return None
        return script, env, float(timeout) if timeout is not None else None

    def _popen(self, name: str, script: str, env: Mapping[str, str]) -> subprocess.Popen[bytes]:
        command = ["sh", "-c", script]
        if self.run_as is not None:
            command = [*self._setpriv(self.run_as), *command]
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - handed to the child
        try:
            return subprocess.Popen(
                command, cwd=self.work_path(name), env={**self.component_env(name), **env},
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()

    def _note(self, name: str, text: str) -> None:
        with open(self.log_path(name), "a", encoding="utf-8") as log:
            log.write(f"[simcore] {text}\n")

    def _start(self, name: str, version: str, lifecycle: dict[str, Any]) -> str:
        """Install then Run; "" when it started, else why not."""
        recipe = self.recipes[(name, version)]
        self._prepare_files(recipe)
        install = self._step(lifecycle, "Install")
        if install is not None:
            script, env, timeout = install
            self._note(name, f"{version}: install")
            proc = self._popen(name, script, env)
            try:
                code = proc.wait(timeout or DEFAULT_INSTALL_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return f"Install timed out after {timeout or DEFAULT_INSTALL_TIMEOUT_S:g} s"
            if code != 0:
                self._note(name, f"{version}: install failed with exit code {code}")
                return f"Install exited with {code} (see {self.log_path(name)})"
        run = self._step(lifecycle, "Run")
        entry = _Running(name, version)
        with self._lock:
            self.running[name] = entry
        if run is None:
            return ""  # FINISHED after Install (a component with artifacts only)
        script, env, _ = run
        entry.states_seen = len(self.nucleus.component_states.get(name, []))
        self._note(name, f"{version}: run")
        entry.process = proc = self._popen(name, script, env)
        deadline = time.monotonic() + self.startup_s

        def reported() -> list[str]:
            return self.nucleus.component_states.get(name, [])[entry.states_seen:]

        while time.monotonic() < deadline and proc.poll() is None and not reported():
            self.nucleus.wait_until(lambda: bool(reported()), 0.05)
        states = reported()
        if states and states[0] == "ERRORED":
            return "the component reported ERRORED"
        exit_code = proc.poll()
        if exit_code is not None and exit_code != 0:
            return f"Run exited with {exit_code} (see {self.log_path(name)})"
        return ""

    def _stop(self, name: str) -> None:
        with self._lock:
            entry = self.running.pop(name, None)
        if entry is None or entry.process is None:
            return
        proc = entry.process
        if proc.poll() is None:
            self._note(name, f"{entry.version}: stop (SIGTERM)")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(DEFAULT_SHUTDOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._note(name, f"{entry.version}: no exit after SIGTERM: SIGKILL")
                _kill_group(proc)
        self._note(name, f"{entry.version}: exited with {proc.returncode}")

    def process(self, name: str) -> subprocess.Popen[bytes] | None:
        with self._lock:
            entry = self.running.get(name)
        return entry.process if entry else None


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def config_text(config: Mapping[str, Any], pointer: str) -> str | None:
    """KernelConfigResolver.lookupConfigurationValueForComponent: the value at the JSON pointer
    as text (JSON for an object or a list), None when missing (the placeholder stays)."""
    node: Any = config
    if pointer:
        if not pointer.startswith("/"):
            return None
        for part in pointer[1:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                return None
    if isinstance(node, (dict, list)):
        return json.dumps(node, separators=(",", ":"))
    if isinstance(node, bool):
        return "true" if node else "false"
    if node is None:
        return "null"
    return str(node)


# ------------------------------------------------------------------------- command line

USAGE = """\
python -m inspector.testing.simcore --root DIR --build BUILD_DIR [--build ...]
       --merge NAME=VERSION [--merge ...] [--update-config JSON] [--thing-name NAME]
       [--stream-manager S3_DIR] [--external NAME=VERSION ...]

Deploys the components a GDK build wrote (greengrass-build/ folders) on a simulated core rooted
at DIR, with the nucleus emulator (and, with --stream-manager, a StreamManager emulator that
"uploads" into S3_DIR), prints the deployment's outcome and every message the components publish,
and runs until Ctrl-C (SIGINT) or SIGTERM. --update-config takes greengrass-cli's form:
'{"com.inspector.Inference": {"MERGE": {"ImageDirectory": "/tmp/images"}, "RESET": ["/Key"]}}'.
Component logs: DIR/logs/<name>.log.
"""


def _pairs(values: list[str], what: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, version = value.partition("=")
        if not sep or not name or not version:
            raise SystemExit(f"{what} {value!r}: expected NAME=VERSION")
        out[name] = version
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    from inspector.testing.streammanager import StreamManagerEmulator

    parser = argparse.ArgumentParser(prog="python -m inspector.testing.simcore", usage=USAGE)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--build", type=Path, action="append", default=[], required=True)
    parser.add_argument("--merge", action="append", default=[], required=True)
    parser.add_argument("--update-config", default="{}")
    parser.add_argument("--thing-name", default="simulated-core")
    parser.add_argument("--stream-manager", type=Path, default=None, metavar="S3_DIR")
    parser.add_argument("--external", action="append", default=[])
    parser.add_argument("--startup-s", type=float, default=60.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        update = json.loads(args.update_config)
    except ValueError as exc:
        raise SystemExit(f"--update-config is not JSON: {exc}") from None
    configuration = {
        name: {"merge": _ci(value, "MERGE"), "reset": list(_ci(value, "RESET") or [])}
        for name, value in update.items()
    }
    external = _pairs(args.external, "--external")
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with contextlib.ExitStack() as stack:
        extra_env: dict[str, str] = {}
        if args.stream_manager is not None:
            stream_manager = stack.enter_context(StreamManagerEmulator(args.stream_manager))
            extra_env.update(stream_manager.env)
            external.setdefault("aws.greengrass.StreamManager", "2.3.0")
        nucleus = stack.enter_context(NucleusEmulator(component_name="simcore.Main",
                                                      thing_name=args.thing_name))
        core = stack.enter_context(SimulatedCore(
            args.root, nucleus, thing_name=args.thing_name, extra_env=extra_env,
            external=external, startup_s=args.startup_s))
        for build in args.build:
            for name, version in core.import_build(build):
                print(f"imported {name} {version}", flush=True)
        result = core.deploy(_pairs(args.merge, "--merge"), configuration=configuration)
        print(f"deployment {result.deployment_id}: {result.status} {result.reason}".rstrip(),
              flush=True)
        print(f"logs: {core.root / 'logs'}", flush=True)
        if result.status != "SUCCEEDED":
            return 1
        shown = [0]

        def news() -> bool:
            return len(nucleus.published) > shown[0]

        while not stop.is_set():
            nucleus.wait_until(news, 0.5)
            for message in list(nucleus.published)[shown[0]:]:
                print(f"{message.operation} {message.topic} "
                      f"{message.payload.decode('utf-8', 'replace')}", flush=True)
                shown[0] += 1
        print("stopping", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
