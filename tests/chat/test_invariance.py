"""Invariance: what an assistant turn trains never depends on the words of other messages.

A metamorphic property over every chat template of both corpora (TRL's shipped originals on
the shared tokenizers, and the served corpus in tests/templates/served, thinking on and off):
take a record (plain, a tool call, reasoning) that trains with benign user, system and tool texts, replace those texts with
text drawn from fragments of the template's own markup (its string literals, its rendered
scaffold, marker words: "TEXT", "START", "ink", "<|", "think", "assistant", "\\n", ...) and
with arbitrary text, and the trained text of every assistant turn must stay the same, and the
record must still train.

Two kinds of replacement text are left out, by design, not by tolerance:
- control-token text (`<|im_end|>` in a user turn): rejected by the `special_tokens_in_data`
  option's default;
- text the template itself does not write as opaque data: the property holds where the
  template writes the text as given (or trimmed) in the place of a private sentinel and
  nothing else changes. A template that reads a user's words (Qwen3 looks for
  `<tool_response>` in user turns) may render the assistant turns differently, and then the
  trained text is rightly different.

The default run draws a few examples per template (fixed seed, no database); the `slow`
variant draws many more.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from support import TOKENIZERS, matrix_module, tokenizer

from ftdata.errors import FtdataError, Location, UnusableRecord
from ftdata.outcomes import RejectCode
from ftdata.run.stage import Stage
from ftdata.types import IGNORE_INDEX

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")
MATRIX = matrix_module()

# Words that open, close or name the template's markup, whatever the template.
MARKER_WORDS = ("TEXT", "START", "RESPONSE", "ink", "think", "<think>", "</think>", "<|", "|>", "<", ">", "assistant",
                "user", "system", "tool", "model", "\n", "\n\n", " ", "[", "]", "/", "#", "im", "end", "turn")  # fmt: skip
# The pieces a template's text splits into: tags, words, punctuation runs, whitespace runs.
PIECE = re.compile(r"<[^<>\s]{1,40}>|\[[A-Za-z_/]{2,20}\]|[^\W_]+|_+|[^\w\s]+|\s+")
# String literals in Jinja code, and the raw text between Jinja blocks.
LITERAL = re.compile(r"'((?:[^'\\]|\\.)*)'|\"((?:[^\"\\]|\\.)*)\"")
BLOCK = re.compile(r"\{%.*?%\}|\{\{.*?\}\}|\{#.*?#\}", re.S)

BENIGN = {"system": "You answer briefly.", "user": ("Name a colour.", "Another one?"), "tool": "18 degrees"}
CITY = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}  # fmt: skip


def plain_record(system: str, user1: str, user2: str) -> dict[str, Any]:
    return {"messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": user1}, {"role": "assistant", "content": "Blue is one."},
        {"role": "user", "content": user2}, {"role": "assistant", "content": "Green works too."}]}  # fmt: skip


def call_record(user: str, result: str) -> dict[str, Any]:
    call = {"id": "call0abcd", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    return {"tools": [CITY], "messages": [
        {"role": "user", "content": user},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call0abcd", "name": "get_weather", "content": result},
        {"role": "assistant", "content": "It is mild in Paris."}]}  # fmt: skip


def reasoning_record(user1: str, user2: str) -> dict[str, Any]:
    return {"messages": [
        {"role": "user", "content": user1},
        {"role": "assistant", "content": "It is 5.", "reasoning_content": "Two plus three makes five."},
        {"role": "user", "content": user2},
        {"role": "assistant", "content": "It is 8.", "reasoning_content": "Four plus four makes eight."}]}  # fmt: skip


def variants() -> list[Any]:
    """(id, kind, case, kwargs) for every template of both corpora and its thinking settings."""
    out = []
    for case in MATRIX.cases(tokenizer):
        if not case.skip:
            out += [pytest.param("trl", case, kw, id=f"trl:{case.name}{_flag(kw)}") for kw in MATRIX.thinking_variants(case)]
    for case in MATRIX.served_cases():
        for kw in case.kwargs:
            kw = {**MATRIX.PINNED, **kw} if "date_string" in case.source else kw
            out.append(pytest.param("served", case, kw, id=f"served:{MATRIX.variant_id(case, kw)}"))
    return out


def _flag(kwargs: dict[str, Any]) -> str:
    return {True: "-think", False: "-nothink"}.get(kwargs.get("enable_thinking", kwargs.get("thinking")), "")


@cache
def _variants() -> list[Any]:
    return variants() if TOKENIZERS.is_dir() else []


def on(kind: str, case: Any) -> Any:
    """The context manager that sets the case's template (and tokens) on its tokenizer."""
    return MATRIX.template_on(case, tokenizer) if kind == "trl" else MATRIX.served_on(case)


