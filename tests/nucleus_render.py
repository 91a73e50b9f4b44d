"""Recipe variables and lifecycle scripts as the Greengrass nucleus handles them (for tests).

Modelled on aws-greengrass-nucleus (github.com/aws-greengrass/aws-greengrass-nucleus):
- componentmanager/KernelConfigResolver.java: the whole Lifecycle (Setenv included) is
  interpolated, string by string. First ``\\{([.\\w-]+):([^:}]*)}`` (own variables: configuration
  by JSON pointer, artifacts:path, artifacts:decompressedPath, work:path, kernel:rootPath,
  iot:thingName), matched on the original string, each match replaced everywhere by plain text
  (``String.replace``); then ``\\{([.\\w-]+):([.\\w-]+):([^:}]*)}`` (a direct dependency's) on the
  result. A configuration value node becomes its text (``asText``), a container its JSON; an
  unknown key or namespace is left as it is.
- NucleusPaths: ``<root>/packages/artifacts/<name>/<version>``,
  ``<root>/packages/artifacts-unarchived/<name>/<version>``, ``<root>/work/<name>``.
- lifecyclemanager/ShellRunner.java (Default.setup) + util/Exec.withShell +
  util/platforms/unix/UnixPlatform.ShDecorator: a Script runs as ``sh -c <script>`` in the work
  folder; GenericExternalService.addEnv adds the Setenv of the step and of its parents.
Not modelled: running as another user (sudo -u), timeouts, the nucleus's own variables
(SVCUID, AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT...).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from inspector.testing.simcore import config_text

REPO = Path(__file__).resolve().parents[1]
SAME_COMPONENT = re.compile(r"\{([.\w-]+):([^:}]*)}")
CROSS_COMPONENT = re.compile(r"\{([.\w-]+):([.\w-]+):([^:}]*)}")


@dataclass
class Core:
    """A Greengrass root: components (name -> version) and their configuration."""

    root: Path
    thing_name: str = "inspector-test-thing"
    versions: dict[str, str] = field(default_factory=dict)
    configuration: dict[str, dict[str, Any]] = field(default_factory=dict)

    def artifacts(self, name: str) -> Path:
        return self.root / "packages" / "artifacts" / name / self.versions[name]

    def unarchived(self, name: str) -> Path:
        return self.root / "packages" / "artifacts-unarchived" / name / self.versions[name]

    def work(self, name: str) -> Path:
        return self.root / "work" / name

    def _system(self, name: str, namespace: str, key: str) -> str | None:
        values = {
            ("artifacts", "path"): lambda: self.artifacts(name),
            ("artifacts", "decompressedPath"): lambda: self.unarchived(name),
            ("work", "path"): lambda: self.work(name),
            ("kernel", "rootPath"): lambda: self.root,
            ("iot", "thingName"): lambda: self.thing_name,
        }
        found = values.get((namespace, key))
        return None if found is None else str(found())

    def _configuration(self, name: str, pointer: str) -> str | None:
        return config_text(self.configuration.get(name, {}), pointer)

    def replace(self, text: str, name: str, dependencies: set[str]) -> str:
        result = text
        for match in SAME_COMPONENT.finditer(text):
            namespace, key = match.groups()
            value = (self._configuration(name, key) if namespace == "configuration"
                     else self._system(name, namespace, key))
            if value is not None:
                result = result.replace(match.group(0), value)
        after_own = result
        for match in CROSS_COMPONENT.finditer(after_own):
            target, namespace, key = match.groups()
            if target not in dependencies or target not in self.versions:
                continue
            value = (self._configuration(target, key) if namespace == "configuration"
                     else self._system(target, namespace, key))
            if value is not None:
                result = result.replace(match.group(0), value)
        return result

    def interpolate(self, node: Any, name: str, dependencies: set[str]) -> Any:
        if isinstance(node, str):
            return self.replace(node, name, dependencies)
        if isinstance(node, dict):
            return {k: self.interpolate(v, name, dependencies) for k, v in node.items()}
        if isinstance(node, list):
            return [self.interpolate(v, name, dependencies) for v in node]
        return node

    def lifecycle(self, recipe: dict[str, Any]) -> dict[str, Any]:
        """The rendered Lifecycle of the recipe's first (Linux) manifest."""
        name = recipe["ComponentName"]
        dependencies = set((recipe.get("ComponentDependencies") or {}).keys())
        lifecycle = recipe["Manifests"][0]["Lifecycle"]
        rendered: dict[str, Any] = self.interpolate(lifecycle, name, dependencies)
        return rendered

    def run_step(self, recipe: dict[str, Any], step: str, env: dict[str, str] | None = None,
                 timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """Run one lifecycle step as the nucleus does: sh -c, cwd the work folder, Setenv."""
        name = recipe["ComponentName"]
        lifecycle = self.lifecycle(recipe)
        body = lifecycle[step]
        script = body if isinstance(body, str) else body["Script"]
        environment = dict(os.environ if env is None else env)
        environment.update({k: str(v) for k, v in (lifecycle.get("Setenv") or {}).items()})
        if isinstance(body, dict):
            environment.update({k: str(v) for k, v in (body.get("Setenv") or {}).items()})
        work = self.work(name)
        work.mkdir(parents=True, exist_ok=True)
        return subprocess.run(["sh", "-c", script], cwd=work, env=environment,
                              capture_output=True, text=True, timeout=timeout, check=False)


def pinned_requirements(path: Path) -> Path:
    """requirements.txt with every distribution pinned to the version this interpreter has: the
    test interpreter then satisfies it exactly, whatever versions CI installed."""
    text = (REPO / "recipes" / "inference" / "requirements.txt").read_text()
    names = {line.split("#", 1)[0].split(";")[0].split("=")[0].split(">")[0].split("<")[0].strip()
             for line in text.splitlines() if line.split("#", 1)[0].strip()}
    path.write_text("".join(f"{name}=={metadata.version(name)}\n" for name in sorted(names)))
    return path
