"""Agent trajectories in ATIF (the Agent Trajectory Interchange Format) as a first-class input.

A trajectory must build the rows its OpenAI-messages form builds (the same conversation, tools and train
flags), token for token: the messages form is held to the independent oracle by test_trajectory, so the
ATIF reader is tested against it. The spec's own rules are tested on literal trajectories: copied-context
steps and `llm_call_count: 0` dispatches are never trained, recorded `completion_token_ids` are compared
with the tokens trained. Fixtures are checked against the `atif` package's pydantic models (the spec's
reference implementation), so they are valid ATIF, not ftdata's idea of it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import ROOT, TOKENIZERS, tokenizer
from test_trajectory import PINNED, TEMPLATES, conversations, runs

import ftdata
from ftdata.errors import Location, RecordError
from ftdata.options import DataOptions
from ftdata.records.formats import to_examples
from ftdata.run.stage import Stage
from ftdata.run.sft import Measured

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

EXAMPLES = ROOT / "examples" / "atif"
BASH = {"type": "function", "function": {"name": "bash", "description": "Run a command.", "parameters": {
    "type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}}  # fmt: skip


def trajectory(steps: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    """An ATIF document, checked against the `atif` package's models where it is installed."""
    doc = {"schema_version": "ATIF-v1.8", "agent": {"name": "t", "version": "1", **({"tool_definitions": tools} if tools else {})},
           "steps": [{"step_id": k, **s} for k, s in enumerate(steps, start=1)], **extra}  # fmt: skip
    try:
        import atif
    except ImportError:
        return doc
    atif.Trajectory.model_validate(doc)
    return doc