_STAGES: dict[str, Stage] = {}


def stage_for(kind: str, case: Any, kwargs: dict[str, Any], tok: Any) -> Stage:
    """The variant's Stage, built once (marker detection is most of a variant's cost). Use it only
    inside `on(kind, case)`: the served cases share one tokenizer, whose template that sets."""
    key = f"{kind}:{case.name}:{sorted(kwargs.items())}"
    if key not in _STAGES:
        _STAGES[key] = Stage(tok, MATRIX.build_options(kwargs, getattr(case, "stop_tokens", ())))
    return _STAGES[key]


def trained_runs(stage: Stage, record: dict[str, Any]) -> list[str] | UnusableRecord:
    """The text of each run of trained tokens, decoded; or the rejection."""
    try:
        (example,) = stage.examples(Location("invariance"), record)
        result = stage.masker([stage.renderer(example)])[0]
    except UnusableRecord as exc:
        return exc
    if isinstance(result, UnusableRecord):
        return result
    runs: list[list[int]] = []
    for k, (token, label) in enumerate(zip(result.input_ids, result.labels)):
        if label == IGNORE_INDEX:
            continue
        if runs and runs[-1][0] == k - 1:
            runs[-1] = [k, *runs[-1][1:], token]
        else:
            runs.append([k, token])
    decode = stage.tokenizer.decode
    return [decode(run[1:], skip_special_tokens=False, clean_up_tokenization_spaces=False) for run in runs]


def fragments(source: str, rendered: str) -> list[str]:
    """Pieces of the template's own text: its string literals and raw text, and its rendered scaffold."""
    texts = [a or b for a, b in LITERAL.findall(source)]
    texts += BLOCK.split(source)
    texts.append(rendered)
    found = {p for t in texts for p in PIECE.findall(t.replace("\\n", "\n"))}
    found |= {t for t in texts if 0 < len(t) <= 40}
    return sorted(found | set(MARKER_WORDS))


def texts(frags: list[str]) -> st.SearchStrategy[str]:
    """Text made of markup fragments (whole or cut) and arbitrary characters."""
    cut = st.sampled_from(frags).flatmap(
        lambda f: st.tuples(st.integers(0, len(f) - 1), st.integers(1, len(f))).map(lambda ij: f[ij[0] : max(ij)] or f)
    )
    arbitrary = st.text(st.characters(exclude_categories=("Cs", "Co")), min_size=1, max_size=8)
    return st.lists(st.one_of(st.sampled_from(frags), cut, arbitrary), min_size=1, max_size=4).map("".join)


def writes_as_given(stage: Stage, record: dict[str, Any], fields: dict[tuple[int, str], str]) -> bool:
    """Whether the template writes each replaced text as given (or trimmed) in the place of a
    private sentinel, and nothing else of the rendering changes."""
    renderer = stage.renderer
    try:
        (example,) = stage.examples(Location("invariance"), record)
        msgs = renderer.chat_messages(example)
        tools = list(example.tools) or None
        text = renderer.chat(msgs, tools=tools)
        marks = {}
        for n, (i, key) in enumerate(fields):
            marks[chr(0xF0000 + n)] = msgs[i][key]
            msgs[i] = {**msgs[i], key: chr(0xF0000 + n)}
        skeleton = renderer.chat(msgs, tools=tools)
    except FtdataError:
        return False
    forms = [lambda s: s, str.strip]
    for form in forms:
        out = skeleton
        for mark, value in marks.items():
            out = out.replace(mark, form(value))
        if out == text:
            return True
    return False


