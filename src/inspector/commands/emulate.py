"""``inspector emulate``: a local nucleus IPC server and StreamManager, so the component runs on a
laptop exactly as under Greengrass.

It prints ``export NAME=value`` lines (the nucleus socket, SVCUID, the StreamManager port, ...)
then logs every publish, state change and S3 upload until SIGINT or SIGTERM::

    inspector emulate --config config.json --s3-dir /tmp/s3 > /tmp/gg.env &
    source <(grep ^export /tmp/gg.env); inspector run ...
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

HELP = "run a local nucleus IPC + StreamManager emulator and print the environment to use them"

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
    parser.add_argument("--config", type=Path, metavar="FILE.json",
                        help="the component configuration GetConfiguration serves")
    parser.add_argument("--watch-config", action="store_true",
                        help="re-read --config when it changes and deploy it like the nucleus "
                             "(validation by the component first)")
    parser.add_argument("--component", default="com.example.Inspector", metavar="NAME",
                        help="the component name the token belongs to")
    parser.add_argument("--thing-name", default="emulated-thing", metavar="NAME")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--token", help="the SVCUID / auth token (default: a random one)")


def _read_config(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("the configuration must be a JSON object")
    return data


def run(args: argparse.Namespace) -> int:
    from inspector.testing.nucleus import NucleusEmulator
    from inspector.testing.streammanager import StreamManagerEmulator

    config: dict[str, Any] = {}
    if args.config is not None:
        try:
            config = _read_config(args.config)
        except (OSError, ValueError) as exc:
            sys.stderr.write(f"inspector emulate: {args.config}: {exc}\n")
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
    try:
        config = _read_config(path)
    except (OSError, ValueError) as exc:
        logger.error("%s: %s (not deployed)", path, exc)
        return
    result = nucleus.update_config(component, config)
    logger.info("deployed %s: %s%s", path, result.status,
                f" ({result.message})" if result.message else "")
