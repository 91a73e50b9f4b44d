#!/usr/bin/env python3
"""Thin entry point: ``inspector bench`` with the report under benchmarks/results/.

    python benchmarks/run.py [inspector bench options]      # see benchmarks/README.md

The measuring code is the installed package's (``inspector.bench``), so this is exactly
``inspector bench --out-dir benchmarks/results ...`` from any working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

from inspector.cli import main

RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    args = sys.argv[1:]
    if not any(a == "--out-dir" or a.startswith("--out-dir=") for a in args):
        args += ["--out-dir", str(RESULTS)]
    sys.exit(main(["bench", *args]))
