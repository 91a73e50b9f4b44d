"""``inspector emulate``: a local nucleus IPC server and StreamManager, so the component runs on a
laptop exactly as under Greengrass.

It prints ``export NAME=value`` lines on stdout (the nucleus socket, SVCUID, the StreamManager
port, ...) then logs every publish, state change and S3 upload on stderr until SIGINT or
SIGTERM::

    inspector emulate --config config.yaml --s3-dir /tmp/s3 > /tmp/gg.env &
    source /tmp/gg.env; inspector run ...

As the nucleus does for a component deployed without configuration changes, it serves the
inference recipe's ``DefaultConfiguration`` (recipes/inference/recipe.yaml; an installed wheel
carries a copy) under the recipe's component name. ``--config FILE`` (YAML or JSON: a settings
file, a recipe, or a ``DefaultConfiguration`` fragment) is merged over those defaults the way a
deployment's ``MERGE`` update is; for any other ``--component`` the file is served as it is.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from inspector.cli import logs_to_stderr

HELP = "run a local nucleus IPC + StreamManager emulator and print the environment to use them"
NEEDS = ("inspector.testing",)  # the emulators: not shipped in the device's code artifact
EXTRA = "test"

RECIPE_COMPONENT = "com.inspector.Inference"  # the inference recipe's ComponentName

logger = logging.getLogger(__name__)

ENV_ORDER = (
    "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT",
    "SVCUID",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "STREAM_MANAGER_SERVER_PORT",
    "AWS_IOT_THING_NAME",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--socket", metavar="PATH",
                        help="nucleus IPC socket path, under 108 bytes"
                             " (default: a new one in /tmp)")
    parser.add_argument("--port", type=int, default=0, metavar="N",
                        help="StreamManager TCP port on 127.0.0.1 (default: a free port)")
    parser.add_argument("--s3-dir", type=Path, default=Path("emulated-s3"), metavar="DIR",
                        help="folder standing in for S3: objects land in DIR/<bucket>/<key>"
                             " (default ./emulated-s3)")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="configuration (YAML or JSON) merged over the recipe's "
                             "DefaultConfiguration, which is served without it")
    parser.add_argument("--watch-config", action="store_true",
                        help="re-read --config when it changes and deploy it like the nucleus "
                             "(validation by the component first)")
    parser.add_argument("--component", default=RECIPE_COMPONENT, metavar="NAME",
                        help="the component name the token belongs to "
                             f"(default {RECIPE_COMPONENT}, the inference recipe's)")
    parser.add_argument("--thing-name", default="emulated-thing", metavar="NAME")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--token", help="the SVCUID / auth token (default: a random one)")


def recipe_path() -> Path | None:
    """The inference recipe: an installed wheel's copy, else the checkout's; None without."""
    import inspector

    package = Path(inspector.__file__).resolve().parent
    for path in (package / "bundled" / "inference-recipe.yaml",
                 package.parents[1] / "recipes" / "inference" / "recipe.yaml"):
        if path.is_file():
            return path
    return None


def recipe_defaults() -> dict[str, Any]:
    """The recipe's ComponentConfiguration.DefaultConfiguration (accessControl included)."""
    from inspector.settings import read_config_file

    path = recipe_path()
    if path is None:
        logger.warning("no inference recipe in this installation: serving an empty "
                       "configuration")
        return {}
    return read_config_file(path)


def configuration(component: str, path: Path | None) -> dict[str, Any]:
    """What GetConfiguration serves: the defaults (for the recipe's component) with ``path``
    merged over them. Raises ConfigError for a file that is unreadable or not a mapping."""
    from inspector.settings import read_config_file
    from inspector.testing.ipcrules import deep_merge

    defaults = recipe_defaults() if component == RECIPE_COMPONENT else {}
    if path is None:
        return defaults
    return deep_merge(defaults, read_config_file(path))


def run(args: argparse.Namespace) -> int:
    from inspector.errors import ConfigError
    from inspector.testing.nucleus import NucleusEmulator
    from inspector.testing.streammanager import StreamManagerEmulator

    logs_to_stderr()  # stdout carries only the export lines
    try:
        config = configuration(args.component, args.config)
    except ConfigError as exc:
        sys.stderr.write(f"inspector emulate: {exc}\n")
        return 2
    try:
        nucleus = NucleusEmulator(
            args.socket, svcuid=args.token, component_name=args.component,
            config={args.component: config}, thing_name=args.thing_name, region=args.region,
        )
    except ValueError as exc:
        sys.stderr.write(f"inspector emulate: {exc}\n")
        return 2
    stream_manager = StreamManagerEmulator(args.s3_dir, port=args.port, auth_token=nucleus.svcuid)

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            nucleus.start()
            stream_manager.start()
        except OSError as exc:
            sys.stderr.write(f"inspector emulate: cannot listen: {exc}\n")
            return 1
        env = {**nucleus.env, **stream_manager.env}
        out = sys.stdout
        for name in ENV_ORDER:
            out.write(f"export {name}={shlex.quote(env[name])}\n")
        out.flush()
        logger.info("emulating Greengrass for %s; S3 objects land in %s; Ctrl-C to stop",
                    args.component, args.s3_dir.resolve())
        mtime = _mtime(args.config)
        while not stop.wait(1.0):
            if args.watch_config and args.config is not None:
                current = _mtime(args.config)
                if current != mtime:
                    mtime = current
                    _redeploy(nucleus, args.component, args.config)
        logger.info("stopping")
        return 0
    finally:
        stream_manager.close()
        nucleus.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _mtime(path: Path | None) -> float | None:
    try:
        return path.stat().st_mtime if path is not None else None
    except OSError:
        return None


def _redeploy(nucleus: Any, component: str, path: Path) -> None:
    from inspector.errors import ConfigError

    try:
        config = configuration(component, path)
    except ConfigError as exc:
        logger.error("%s: %s (not deployed)", path, exc)
        return
    result = nucleus.update_config(component, config)
    logger.info("deployed %s: %s%s", path, result.status,
                f" ({result.message})" if result.message else "")
