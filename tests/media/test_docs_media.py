"""The media docs show real output, and the README's example runs from a user's clone (no ../shared): the
example processor folder is made by examples/media/make_processor.py from the bundled SmolLM2 tokenizer."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ftdata.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "media"
README_BLOCK = re.compile(r"## Media \(images[^)]*\)\n.*?```console\n(.*?)```", re.S)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The example as a user's clone has it: examples/media without the generated tokenizer, no ../shared beside."""
    root = tmp_path_factory.mktemp("clone") / "ftdata"
    shutil.copytree(EXAMPLES, root / "examples" / "media", ignore=shutil.ignore_patterns("tokenizer*.json", "__pycache__"))
    assert not (root.parent / "shared").exists() and not (root / "examples" / "media" / "qwen2-vl" / "tokenizer.json").exists()
    return root


def _run(command: str, cwd: Path) -> str:
    """A README command in `cwd`: `python SCRIPT` in a fresh interpreter, `ftdata ...` through the CLI."""
    args = shlex.split(command)
    if args[0] == "python":
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FTDATA_SHARED": str(cwd / "no-shared")}
        done = subprocess.run([sys.executable, *args[1:]], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(app, args[1:])
    finally:
        os.chdir(old)
    assert result.exit_code == 0, result.output
    return result.output


def _steps(console: str) -> list[tuple[str, list[str]]]:
    """A console block's commands, each with the lines it shows (bar `...`)."""
    steps: list[tuple[str, list[str]]] = []
    for line in console.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif line != "...":
            steps[-1][1].append(line)
    return steps


def test_the_readme_example_runs_from_a_clone(clone):
    """Each command of the README's media block runs in the clone; every line it shows (bar `...`) comes out, in order."""
    block = README_BLOCK.search((ROOT / "README.md").read_text(encoding="utf-8"))
    assert block is not None
    steps = _steps(block.group(1))
    assert [c.split()[0] for c, _ in steps] == ["python", "ftdata", "ftdata"]
    for command, shown in steps:
        output = [line.rstrip() for line in _run(command, clone).splitlines()]
        at = 0
        for line in shown:
            assert line in output[at:], f"{command}: {line!r} not in its output (in order)"
            at = output.index(line, at) + 1


def test_documented_rows_and_rejects_are_real(clone, tmp_path):
    """docs/media.md's rows and rejects of the example build are what a build of the clone's example makes now."""
    _run("python examples/media/make_processor.py", clone)
    out = tmp_path / "OUT"
    # --no-cache: the build cache is keyed by content, and the rows name the files by their absolute path
    _run(f"ftdata build examples/media/chat.jsonl --processor examples/media/qwen2-vl -o {out} --output-format jsonl --no-cache", clone)
    doc = (ROOT / "docs" / "media.md").read_text(encoding="utf-8")
    here = str(clone / "examples" / "media")
    for line in (out / "train.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert json.dumps({k: row[k] for k in ("media", "trained")}).replace(f"{here}/", "/abs/examples/media/") in doc
    for line in (out / "rejects.jsonl").read_text().splitlines():
        assert line in doc


def test_the_audio_section_shows_real_output(clone):
    """docs/media.md's Audio block: each command run in the clone (the example folder made by make_audio_processor.py);
    every line it shows (bar `...`) comes out, in order."""
    doc = (ROOT / "docs" / "media.md").read_text(encoding="utf-8")
    block = re.search(r"## Audio\n.*?```console\n(.*?)```", doc, re.S)
    assert block is not None
    _run("python examples/media/make_audio_processor.py", clone)
    steps = _steps(block.group(1))
    for command, shown in steps:
        if "--packing" in command:  # refused: the one-line error is the output
            old = Path.cwd()
            os.chdir(clone)
            try:
                result = CliRunner().invoke(app, shlex.split(command)[1:])
            finally:
                os.chdir(old)
            assert result.exit_code != 0 and shown == [result.output.strip()]
            continue
        out = _run(command.replace("-o OUT", f"-o {clone / 'OUT'}"), clone).splitlines()
        at = 0
        for line in shown:
            assert line in out[at:], (command, line)
            at = out.index(line, at) + 1
