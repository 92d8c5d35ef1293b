"""docs/recipes.md shows real output: its example blocks are run and compared (`--update` rewrites them)."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from support import DATASETS

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "recipes.md"
BLOCK = re.compile(r"<!-- recipe example -->\n```console\n\$ (ftdata [^\n]*)\n(.*?)```", re.S)
WIDTH = {"COLUMNS": "80"}


def run(command: str, out: Path | None = None) -> str:
    """The command's stdout (run from the repository root); a build goes to `out`, shown as the documented folder."""
    from ftdata.cli import app

    args = shlex.split(command)[1:]
    documented = None
    if "-o" in args and out is not None:
        documented = args[args.index("-o") + 1]
        args[args.index("-o") + 1] = str(out)
    result = CliRunner().invoke(app, args, env=WIDTH)
    assert result.exit_code == 0, f"{command}: {result.output}"
    text = "".join(line.rstrip() + "\n" for line in result.stdout.splitlines())
    return text.replace(str(out), documented) if documented else text


def normal(text: str) -> str:
    return re.sub(r"\d+\.\d s\b", "<seconds> s", re.sub(r"\b[0-9a-f]{16}\b", "<fingerprint>", text))


@pytest.mark.skipif(not DATASETS.is_dir(), reason=f"shared datasets not found at {DATASETS}")
def test_the_recipe_examples_are_real(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("FTDATA_CACHE", str(tmp_path / "cache"))  # a fresh build cache: the example shows a first build
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert [c.split()[1] for c, _ in blocks] == ["stats", "build"]
    for command, shown in blocks:
        assert normal(run(command, tmp_path / "out")) == normal(shown), "stale; run `python tests/mix/test_docs_recipes.py --update`"


if __name__ == "__main__" and "--update" in sys.argv:
    import tempfile

    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as folder:
        os.environ["FTDATA_CACHE"] = str(Path(folder) / "cache")
        text = BLOCK.sub(lambda m: f"<!-- recipe example -->\n```console\n$ {m.group(1)}\n{run(m.group(1), Path(folder) / 'out')}```",
                         DOC.read_text(encoding="utf-8"))  # fmt: skip
    DOC.write_text(text, encoding="utf-8")
    print(f"updated {DOC}")
