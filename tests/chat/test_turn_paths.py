"""A long conversation's turns, located in a bounded number of renders, train exactly as rendering
every inference prompt P_i does.

From `turns.LONG` assistant turns of a kind on, `ChatSpans` takes P_i from structure (`prompt_ends`
where a template is prefix-stable, `prompt_tails` where it is not), a plain turn's content from
one skeleton render and the data of a turn with reasoning or calls from two (`long_records.locate`).
A Hypothesis property over the chat templates of both corpora: random conversations (plain,
tool-call and reasoning turns, where the template writes them; system, user and tool texts, the
reasoning and the call arguments drawn from fragments of the template's own markup and arbitrary
text) give the same input ids and labels, or the same rejection, both ways; and the number of
renders does not grow with the conversation. The default run covers the
templates that are not prefix-stable (the fallback path) with a few examples each; `-m slow`
covers every template with many more.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import TOKENIZERS
from test_invariance import BENIGN, CITY, _variants, fragments, on, stage_for, texts

import ftdata.chat.turns as turns
from ftdata.chat import long_records
from ftdata.chat.renderer import Bound
from ftdata.errors import Location, UnusableRecord
from ftdata.run.stage import Stage

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")


def outcome(stage: Stage, record: dict[str, Any]) -> tuple[Any, ...]:
    """(input ids, labels, method) of the record's row, or (reject code, reason)."""
    try:
        (example,) = stage.examples(Location("paths"), record)
        rendered = stage.renderer(example)
        row = stage.masker([rendered])[0]
    except UnusableRecord as exc:
        return exc.code, exc.reason
    if isinstance(row, UnusableRecord):
        return row.code, row.reason
    return tuple(row.input_ids), tuple(row.labels), rendered.method


def conversation(draw: Any, text: st.SearchStrategy[str], kinds: list[str], exchanges: int) -> dict[str, Any]:
    """A system prompt (or none) and `exchanges` exchanges whose assistant turns are of `kinds`; the
    arguments of the calls (one or two per turn, some with text) and the reasoning are drawn too."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(text)})
    for k in range(exchanges):
        messages.append({"role": "user", "content": draw(text)})
        kind = draw(st.sampled_from(kinds))
        if kind == "call":
            calls = [{"id": f"call{k:05d}{c}", "type": "function", "function": {"name": "get_weather",
                      "arguments": {"city": draw(st.one_of(st.just("Paris"), text))}}}
                     for c in range(draw(st.integers(1, 2)))]  # fmt: skip
            said = draw(st.sampled_from([None, "Let me check."]))
            messages.append({"role": "assistant", "content": said, "tool_calls": calls})
            messages += [{"role": "tool", "tool_call_id": c["id"], "name": "get_weather", "content": draw(text)} for c in calls]
        reasoning = {"reasoning_content": draw(st.one_of(st.just(f"Step {k} first."), text))} if kind == "reasoning" else {}
        messages.append({"role": "assistant", "content": f"Answer {k}.", **reasoning})
    return {"messages": messages, **({"tools": [CITY]} if "call" in kinds else {})}


def kinds_of(markers: Any) -> list[str]:
    """The kinds of assistant turn the template writes: plain, tool calls, reasoning."""
    kinds = ["plain"]
    if markers.tool_arguments and markers.renders_tools:
        kinds.append("call")
    if markers.renders_reasoning:
        kinds.append("reasoning")
    return kinds


def given_texts(record: dict[str, Any]) -> list[str]:
    """Every text of a record but the assistant's contents: what the user, the tools and the data gave."""
    out = []
    for m in record["messages"]:
        if m["role"] != "assistant":
            out.append(m["content"])
        out += [m.get("reasoning_content") or "", *(c["function"]["arguments"]["city"] for c in m.get("tool_calls") or ())]
    return out


def check_paths(kind: str, case: Any, kwargs: dict[str, Any], *, examples: int, fallback_only: bool) -> None:
    with on(kind, case) as tok:
        stage = stage_for(kind, case, kwargs, tok)
        markers = stage.renderer.markers
        if markers is None:
            pytest.skip("no chat template")
        if fallback_only and markers.prefix_stable:
            pytest.skip("prefix-stable: covered by the slow run and test_invariance's long conversation")
        kinds = kinds_of(markers)
        controls = stage.renderer.controls
        text = st.one_of(st.just(BENIGN["user"][0]), texts(fragments(case.source, "")))

        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(st.data())
        def prop(data: Any) -> None:
            # enough exchanges that each kind of turn reaches LONG now and then (kinds are located apart)
            record = conversation(data.draw, text, kinds, data.draw(st.integers(turns.LONG, 2 * turns.LONG + 2)))
            said = [m["content"] for m in record["messages"] if m["role"] != "assistant"]
            assume(all(t.strip() for t in said) and not any(c in t for c in controls for t in given_texts(record)))
            fast = outcome(stage, record)
            long = turns.LONG
            turns.LONG = 10**9  # every prefix rendered, every content located by its own render
            try:
                slow = outcome(stage, record)
            finally:
                turns.LONG = long
            assert fast == slow, f"{record['messages']!r}"

        prop()


