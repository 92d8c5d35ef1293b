"""The benchmarks name only what ftdata has: every `from ftdata... import NAME`, `import ftdata...` and `ftdata.A.B`
in benchmarks/*.py resolves. A benchmark runs for minutes and no default test runs it, so a name moved or removed in
ftdata failed only when someone measured (`history_rows.py --step` imported `ftdata.train.tree.is_tree` for two
days after the layouts moved it to `ftdata.tokens.layouts`)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import ftdata

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _resolves(module: str, name: str) -> bool:
    """Whether `from module import name` would work: an attribute, or a submodule not imported yet."""
    if hasattr(importlib.import_module(module), name):
        return True
    try:
        importlib.import_module(f"{module}.{name}")
    except ModuleNotFoundError:
        return False
    return True


def _attribute_chain(node: ast.Attribute) -> list[str] | None:
    """`ftdata.a.b` as ["a", "b"]; None for a chain that does not start at the name `ftdata`."""
    chain: list[str] = []
    at: Any = node
    while isinstance(at, ast.Attribute):
        chain.insert(0, at.attr)
        at = at.value
    return chain if isinstance(at, ast.Name) and at.id == "ftdata" else None


def _first_missing(chain: list[str]) -> int | None:
    """The index of the first name of `ftdata.<chain>` that is not there (a module's attribute or submodule)."""
    at: Any = ftdata
    for k, part in enumerate(chain):
        if not (_resolves(at.__name__, part) if isinstance(at, ModuleType) else hasattr(at, part)):
            return k
        at = getattr(at, part)  # a submodule `_resolves` imported is its package's attribute from then on
    return None


def unresolved(source: str) -> list[str]:
    """The ftdata names `source` imports or reads that ftdata does not have, as `line: name`."""
    missing = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "ftdata":
            assert node.module is not None
            module = node.module
            missing += [f"{node.lineno}: {module}.{a.name}" for a in node.names if not _resolves(module, a.name)]
        elif isinstance(node, ast.Import):
            for alias in (a for a in node.names if a.name.split(".")[0] == "ftdata"):
                parent, _, leaf = alias.name.rpartition(".")
                if parent and not _resolves(parent, leaf):
                    missing.append(f"{node.lineno}: {alias.name}")
        elif isinstance(node, ast.Attribute) and (chain := _attribute_chain(node)) is not None:
            if (gone := _first_missing(chain)) is not None:
                missing.append(f"{node.lineno}: ftdata.{'.'.join(chain[: gone + 1])}")
    return sorted(set(missing))


@pytest.mark.parametrize("path", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.name)
def test_a_benchmark_names_only_what_ftdata_has(path: Path) -> None:
    assert unresolved(path.read_text(encoding="utf-8")) == [], f"{path.name}: gone from ftdata"


def test_a_name_ftdata_does_not_have_is_found_in_each_form() -> None:
    source = (
        "import ftdata.train.tree\n"
        "from ftdata.train.tree import TreeCollator, is_tree\n"  # line 2: the name history_rows.py imported
        "import ftdata.train.no_such_module\n"
        "def f():\n"
        "    from ftdata.tokens.layouts import TREE, layout_of\n"
        "    return ftdata.train.tree.tree_forward, ftdata.tokens.layouts.no_such_name, ftdata.load\n"
    )
    assert unresolved(source) == [
        "2: ftdata.train.tree.is_tree",
        "3: ftdata.train.no_such_module",
        "6: ftdata.tokens.layouts.no_such_name",
    ]
