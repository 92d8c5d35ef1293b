"""The layer rule of docs/design.md holds for every import: checked by import-linter's contracts
(`[tool.importlinter]` in pyproject.toml), the same check CI runs, not by a walker of our own."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
# Bottom to top, as docs/design.md draws them; pyproject.toml lists the same, top to bottom.
LAYERS = ["outcomes", "errors", "guard", "types", "io | records", "options", "chat", "tokens", "media", "run", "mix",
          "build", "train | inspect | serve", "cli"]  # fmt: skip


def test_every_import_keeps_the_contracts() -> None:
    """Packages are layers (an import only goes down), no circle between the modules of a package,
    guard/ imports no third-party package."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-4000:]
    assert "Contracts: 3 kept, 0 broken." in done.stdout


NAME = re.compile(r"ftdata(?:\.[A-Za-z_]\w*)+(?::[A-Za-z_]\w*)?")


def _layer(module: str) -> tuple[int, str]:
    """The rank of `module`'s layer (bottom 0) and its package (`ftdata.run.sft` -> run)."""
    package = module.split(".")[1]
    (rank,) = [i for i, layer in enumerate(LAYERS) if package in layer.split(" | ")]
    return rank, package


def _module_of(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def _is_module(name: str) -> bool:
    relative = Path(*name.split("."))
    return (ROOT / relative.with_suffix(".py")).is_file() or (ROOT / relative / "__init__.py").is_file()


def string_arrows() -> list[tuple[str, str, int]]:
    """Every `"ftdata.x.y"` / `"ftdata.x.y:name"` string literal in the package that names a module of it:
    (the module holding it, the module it names, the line). An import by string is an arrow."""
    out = []
    for path in sorted((ROOT / "ftdata").rglob("*.py")):
        module = _module_of(path)
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and NAME.fullmatch(node.value):
                target = node.value.split(":")[0]
                if _is_module(target):
                    out.append((module, target, node.lineno))
    return out


def upward(arrows: list[tuple[str, str, int]]) -> list[str]:
    """The arrows of `arrows` that point up, or across independent layers (train | inspect)."""
    out = []
    for source, target, line in arrows:
        if source.count(".") < 1 or source == "ftdata.__main__":  # the package's root and its entry point
            continue
        (above, package), (below, named) = _layer(source), _layer(target)
        independent = above == below and package != named and " | " in LAYERS[above]
        if below > above or independent:
            out.append(f"{source}:{line} names {target}")
    return out


def test_an_import_by_string_obeys_the_layers() -> None:
    """A module named by a string (the package's lazy `"ftdata.train.run:train"` exports) points where an import
    would: down, or within its own package. Seven such names in run/ pointed at cli/ views before `cli/views.py` held
    them. (A task's module is named from its `Task` member within run/: `test_task_seam.py` holds it there.)"""
    arrows = string_arrows()
    assert any(s == "ftdata.train" and t == "ftdata.train.run" for s, t, _ in arrows)
    assert upward(arrows) == []


def test_the_string_arrow_check_refuses_a_name_that_points_up() -> None:
    arrows = [("ftdata.run.sft", "ftdata.cli.preview", 3), ("ftdata.train.data", "ftdata.inspect.collect", 4),
              ("ftdata.cli.views", "ftdata.run.sft", 5), ("ftdata.mix.build", "ftdata.run.loop", 6)]  # fmt: skip
    assert upward(arrows) == [
        "ftdata.run.sft:3 names ftdata.cli.preview", "ftdata.train.data:4 names ftdata.inspect.collect",
    ]


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


# The task seam (docs/design.md, "Tasks"): the modules of each task (which declare the options they refuse,
# `TaskModule.rules`), the table that names them (run/stage.py), the decision of a source's task (run/task.py) and of
# built rows' (run/columns.py), and the enum (types.py). train/ trains one task's rows per method (its own table).
# options.py is not one: it checks values, and no option rule of a task lives there.
TASK_MODULES = {
    "ftdata.types", "ftdata.run.stage", "ftdata.run.task", "ftdata.run.columns",
    "ftdata.run.sft", "ftdata.run.stats", "ftdata.cli.preview", "ftdata.cli.stats_report",  # sft, its views
    "ftdata.cli.views",  # the CLI's table of views per task
    "ftdata.run.preference", "ftdata.run.kto", "ftdata.run.rows_pairs", "ftdata.run.pair_stats", "ftdata.cli.pair_preview", "ftdata.cli.pair_report",
    "ftdata.records.preference", "ftdata.records.preference_formats", "ftdata.records.scores",  # pairs and kto
    "ftdata.run.trajectory_pairs",  # pairs whose completions are several messages (agent trajectories)
    "ftdata.run.prompts", "ftdata.run.rows_prompts", "ftdata.run.prompt_stats", "ftdata.records.prompts", "ftdata.cli.prompt_views",  # prompt sets
}  # fmt: skip
IMPLEMENTATIONS = ("ftdata.run.sft", "ftdata.run.preference", "ftdata.run.kto", "ftdata.run.rows_pairs", "ftdata.run.pair_stats", "ftdata.run.prompts", "ftdata.run.rows_prompts")


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


# The column names that tell one task's rows from another's (SFT's input_ids and labels are every token row's).
TASK_COLUMNS = frozenset({"prompt_ids", "chosen_ids", "rejected_ids", "completion_ids"})


def test_no_code_outside_the_task_modules_names_a_task_column() -> None:
    """A reader of built rows (inspect/, build/, mix/, cli/) asks the task for its columns (`TaskModule.columns`,
    `row_units`, `run.columns.task_of_columns`) instead of keeping a list of them; train/ trains one task's rows per
    method (its own table)."""
    naming = []
    for path in sorted((ROOT / "ftdata").rglob("*.py")):
        module = _module_of(path)
        if module in TASK_MODULES or module.startswith("ftdata.train"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in TASK_COLUMNS:
                naming.append(f"{module}:{node.lineno}: {node.value!r}")
    assert naming == []


# The row-layout seam (docs/design.md, "Row layouts"): the columns that tell a layout's rows (a packed row's
# `seq_lengths`, a tree row's `tree_lengths`) are named in the table of layouts alone; everything else asks it
# (`layout_of`, `Layout.lengths`, `Layout.sequences`, `Layout.schema`, `ftdata.train.layouts.training`).
LAYOUT_MARKERS = frozenset({"seq_lengths", "tree_lengths"})


def test_no_code_outside_the_layouts_names_a_layout_column() -> None:
    naming = []
    for path in sorted((ROOT / "ftdata").rglob("*.py")):
        module = _module_of(path)
        if module == "ftdata.tokens.layouts":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in LAYOUT_MARKERS:
                naming.append(f"{module}:{node.lineno}: {node.value!r}")
    assert naming == []