@pytest.mark.parametrize(("kind", "case", "kwargs"), _variants())
def test_long_conversations_train_as_every_prefix_rendered(kind, case, kwargs):
    check_paths(kind, case, kwargs, examples=3, fallback_only=True)


@pytest.mark.slow
@pytest.mark.parametrize(("kind", "case", "kwargs"), _variants())
def test_long_conversations_train_as_every_prefix_rendered_at_length(kind, case, kwargs):
    check_paths(kind, case, kwargs, examples=40, fallback_only=False)


class Counted:
    """A renderer that counts its renders (a watched render of `ftdata.chat.prefixes` too)."""

    def __init__(self, render: Any):
        self.render, self.calls = render, 0

    def __call__(self, *args: Any, **kwargs: Any) -> str:
        self.calls += 1
        return self.render(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.render, name)

    def bind(self, msgs: Any, **options: Any) -> Any:
        """The renderer bound to one conversation (`ChatRenderer.bind`), its renders counted too."""
        bound = Bound(self, msgs, **options)
        watched = bound._direct.watched

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return watched(*args, **kwargs)

        bound._direct.watched = counted  # type: ignore[method-assign]
        return bound


def cycled(kinds: list[str], exchanges: int) -> dict[str, Any]:
    """`exchanges` exchanges whose assistant turns take `kinds` in turn (a call turn: one call)."""
    messages: list[dict[str, Any]] = []
    for k in range(exchanges):
        messages.append({"role": "user", "content": f"What now, {k}?"})
        kind = kinds[k % len(kinds)]
        if kind == "call":
            calls = [{"id": f"call{k:05d}{c}", "type": "function",
                      "function": {"name": "get_weather", "arguments": {"city": f"City {k}{c}"}}} for c in range(1)]  # fmt: skip
            messages.append({"role": "assistant", "content": None, "tool_calls": calls})
            messages += [{"role": "tool", "tool_call_id": c["id"], "name": "get_weather", "content": f"sunny {k}"} for c in calls]
        reasoning = {"reasoning_content": f"Step {k} first."} if kind == "reasoning" else {}
        messages.append({"role": "assistant", "content": f"Answer {k}.", **reasoning})
    return {"messages": messages, **({"tools": [CITY]} if "call" in kinds else {})}


BOUNDED = ["trl:qwen2_5", "trl:qwen3-think", "trl:qwen3-nothink", "trl:gptoss", "trl:nemotron_3_nano-think",
           "served:deepseek-v3.2-think", "served:qwen3-coder", "served:glm-4.7-flash-think", "served:hermes-3-tool-use"]  # fmt: skip


@pytest.mark.parametrize(("kind", "case", "kwargs"), [v for v in _variants() if v.id in BOUNDED])
def test_renders_of_a_conversation_with_calls_and_reasoning_do_not_grow_with_it(kind, case, kwargs, monkeypatch):
    """A record of 24 exchanges and one of 48 (tool calls, results, reasoning, answers, each where the
    template writes them) take the same number of renders, and train as rendering every prefix does.
    (4 prompts checked per group here instead of 16: the groups outgrow them at these sizes.) Locating
    one row: history=one_row (under history=inference a template that rewrites history makes a row per
    exchange here, each rendered; test_history_check_of_a_prefix_stable_template_does_not_grow_either)."""
    monkeypatch.setattr(long_records, "SAMPLES", 4)
    with on(kind, case) as tok:
        stage = Stage(tok, replace(stage_for(kind, case, kwargs, tok).options, history="one_row"))
        kinds = kinds_of(stage.renderer.markers)
        spans = stage.renderer.spans
        counted = Counted(spans.render)
        monkeypatch.setattr(spans, "render", counted)
        renders = []
        for n in (24, 48):
            record = cycled(kinds, n)
            counted.calls = 0
            fast = outcome(stage, record)
            renders.append(counted.calls)
            with monkeypatch.context() as every_prefix:
                every_prefix.setattr(turns, "LONG", 10**9)
                assert outcome(stage, record) == fast
            assert isinstance(fast[0], tuple), fast  # trained, not rejected
    assert len(kinds) > 1 and renders[0] == renders[1] < 100, renders


