"""The house rules a maintainer relies on, checked on the source itself (docs/architecture.md)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins"
PACKAGES = ("dashscope_provider", "talking_heads")
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((PLUGINS / package).rglob("*.py")):
            parts = path.relative_to(PLUGINS).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours that ``path`` imports anywhere: at the top, in a function, under TYPE_CHECKING."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        found.update(name for name in names if name in modules)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph``, as the modules along it, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module) :], module]
        if module in done:
            return None
        for imported in sorted(graph[module]):
            if (cycle := visit(imported, [*path, module])) is not None:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        if (cycle := visit(module, [])) is not None:
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_the_plugins_modules_not_even_under_type_checking() -> None:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        # A package's own __init__ is imported before any of its modules: only its own imports count.
        graph[name] = {m for m in _imports(path, modules) if m != name and not name.startswith(f"{m}.")}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])


def _functions() -> Iterator[tuple[str, int]]:
    for path in [*PLUGINS.rglob("*.py"), *(REPO / "dags").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                yield f"{path.relative_to(REPO)}:{node.lineno} {node.name}", lines


@pytest.mark.parametrize("limit", [MAX_FUNCTION_LINES])
def test_no_function_in_plugins_or_dags_is_longer_than_the_limit(limit: int) -> None:
    long = {where: lines for where, lines in _functions() if lines > limit}
    assert not long, long


def test_only_the_dag_files_read_a_param_by_name() -> None:
    """Library code takes explicit arguments: param names are the DAG file's business (and its form's).
    (The continuation forwards the params whole, as the next run's conf, without naming one.)"""
    reads = re.compile(r"""params\b["']?\]?\s*(\[|\.get\()\s*["']\w+|params\.(?!items|keys)\w+\b""")
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for path in (PLUGINS / "talking_heads").rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if reads.search(line) and not line.lstrip().startswith("#")
    ]
    assert not offenders, offenders
