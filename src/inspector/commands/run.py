"""``inspector run``: the inspection service on a watched directory."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from inspector.errors import ConfigError, ModelError
from inspector.settings import Settings, read_config_file

logger = logging.getLogger(__name__)

HELP = "watch a directory and inspect every image written to it (the service)"

# flag dest -> settings key
FLAG_KEYS = {
    "watch": "ImageDirectory",
    "results": "ResultsFile",
    "model": "ModelPath",
    "conf": "ConfidenceThreshold",
    "iou": "IouThreshold",
    "device": "DeviceName",
    "state_dir": "StateDirectory",
    "processed_action": "ProcessedAction",
    "recursive": "Recursive",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_settings_arguments(parser)
    parser.add_argument(
        "--once", action="store_true",
        help="drain mode: inspect the images already there, then stop (no watching)",
    )


def add_settings_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="settings file (JSON or YAML); flags override it")
    parser.add_argument("--watch", metavar="DIR", help="ImageDirectory: the folder to watch")
    parser.add_argument("--results", metavar="FILE.jsonl", help="ResultsFile: results JSONL")
    parser.add_argument("--model", metavar="MODEL.onnx", help="ModelPath (default: bundled)")
    parser.add_argument("--conf", type=float, metavar="X", help="ConfidenceThreshold")
    parser.add_argument("--iou", type=float, metavar="X", help="IouThreshold")
    parser.add_argument("--device", metavar="NAME", help="DeviceName in every result")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="StateDirectory (default: ImageDirectory/.inspector)")
    parser.add_argument("--processed-action", choices=["move", "delete"],
                        help="ProcessedAction: move inspected images to DoneDirectory, or delete")
    parser.add_argument("--recursive", action="store_true", default=None,
                        help="Recursive: watch subdirectories too")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any setting, VALUE read by the setting's type: text settings "
                        "verbatim (--set DeviceName=1234), numbers, booleans and lists as YAML "
                        "(--set QueueSize=16 --set Recursive=on --set 'Extensions=[jpg, png]' "
                        "or Extensions=jpg,png); repeatable")


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Config file, then flags, then --set; raises ConfigError listing every problem."""
    data: dict[str, Any] = read_config_file(args.config) if args.config else {}
    data.update(overrides_from_args(args))
    if "ImageDirectory" not in data:
        raise ConfigError(
            "no image directory: give --watch DIR or ImageDirectory in --config",
            [("ImageDirectory", "required (--watch DIR)")],
        )
    return Settings.from_mapping(data)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the command line sets (flags, then --set), to lay over any other source."""
    from inspector.settings import parse_value

    data: dict[str, Any] = {}
    for dest, key in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            data[key] = value
    for item in args.set:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE", [(item, "expected KEY=VALUE")])
        try:
            data[key.strip()] = parse_value(key.strip(), raw)
        except ConfigError as exc:
            raise ConfigError(f"--set {exc}", exc.errors) from exc
    return data


def report_config_error(exc: ConfigError) -> None:
    sys.stderr.write(f"inspector: {exc}\n")


def run(args: argparse.Namespace) -> int:
    import os

    from inspector.service import build_service, is_greengrass

    if args.config is None and args.watch is None and is_greengrass(os.environ):
        return _run_greengrass(args)

    try:
        settings = settings_from_args(args)
    except ConfigError as exc:
        report_config_error(exc)
        return 2
    try:
        service = build_service(settings, drain=args.once)
    except ModelError as exc:
        logger.error("cannot load the model: %s", exc)
        return 3
    service.install_signal_handlers()
    try:
        report = service.run()
    except ConfigError as exc:
        report_config_error(exc)
        return 2
    if report.stopped_by == "stalled":
        from inspector.service import EXIT_STALLED

        logger.error("%s", report.exit_message(service.paths.watch))
        return EXIT_STALLED
    return 0


def _run_greengrass(args: argparse.Namespace) -> int:
    """Under Greengrass the settings come from the component configuration over IPC.

    ``inspector.greengrass.component.main`` reads them (laying this command line's
    ``overrides_from_args`` over them), builds the service with
    ``inspector.service.build_service(settings, sinks=...)``, answers validation with
    ``inspector.settings.validate_mapping`` and applies updates with ``Service.apply_settings``.
    """
    from inspector.greengrass.component import main  # awsiot: only under Greengrass

    try:
        overrides = overrides_from_args(args)
    except ConfigError as exc:
        report_config_error(exc)
        return 2
    return main(overrides, drain=bool(args.once))