def as_atif(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An OpenAI-messages conversation written as ATIF (written here, independently of ftdata's reader):
    each tool message becomes a result in the observation of the agent step that called it."""
    steps: list[dict[str, Any]] = []
    for m in messages:
        if m["role"] == "tool":
            steps[-1].setdefault("observation", {"results": []})["results"].append(
                {"source_call_id": m["tool_call_id"], "content": m["content"]})
            continue
        step: dict[str, Any] = {"source": {"assistant": "agent"}.get(m["role"], m["role"]), "message": m["content"]}
        if m.get("reasoning_content"):
            step["reasoning_content"] = m["reasoning_content"]
        if m.get("tool_calls"):
            step["tool_calls"] = [{"tool_call_id": c["id"], "function_name": c["function"]["name"],
                                   "arguments": c["function"]["arguments"]} for c in m["tool_calls"]]  # fmt: skip
        steps.append(step)
    return trajectory(steps, tools)


def rows(stage: Stage, record: Any) -> list[Any]:
    outcomes = stage.run([(Location("t.json", index=0), record)]).outcomes
    return [(list(i.tokenized.input_ids), list(i.tokenized.labels)) if isinstance(i, Measured) else i.code.value for _, i, _ in outcomes]


def with_ids(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls with ids and results naming them, as ATIF requires."""
    out, k = [], 0
    for m in messages:
        if m.get("tool_calls"):
            m = {**m, "tool_calls": [{**c, "id": f"call_{(k := k + 1)}"} for c in m["tool_calls"]]}
        elif m["role"] == "tool":
            m = {**m, "tool_call_id": f"call_{k}"}
        out.append(m)
    return out


# ---------------------------------------------------------------- literal trajectories


def test_steps_become_messages_with_results_tied_to_their_calls_and_the_agents_tools() -> None:
    doc = trajectory([
        {"source": "system", "message": "Use bash."},
        {"source": "user", "message": "Count the lines."},
        {"source": "agent", "message": "", "reasoning_content": "wc it.", "llm_call_count": 1,
         "tool_calls": [{"tool_call_id": "c1", "function_name": "bash", "arguments": {"command": "wc -l f"}}],
         "observation": {"results": [{"source_call_id": "c1", "content": "3 f"}]}},
        {"source": "agent", "message": "Run it?", "observation": {"results": [{"content": "yes, go"}]}},
        {"source": "agent", "message": "It has 3 lines."},
    ], [BASH])  # fmt: skip
    (example,) = to_examples(doc, Location("t.json"))
    assert [(m.role, m.content, m.tool_call_id, m.name) for m in example.messages] == [
        ("system", "Use bash.", None, None), ("user", "Count the lines.", None, None), ("assistant", "", None, None),
        ("tool", "3 f", "c1", "bash"), ("assistant", "Run it?", None, None), ("user", "yes, go", None, None),
        ("assistant", "It has 3 lines.", None, None),
    ]  # fmt: skip
    assert example.messages[2].reasoning == "wc it." and example.messages[2].tool_calls[0].arguments == {"command": "wc -l f"}
    assert example.format == "atif" and example.tools == (BASH,)


def test_copied_context_and_deterministic_dispatches_are_never_trained() -> None:
    """The bundled example `resumed.json`: three steps copied from an earlier trajectory, and a call the harness
    made without the model (llm_call_count 0); only the model's last answer is trained."""
    tok = TEMPLATES["qwen3"][0]()
    doc = json.loads((EXAMPLES / "resumed.json").read_text(encoding="utf-8"))
    (item,) = [i for _, i, _ in Stage(tok, DataOptions(max_length=4096)).run([(Location("r.json"), doc)]).outcomes]
    assert [text for _, text in runs(tok, item)] == ["<think>\nhead printed hello.\n</think>\n\nThe first line of a.txt is 'hello'.<|im_end|>"]


def test_a_trajectory_builds_the_rows_of_its_messages_form_on_a_template_that_splits() -> None:
    """The bundled two-query agent trajectory on TRL's qwen3 template (old reasoning dropped): the rows of the
    same conversation given as OpenAI messages, token for token."""
    tok = TEMPLATES["qwen3"][0]()
    doc = json.loads((EXAMPLES / "fix-permissions.json").read_text(encoding="utf-8"))
    (example,) = to_examples(doc, Location("f.json"))
    messages = example.chat_messages()
    stage = Stage(tok, DataOptions(max_length=8192, chat_template_kwargs=PINNED))
    got = rows(stage, doc)
    assert got == rows(stage, {"messages": messages, "tools": list(example.tools)}) and len(got) == 2


def test_a_trajectory_folder_is_a_source_and_the_examples_build(tmp_path) -> None:
    result = ftdata.build(EXAMPLES, tokenizer=tokenizer("qwen2.5-instruct"), chat_template="qwen3")
    report = result.report
    assert (report.records, report.n_rejected, set(report.formats)) == (3, 0, {"atif"})
    # fix-permissions.json's first query's loop is a row of its own (qwen3 drops its reasoning from history)
    assert report.split_records == 1 and report.sequences == 4


def test_embedded_subagent_trajectories_are_examples_of_the_record() -> None:
    sub = trajectory([{"source": "user", "message": "find x"}, {"source": "agent", "message": "x is 1"}], trajectory_id="s1")
    doc = trajectory([{"source": "user", "message": "ask the helper"}, {"source": "agent", "message": "it says 1"}],
                     subagent_trajectories=[sub])  # fmt: skip
    examples = to_examples(doc, Location("t.json"))
    assert [[m.content for m in e.messages] for e in examples] == [["ask the helper", "it says 1"], ["find x", "x is 1"]]


@pytest.mark.parametrize(
    ("steps", "field", "says"),
    [
        ([{"source": "user", "message": "q"}, {"source": "robot", "message": "a"}], "steps[1].source", "system, user or agent"),
        ([{"source": "user", "message": "q"}, {"source": "agent", "message": "a"}, {"source": "agent", "message": "b"}],
         "steps[2]", "two assistant turns in a row"),
        ([{"source": "user", "message": "q"}, {"source": "agent", "message": "a", "metrics": {"completion_token_ids": [1, -2]}}],
         "steps[1].metrics.completion_token_ids", "token ids"),
        ([{"source": "user", "message": "q"}, {"source": "agent", "message": "",
          "tool_calls": [{"tool_call_id": "c", "function_name": "f", "arguments": {}}],
          "observation": {"results": [{"source_call_id": "c", "content": 7}]}}, {"source": "agent", "message": "a"}],
         "steps[1].observation.results[0].content", "string"),
    ],
)  # fmt: skip
def test_a_bad_step_is_one_error_naming_the_step(steps, field, says) -> None:
    doc = {"schema_version": "ATIF-v1.8", "agent": {"name": "t", "version": "1"},
           "steps": [{"step_id": k, **s} for k, s in enumerate(steps, start=1)]}  # fmt: skip
    with pytest.raises(RecordError) as caught:
        to_examples(doc, Location("t.json", index=0))
    assert caught.value.field == field and says in caught.value.reason, (caught.value.field, caught.value.reason)


def test_the_cli_names_the_file_and_step_of_a_bad_trajectory(tmp_path) -> None:
    from typer.testing import CliRunner

    from ftdata.cli import app

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema_version": "ATIF-v1.8", "agent": {"name": "t", "version": "1"},
                               "steps": [{"step_id": 1, "source": "user", "message": "q"},
                                         {"step_id": 2, "source": "robot", "message": "a"}]}), encoding="utf-8")  # fmt: skip
    out = CliRunner().invoke(app, ["build", str(bad), "--tokenizer", str(TOKENIZERS / "qwen2.5-instruct"), "--on-error", "raise",
                                   "--output", str(tmp_path / "out")])  # fmt: skip
    assert out.exit_code != 0 and "Traceback" not in out.output
    assert "bad.json" in out.output and "steps[1].source" in out.output


# ---------------------------------------------------------------- recorded token ids


