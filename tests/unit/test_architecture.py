"""The layout's rules, checked on the source: dependencies point one way, no import cycles, no benchmarks.

Imports are read from the syntax tree, those inside functions included, so a lazy import counts like any
other: a cycle hidden in a function is still a cycle for a reader and for the next refactoring.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "models", "connectors", "edge_agent", "streams")
# DESIGN.md: schemas <- nothing; models <- nothing; connectors <- schemas; edge_agent <- schemas, connectors;
# streams <- schemas, models, connectors.
ALLOWED = {
    "schemas": set(),
    "models": set(),
    "connectors": {"schemas"},
    "edge_agent": {"schemas", "connectors"},
    "streams": {"schemas", "models", "connectors"},
}
OURS = (*PACKAGES, "benchmarks", "tests")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _imported(name: str, path: Path) -> set[str]:
    """Every name of ours that the module imports, as written (``from a import b`` gives ``a.b`` or ``a``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_package = path.name == "__init__.py"
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                if not is_package:
                    base.pop()
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                names.add(sub if sub in MODULES else module)
    return {n for n in names if n.split(".")[0] in OURS}


def _resolve(name: str) -> str | None:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


GRAPH = {m: {r for n in _imported(m, p) if (r := _resolve(n)) and r != m} for m, p in MODULES.items()}
RAW = {m: _imported(m, p) for m, p in MODULES.items()}


def test_no_production_module_imports_benchmarks_or_tests() -> None:
    offenders = sorted(
        f"{m} imports {n}" for m, names in RAW.items() for n in names if n.split(".")[0] in ("benchmarks", "tests")
    )
    assert offenders == []


@pytest.mark.parametrize("package", PACKAGES)
def test_dependencies_point_one_way(package: str) -> None:
    wrong = sorted(
        f"{m} imports {n}"
        for m, names in RAW.items()
        if m.split(".")[0] == package
        for n in names
        if (top := n.split(".")[0]) != package and top in PACKAGES and top not in ALLOWED[package]
    )
    assert wrong == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles() -> None:
    assert _cycles(GRAPH) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_test_doubles_live_apart_from_the_real_connectors() -> None:
    """Stand-ins for outside services live in ``connectors.testing``, and only tests and the demo use them."""
    doubles = [m for m in MODULES if m.startswith("connectors.testing.")]
    assert doubles, "the PagerDuty/Slack stand-in moved: update this test"
    users = sorted(
        m for m, names in GRAPH.items() if any(n.startswith("connectors.testing") for n in names)
        and not m.startswith(("connectors.testing", "streams.cli.demo"))
    )
    assert users == []
