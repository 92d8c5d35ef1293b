"""Raw agent session files (Claude Code, Codex, Pi) and HF agent-trace rows build as chats.

Every fixture is a real session file from a public repository (tests/records/data/sessions/README.md). The
message sequence each builds is asserted literally; the trained tokens are held to the independent oracle
(tests/oracle.py: every assistant turn as inference sees it, nothing else).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from support import ROOT, TOKENIZERS, tokenizer
from test_trajectory import TEMPLATES, runs

import oracle
from ftdata.errors import Location, ReaderError, RecordError, UnusableRecord
from ftdata.io.readers import read_records
from ftdata.options import DataOptions
from ftdata.outcomes import NoteCode
from ftdata.records.formats import to_examples
from ftdata.run.sft import Measured
from ftdata.run.stage import Stage

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

DATA = ROOT / "tests" / "records" / "data" / "sessions"
HELLO = DATA / "claude-code-hello-world.jsonl"
SHORT = DATA / "claude-code-short.jsonl"
CODEX = DATA / "codex-session-01.jsonl"
CODEX_TOOLS = DATA / "rollout-2026-02-23T20-34-25-019c8bfe-ec25-79e0-97d7-bda6a9c575ff.jsonl"
PI = DATA / "pi-large-session-head.jsonl"


def records(path: Path) -> list[tuple[Location, Any]]:
    return list(read_records(path))


def examples(path: Path, **kw: Any):
    ((location, row),) = records(path)
    return to_examples(row, location, **kw)


def shape(example) -> list[tuple[Any, ...]]:
    """Each message as (role, its text or the names and ids of its calls, the call id a result answers)."""
    out = []
    for m in example.messages:
        calls = [(c.name, c.id) for c in m.tool_calls]
        out.append((m.role, calls or m.content[:40], m.tool_call_id) if m.role != "user" else (m.role, m.content[:40]))
    return out


def built(tok, path: Path, **options: Any) -> list[Any]:
    stage = Stage(tok, DataOptions(max_length=32768, **options))
    return [item for _, item, _ in stage.run(records(path)).outcomes]


def follows_the_rule(tok, example, item) -> list[str]:
    exp = oracle.expect(tok, example.chat_messages(), edge_cases=True)
    assert not exp.must_reject, exp.must_reject
    return oracle.compare(exp, tok, list(item.tokenized.input_ids), list(item.tokenized.labels))


# ---------------------------------------------------------------- Claude Code


def test_a_claude_code_session_file_is_one_record_of_its_calls_results_and_meta_feedback() -> None:
    """claude-reliability's hello-world transcript: two tool calls, their results, and the stop hook's isMeta
    feedback (sent to the model) before the last answer; the queue-operation line is the harness's log."""
    ((location, row),) = records(HELLO)
    assert str(location) == str(HELLO)
    (example,) = to_examples(row, location)
    assert example.format == "claude_code" and example.tools == ()
    assert shape(example) == [
        ("user", 'Write a shell script called hello.sh tha'),
        ("assistant", [("Write", "toolu_01R3SZZYuAq6mou5RqHE4rzF")], None),
        ("tool", "File created successfully at: /tmp/tmp74", "toolu_01R3SZZYuAq6mou5RqHE4rzF"),
        ("assistant", [("Bash", "toolu_01GNvoSEyj9jAsgFtJBduDPp")], None),
        ("tool", "Hello world", "toolu_01GNvoSEyj9jAsgFtJBduDPp"),
        ("assistant", "Done. I created `hello.sh` with a sheban", None),
        ("user", "Stop hook feedback:\n[${CLAUDE_PLUGIN_ROO"),
        ("assistant", "I have fully completed the task.\n\n**Summ", None),
    ]  # fmt: skip
    assert example.messages[1].tool_calls[0].arguments == {
        "file_path": "/tmp/tmp74wiyiny/hello.sh", "content": '#!/bin/bash\necho "Hello world"\n'}  # fmt: skip
    notes = {n.code: n.text for n in example.notes}
    assert notes[NoteCode.SESSION_LEFT_OUT] == "Claude Code session: left out (no model context held them): 1 queue-operation"
    assert notes[NoteCode.SESSION_NO_TOOLS] == (
        "Claude Code session: the file holds no tool schemas and no system prompt: built without them (the template "
        "writes no tool list)"
    )


