"""Reasoning inside the content (`<think>…</think>answer`, as R1 distills store it) is the turn's reasoning.

The reference is the same record with its reasoning in `reasoning_content`: on every served template that
writes reasoning the think-in-content record must build exactly its rows, token for token (test_trajectory
holds those rows to the independent oracle, and holds the think-in-content records on every TRL and served
template to it too: benchmarks/template_matrix.py --history). On a template that never writes
reasoning the content stays as the data gave it: trained as text, or rejected where `<think>` is a control
token of the tokenizer, as before.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import TOKENIZERS, matrix_module, tokenizer
from test_chat_tools import template_tokenizer
from test_trajectory import PINNED, TEMPLATES, THINK, assistant, conversations, runs, user

import ftdata
from ftdata.chat.think import moved as moved_notes
from ftdata.errors import Location
from ftdata.options import DataOptions
from ftdata.run.stage import Stage
from ftdata.run.sft import Measured

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

MATRIX = matrix_module()


def stripped(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Reasoning without its edge whitespace, contents without leading whitespace: a think block's newlines
    are its syntax's (`<think>\\n…\\n</think>\\n\\n`), not the reasoning's."""
    return [m | {"reasoning_content": m["reasoning_content"].strip(), "content": m["content"].lstrip()} if m.get("reasoning_content")
            else m for m in messages]  # fmt: skip


def in_content(messages: list[dict[str, Any]], turns: set[int] | None = None) -> list[dict[str, Any]]:
    """The record with the reasoning of `turns` (default: every turn that has one) written into the content."""
    out = []
    for i, m in enumerate(messages):
        if m.get("reasoning_content") and (turns is None or i in turns):
            m = {k: v for k, v in m.items() if k != "reasoning_content"} | {
                "content": f"<think>\n{m['reasoning_content']}\n</think>\n\n{m['content'] or ''}"}  # fmt: skip
        out.append(m)
    return out


def rows(stage: Stage, record: dict[str, Any]) -> list[Any]:
    """Each row's (input_ids, labels), or the reject's code."""
    outcomes = stage.run([(Location("t.jsonl", line=1), record)]).outcomes
    return [(list(i.tokenized.input_ids), list(i.tokenized.labels)) if isinstance(i, Measured) else i.code.value for _, i, _ in outcomes]


def stage_of(tok, **options: Any) -> Stage:
    return Stage(tok, DataOptions(max_length=8192, chat_template_kwargs=PINNED, **options))


# ---------------------------------------------------------------- literal records


def test_the_issues_record_trains_like_its_reasoning_content_form_instead_of_being_rejected() -> None:
    """On a Qwen3 tokenizer `<think>` is a control token: the record was rejected whole. Now both turns are
    trained with their reasoning, each as inference sees it, in the rows of the reasoning_content form."""
    tok = TEMPLATES["qwen3"][0]()
    messages = [user("What is 2+2?"), assistant("4", "Add two and two."), user("And 3+3?"), assistant("6", "Add three and three.")]
    stage = stage_of(tok)
    assert rows(stage, {"messages": in_content(messages)}) == rows(stage, {"messages": messages})
    first, second = (item for _, item, _ in stage.run([(Location("t.jsonl", line=1), {"messages": in_content(messages)})]).outcomes)
    assert runs(tok, second)[0][1] == "<think>\nAdd two and two.\n</think>\n\n4<|im_end|>"
    assert [n.text for n in first.tokenized.notes] == [
        "messages[3]: the leading <think>…</think> of the content is the turn's reasoning; the chat template writes it"]


