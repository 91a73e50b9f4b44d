"""The ``inspector`` command: one verb per module in ``inspector.commands``.

Command modules import their heavy dependencies (onnxruntime, cv2, awsiot) inside ``run`` so that
``inspector --help`` and config checks start fast. A module may declare ``NEEDS`` (modules it
imports when run) and ``EXTRA`` (the extra that brings them): the device's code artifact leaves
out the emulators, the image generator and the benchmark, so there ``emulate``, ``demo`` and
``bench`` are listed as "(not installed here ...)" and say what to install instead of failing
with ModuleNotFoundError.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence

from inspector import __version__

# verb -> module in inspector.commands, each with HELP, add_arguments(parser), run(args) -> int
COMMANDS: dict[str, str] = {
    "predict": "predict",
    "run": "run",
    "check-config": "check_config",
    "demo": "demo",
    "emulate": "emulate",
    "bench": "bench",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="inspector",
        description="Scratch inspection of metal tags with YOLOv8 on ONNX Runtime.",
    )
    parser.add_argument("--version", action=_VersionAction,
                        help="print the package and bundled model versions, then exit")
    levels = ["DEBUG", "INFO", "WARNING", "ERROR"]
    parser.add_argument("--log-level", default="INFO", choices=levels,
                        help="logging level (default INFO)")
    # the same flag after the verb too (``inspector demo --log-level WARNING``)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=levels,
                        help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for verb, module_name in COMMANDS.items():
        module = importlib.import_module(f"inspector.commands.{module_name}")
        missing = missing_modules(getattr(module, "NEEDS", ()))
        text = module.HELP
        if missing:
            text += f" (not installed here; needs: pip install 'inspector[{module.EXTRA}]')"
        command = sub.add_parser(verb, help=text, description=text, parents=[common])
        module.add_arguments(command)
        command.set_defaults(_run=_unavailable(verb, missing, module.EXTRA) if missing
                             else module.run)
    return parser


def missing_modules(names: Sequence[str]) -> list[str]:
    """Those of ``names`` this installation cannot import (found without importing them)."""
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # its parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


def _unavailable(verb: str, missing: list[str], extra: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        sys.stderr.write(
            f"inspector {verb}: not available in this installation (it needs "
            f"{', '.join(missing)}, which a device's code artifact leaves out).\n"
            f"Install the full package where you want to use it: pip install 'inspector[{extra}]'"
            "\n"
        )
        return 2

    return run


class _VersionAction(argparse.Action):
    """``--version``: the package and the bundled models, read when asked (not at every start)."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS,
                 default: str = argparse.SUPPRESS, help: str | None = None) -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        from inspector.models import describe_default_model

        sys.stdout.write(f"inspector {__version__}\nmodels: {describe_default_model()}\n")
        parser.exit()


def configure_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stdout,
        level=getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def logs_to_stderr() -> None:
    """Keep stdout for a verb's own output: move the root logger's stdout handlers to stderr."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stdout:
            handler.setStream(sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    return int(args._run(args))


if __name__ == "__main__":
    sys.exit(main())