def test_a_claude_code_session_trains_exactly_its_assistant_turns_on_a_tool_calling_template() -> None:
    tok = tokenizer("qwen2.5-instruct")
    (example,) = examples(HELLO)
    (item,) = built(tok, HELLO)
    assert isinstance(item, Measured)
    assert follows_the_rule(tok, example, item) == []
    trained = tok.decode([i for i, lab in zip(item.tokenized.input_ids, item.tokenized.labels) if lab != -100])
    assert trained.count("<|im_end|>") == 4 and "Stop hook feedback" not in trained and "Hello world\n</tool" not in trained


def test_one_response_in_many_events_is_one_turn_and_parallel_results_answer_their_calls() -> None:
    """spotter's short transcript: one response written as five events (a blank text, thinking, text, two
    tool_use), both calls rejected by the user (results beside the parentUuid chain), the interrupt, then
    /model as system local_command events (the harness's log, not the model's context)."""
    (example,) = examples(SHORT)
    assert shape(example) == [
        ("user", "mix phx.server doesnt seem to start"),
        ("assistant", [("Bash", "toolu_0116Hyi5v8ut7Ffb7d8qV1Sc"), ("Glob", "toolu_01FdQ8qTyVyZjE3Kw4dguQGx")], None),
        ("tool", "The user doesn't want to proceed with th", "toolu_0116Hyi5v8ut7Ffb7d8qV1Sc"),
        ("tool", "The user doesn't want to proceed with th", "toolu_01FdQ8qTyVyZjE3Kw4dguQGx"),
        ("user", "[Request interrupted by user for tool us"),
    ]  # fmt: skip
    turn = example.messages[1]
    assert turn.content == "Let me check the project structure and try running the server to see the error."
    assert turn.reasoning.startswith("The user is having trouble starting their Phoenix server.")
    left = next(n.text for n in example.notes if n.code is NoteCode.SESSION_LEFT_OUT)
    assert left.endswith("3 progress, 2 system:local_command, 1 file-history-snapshot")
    # A template that writes reasoning (qwen3) trains the turn with its thinking and calls. Messages follow the
    # turn (the results, the interrupt), and Qwen3 drops the reasoning of a turn before the last user message:
    # the turn is trained in a row of its own that ends with it, as the model wrote it.
    tok = TEMPLATES["qwen3"][0]()
    (item,) = built(tok, SHORT)
    assert isinstance(item, Measured)
    exp = oracle.expect(tok, example.chat_messages()[:2], edge_cases=True)
    assert oracle.compare(exp, tok, list(item.tokenized.input_ids), list(item.tokenized.labels)) == []
    ((_, trained),) = runs(tok, item)
    assert trained.startswith("<think>\nThe user is having trouble starting their Phoenix server.")
    assert trained.endswith('"path": "/home/marco/projects/spotter"}}\n</tool_call><|im_end|>')
    (refused,) = built(tokenizer("qwen2.5-instruct"), SHORT)
    assert not isinstance(refused, Measured) and "does not write reasoning" in refused.reason


def test_a_rewound_branch_is_left_out_and_counted() -> None:
    """The hello-world session with its last answer re-asked from the stop-hook message (a rewind writes the
    new branch beside the old one): the chain from the last event is the conversation."""
    lines = HELLO.read_text(encoding="utf-8").splitlines()
    last = json.loads(lines[-1])
    again = {**last, "uuid": "new-branch", "message": {**last["message"], "id": "msg_again",
             "content": [{"type": "text", "text": "Yes: done."}]}}  # fmt: skip
    path = Path(pytest.importorskip("tempfile").mkdtemp()) / "rewound.jsonl"
    path.write_text("\n".join([*lines, json.dumps(again)]) + "\n", encoding="utf-8")
    (example,) = examples(path)
    assert example.messages[-1].content == "Yes: done." and len(example.messages) == 8
    left = next(n.text for n in example.notes if n.code is NoteCode.SESSION_LEFT_OUT)
    assert "1 event on an abandoned branch" in left