def test_a_template_that_writes_reasoning_from_reasoning_content_only_trains_one_think_block() -> None:
    """TRL's qwen3_6 does not parse the content: left there, the block came after the template's own empty one."""
    tok = TEMPLATES["qwen3_6"][0]()
    (item,) = (i for _, i, _ in stage_of(tok).run([(Location("t", line=1), {"messages": [
        user("2+2?"), assistant("<think>\nAdd.\n</think>\n\n4")]})]).outcomes)  # fmt: skip
    (trained,) = [text for _, text in runs(tok, item)]
    assert trained == "Add.\n</think>\n\n4<|im_end|>" and runs(tok, item)[0][0].endswith("<think>\n")


def test_gpt_oss_writes_the_moved_reasoning_in_its_analysis_channel() -> None:
    tok = TEMPLATES["gptoss"][0]()
    (item,) = (i for _, i, _ in stage_of(tok).run([(Location("t", line=1), {"messages": [
        user("2+2?"), assistant("<think>Add.</think>4")]})]).outcomes)  # fmt: skip
    (trained,) = [text for _, text in runs(tok, item)]
    assert trained == "<|channel|>analysis<|message|>Add.<|end|><|start|>assistant<|channel|>final<|message|>4<|return|>"


def test_a_template_without_reasoning_trains_the_content_as_the_data_gave_it() -> None:
    tok = tokenizer("llama-3.2-instruct")
    (item,) = (i for _, i, _ in stage_of(tok).run([(Location("t", line=1), {"messages": [
        user("2+2?"), assistant("<think>Add.</think>4")]})]).outcomes)  # fmt: skip
    assert [text for _, text in runs(tok, item)] == ["<think>Add.</think>4<|eot_id|>"] and not item.tokenized.notes


def test_a_template_without_reasoning_rejects_a_think_control_token_as_before() -> None:
    tok = template_tokenizer("qwen2_5", THINK)  # `<think>` is a token; Qwen2.5's template writes no reasoning
    (reject,) = (i for _, i, _ in stage_of(tok).run([(Location("t", line=1), {"messages": [
        user("2+2?"), assistant("<think>Add.</think>4")]})]).outcomes)  # fmt: skip
    assert reject.code.value == "control_token" and "think>'" in reject.reason


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("4 <think>x</think>", None),  # not leading: the answer's own text
        ("<think>unclosed", None),
        ("  \n<think>\n\n</think>\n\n4", ("", "4")),  # an empty block: no reasoning, the template writes its own
        ("<think>a</think>b</think>c", ("a", "b</think>c")),  # up to the first closer
    ],
)
def test_only_a_leading_closed_block_moves(content: str, expected: tuple[str, str] | None) -> None:
    from ftdata.chat.think import lift
    from ftdata.types import Example, Message

    example = Example((Message("user", "q"), Message("assistant", content)), Location("t"))
    lifted, turns = lift(example)
    if expected is None:
        assert lifted is example and turns == ()
    else:
        assert ((lifted.messages[1].reasoning or ""), lifted.messages[1].content) == expected and turns == (1,)


def test_a_turn_with_reasoning_already_or_with_character_spans_is_left_as_it_is() -> None:
    from ftdata.chat.think import lift
    from ftdata.types import Example, Message, TrainSpan

    example = Example((Message("user", "q"), Message("assistant", "<think>a</think>b", reasoning="r"),
                       Message("assistant", "<think>a</think>b", train_detail=(TrainSpan(0, 3, True),))), Location("t"))  # fmt: skip
    assert lift(example) == (example, ())


