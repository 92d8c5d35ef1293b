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


# The task seam (docs/design.md, "Tasks"): the modules of each task, the table that names them
# (run/engine.py), the decision of a source's task (run/task.py), what an option means per task
# (options.py) and the enum (types.py). train/ trains one task's rows per method (its own table).
TASK_MODULES = {
    "ftdata.types", "ftdata.options", "ftdata.run.engine", "ftdata.run.task",
    "ftdata.run.sft", "ftdata.run.stats", "ftdata.cli.preview", "ftdata.cli.stats_report",  # sft, its views
    "ftdata.run.pairs", "ftdata.run.pair_rows", "ftdata.run.pair_stats", "ftdata.cli.pair_preview", "ftdata.cli.pair_report",
    "ftdata.records.preference", "ftdata.records.preference_formats", "ftdata.records.scores",  # pairs and kto
    "ftdata.run.prompts", "ftdata.records.prompts", "ftdata.cli.prompt_views",  # prompt sets
}  # fmt: skip
IMPLEMENTATIONS = ("ftdata.run.sft", "ftdata.run.pairs", "ftdata.run.pair_rows", "ftdata.run.pair_stats", "ftdata.run.prompts")


def test_no_code_outside_the_task_modules_asks_which_task_it_runs() -> None:
    """No `Task.<member>` outside the task modules and train/, and no import of a task's implementation: build/,
    mix/, inspect/, the engine's callers call the task's methods."""
    import ast

    graph = grimp.build_graph("ftdata", cache_dir=None)
    asking: list[str] = []
    for path in sorted((ROOT / "ftdata").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if module in TASK_MODULES or module.startswith("ftdata.train"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "Task":
                asking.append(f"{module}:{node.lineno}: Task.{node.attr}")
        asking += [f"{module} imports {task}" for task in IMPLEMENTATIONS if graph.direct_import_exists(importer=module, imported=task)]
    assert asking == []
