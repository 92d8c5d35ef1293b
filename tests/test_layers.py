"""The layer rule of docs/design.md holds for every import: checked by import-linter's contracts
(`[tool.importlinter]` in pyproject.toml), the same check CI runs, not by a walker of our own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
# Bottom to top, as docs/design.md draws them; pyproject.toml lists the same, top to bottom.
LAYERS = ["outcomes", "errors", "guard", "types", "io | records", "options", "chat", "tokens", "media", "run", "mix",
          "build", "train | inspect", "cli"]  # fmt: skip


def test_every_import_keeps_the_contracts() -> None:
    """Packages are layers (an import only goes down), no circle between the modules of a package,
    guard/ imports no third-party package."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Contracts: 3 kept, 0 broken." in done.stdout


def test_the_contract_lists_the_layers_of_the_design() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (layers,) = [c for c in config if c["id"] == "layers"]
    assert layers["layers"] == LAYERS[::-1]
    design = (ROOT / "docs" / "design.md").read_text()
    assert " → ".join(f"`{name}`" for name in LAYERS) in design


def test_guard_imports_the_standard_library_and_errors_alone() -> None:
    """What a killed build's watchdog and every bound rely on loads without any third-party package."""
    graph = grimp.build_graph("ftdata", include_external_packages=True)
    outside = {
        imported
        for module in graph.find_descendants("ftdata.guard") | {"ftdata.guard"}
        for imported in graph.find_modules_directly_imported_by(module)
        if not imported.startswith(("ftdata.guard", "ftdata.errors", "ftdata.outcomes"))
        and imported.split(".")[0] not in sys.stdlib_module_names
    }
    assert outside == set()