def test_recorded_completion_token_ids_are_compared_with_the_tokens_trained() -> None:
    tok = tokenizer("qwen2.5-instruct")
    stage = Stage(tok, DataOptions(max_length=4096))
    base = [{"source": "user", "message": "2+2?"}, {"source": "agent", "message": "It is 4."},
            {"source": "user", "message": "3+3?"}, {"source": "agent", "message": "It is 6."}]  # fmt: skip
    (item,) = [i for _, i, _ in stage.run([(Location("t.json"), trajectory(base))]).outcomes]
    trained = [tok(text, add_special_tokens=False)["input_ids"] for _, text in runs(tok, item)]
    same = [dict(s) for s in base]
    same[1]["metrics"], same[3]["metrics"] = {"completion_token_ids": trained[0]}, {"completion_token_ids": trained[1]}
    (exact,) = [i for _, i, _ in stage.run([(Location("t.json"), trajectory(same))]).outcomes]
    assert [(d.turn, d.differ) for d in exact.drift] == [(1, 0), (3, 0)] and not exact.tokenized.notes
    drifted = [dict(s) for s in same]
    drifted[3] = {**same[3], "metrics": {"completion_token_ids": [*trained[1][:-1], 99, trained[1][-1]]}}  # one token more
    (item,) = [i for _, i, _ in stage.run([(Location("t.json"), trajectory(drifted))]).outcomes]
    assert [(d.turn, d.differ) for d in item.drift] == [(1, 0), (3, 1)]
    assert [n.code.value for n in item.tokenized.notes] == ["token_drift"]
    report = stage.run([(Location("t.json"), trajectory(drifted))]).report
    assert (report.drift_turns, report.drift_differ, report.drift_tokens) == (2, 1, 1)
    assert "1 of 2 recorded turns drift (1 tokens)" in report.summary()


# ---------------------------------------------------------------- every shape, every template


@pytest.mark.parametrize("name", ["qwen3", "gptoss", "glm4moe", "qwen2.5-instruct"])
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_trajectory_builds_the_rows_of_the_same_conversation_as_messages(name, data) -> None:
    """Agent loops with reasoning over one and several user queries (test_trajectory's strategy, which the oracle
    checks in the messages form), written as ATIF: the same rows, token for token."""
    tok = TEMPLATES[name][0]()
    messages = with_ids(data.draw(conversations(tools=True)))
    if name == "qwen2.5-instruct":
        messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
    tools = [{"type": "function", "function": {"name": "lookup", "description": "Look a thing up.",
                                               "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}]  # fmt: skip
    stage = Stage(tok, DataOptions(max_length=8192, chat_template_kwargs=PINNED))
    assert rows(stage, as_atif(messages, tools)) == rows(stage, {"messages": messages, "tools": tools})


def test_the_bundled_examples_are_valid_atif() -> None:
    atif = pytest.importorskip("atif")
    files = sorted(Path(EXAMPLES).glob("*.json"))
    assert len(files) == 3
    for path in files:
        atif.Trajectory.model_validate(json.loads(path.read_text(encoding="utf-8")))


def test_recorded_ids_train_what_the_model_sampled_where_they_decode_to_the_turn() -> None:
    """recorded_ids: a turn recorded as other tokens of the same text (here one token per character) trains those
    tokens; ids that decode to other text keep the re-tokenized turn, with the drift note."""
    tok = tokenizer("qwen2.5-instruct")
    steps = [{"source": "user", "message": "2+2?"}, {"source": "agent", "message": "It is 4."}]
    plain = Stage(tok, DataOptions(max_length=4096))
    (item,) = [i for _, i, _ in plain.run([(Location("t.json"), trajectory(steps))]).outcomes]
    (text,) = [t for _, t in runs(tok, item)]
    chars = [i for c in text.removesuffix("<|im_end|>") for i in tok(c, add_special_tokens=False)["input_ids"]]
    chars.append(tok.convert_tokens_to_ids("<|im_end|>"))
    assert len(chars) > len(tok(text, add_special_tokens=False)["input_ids"])  # other tokens of the same text
    sampled = [steps[0], {**steps[1], "metrics": {"completion_token_ids": chars}}]
    stage = Stage(tok, DataOptions(max_length=4096, recorded_ids=True))
    (kept,) = [i for _, i, _ in stage.run([(Location("t.json"), trajectory(sampled))]).outcomes]
    trained = [t for t, label in zip(kept.tokenized.input_ids, kept.tokenized.labels) if label != -100]
    assert trained == chars and kept.drift[0].kept and "trains its" in kept.tokenized.notes[0].text
    def around(t) -> tuple[list[int], list[int]]:  # the tokens before and after the trained run
        first = next(k for k, label in enumerate(t.labels) if label != -100)
        last = max(k for k, label in enumerate(t.labels) if label != -100)
        return t.input_ids[:first], t.input_ids[last + 1 :]

    assert around(kept.tokenized) == around(item.tokenized)  # the same context: only the turn's tokens changed
    wrong = [steps[0], {**steps[1], "metrics": {"completion_token_ids": tok("It is 5.<|im_end|>", add_special_tokens=False)["input_ids"]}}]
    (other,) = [i for _, i, _ in stage.run([(Location("t.json"), trajectory(wrong))]).outcomes]
    assert other.tokenized.input_ids == item.tokenized.input_ids and not other.drift[0].kept
    assert other.tokenized.notes[0].text == (
        "messages[1]: its 6 recorded completion tokens and the 6 tokens trained differ, they share the first 3 and the "
        "last 2 (retokenization drift)"
    )
    report = stage.run([(Location("t.json"), trajectory(sampled))]).report
    assert (report.drift_turns, report.drift_kept) == (1, 1) and "1 trained on their recorded ids" in report.summary()