def test_a_build_counts_the_moved_turns_and_a_preference_pair_moves_them_too(tmp_path) -> None:
    tok = TEMPLATES["qwen3"][0]()
    chats = tmp_path / "chats.jsonl"
    records = [{"messages": in_content([user(f"q{k}"), assistant(f"a{k}", f"r{k}"), user("p"), assistant(f"b{k}", f"s{k}")])}
               for k in range(4)]  # fmt: skip
    chats.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    report = ftdata.build(chats, tokenizer=tok).report
    assert (report.reasoning_moved, report.sequences, report.n_rejected) == (8, 8, 0)
    assert "8 think blocks moved into reasoning" in report.summary()

    pairs = tmp_path / "pairs.jsonl"
    prompt = [user("2+2?")]
    good, bad = assistant("4", "Two and two."), assistant("5", "Guess.")
    pairs.write_text(json.dumps({"chosen": [*prompt, good], "rejected": [*prompt, bad]}) + "\n"
                     + json.dumps({"chosen": in_content([*prompt, good]), "rejected": in_content([*prompt, bad])}) + "\n",
                     encoding="utf-8")  # fmt: skip
    built = ftdata.build(pairs, tokenizer=tok, task="preference").dataset
    rows_ = built["train"].to_list() if hasattr(built, "keys") else built.to_list()
    assert len(rows_) == 2 and {k: v for k, v in rows_[0].items() if k.endswith("_ids")} == {
        k: v for k, v in rows_[1].items() if k.endswith("_ids")}  # fmt: skip


# ---------------------------------------------------------------- every template


def _check(stage: Stage, name: str) -> str:
    """"" when the think-in-content forms of the reasoning probes build as they must on `stage`, else why not."""
    for probe in ("reasoning", "reasoning+call"):
        record = MATRIX.SERVED_PROBES[probe]
        given = rows(stage, record)
        moved = rows(stage, {**record, "messages": in_content(record["messages"])})
        # Gemma 4 and Command R7B write reasoning only on turns that call tools: a plain turn's block stays content.
        if stage.renderer.markers.renders_reasoning and (stage.renderer.plain_reasoning or probe != "reasoning"):
            if moved != given:
                return f"{name} {probe}: the think-in-content rows differ from the reasoning_content rows"
        else:  # the content as the data gave it, untouched (trained as text, dropped by the template, or rejected)
            outcomes = stage.run([(Location("t.jsonl", line=1), {**record, "messages": in_content(record["messages"])})]).outcomes
            if any(isinstance(i, Measured) and i.tokenized.notes and moved_notes(i.tokenized.notes) for _, i, _ in outcomes):
                return f"{name} {probe}: a template that writes no reasoning had a think block moved"
            if any("does not write its reasoning" in getattr(i, "reason", "") for _, i, _ in outcomes):
                return f"{name} {probe}: a think block kept as content was rejected as reasoning the template does not write"
    return ""


def test_every_served_template_trains_think_in_content_as_it_trains_reasoning_content() -> None:
    from ftdata.errors import FtdataError

    failures, writes = [], 0
    for case in MATRIX.served_cases():
        with MATRIX.served_on(case) as tok:
            for kwargs in case.kwargs:
                kwargs = {**MATRIX.PINNED, **kwargs} if "date_string" in case.source else kwargs
                try:
                    stage = Stage(tok, MATRIX.build_options(kwargs, case.stop_tokens))
                except FtdataError:
                    continue
                writes += stage.renderer.markers.renders_reasoning
                failures.append(_check(stage, MATRIX.variant_id(case, kwargs)))
    assert not any(failures), [f for f in failures if f]
    assert writes >= 20  # the corpus's reasoning templates were all checked, not skipped


@pytest.mark.parametrize("name", ["qwen3", "qwen3_6", "gptoss", "glm4moe"])
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_moving_some_turns_reasoning_into_the_content_changes_no_row(name, data) -> None:
    """Metamorphic: any subset of a conversation's reasoning written as `<think>` blocks in the content builds
    the same rows as the reasoning_content form (agent loops with calls, several user queries, system prompts)."""
    tok = TEMPLATES[name][0]()
    messages = stripped(data.draw(conversations(tools=True)))
    reasoned = [i for i, m in enumerate(messages) if m.get("reasoning_content")]
    turns = set(data.draw(st.lists(st.sampled_from(reasoned), unique=True))) if reasoned else set()
    stage = stage_of(tok)
    assert rows(stage, {"messages": in_content(messages, turns)}) == rows(stage, {"messages": messages})
