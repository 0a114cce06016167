"""The examples in the production packages' docstrings run, and print what they say they print.

Only modules whose source holds an example (``>>>``) are imported, so collecting these tests loads no
heavy library for modules without one. ``__main__`` modules are skipped (importing one runs it), and so is
anything listed in ``NEEDS_SERVERS``: examples must be fast and offline (no broker, no server).
"""

from __future__ import annotations

import doctest
import importlib
from pathlib import Path

import pytest
from tests.fixtures.config import empty_config

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("schemas", "models", "connectors", "edge_agent", "streams")
NEEDS_SERVERS: tuple[str, ...] = ()
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name == "__main__.py" or ">>>" not in path.read_text():
                continue
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            if name not in NEEDS_SERVERS:
                found.append(name)
    return found


MODULES = _modules_with_examples()


def test_examples_are_found() -> None:
    assert len(MODULES) >= 20, MODULES


@pytest.mark.parametrize("module_name", MODULES)
def test_docstring_examples(module_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # an example that writes files writes them here
    monkeypatch.setenv("EDDYLINE_CONFIG", str(empty_config(tmp_path)))  # settings examples see defaults only
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    tests = [t for t in finder.find(module, module_name) if t.examples]
    assert tests, f"{module_name} has '>>>' in its source but no docstring example was found"
    for test in sorted(tests, key=lambda t: t.name):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, "".join(report)