# ---------------------------------------------------------------- Codex


def test_a_codex_rollout_is_one_record_with_its_instructions_and_developer_context() -> None:
    (example,) = examples(CODEX)
    assert example.format == "codex"
    assert [(m.role, m.content) for m in example.messages] == [
        ("system", "[REDACTED_BASE_INSTRUCTIONS]"),
        ("system", "[REDACTED_DEVELOPER_CONTEXT]"),
        ("user", "<environment_context>\n  <cwd>/tmp/agent-history-real-agent/codex/workspace</cwd>\n  <shell>bash</shell>\n"
                 "  <current_date>2026-06-05</current_date>\n  <timezone>Asia/Calcutta</timezone>\n</environment_context>"),
        ("user", "[REDACTED_PROMPT]"),
        ("assistant", "[REDACTED_ASSISTANT_TEXT]"),
    ]  # fmt: skip
    left = next(n.text for n in example.notes if n.code is NoteCode.SESSION_LEFT_OUT)
    assert left.endswith(
        "1 event_msg:agent_message, 1 event_msg:task_complete, 1 event_msg:task_started, 1 event_msg:token_count, "
        "1 event_msg:user_message, 1 turn_context"
    )
    tok = tokenizer("qwen2.5-instruct")
    (item,) = built(tok, CODEX)
    assert isinstance(item, Measured) and follows_the_rule(tok, example, item) == []


def test_codex_calls_pair_with_their_outputs_and_redacted_arguments_are_named_by_line() -> None:
    """localpush's sanitized rollout: its publisher replaced every call's arguments with a placeholder that is
    not JSON; the session is rejected at the line of the first call. With the arguments put back as {} (the
    events otherwise as published) the five calls pair with their outputs, reasoning summaries are counted."""
    ((location, row),) = records(CODEX_TOOLS)
    with pytest.raises(UnusableRecord, match=r"^.*019c8bfe-ec25-79e0-97d7-bda6a9c575ff\.jsonl:16: .*is not valid JSON"):
        to_examples(row, location)
    events = row["session_file"]["events"]
    for e in events:
        if e.get("payload", {}).get("type") == "function_call":
            e["payload"]["arguments"] = "{}"
    (example,) = to_examples(row, location)
    roles = "".join({"system": "s", "user": "u", "assistant": "a", "tool": "t"}[m.role] for m in example.messages)
    assert roles == "sssuussuatatatatata"
    calls = [c.id for m in example.messages for c in m.tool_calls]
    assert calls == [m.tool_call_id for m in example.messages if m.role == "tool"] and len(calls) == 5
    left = next(n.text for n in example.notes if n.code is NoteCode.SESSION_LEFT_OUT)
    assert "6 reasoning summary (the reasoning itself is encrypted)" in left
    tok = tokenizer("qwen2.5-instruct")
    (item,) = Stage(tok, DataOptions(max_length=32768)).run([(location, row)]).outcomes[0][1:2]
    assert isinstance(item, Measured) and follows_the_rule(tok, example, item) == []


# ---------------------------------------------------------------- Pi


