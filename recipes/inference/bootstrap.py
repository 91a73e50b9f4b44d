#!/usr/bin/env python3
"""Install step of com.inspector.Inference: a virtual environment with the runtime deps, once.

    python3 -u bootstrap.py --venv {work:path}/venv --requirements <artifact>/requirements.txt

The environments live beside ``--venv`` in ``venvs/<key>/``, where the key is a hash of what went
into one: requirements.txt, the Python version and executable, the machine. ``--venv`` is a
symbolic link to the current one. An update that changes none of these (a code-only release)
finds its environment ready and installs nothing; a changed requirements file builds a new
environment next to the old one, and the link is switched only after pip succeeded and the stamp
was written, so a failed or interrupted install never leaves a half-built environment in use.
The previous environment is kept (one, the most recently used): a deployment that fails and is
rolled back finds it ready instead of downloading its packages again over a slow link.

Standard library only, and no syntax newer than Python 3.6, so that an old system Python gets a
clear message instead of a SyntaxError.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger("inspector.bootstrap")

MIN_PYTHON = (3, 10)
STAMP = "inspector-install.json"
KEY_CHARS = 16
KEEP_PREVIOUS = 1


def install_key(requirements: bytes) -> str:
    digest = hashlib.sha256()
    for part in (
        requirements,
        sys.version.encode(),
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


def is_ready(env_dir: Path, key: str) -> bool:
    stamp = read_stamp(env_dir)
    if stamp is None or stamp.get("key") != key:
        return False
    return (env_dir / "bin" / "python3").exists()


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
    os.utime(env_dir / STAMP)


def remove_others(root: Path, keep: Path, keep_previous: int = KEEP_PREVIOUS) -> None:
    """Delete every environment but ``keep`` and the ``keep_previous`` most recently used."""
    others = [c for c in root.iterdir() if c != keep and c.is_dir() and not c.is_symlink()]
    finished = sorted((c for c in others if (c / STAMP).is_file()),
                      key=lambda c: (c / STAMP).stat().st_mtime, reverse=True)
    kept = set(finished[:keep_previous])
    for child in others:
        if child not in kept:
            logger.info("removing the environment %s", child)
            shutil.rmtree(child, ignore_errors=True)


def build(env_dir: Path, requirements: Path, text: str, key: str, pip_args: list[str]) -> None:
    if env_dir.exists():
        shutil.rmtree(env_dir)  # left by an interrupted install: never trusted
    needs_pip = has_requirements(text)
    command = [sys.executable, "-m", "venv", str(env_dir)]
    if not needs_pip:
        command.insert(3, "--without-pip")
    logger.info("creating %s", env_dir)
    try:
        subprocess.run(command, check=True)
    except subprocess.CalledProcessError:
        logger.error("python3 -m venv failed: on Debian/Ubuntu install python3-venv "
                     "(sudo apt-get install python3-venv)")
        raise
    if needs_pip:
        python = str(env_dir / "bin" / "python3")
        logger.info("installing %s (this can take minutes on a slow link)", requirements)
        subprocess.run(
            [python, "-m", "pip", "install", "--disable-pip-version-check", "--no-input",
             "--no-cache-dir", *pip_args, "-r", str(requirements)],
            check=True,
        )
    stamp = {
        "key": key,
        "requirements_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
    }
    # Written last: an environment without its stamp is an unfinished one.
    (env_dir / STAMP).write_text(json.dumps(stamp, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(stream=sys.stdout, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--venv", type=Path, required=True,
                        help="path of the environment link, e.g. {work:path}/venv")
    parser.add_argument("--requirements", type=Path, required=True)
    parser.add_argument("--pip-arg", action="append", default=[],
                        help="extra pip install argument (repeatable), e.g. --index-url=...")
    args = parser.parse_args(argv)

    if sys.version_info < MIN_PYTHON:
        logger.error(
            "inspector needs Python >= %s; python3 here is %s. Install a newer python3 on the "
            "device (it must be the first python3 on the PATH of the Greengrass user).",
            ".".join(map(str, MIN_PYTHON)), sys.version.split()[0],
        )
        return 2
    try:
        text = args.requirements.read_text(encoding="utf-8")
    except OSError as exc:
        logger.error("cannot read %s: %s", args.requirements, exc)
        return 2

    link: Path = args.venv.absolute()
    key = install_key(text.encode("utf-8"))
    root = link.parent / "venvs"
    env_dir = root / key[:KEY_CHARS]
    if is_ready(env_dir, key):
        use(env_dir)
        if link.is_symlink() and link.resolve() == env_dir.resolve():
            logger.info("environment %s is up to date (key %s): nothing to install",
                        link, key[:KEY_CHARS])
        else:
            point_link(link, env_dir)
            logger.info("environment %s -> %s (already built)", link, env_dir)
        remove_others(root, env_dir)
        return 0

    root.mkdir(parents=True, exist_ok=True)
    try:
        build(env_dir, args.requirements, text, key, args.pip_arg)
    except (OSError, subprocess.CalledProcessError) as exc:
        logger.error("installing the runtime dependencies failed: %s; %s keeps its previous "
                     "environment (if any) and the next deployment retries", exc, link)
        return 1
    point_link(link, env_dir)
    remove_others(root, env_dir)
    logger.info("environment %s -> %s ready", link, env_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