def check_template(kind: str, case: Any, kwargs: dict[str, Any], *, examples: int) -> None:
    with ExitStack() as stack:
        tok = stack.enter_context(on(kind, case))
        stage = stage_for(kind, case, kwargs, tok)
        markers = stage.renderer.markers
        if markers is None:
            pytest.skip("no chat template")
        controls = stage.renderer.controls
        shapes = {"plain": (plain_record, ((0, "content"), (1, "content"), (3, "content")))}
        if markers.tool_arguments and markers.renders_tools:
            shapes["call"] = (call_record, ((0, "content"), (2, "content")))
        if markers.renders_reasoning:
            shapes["reasoning"] = (reasoning_record, ((0, "content"), (2, "content")))
        benign_args = {"plain": (BENIGN["system"], *BENIGN["user"]), "call": (BENIGN["user"][0], BENIGN["tool"]),
                       "reasoning": BENIGN["user"]}  # fmt: skip
        expected = {}
        for name in shapes:
            make = shapes[name][0]
            got = trained_runs(stage, make(*benign_args[name]))
            if not isinstance(got, UnusableRecord):
                expected[name] = got
        if not expected:
            pytest.skip("no probe record trains with benign text")
        benign_render = tok.apply_chat_template(plain_record(BENIGN["system"], *BENIGN["user"])["messages"], tokenize=False, **kwargs) if "plain" in expected else ""
        frags = fragments(case.source, benign_render)

        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(st.sampled_from(sorted(expected)), st.lists(texts(frags), min_size=3, max_size=3))
        @example("plain", ["START", "\nSTART", "ink"])  # inside <|START_RESPONSE|>, <think>
        @example("call", ["|", "/", "turn"])  # inside <|tool_call>, </think>, <|turn>
        def prop(name: str, drawn: list[str]) -> None:
            if name not in expected:
                return
            make, fields = shapes[name]
            drawn = drawn[: len(fields)]
            assume(all(t.strip() for t in drawn) and not any(c in t for c in controls for t in drawn))
            record = make(*drawn)
            assume(writes_as_given(stage, record, dict(zip(fields, drawn))))
            got = trained_runs(stage, record)
            assert not isinstance(got, UnusableRecord), f"{name} with {drawn!r}: rejected ({got.reason}); benign text trains {expected[name]!r}"
            assert got == expected[name], f"{name} with {drawn!r}"

        prop()


@pytest.mark.parametrize(("kind", "case", "kwargs"), _variants())
def test_trained_text_does_not_depend_on_other_messages_words(kind, case, kwargs):
    check_template(kind, case, kwargs, examples=3)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "case", "kwargs"), _variants())
def test_trained_text_does_not_depend_on_other_messages_words_at_length(kind, case, kwargs):
    check_template(kind, case, kwargs, examples=150)


def long_record(turns: int) -> dict[str, Any]:
    """A system prompt and `turns` exchanges, with markup-like words in the user turns."""
    messages = [{"role": "system", "content": BENIGN["system"]}]
    for k in range(turns):
        messages += [{"role": "user", "content": f"{MARKER_WORDS[k % len(MARKER_WORDS)]} question {k}"},
                     {"role": "assistant", "content": f"Answer {k}."}]  # fmt: skip
    return {"messages": messages}


@pytest.mark.parametrize(("kind", "case", "kwargs"), _variants())
def test_a_long_conversation_trains_as_each_turn_rendered_alone_would(kind, case, kwargs, monkeypatch):
    """From `turns.LONG` plain turns on, a prefix-stable conversation's inference prompts are located
    in a bounded number of renders: the spans must be those of rendering every prefix."""
    import ftdata.chat.turns as turns

    with on(kind, case) as tok:
        stage = stage_for(kind, case, kwargs, tok)
        record = long_record(turns.LONG)
        fast = trained_runs(stage, record)
        monkeypatch.setattr(turns, "LONG", 10**9)
        slow = trained_runs(stage, record)
    if isinstance(slow, UnusableRecord):
        assert isinstance(fast, UnusableRecord) and fast.reason == slow.reason
    else:
        assert fast == slow