def test_a_pi_session_is_one_record_and_an_aborted_response_is_left_out() -> None:
    """pi-mono's large-session fixture, lines 1-17: `/mode` answered by an aborted (empty) response, a model
    change, then a read of three files in parallel, an edit, and the answer."""
    (example,) = examples(PI)
    assert example.format == "pi"
    assert [m.content for m in example.messages[:2]] == ["/mode", "read packages/coding-agent/docs/theme.md in full, then "
        "theme.ts, and then oauth-selector or any of the other selectors. we still need to port over "
        "user-message-selector.ts based on the patterns you find in the other files"]  # fmt: skip
    lines = [json.loads(x) for x in PI.read_text(encoding="utf-8").splitlines()]
    ids = [b["id"] for b in lines[5]["message"]["content"] if b["type"] == "toolCall"]
    assert [c.id for c in example.messages[2].tool_calls] == ids
    assert [m.tool_call_id for m in example.messages[3:6]] == ids
    assert [m.role for m in example.messages] == ["user", "user", "assistant", "tool", "tool", "tool", "assistant",
                                                  "tool", "tool", "tool", "tool", "assistant", "tool", "assistant"]  # fmt: skip
    left = next(n.text for n in example.notes if n.code is NoteCode.SESSION_LEFT_OUT)
    assert left.endswith("1 assistant response (aborted), 1 model_change")
    tok = tokenizer("qwen2.5-instruct")
    (item,) = built(tok, PI)
    assert isinstance(item, Measured) and follows_the_rule(tok, example, item) == []


# ---------------------------------------------------------------- errors, detection, HF rows


def test_a_cut_session_line_names_its_file_and_line(tmp_path) -> None:
    text = HELLO.read_text(encoding="utf-8")
    cut = tmp_path / "live.jsonl"
    cut.write_text(text[: text.rindex('"uuid":"e86efd37')], encoding="utf-8")
    ((location, row),) = records(cut)
    with pytest.raises(RecordError, match=rf"^{cut}:9: invalid JSON \(Expecting property name"):
        to_examples(row, location)


def test_a_format_given_for_another_harness_says_what_the_file_is() -> None:
    ((location, row),) = records(CODEX)
    with pytest.raises(RecordError, match="format 'pi' needs a Pi session file .*; this record is a Codex session"):
        to_examples(row, location, format="pi")


def test_a_folder_of_sessions_is_one_record_per_file(tmp_path) -> None:
    for f in (HELLO, CODEX):
        (tmp_path / f.name).write_bytes(f.read_bytes())
    found = [(Path(loc.source).name, row["session_file"]["harness"]) for loc, row in read_records(tmp_path)]
    assert sorted(found) == [(HELLO.name, "claude_code"), (CODEX.name, "codex")]


def test_jsonl_records_that_merely_have_a_type_stay_records(tmp_path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"type": "user", "instruction": "hi", "output": "yo"}\n{"type": "user", "instruction": "a", "output": "b"}\n')
    assert len(records(path)) == 2


def test_an_hf_agent_trace_row_builds_from_its_messages_and_names_its_other_columns() -> None:
    """A row as datasets' agent-trace reader writes it (Json features as JSON text, as in its Parquet export):
    the conversation is messages + tools; metadata, trace and the counts are named in a note, not used."""
    (example,) = examples(HELLO)
    messages = example.chat_messages()
    row = {"harness": "claude_code", "session_id": "de3b8b19", "prompt": messages[0]["content"],
           "messages": [json.dumps(m) for m in messages], "tools": [], "metadata": json.dumps({"trace_type": "claude_code"}),
           "sent_at": "2026-01-21T06:20:30.861Z", "num_user_messages": 2, "num_tool_calls": 2, "trace": "...",
           "file_path": "transcript.jsonl"}  # fmt: skip
    (got,) = to_examples(row, Location("traces.parquet", index=0))
    assert got.messages == example.messages and got.format == "messages"
    (note,) = [n.text for n in got.notes if n.code is NoteCode.AGENT_TRACE_COLUMNS]
    assert note.endswith("not used: harness, session_id, prompt, metadata, sent_at, num_user_messages, num_tool_calls, trace, file_path")


def test_an_empty_jsonl_is_still_an_error(tmp_path) -> None:
    path = tmp_path / "e.jsonl"
    path.write_text("\n\n")
    with pytest.raises(ReaderError, match="file is empty"):
        records(path)


def test_the_progress_counter_counts_a_session_file_as_one_record() -> None:
    from ftdata.guard.bounds import ReadBounds
    from ftdata.io.counter import count_records

    assert [count_records(str(p), limit=None, bounds=ReadBounds()) for p in (PI, CODEX, HELLO)] == [1, 1, 1]


