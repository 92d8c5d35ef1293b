"""`python -m ftdata` is the same command line as the `ftdata` script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ftdata.cli.app import app


def python_m(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ftdata", *map(str, args)], capture_output=True, text=True, timeout=300)


def test_help_lists_the_commands_of_the_app() -> None:
    from typer.main import get_command

    proc = python_m("--help")
    assert proc.returncode == 0, proc.stderr
    assert "Usage: ftdata [OPTIONS] COMMAND [ARGS]..." in proc.stdout
    for name in get_command(app).commands:  # type: ignore[attr-defined]
        assert f" {name} " in proc.stdout


def test_version() -> None:
    from ftdata import __version__

    proc = python_m("--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"ftdata {__version__}\n", "")


def test_errors_are_one_line_with_the_exit_code(tmp_path: Path) -> None:
    proc = python_m("preview", tmp_path / "nope.json")
    assert (proc.returncode, proc.stdout, proc.stderr) == (3, "", f"error: {tmp_path}/nope.json: no such file or folder\n")
