"""The tools that hold the line run in the default test run: ruff's formatter and lint set and mypy, all over ftdata/,
with the configuration in pyproject.toml (`[tool.ruff]`, `[tool.mypy]`). A failure prints what the tool printed."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# mypy's cache outlives a run (a second run takes seconds, not 20) but never lands in the repository.
CACHE = Path(tempfile.gettempdir()) / f"ftdata-mypy-{re.sub(r'[^A-Za-z0-9]', '_', str(ROOT))}"


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing_in_the_package() -> None:
    done = _run(str(BIN / "ruff"), "check", "ftdata", "--no-cache", "--output-format", "concise")
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]


def test_ruff_format_leaves_the_package_as_it_is() -> None:
    """`ruff format ftdata` is the layout: a change it would make fails here; run it and commit the result."""
    done = _run(str(BIN / "ruff"), "format", "--diff", "--no-cache", "ftdata")
    changes = f"{done.stderr[-2000:]}\n{done.stdout[:6000]}"
    assert done.returncode == 0, f"run `ruff format ftdata`; it would change:\n{changes}"


def test_fmt_directives_only_keep_tables_aligned() -> None:
    """`# fmt: skip` stays only on the line that closes a table literal aligned by hand; no `# fmt: off` regions."""
    misplaced = []
    for path in sorted((ROOT / "ftdata").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            off = re.search(r"#\s*fmt:\s*(off|on)\b", line)
            skip = "# fmt: skip" in line and not line.strip().startswith(("]", "}", ")"))
            if off or skip:
                misplaced.append(f"{path.relative_to(ROOT)}:{number}")
    assert misplaced == []


def test_mypy_finds_nothing_in_the_package() -> None:
    done = _run(sys.executable, "-m", "mypy", "--cache-dir", str(CACHE))
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert done.stdout.startswith("Success: no issues found"), done.stdout


def test_every_type_ignore_names_its_error_code_and_why() -> None:
    """A bare `# type: ignore` hides every error of its line; one with a code hides one, and says why beside it."""
    bare, unexplained = [], []
    for path in sorted((ROOT / "ftdata").rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if "# type: ignore" not in line:
                continue
            where = f"{path.relative_to(ROOT)}:{number}"
            after = line.split("# type: ignore", 1)[1]
            if not after.startswith("["):
                bare.append(where)
            elif "#" not in after.split("]", 1)[1]:
                unexplained.append(where)
    assert bare == []
    assert unexplained == []
