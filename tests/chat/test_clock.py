"""A chat template that writes the day makes the day an input of the build (`ftdata.chat.clock`): the same bytes
built on another day are built again, never served from yesterday's cache; a template without a clock keys as
before."""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, TOKENIZERS, set_day

import ftdata
from ftdata.chat.clock import clock_formats, clock_input

SERVED = ROOT / "tests" / "templates" / "served"
LLAMA = TOKENIZERS / "llama-3.2-instruct"


def _template(folder: Path) -> str:
    return json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))["chat_template"]


@pytest.mark.parametrize(
    ("name", "formats"),
    [
        ("llama-3.2.jinja", ("%d %b %Y",)),
        ("granite-3.3.jinja", ("%B %d, %Y",)),
        ("gpt-oss.jinja", ("%Y-%m-%d",)),
        ("mistral-small-3.2.jinja", ("%Y-%m-%d",)),
    ],
)
def test_the_clock_calls_of_served_templates_are_read_from_their_markup(name: str, formats: tuple[str, ...]) -> None:
    assert clock_formats((SERVED / name).read_text(encoding="utf-8")) == formats


def test_templates_without_a_clock_and_a_format_that_is_not_a_constant() -> None:
    assert clock_formats(_template(TOKENIZERS / "qwen2.5-instruct")) == ()
    assert clock_formats("{{ 'strftime_now' }} is text, not a call") == ()
    assert clock_formats("{% set f = '%Y' %}{{ strftime_now(f) }}{{ strftime_now('%Y') }}") == (None, "%Y")
    generation = "{% generation %}{{ strftime_now('%d %b %Y') }}{% endgeneration %}"  # TRL's training templates' tags
    assert clock_formats(generation) == ("%d %b %Y",)
    assert clock_formats("{{ strftime_now('%Y') }}{% if %}") == (None,)  # no parse: never a cache hit
    day = datetime.datetime(2026, 11, 26, 9, 30)
    read = clock_input("{{ strftime_now(fmt) }}", now=day)
    assert read is not None and read.name == "strftime_now(...) at 2026-11-26T09:30:00"  # the instant: never a hit
    assert clock_input({"default": _template(LLAMA), "tool_use": "{{ 1 }}"}, now=day).name == (
        "strftime_now('%d %b %Y') = 26 Nov 2026"
    )


def _build(tmp_path: Path, tokenizer: Path | None) -> tuple[dict[str, Any], str]:
    data = tmp_path / "chat.jsonl"
    data.write_text(
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}) + "\n"
    )
    out = tmp_path / "out"
    result = ftdata.build(str(data), out, tokenizer=str(tokenizer) if tokenizer else None, cache_dir=tmp_path / "cache")
    report = json.loads((out / "build.json").read_text(encoding="utf-8"))
    text = ftdata.load_tokenizer(tokenizer).decode(result.dataset[0]["input_ids"])
    return report, text


def test_a_build_that_writes_the_day_is_built_again_the_next_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    set_day(monkeypatch, datetime.date(2026, 11, 26))
    first, text = _build(tmp_path, LLAMA)
    assert "Today Date: 26 Nov 2026" in text and not first["cached"]
    clock = [i for i in first["inputs"] if i["kind"] == "clock"]
    assert [c["name"] for c in clock] == ["strftime_now('%d %b %Y') = 26 Nov 2026"]
    again, _ = _build(tmp_path, LLAMA)
    assert again["cached"] and again["fingerprint"] == first["fingerprint"]  # the same day: the same build
    set_day(monkeypatch, datetime.date(2026, 11, 27))
    tomorrow, text = _build(tmp_path, LLAMA)
    assert "Today Date: 27 Nov 2026" in text  # not yesterday's rows from the cache
    assert not tomorrow["cached"] and tomorrow["fingerprint"] != first["fingerprint"]


def test_a_template_without_a_clock_keys_as_before_on_any_day(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_day(monkeypatch, datetime.date(2026, 11, 26))
    first, _ = _build(tmp_path, None)
    assert [i["kind"] for i in first["inputs"]] == ["data", "tokenizer"]
    set_day(monkeypatch, datetime.date(2026, 11, 27))
    again, _ = _build(tmp_path, None)
    assert again["cached"] and again["fingerprint"] == first["fingerprint"]
