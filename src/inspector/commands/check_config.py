"""``inspector check-config``: validate a settings file, listing every error with its key."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inspector.errors import ConfigError

HELP = "validate a settings file (JSON or YAML); every error is listed with its key"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, nargs="?", metavar="FILE", help="settings file")
    parser.add_argument("--keys", action="store_true",
                        help="list every setting: key, type, default, meaning")
    parser.add_argument("--example", action="store_true",
                        help="print a settings file with every key, its default and meaning "
                        "(config/example.yaml is this output)")


def run(args: argparse.Namespace) -> int:
    from inspector.settings import describe, read_config_file, resolve_paths, validate_mapping

    out = sys.stdout
    if args.example:
        from inspector.settings import example_yaml

        out.write(example_yaml())
        if args.file is None and not args.keys:
            return 0
    if args.keys:
        for key, type_name, default, meaning in describe():
            out.write(f"{key}\t{type_name}\t{default}\t{meaning}\n")
        if args.file is None:
            return 0
    if args.file is None:
        sys.stderr.write("inspector check-config: give a FILE (or --keys, --example)\n")
        return 2
    try:
        data = read_config_file(args.file)
    except ConfigError as exc:
        sys.stderr.write(f"{args.file}: {exc}\n")
        return 1
    problems = validate_mapping(data)
    if problems:
        sys.stderr.write(f"{args.file}: {len(problems)} error(s)\n")
        for key, message in problems:
            sys.stderr.write(f"  {key}: {message}\n")
        return 1
    from inspector.settings import Settings

    paths = resolve_paths(Settings.from_mapping(data))
    out.write(f"{args.file}: OK\n")
    for label in ("watch", "done", "failed", "held", "outbox", "results", "journal"):
        out.write(f"  {label}: {getattr(paths, label)}\n")
    return 0
