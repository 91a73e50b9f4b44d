"""Import a script from scripts/ or benchmarks/ as a module, for tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def load_script(path: Path | str) -> ModuleType:
    """The module of ``path`` (relative to the repository root or absolute), under its stem.

    It is registered in ``sys.modules`` before it runs: dataclasses look their module up there.
    """
    path = REPO / path
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