@pytest.mark.parametrize(("kind", "case", "kwargs"), [v for v in _variants() if v.id in ("trl:qwen2_5", "served:hermes-3-tool-use")])
def test_history_check_of_a_prefix_stable_template_does_not_grow_either(kind, case, kwargs, monkeypatch):
    """history=inference checks each trained history turn against its render as the last turn; on a template
    that keeps history intact a long record's groups are checked by samples (`ChatSpans._held`): 24 and 48
    exchanges take the same number of renders, and stay one row."""
    monkeypatch.setattr(long_records, "SAMPLES", 4)
    with on(kind, case) as tok:
        stage = Stage(tok, replace(stage_for(kind, case, kwargs, tok).options, history="inference"))
        spans = stage.renderer.spans
        counted = Counted(spans.render)
        monkeypatch.setattr(spans, "render", counted)
        renders = []
        for n in (24, 48):
            counted.calls = 0
            (example,) = stage.examples(Location("paths"), cycled(kinds_of(stage.renderer.markers), n))
            assert not stage.renderer(example).unheld
            renders.append(counted.calls)
    assert renders[0] == renders[1] < 150, renders


@pytest.mark.parametrize(("kind", "case", "kwargs"), [v for v in _variants() if v.id in ("served:reka-edge", "trl:qwen2_5", "trl:qwen3-think")])
def test_skeleton_sentinels_past_the_bmp_locate_as_the_first_ones_do(kind, case, kwargs, monkeypatch):
    """A long record's skeletons need a sentinel per piece: past 6,400 of them they are drawn from
    the planes beyond the BMP, which JSON escapes as a surrogate pair (Reka Edge writes the arguments
    with tojson(ensure_ascii=True)). Taken there, they locate what the BMP's do; one written escaped
    sends its turns to their own renders, never to a wrong verdict. Here every skeleton sentinel is
    taken past the BMP."""

    monkeypatch.setattr(long_records, "free_marks", lambda text: (chr(c) for c in range(0xF0000, 0xFFFFE) if chr(c) not in text))
    with on(kind, case) as tok:
        stage = stage_for(kind, case, kwargs, tok)
        record = cycled(kinds_of(stage.renderer.markers), 12)
        fast = outcome(stage, record)
        monkeypatch.setattr(turns, "LONG", 10**9)
        assert outcome(stage, record) == fast
    assert isinstance(fast[0], tuple), fast


@pytest.mark.parametrize(("kind", "case", "kwargs"), [v for v in _variants() if v.id in ("trl:qwen3-think", "trl:qwen3_8-think", "served:seed-oss")])
def test_a_long_records_masked_reasoning_ends_where_its_own_renders_end_it(kind, case, kwargs, monkeypatch):
    """mask_reasoning=True: a long record's reasoning ends are taken from the skeleton, not from a
    render per turn; the labels are those of rendering every prefix, and fewer are trained than
    without the option (Qwen3 writes the last turn's reasoning, Qwen3-8B's and Seed-OSS's every turn's)."""
    from dataclasses import replace

    from test_invariance import MATRIX

    with on(kind, case) as tok:
        stage = Stage(tok, replace(MATRIX.build_options(kwargs, getattr(case, "stop_tokens", ())), mask_reasoning=True))
        record = cycled(["reasoning", "plain"], 13)
        fast, unmasked = outcome(stage, record), outcome(stage_for(kind, case, kwargs, tok), record)
        monkeypatch.setattr(turns, "LONG", 10**9)
        assert outcome(stage, record) == fast
    assert isinstance(fast[0], tuple) and sum(l != -100 for l in fast[1]) < sum(l != -100 for l in unmasked[1])


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(st.sampled_from(["a", "\n", "\ue000", "\ue001", "\U000f0000", "]", "^", "-", "\\", "["]), max_size=40),
    marks=st.lists(st.sampled_from(["\ue000", "\ue001", "\U000f0000", "]", "^", "-", "\\", "[", "ab"]), max_size=5),
)
def test_marks_are_found_where_a_walk_over_the_characters_finds_them(text, marks):
    """`long_records._positions` (one regular-expression scan) against a walk over every character; marks that are
    regular-expression syntax in a character class, and a mark of two characters (never one character), included."""
    walked: dict[str, list[int]] = {}
    for k, ch in enumerate(text):
        if ch in marks:
            walked.setdefault(ch, []).append(k)
    assert long_records._positions(text, dict.fromkeys(marks)) == walked
