"""The import graph of src/inspector, read with ast (every import, function-level ones included):
no cycle, and no arrow from the sinks to the Greengrass side (sinks are handed their clients)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(src: Path) -> dict[str, Path]:
    files = {}
    for path in sorted((src / "inspector").rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        files[".".join(parts)] = path
    return files


def import_graph(src: Path) -> dict[str, set[str]]:
    """module -> the package's own modules it imports (``from a import b`` counts a.b when b is
    a module, else a)."""
    files = module_files(src)
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against this module's package
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base
                           for alias in node.names]
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for succ in sorted(graph[node]):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    graph = import_graph(SRC)
    assert "inspector.pipeline" in graph and "inspector.delivery" in graph["inspector.pipeline"]
    assert cycles(graph) == []


def test_no_sink_imports_the_greengrass_side() -> None:
    graph = import_graph(SRC)
    arrows = [(name, target) for name, targets in graph.items()
              if name.startswith("inspector.sinks") for target in targets
              if target.startswith("inspector.greengrass")]
    assert arrows == []


@pytest.mark.parametrize("source, expected", [
    ({"a": "import inspector.b\n", "b": "def f():\n    from inspector import a\n"},
     [["inspector.a", "inspector.b"]]),
    ({"a": "from inspector.b import x\n", "b": "from . import c\n", "c": "import inspector.a\n"},
     [["inspector.a", "inspector.b", "inspector.c"]]),
    ({"a": "import inspector.b\n", "b": "import os\n"}, []),
])
def test_the_cycle_check_finds_cycles(tmp_path: Path, source: dict[str, str],
                                      expected: list[list[str]]) -> None:
    """The check itself on made-up packages: a lazy import closes a cycle too."""
    (tmp_path / "inspector").mkdir()
    (tmp_path / "inspector" / "__init__.py").write_text("")
    for name, text in source.items():
        (tmp_path / "inspector" / f"{name}.py").write_text(text)
    assert cycles(import_graph(tmp_path)) == expected


def test_the_sink_check_sees_a_lazy_greengrass_import(tmp_path: Path) -> None:
    for folder in ("inspector", "inspector/sinks", "inspector/greengrass"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "__init__.py").write_text("")
    (tmp_path / "inspector/greengrass/streams.py").write_text("class UploadTask: ...\n")
    (tmp_path / "inspector/sinks/upload.py").write_text(
        "def f():\n    from inspector.greengrass.streams import UploadTask\n")
    graph = import_graph(tmp_path)
    assert "inspector.greengrass.streams" in graph["inspector.sinks.upload"]