# prime-rl's tools/convert_traces_to_hf_dataset.py (PrimeIntellect-ai/prime-rl @ 41ad2015) writes one row per branch:
# `messages` in verifiers' chat wire shape, `tools` as JSON text, `trainable` and the run's outcome columns.
BASH_TOOL = {"name": "bash", "description": "Run a command.", "parameters": {"type": "object", "properties": {"command": {"type": "string"}}}}


def prime_rl_row(**extra: Any) -> dict[str, Any]:
    messages = [
        {"role": "system", "content": "Solve it."},
        {"role": "user", "content": "How many files?"},
        {"role": "assistant", "content": "", "reasoning_content": "Count them.",
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "bash", "arguments": '{"command": "ls | wc -l"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "3"},
        {"role": "assistant", "content": "", "tool_calls": [{"id": "c2", "type": "custom", "custom": {"name": "apply_patch", "input": "*** Begin Patch"}}]},
        {"role": "tool", "tool_call_id": "c2", "content": "ok"},
        {"role": "assistant", "content": "Three.", "reasoning_details": [{"type": "reasoning.encrypted", "data": "gAAA"}]},
    ]  # fmt: skip
    return {"episode_id": "e1", "trace_id": "t1", "agent": "solver", "trainable": True, "tools": json.dumps([BASH_TOOL]),
            "reward": 1.0, "stop_condition": "completed", "has_error": False, "is_truncated": False,
            "branch_index": 0, "messages": messages, "calls": "[]", **extra}  # fmt: skip


def test_a_prime_rl_traces_to_hf_row_builds_from_its_messages_and_tools() -> None:
    (example,) = to_examples(prime_rl_row(), Location("train.parquet", index=0))
    assert [(m.role, [(c.name, c.arguments) for c in m.tool_calls]) for m in example.messages if m.role == "assistant"] == [
        ("assistant", [("bash", '{"command": "ls | wc -l"}')]), ("assistant", [("apply_patch", {"input": "*** Begin Patch"})]),
        ("assistant", [])]  # fmt: skip
    assert example.tools == ({"type": "function", "function": BASH_TOOL},) and example.messages[-1].reasoning is None
    notes = [n.text for n in example.notes if n.code is NoteCode.AGENT_TRACE_COLUMNS]
    assert notes == [
        "1 assistant turn(s) carry only the provider's opaque reasoning_details: left out (no template writes it)",
        "a prime-rl traces-to-HF row: built from messages and tools; not used: episode_id, trace_id, agent, trainable, "
        "reward, stop_condition, has_error, is_truncated, branch_index",
    ]
    tok = TEMPLATES["qwen3"][0]()
    outcomes = Stage(tok, DataOptions(max_length=4096)).run([(Location("train.parquet", index=0), prime_rl_row())]).outcomes
    assert outcomes and all(isinstance(item, Measured) for _, item, _ in outcomes)


def test_a_prime_rl_row_of_an_agent_its_run_did_not_train_trains_nothing() -> None:
    row = prime_rl_row(trainable=False)
    (example,) = to_examples(row, Location("train.parquet", index=0))
    assert [m.train for m in example.messages if m.role == "assistant"] == [False, False, False]
    assert "prime-rl marks agent 'solver' not trainable (trainable: false): its turns are not trained" in [n.text for n in example.notes]
    tok = TEMPLATES["qwen3"][0]()
    outcomes = Stage(tok, DataOptions(max_length=4096)).run([(Location("train.parquet", index=0), row)]).outcomes
    assert [item.code.value for _, item, _ in outcomes] == ["nothing_to_train"]


def claude_event(uuid: str, parent: str | None, kind: str, content: Any, **extra: Any) -> dict[str, Any]:
    """A Claude Code event with the fields every event of the real fixtures carries."""
    body = {"message": {"role": kind, "content": content}} if kind in ("user", "assistant") else {"content": content}
    return {"parentUuid": parent, "isSidechain": False, "userType": "external", "cwd": "/w", "sessionId": "s",
            "version": "2.1.38", "type": kind, **body, "uuid": uuid, **extra}  # fmt: skip


def write_jsonl(path: Path, events: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    return path


def test_compaction_segments_and_sidechains_are_conversations_of_their_own(tmp_path) -> None:
    """After a compact_boundary (parentUuid null, logicalParentUuid the last event before it) the model read the
    summary, not the history: a conversation of its own. A sub-agent's sidechain events are another."""
    events = [
        claude_event("u1", None, "user", "Fix the bug."),
        claude_event("a1", "u1", "assistant", [{"type": "text", "text": "Fixed."}]),
        claude_event("c1", None, "system", "Conversation compacted", subtype="compact_boundary", logicalParentUuid="a1"),
        claude_event("u2", "c1", "user", "This session is being continued. Summary: the bug is fixed.", isCompactSummary=True),
        claude_event("u3", "u2", "user", "Now add a test."),
        claude_event("s1", None, "user", "Find the test folder.", isSidechain=True, agentId="a7"),
        claude_event("s2", "s1", "assistant", [{"type": "text", "text": "tests/"}], isSidechain=True, agentId="a7"),
        claude_event("a2", "u3", "assistant", [{"type": "text", "text": "Added."}]),
    ]  # fmt: skip
    found = examples(write_jsonl(tmp_path / "s.jsonl", events))
    assert [[(m.role, m.content) for m in e.messages] for e in found] == [
        [("user", "Fix the bug."), ("assistant", "Fixed.")],
        [("user", "This session is being continued. Summary: the bug is fixed."), ("user", "Now add a test."),
         ("assistant", "Added.")],
        [("user", "Find the test folder."), ("assistant", "tests/")],
    ]  # fmt: skip


def test_a_synthetic_assistant_message_is_context_never_trained(tmp_path) -> None:
    events = [
        claude_event("u1", None, "user", "hi"),
        claude_event("a1", "u1", "assistant", [{"type": "text", "text": "API Error: 529 overloaded"}], isApiErrorMessage=True),
        claude_event("u2", "a1", "user", "again"),
        claude_event("a2", "u2", "assistant", [{"type": "text", "text": "Hello."}]),
    ]  # fmt: skip
    (example,) = examples(write_jsonl(tmp_path / "s.jsonl", events))
    assert [(m.role, m.train) for m in example.messages] == [("user", None), ("assistant", False), ("user", None), ("assistant", None)]


def test_an_event_that_breaks_the_conversation_is_named_by_its_line(tmp_path) -> None:
    events = [
        claude_event("u1", None, "user", "hi"),
        claude_event("a1", "u1", "assistant", [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {"command": "ls"}}]),
        claude_event("u2", "a1", "user", [{"type": "tool_result", "tool_use_id": "t9", "content": "a.txt"}]),
    ]  # fmt: skip
    path = write_jsonl(tmp_path / "s.jsonl", events)
    with pytest.raises(UnusableRecord, match=rf"^{path}:3: .*tool_call_id 't9' answers no call of the assistant turn before it"):
        examples(path)


# ---------------------------------------------------------------- docs/bring-your-data.md


def page_examples() -> list[tuple[str, str]]:
    from test_docs import EXAMPLE

    text = (ROOT / "docs" / "bring-your-data.md").read_text(encoding="utf-8")
    (part,) = [p for p in re.split(r"(?m)^(?=## )", text) if p.startswith("## Coming from Claude Code")]
    console = re.compile(r"```console\n\$ (ftdata [^\n]*)\n(.*?)```", re.S)
    found = [(m.group(1), m.group(2)) for m in console.finditer(part)]
    assert len(found) == 2 and not EXAMPLE.search(part)  # run here (their output is trimmed with "...")
    return found


@pytest.mark.parametrize(("command", "shown"), page_examples(), ids=["preview", "build"])
def test_the_pages_session_examples_are_real_output(command: str, shown: str, tmp_path, monkeypatch) -> None:
    """Each example's shown lines are its real output, in order; a `...` line stands for lines left out."""
    import shlex

    from test_docs import _normalize_build, _run

    monkeypatch.chdir(ROOT)
    args = shlex.split(command)
    if args[1] == "build":
        out, cache = tmp_path / "out", tmp_path / "cache"
        documented = args[args.index("-o") + 1]
        args[args.index("-o") + 1] = str(out)
        got = _normalize_build(_run(shlex.join([*args, "--cache-dir", str(cache)])), str(out), str(cache))
        shown = _normalize_build(shown, documented, "~/.cache/ftdata/builds")
    else:
        got = _run(command)
    at = 0
    for piece in re.split(r"(?m)^\.\.\.\n", shown):
        found = got.find(piece, at)
        assert found >= 0 and (at > 0 or found == 0), f"not in the output after {at}: {piece[:200]!r}"
        at = found + len(piece)
    assert at == len(got)


def test_sidechains_without_an_agent_id_are_one_conversation_per_chain(tmp_path) -> None:
    """Older Claude Code wrote each Task sub-agent's events into the session file with isSidechain and no agentId:
    each chain (from its own root) was a context of its own."""
    side = {"isSidechain": True}
    events = [
        claude_event("u1", None, "user", "Look into both."),
        claude_event("x1", None, "user", "Find A.", **side),
        claude_event("y1", None, "user", "Find B.", **side),
        claude_event("x2", "x1", "assistant", [{"type": "text", "text": "A is here."}], **side),
        claude_event("y2", "y1", "assistant", [{"type": "text", "text": "B is there."}], **side),
        claude_event("a1", "u1", "assistant", [{"type": "text", "text": "Both found."}]),
    ]  # fmt: skip
    found = examples(write_jsonl(tmp_path / "s.jsonl", events))
    assert [[m.content for m in e.messages] for e in found] == [
        ["Look into both.", "Both found."], ["Find A.", "A is here."], ["Find B.", "B is there."]]  # fmt: skip
    assert not any(n.code is NoteCode.SESSION_LEFT_OUT for e in found for n in e.notes)


def test_parallel_calls_off_the_parent_chain_are_kept_with_their_results() -> None:
    """spotter's subagent transcript, lines 1-16: one response of four parallel calls. Claude Code chains the four
    tool_use events, hangs each result off its own call and goes on from the last result written (the second
    call's): calls 3 and 4 and their results are not on the parentUuid chain from the last event, and belong to it."""
    (example,) = examples(DATA / "claude-code-parallel-head.jsonl")
    ids = ["toolu_01UBumkyGa4vv7EbMVke2AiH", "toolu_01FqWwvYWkHZHuD78wSmgc6r", "toolu_01PPH5xRopN6EKFruBKc1giM",
           "toolu_01DgymFTXTDEthJ9vJBG4n59"]  # fmt: skip
    assert [(m.role, [c.id for c in m.tool_calls], m.tool_call_id) for m in example.messages[2:]] == [
        ("assistant", ids, None), ("tool", [], ids[0]), ("tool", [], ids[2]), ("tool", [], ids[3]), ("tool", [], ids[1])]  # fmt: skip
    assert [c.name for c in example.messages[2].tool_calls] == ["WebFetch", "WebSearch", "WebSearch", "WebSearch"]
    assert example.messages[2].reasoning is not None and example.messages[2].content.startswith("I'll research the setup options")
    left = next(n.text for n in example.notes if n.code is NoteCode.SESSION_LEFT_OUT)
    assert left.endswith(": 2 progress, 1 file-history-snapshot")
    tok = tokenizer("qwen2.5-instruct")
    (item,) = built(tok, DATA / "claude-code-parallel-head.jsonl")
    assert not isinstance(item, Measured) and "does not write reasoning" in item.reason  # qwen2.5: refused, not dropped
    tok = TEMPLATES["qwen3"][0]()
    (item,) = built(tok, DATA / "claude-code-parallel-head.jsonl")
    assert isinstance(item, Measured)
    assert follows_the_rule(tok, example, item) == []  # one row: Qwen3 keeps reasoning after the last user turn


def test_a_pi_v3_session_follows_its_entry_tree(tmp_path) -> None:
    """agent-history's real Pi 0.x session (version 3: entries with id/parentId; text redacted by its publisher).
    A second answer branched from the prompt (Pi's /tree) makes the first an abandoned branch."""
    path = DATA / "pi-session-01.jsonl"
    (example,) = examples(path)
    assert [(m.role, m.content) for m in example.messages] == [("user", "[REDACTED_PROMPT]"), ("assistant", "[REDACTED_ASSISTANT_TEXT]")]
    left = next(n.text for n in example.notes if n.code is NoteCode.SESSION_LEFT_OUT)
    assert left.endswith(": 1 model_change, 1 session_info, 1 thinking_level_change")
    branch = {"type": "message", "id": "b2", "parentId": "e2e044ff", "message": {"role": "assistant", "content": [{"type": "text", "text": "again"}], "stopReason": "stop"}}  # fmt: skip
    rewound = tmp_path / "rewound.jsonl"
    rewound.write_text(path.read_text(encoding="utf-8") + json.dumps(branch) + "\n", encoding="utf-8")
    (example,) = examples(rewound)
    assert [m.content for m in example.messages] == ["[REDACTED_PROMPT]", "again"]
    assert "1 entry on an abandoned branch" in next(n.text for n in example.notes if n.code is NoteCode.SESSION_LEFT_OUT)


def test_rows_written_with_datasets_agent_trace_features_build_from_parquet_and_from_the_dataset(tmp_path) -> None:
    """The rows as `datasets` itself stores them (its AGENT_TRACES_FEATURES: messages and tools as lists of Json,
    metadata and trace as Json): read back from its Parquet export and as the Dataset object."""
    json_module = pytest.importorskip("datasets.packaged_modules.json.json")
    from datasets import Dataset

    (example,) = examples(HELLO)
    row = {"harness": "claude_code", "session_id": "de3b8b19", "prompt": "Write a shell script", "messages": example.chat_messages(),
           "tools": [{"type": "function", "function": BASH_TOOL}], "metadata": {"trace_type": "claude_code"}, "sent_at": "2026-01-21",
           "num_user_messages": 2, "num_tool_calls": 2, "trace": [{"type": "queue-operation"}], "file_path": "transcript.jsonl"}  # fmt: skip
    ds = Dataset.from_list([row], features=json_module.AGENT_TRACES_FEATURES)
    ds.to_parquet(str(tmp_path / "traces.parquet"))
    for source in (tmp_path / "traces.parquet", ds):
        ((location, read),) = list(read_records(source))
        (got,) = to_examples(read, location)
        assert got.messages == example.messages and got.tools == ({"type": "function", "function": BASH_TOOL},)
        assert any(n.code is NoteCode.AGENT_TRACE_COLUMNS and "not used: harness, session_id, prompt, metadata" in n.text for n in got.notes)


def test_datasets_failing_on_session_files_for_want_of_teich_is_one_line_saying_ftdata_reads_them(tmp_path) -> None:
    """A hub dataset of raw session files goes through `datasets.load_dataset`, whose agent-trace path needs the
    teich package and says so only inside a DatasetGenerationError."""
    from importlib.util import find_spec

    from ftdata.io.readers import read_hf

    if find_spec("teich") is not None:
        pytest.skip("teich is installed: datasets decodes the files")
    (tmp_path / HELLO.name).write_bytes(HELLO.read_bytes())
    with pytest.raises(ReaderError, match=r"holds raw agent session files, which datasets decodes only with the teich package; ftdata reads them itself"):
        list(read_hf(tmp_path))


def test_a_session_with_no_conversation_is_rejected_saying_what_it_holds(tmp_path) -> None:
    """A Claude Code file that holds only a session title line: nothing to build, and the reason says why."""
    path = write_jsonl(tmp_path / "s.jsonl", [{"type": "summary", "summary": "Fix the build", "leafUuid": "u9"}])
    with pytest.raises(UnusableRecord, match=r"the session holds no conversation to build; Claude Code session: left out \(no model context held them\): 1 summary$"):
        examples(path)
