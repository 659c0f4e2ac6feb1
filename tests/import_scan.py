"""The import statements of a Python file that can run, read statically (ast): shared by the
env-pin test (test_envs.py) and the layering test (test_layering.py)."""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path


def type_checking_nodes(tree: ast.Module) -> set[int]:
    """ids of every node under ``if TYPE_CHECKING:`` (such imports never run)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            for child in node.body:
                skipped.update(id(n) for n in ast.walk(child))
    return skipped


@cache
def runnable_imports(path: Path, module: str | None) -> tuple[tuple[str, int, bool], ...]:
    """(name, line, is_module) of every import in ``path`` that can run, at any depth. ``from m
    import a`` gives ``m`` (a module) and ``m.a`` (a submodule or just a name). Relative imports
    are resolved against ``module``, the file's dotted name."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped = type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno, True) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = (module or "").split(".")
                keep = len(package) - node.level + (path.name == "__init__.py")
                base = ".".join([*package[:keep], *([base] if base else [])])
            found.append((base, node.lineno, True))
            found += [(f"{base}.{alias.name}", node.lineno, False) for alias in node.names]
    return tuple(found)
