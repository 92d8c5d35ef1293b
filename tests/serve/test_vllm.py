"""The parity check against a real vLLM render server (slow: each starts `vllm launch render`, 15-60 s on CPU).

vLLM lives in a venv of its own, made once by `scripts/stacks/vllm.sh` (~3 min, 9.4 GB); without it these tests
are skipped and say so. Each builds records.jsonl (plain, multi-turn, tools, reasoning) on a shared tokenizer folder
and checks it against vLLM serving a copy of that folder with a minimal config.json; the result must be the one
recorded in fixtures/ (which the default suite replays) — so a new vLLM that renders otherwise shows here first.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from stack import CONFIGS, READY, SERVER_ARGS, render_server, served_folder, source_folder
from support import fresh_cache

import ftdata
from ftdata.serve.parity import check_serving

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not READY.is_file(), reason=f"no vLLM venv at {READY.parent}: run scripts/stacks/vllm.sh"),
]

HERE = Path(__file__).resolve().parent


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_real_vllm_renders_what_the_fixture_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    from ftdata.io.resources import bundled_tokenizer_dir

    monkeypatch.setenv("FTDATA_CACHE", str(fresh_cache(tmp_path / "cache")))
    given = source_folder(name, tmp_path / "sources")
    source = given or bundled_tokenizer_dir()
    out = tmp_path / "out"
    ftdata.build(str(HERE / "records.jsonl"), out, tokenizer=str(given) if given else None, cache=False)
    folder = served_folder(source, name, tmp_path / "served")
    with render_server(folder, log=tmp_path / "vllm.log", args=tuple(SERVER_ARGS.get(name, ()))) as url:
        parity = check_serving(out, url)
    fixture = json.loads((HERE / "fixtures" / f"{name}.json").read_text(encoding="utf-8"))
    assert parity.summary.replace(url, "URL") == fixture["summary"]
    records = str(HERE / "records.jsonl")
    assert [d.line().replace(records, "RECORDS") for d in parity.differences] == fixture["differences"]
    assert parity.turns >= 3  # plain and multi-turn records are trained on every template


def test_check_serving_starts_and_stops_vllm_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from ftdata.cli.app import app

    monkeypatch.setenv("FTDATA_CACHE", str(fresh_cache(tmp_path / "cache")))
    monkeypatch.setenv("FTDATA_VLLM", str(READY.parent / "bin" / "vllm"))
    given = source_folder("qwen2.5-instruct", tmp_path)
    out = tmp_path / "out"
    ftdata.build(str(HERE / "records.jsonl"), out, tokenizer=str(given), cache=False)
    folder = served_folder(given, "qwen2.5-instruct", tmp_path / "served")  # type: ignore[arg-type]
    result = CliRunner().invoke(app, ["check-serving", str(out), "--serve", str(folder)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("5 of 5 turns identical to what http://127.0.0.1:")
