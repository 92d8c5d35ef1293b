"""A long conversation's turns, located in a bounded number of renders, train exactly as rendering
every inference prompt P_i does.

From `turns.LONG` plain assistant turns on, `ChatSpans` takes P_i from structure (`prompt_ends`
where a template is prefix-stable, `prompt_tails` where it is not) and a plain turn's content from
one skeleton render. A Hypothesis property over the chat templates of both corpora: random
conversations (plain, tool-call and reasoning turns, where the template writes them; system,
user and tool texts drawn from fragments of the template's own markup and arbitrary text) give
the same input ids and labels, or the same rejection, both ways. The default run covers the
templates that are not prefix-stable (the fallback path) with a few examples each; `-m slow`
covers every template with many more.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import TOKENIZERS
from test_invariance import BENIGN, CITY, _variants, fragments, on, stage_for, texts

import ftdata.chat.turns as turns
from ftdata.errors import Location, UnusableRecord
from ftdata.run.engine import Stage

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


def conversation(draw: Any, text: st.SearchStrategy[str], kinds: list[str]) -> dict[str, Any]:
    """A system prompt (or none) and LONG..LONG+3 exchanges whose assistant turns are of `kinds`."""
    messages: list[dict[str, Any]] = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(text)})
    for k in range(draw(st.integers(turns.LONG, turns.LONG + 3))):
        messages.append({"role": "user", "content": draw(text)})
        kind = draw(st.sampled_from(kinds))
        if kind == "call":
            call = {"id": f"call{k:05d}x", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
            messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": call["id"], "name": "get_weather", "content": draw(text)}]  # fmt: skip
        reasoning = {"reasoning_content": f"Step {k} first."} if kind == "reasoning" else {}
        messages.append({"role": "assistant", "content": f"Answer {k}.", **reasoning})
    return {"messages": messages, **({"tools": [CITY]} if "call" in kinds else {})}


def check_paths(kind: str, case: Any, kwargs: dict[str, Any], *, examples: int, fallback_only: bool) -> None:
    with on(kind, case) as tok:
        stage = stage_for(kind, case, kwargs, tok)
        markers = stage.renderer.markers
        if markers is None:
            pytest.skip("no chat template")
        if fallback_only and markers.prefix_stable:
            pytest.skip("prefix-stable: covered by the slow run and test_invariance's long conversation")
        kinds = ["plain"]
        if markers.tool_arguments and markers.renders_tools:
            kinds.append("call")
        if markers.renders_reasoning:
            kinds.append("reasoning")
        controls = stage.renderer.controls
        text = st.one_of(st.just(BENIGN["user"][0]), texts(fragments(case.source, "")))

        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(st.data())
        def prop(data: Any) -> None:
            record = conversation(data.draw, text, kinds)
            said = [m["content"] for m in record["messages"] if m["role"] != "assistant"]
            assume(all(t.strip() for t in said) and not any(c in t for c in controls for t in said))
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
