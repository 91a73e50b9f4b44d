"""The delivery desk's custody rule lives in one place: the behaviour is tested through the
pipeline (tests/test_pipeline.py, test_custody.py); here, that no other code moves an inspected
image to done."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "inspector"


def callers_of_done(src: Path) -> list[str]:
    """``module:function`` (the outermost one) of every ``<disposer>.done(...)`` call in ``src``."""
    found = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        outer = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
            outer += [n for n in cls.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
        for func in outer:
            for node in ast.walk(func):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr == "done"
                        and "disposer" in ast.unparse(node.func.value)):
                    found.append(f"{path.relative_to(src).as_posix()}:{func.name}")
    return sorted(set(found))


def test_only_the_custody_rule_moves_an_image_to_done() -> None:
    assert callers_of_done(SRC) == ["delivery.py:_finish"]


def test_the_check_sees_a_second_mover(tmp_path: Path) -> None:
    (tmp_path / "elsewhere.py").write_text(
        "class Tidy:\n    def run(self, path):\n        def go():\n"
        "            self.disposer.done(path)\n        go()\n")
    assert callers_of_done(tmp_path) == ["elsewhere.py:run"]
