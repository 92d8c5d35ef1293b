"""docs/cli.md stays true: every command and option is documented, and the examples are real output.

The example blocks (`<!-- example -->` + a console block) are run and compared with what the
docs show. After a change in output, regenerate them and the options table with:

    .venv/bin/python tests/test_docs.py --update
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "cli.md"
OWN_COMMANDS = ("preview", "stats", "build", "markers", "templates")
EXAMPLE = re.compile(r"<!-- example( build)? -->\n```console\n\$ (ftdata [^\n]*)\n(.*?)```", re.S)
OPTIONS = re.compile(r"<!-- options -->\n.*?<!-- /options -->", re.S)
WIDTH = {"COLUMNS": "80"}  # Rich wraps tables at the terminal width; pin the width of the docs

sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "cli")]  # support, and test_cli (tests/cli/) for its fixture
from test_cli import cached_tokenizers  # noqa: E402,F401  - the fixture, re-used here

from ftdata.cli.app import app  # noqa: E402
from ftdata.cli.options import options_markdown  # noqa: E402


def _commands() -> dict[str, object]:
    return dict(get_command(app).commands)  # type: ignore[attr-defined]


def _run(command: str) -> str:
    """The command's stdout, without trailing spaces (Rich pads table cells; editors strip them)."""
    result = CliRunner().invoke(app, shlex.split(command)[1:], env=WIDTH)
    assert result.exit_code == 0, f"{command}: {result.output}"
    return "".join(line.rstrip() + "\n" for line in result.stdout.splitlines())


def _normalize_build(text: str, out: str, cache: str) -> str:
    """Build output without what changes between machines: fingerprint, seconds, folders."""
    text = text.replace(out, "OUT").replace(cache, "CACHE")
    text = re.sub(r"\b[0-9a-f]{16}\b", "<fingerprint>", text)
    return re.sub(r"\d+\.\d s\b", "<seconds> s", text)


def test_every_command_is_documented_and_has_help() -> None:
    text = DOC.read_text(encoding="utf-8")
    commands = _commands()
    assert set(OWN_COMMANDS) <= set(commands)
    for name in commands:
        assert f"## `ftdata {name}`" in text, f"docs/cli.md has no section for `ftdata {name}`"
        result = CliRunner().invoke(app, [name, "--help"], env=WIDTH)
        assert result.exit_code == 0, result.output
        assert f"Usage: ftdata {name}" in result.stdout


def test_every_option_of_the_data_commands_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in OWN_COMMANDS:
        for param in _commands()[name].params:  # type: ignore[attr-defined]
            for flag in (*param.opts, *param.secondary_opts):
                if flag.startswith("--"):
                    assert f"`{flag}" in text or f" {flag}" in text, f"`ftdata {name} {flag}` is not in docs/cli.md"


def test_options_table_matches_build_options() -> None:
    block = OPTIONS.search(DOC.read_text(encoding="utf-8"))
    assert block is not None
    assert block.group(0) == f"<!-- options -->\n{options_markdown()}<!-- /options -->", (
        "docs/cli.md options table is stale; run `.venv/bin/python tests/test_docs.py --update`"
    )


def _examples() -> list[tuple[bool, str, str]]:
    return [(bool(m.group(1)), m.group(2), m.group(3)) for m in EXAMPLE.finditer(DOC.read_text(encoding="utf-8"))]


def _needs_missing_path(command: str) -> bool:
    return any(part.startswith("../") and not (ROOT / part).exists() for part in shlex.split(command))


@pytest.mark.parametrize(("command", "shown"), [(c, s) for b, c, s in _examples() if not b], ids=lambda v: v[:60])
def test_example_output_is_real(command: str, shown: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if _needs_missing_path(command):
        pytest.skip(f"{command}: shared resources not found")
    monkeypatch.chdir(ROOT)
    assert _run(command) == shown, "stale example; run `.venv/bin/python tests/test_docs.py --update`"


def test_build_examples_are_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    out, cache = tmp_path / "out", tmp_path / "cache"
    builds = [(c, s) for b, c, s in _examples() if b and c.startswith("ftdata build")]
    assert [s.split(" ", 1)[0] for _, s in builds] == ["built", "cached:"]
    for command, shown in builds:
        args = shlex.split(command)
        args[args.index("-o") + 1] = str(out)
        got = _run(shlex.join([*args, "--cache-dir", str(cache)]))
        documented_out = shlex.split(command)[shlex.split(command).index("-o") + 1]
        expected = _normalize_build(shown, documented_out, "~/.cache/ftdata/builds")
        assert _normalize_build(got, str(out), str(cache)) == expected
    documented_out = shlex.split(builds[0][0])[shlex.split(builds[0][0]).index("-o") + 1]
    for command, shown in [(c, s) for b, c, s in _examples() if b and c.startswith("ftdata export")]:
        got = _run(command.replace(f" {documented_out} ", f" {out} "))  # an export of the build above
        assert got.replace(str(out), documented_out) == shown


def update() -> None:
    """Rewrite the options table and every example block of docs/cli.md with real output."""
    from ftdata.io import resources

    os.chdir(ROOT)
    os.environ.update(WIDTH)
    text = DOC.read_text(encoding="utf-8")
    text = OPTIONS.sub(lambda _: f"<!-- options -->\n{options_markdown()}<!-- /options -->", text)
    first_build = True

    def replace(match: re.Match[str]) -> str:
        nonlocal first_build
        command = match.group(2)
        if match.group(1) and first_build:  # the first build example shows a fresh build
            args = shlex.split(command)
            shutil.rmtree(ROOT / args[args.index("-o") + 1], ignore_errors=True)
            output = _run(command)
            if output.startswith("cached:"):
                shutil.rmtree(resources.cache_root() / "builds" / output.split()[3], ignore_errors=True)
                output = _run(command)
            first_build = False
        else:
            output = _run(command)
        return f"<!-- example{match.group(1) or ''} -->\n```console\n$ {command}\n{output}```"

    DOC.write_text(EXAMPLE.sub(replace, text), encoding="utf-8")
    print(f"updated {DOC}")


if __name__ == "__main__":
    if sys.argv[1:] != ["--update"]:
        raise SystemExit(f"usage: {sys.argv[0]} --update")
    update()
