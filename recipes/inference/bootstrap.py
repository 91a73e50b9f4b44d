#!/usr/bin/env python3
"""Install step of com.inspector.Inference: a virtual environment that satisfies requirements.txt.

    python3 -u bootstrap.py --venv {work:path}/venv --requirements <artifact>/requirements.txt

``--venv`` is a symbolic link to the environment in use; environments live beside it in
``venvs/<key>/``. The Install step runs at every start of the component (also after a reboot,
maybe without network), so the first thing checked is whether the environment in use already
satisfies requirements.txt: every listed distribution installed at an allowed version
(importlib.metadata, in that environment's own interpreter) and its top-level modules importing.
If so nothing is installed and nothing touches the network. Otherwise, in this order:

1. an environment kept beside it satisfies them (a rolled-back deployment): the link switches;
2. the ``python3`` running this script satisfies them itself (a device provisioned with the
   packages, the simulated core of the tests): a new environment with ``--system-site-packages``
   that also sees this interpreter's site-packages, nothing installed;
3. otherwise a new environment and ``pip install -r requirements.txt``: from the wheels bundled
   in the artifact (``wheels/`` beside requirements.txt, made by ``build_component.py inference
   --bundle-wheels``) with ``--no-index --find-links``, so an air-gapped device installs without
   any network; from the package index when there is no bundle.

A new environment is checked the same way before the link is switched to it, so a failed or
interrupted install never leaves a half-built environment in use (the previous one stays, and
the next deployment retries). One previously used environment is kept for a rollback.

Standard library only, and no syntax newer than Python 3.7, so that an old system Python gets a
clear message instead of a SyntaxError.

    python3 bootstrap.py --check requirements.txt    # exit 0 when this interpreter satisfies it
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import logging
import os
import platform
import re
import shutil
import site
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger("inspector.bootstrap")

MIN_PYTHON = (3, 10)
STAMP = "inspector-install.json"
KEY_CHARS = 16
KEEP_PREVIOUS = 1
WHEELS_DIR = "wheels"
PARENT_PTH = "inspector-parent-site.pth"
CHECK_TIMEOUT_S = 300

# One requirement line: name, optional extras, specifiers, optional marker.
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*"
    r"(?P<specs>[^;]*?)\s*(?:;\s*(?P<marker>.+?))?\s*$"
)
_SPEC = re.compile(r"^\s*(===|==|!=|~=|>=|<=|>|<)\s*([A-Za-z0-9.*+!_-]+)\s*$")
_MARKER = re.compile(
    r"^\s*(python_version|python_full_version)\s*(==|!=|>=|<=|>|<)\s*[\"']([0-9.]+)[\"']\s*$"
)


class Unreadable(Exception):
    """A requirement line this script cannot judge (then pip decides)."""


# --- checking an environment --------------------------------------------------------------


def _release(version: str) -> tuple[int, ...]:
    match = re.match(r"^\s*v?(\d+(?:\.\d+)*)", version)
    if not match:
        raise Unreadable(f"version {version!r}")
    return tuple(int(part) for part in match.group(1).split("."))


def _padded(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)), b + (0,) * (width - len(b))


def version_matches(installed: str, op: str, wanted: str) -> bool:
    """PEP 440 comparison on release numbers (what requirements.txt uses)."""
    if op == "===":
        return installed == wanted
    if op in ("==", "!=") and wanted.endswith(".*"):
        prefix = _release(wanted[:-2])
        same = _release(installed)[: len(prefix)] == prefix
        return same if op == "==" else not same
    have, want = _padded(_release(installed), _release(wanted))
    if op == "~=":
        stem = _release(wanted)[:-1]
        return have >= want and _release(installed)[: len(stem)] == stem
    return {"==": have == want, "!=": have != want, ">=": have >= want, "<=": have <= want,
            ">": have > want, "<": have < want}[op]


def marker_applies(marker: str | None) -> bool:
    if not marker:
        return True
    result = True
    for clause in re.split(r"\s+and\s+", marker.strip()):
        match = _MARKER.match(clause)
        if not match:
            raise Unreadable(f"marker {marker!r}")
        variable, op, value = match.groups()
        here = ".".join(map(str, sys.version_info[:2 if variable == "python_version" else 3]))
        result = result and version_matches(here, op, value)
    return result


def requirements_of(text: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """(distribution name, [(operator, version)]) of every line that applies to this Python."""
    found = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith("-") or "://" in line or "@" in line:
            raise Unreadable(f"line {line!r}")
        match = _REQUIREMENT.match(line)
        if not match:
            raise Unreadable(f"line {line!r}")
        if not marker_applies(match.group("marker")):
            continue
        specs = []
        for part in filter(None, (p.strip() for p in match.group("specs").split(","))):
            spec = _SPEC.match(part)
            if not spec:
                raise Unreadable(f"specifier {part!r} in {line!r}")
            specs.append((spec.group(1), spec.group(2)))
        found.append((match.group("name"), specs))
    return found


def top_level_modules(dist: object) -> list[str]:
    """The importable top-level names a distribution installs."""
    text = dist.read_text("top_level.txt")  # type: ignore[attr-defined]
    if text:
        names = [n.strip() for n in text.splitlines()]
    else:
        names = []
        for file in dist.files or []:  # type: ignore[attr-defined]
            parts = Path(str(file)).parts
            if len(parts) == 2 and parts[1] == "__init__.py":
                names.append(parts[0])
            elif len(parts) == 1 and parts[0].endswith(".py"):
                names.append(parts[0][:-3])
    return sorted({n for n in names if n and not n.startswith("_") and n.isidentifier()})


def unmet(text: str) -> list[str]:
    """Why this interpreter does not satisfy the requirements text; empty when it does."""
    from importlib import metadata

    try:
        wanted = requirements_of(text)
    except Unreadable as exc:
        return [f"cannot judge {exc}: pip decides"]
    problems = []
    for name, specs in wanted:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            problems.append(f"{name} is not installed")
            continue
        version = dist.version
        try:
            bad = [f"{op}{v}" for op, v in specs if not version_matches(version, op, v)]
        except Unreadable as exc:
            problems.append(f"{name} {version}: cannot compare ({exc})")
            continue
        if bad:
            problems.append(f"{name} {version} is installed, requirements.txt wants "
                            + ",".join(f"{op}{v}" for op, v in specs))
            continue
        for module in top_level_modules(dist):
            try:
                importlib.import_module(module)
            except Exception as exc:  # a broken install: any error counts
                problems.append(f"{name} {version}: import {module} fails: "
                                f"{type(exc).__name__}: {exc}")
    return problems


def python_of(env: Path) -> Path:
    return env / "bin" / "python3"


def satisfies(env: Path, requirements: Path) -> bool:
    """Whether the environment's own interpreter satisfies the requirements (it runs this file
    with --check: the answer comes from inside that environment)."""
    python = python_of(env)
    if not python.exists():
        return False
    try:
        result = subprocess.run(
            [str(python), "-I", os.path.abspath(__file__), "--check", str(requirements)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
            timeout=CHECK_TIMEOUT_S, check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        logger.info("%s: cannot run its python: %s", env, exc)
        return False
    if result.returncode != 0:
        logger.info("%s does not satisfy %s: %s", env, requirements.name,
                    result.stdout.strip().replace("\n", "; "))
    return result.returncode == 0


# --- the environments -----------------------------------------------------------------------


def install_key(requirements: bytes) -> str:
    """Names a new environment: what goes into one (not a test of whether one is usable)."""
    digest = hashlib.sha256()
    for part in (
        requirements,
        "{}.{}".format(*sys.version_info[:2]).encode(),
        os.path.realpath(sys.executable).encode(),
        platform.machine().encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def has_requirements(text: str) -> bool:
    """True when the file names at least one package (not only comments and blank lines)."""
    return any(line.split("#", 1)[0].strip() for line in text.splitlines())


def read_stamp(env_dir: Path) -> dict[str, object] | None:
    try:
        data = json.loads((env_dir / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def point_link(link: Path, target: Path) -> None:
    """Make ``link`` a symbolic link to ``target``, replacing it in one rename."""
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)  # an environment from before the link layout
    tmp = link.with_name(link.name + ".new")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)


def use(env_dir: Path) -> None:
    """Mark an environment as just used (its stamp's mtime orders the ones kept)."""
    if (env_dir / STAMP).exists():
        os.utime(env_dir / STAMP)


def remove_others(root: Path, keep: Path, keep_previous: int = KEEP_PREVIOUS) -> None:
    """Delete every environment but ``keep`` and the ``keep_previous`` most recently used."""
    if not root.is_dir():
        return
    keep = keep.resolve()
    others = [c for c in root.iterdir()
              if c.resolve() != keep and c.is_dir() and not c.is_symlink()]
    finished = sorted((c for c in others if (c / STAMP).is_file()),
                      key=lambda c: (c / STAMP).stat().st_mtime, reverse=True)
    kept = set(finished[:keep_previous])
    for child in others:
        if child not in kept:
            logger.info("removing the environment %s", child)
            shutil.rmtree(child, ignore_errors=True)


def _venv(env_dir: Path, *options: str) -> None:
    if env_dir.exists():
        shutil.rmtree(env_dir)  # left by an interrupted install: never trusted
    command = [sys.executable, "-m", "venv", *options, str(env_dir)]
    logger.info("creating %s (%s)", env_dir, " ".join(options) or "with pip")
    try:
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError:
        logger.error("python3 -m venv failed: on Debian/Ubuntu install python3-venv "
                     "(sudo apt-get install python3-venv)")
        raise


def _site_dirs(python: Path) -> list[str]:
    result = subprocess.run(
        [str(python), "-I", "-c", "import json, site; print(json.dumps(site.getsitepackages()))"],
        stdout=subprocess.PIPE, universal_newlines=True, check=True, timeout=60,
    )
    return list(json.loads(result.stdout))


def build_from_parent(env_dir: Path) -> None:
    """An environment that uses this interpreter's packages: --system-site-packages, plus a .pth
    naming this interpreter's own site-packages (when python3 is itself a virtual environment,
    --system-site-packages alone would only see the base installation's)."""
    _venv(env_dir, "--system-site-packages", "--without-pip")
    parent = [d for d in site.getsitepackages() if os.path.isdir(d)]
    for target in _site_dirs(python_of(env_dir)):
        if os.path.isdir(target):
            Path(target, PARENT_PTH).write_text("\n".join(parent) + "\n", encoding="utf-8")
            break


def build_with_pip(env_dir: Path, requirements: Path, wheels: Path | None,
                   pip_args: list[str]) -> None:
    _venv(env_dir)
    source = (["--no-index", "--find-links", str(wheels)] if wheels is not None else [])
    logger.info("installing %s %s", requirements,
                f"from the bundled wheels in {wheels} (no network)" if wheels is not None
                else "from the package index (this can take minutes on a slow link)")
    subprocess.run(
        [str(python_of(env_dir)), "-m", "pip", "install", "--disable-pip-version-check",
         "--no-input", "--no-cache-dir", *source, *pip_args, "-r", str(requirements)],
        check=True,
    )


def write_stamp(env_dir: Path, text: str, key: str, how: str) -> None:
    stamp = {
        "key": key,
        "how": how,
        "requirements_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }
    # Written last: an environment without its stamp is an unfinished one.
    (env_dir / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


def install(link: Path, requirements: Path, wheels: Path | None, pip_args: list[str]) -> int:
    text = requirements.read_text(encoding="utf-8")
    root = link.parent / "venvs"
    if (link.is_symlink() or link.exists()) and satisfies(link, requirements):
        use(link.resolve())
        logger.info("environment %s satisfies %s (versions checked, modules imported): "
                    "nothing to install", link, requirements.name)
        remove_others(root, link)
        return 0
    key = install_key(text.encode("utf-8"))
    env_dir = root / key[:KEY_CHARS]
    if read_stamp(env_dir) is not None and satisfies(env_dir, requirements):
        use(env_dir)
        point_link(link, env_dir)
        logger.info("environment %s -> %s (already built)", link, env_dir)
        remove_others(root, env_dir)
        return 0

    root.mkdir(parents=True, exist_ok=True)
    try:
        problems = unmet(text)
        built = False
        if not problems:
            logger.info("%s (%s) satisfies %s: an environment on its packages, nothing to "
                        "install", sys.executable, sys.version.split()[0], requirements.name)
            build_from_parent(env_dir)
            built = satisfies(env_dir, requirements)
            how = "system-site-packages"
        else:
            logger.info("%s does not satisfy %s: %s", sys.executable, requirements.name,
                        "; ".join(problems))
        if not built:
            build_with_pip(env_dir, requirements, wheels, pip_args)
            how = "pip --no-index (bundled wheels)" if wheels is not None else "pip"
            if not satisfies(env_dir, requirements):
                raise OSError(f"{env_dir} still does not satisfy {requirements} after pip")
        write_stamp(env_dir, text, key, how)
    except (OSError, subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        logger.error("installing the runtime dependencies failed: %s; %s keeps its previous "
                     "environment (if any) and the next deployment retries%s", exc, link,
                     "" if wheels is not None else
                     " (no wheels/ bundle in the artifact: pip needed the package index; an "
                     "air-gapped device needs an artifact built with --bundle-wheels)")
        return 1
    point_link(link, env_dir)
    remove_others(root, env_dir)
    logger.info("environment %s -> %s ready (%s)", link, env_dir, how)
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path,
                        help="path of the environment link, e.g. {work:path}/venv")
    parser.add_argument("--requirements", type=Path)
    parser.add_argument("--wheels", type=Path, default=None,
                        help="folder of wheels to install from with --no-index (default: "
                        "wheels/ beside the requirements file, when present)")
    parser.add_argument("--pip-arg", action="append", default=[],
                        help="extra pip install argument (repeatable), e.g. --index-url=...")
    parser.add_argument("--check", type=Path, metavar="REQUIREMENTS",
                        help="only say whether this interpreter satisfies REQUIREMENTS (exit 0/1)")
    args = parser.parse_args(argv)

    if args.check is not None:
        problems = unmet(args.check.read_text(encoding="utf-8"))
        for problem in problems:
            print(problem)
        return 1 if problems else 0
    if args.venv is None or args.requirements is None:
        parser.error("--venv and --requirements are required")
    if sys.version_info < MIN_PYTHON:
        logger.error(
            "inspector needs Python >= %s; python3 here is %s. Install a newer python3 on the "
            "device (it must be the first python3 on the PATH of the Greengrass user).",
            ".".join(map(str, MIN_PYTHON)), sys.version.split()[0],
        )
        return 2
    if not args.requirements.is_file():
        logger.error("cannot read %s: no such file", args.requirements)
        return 2
    wheels = args.wheels
    if wheels is None and (args.requirements.parent / WHEELS_DIR).is_dir():
        wheels = args.requirements.parent / WHEELS_DIR
    if wheels is not None and not any(wheels.glob("*.whl")):
        logger.warning("%s holds no wheels: installing from the package index", wheels)
        wheels = None
    return install(args.venv.absolute(), args.requirements.absolute(), wheels, args.pip_arg)


if __name__ == "__main__":
    sys.exit(main())
