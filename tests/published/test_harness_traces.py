"""Agent trajectories as harnesses write them: every ATIF file Harbor's own agents wrote, on Qwen2.5's template and
on TRL's qwen3, with the default on_error; harness logs that are not ATIF; counts by record.

The trained text of every kept row is held to the independent oracle (tests/oracle.py, straight from the
template): each trained turn is what the template writes for it as the last turn after its inference prompt.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import oracle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import DATASETS, TOKENIZERS, tokenizer

from ftdata.errors import Location, RecordError
from ftdata.options import DataOptions
from ftdata.outcomes import NoteCode
from ftdata.records.formats import to_examples
from ftdata.run.stage import Ran, Stage

ATIF = DATASETS / "agent_traces" / "atif"
NATIVE = DATASETS / "agent_traces" / "harness_native"
pytestmark = pytest.mark.skipif(not (ATIF.is_dir() and TOKENIZERS.is_dir()), reason="shared datasets or tokenizers not found")
TEMPLATES = {"qwen2.5": None, "qwen3": "qwen3"}  # the tokenizer's own template, and TRL's qwen3 over the same tokenizer
_stages: dict[tuple[str, int], Stage] = {}


def stage(template: str, max_length: int = 8192) -> Stage:
    if (template, max_length) not in _stages:
        options = DataOptions(max_length=max_length, chat_template=TEMPLATES[template], history="inference")
        _stages[template, max_length] = Stage(tokenizer("qwen2.5-instruct"), options)
    return _stages[template, max_length]


def records(folder: Path = ATIF) -> list[tuple[Location, Any]]:
    return [(Location(str(p), index=0), json.loads(p.read_text(encoding="utf-8"))) for p in sorted(folder.glob("*.json"))]


def trajectory(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": "ATIF-v1.6", "agent": {"name": "t", "version": "1"},
            "steps": [{"step_id": k, **s} for k, s in enumerate(steps, start=1)]}  # fmt: skip


def trained_texts(stage: Stage, ran: Ran) -> tuple[Counter[str], Counter[str]]:
    """(what the kept rows train, what the oracle says each of their trained turns is), run by run."""
    tok = stage.tokenizer
    got: Counter[str] = Counter()
    want: Counter[str] = Counter()
    for _, item, _ in ran.kept():
        got.update(text for _, text in oracle.row_runs(tok, item.tokenized.input_ids, item.tokenized.labels))
        example = item.example
        turns = item.split_row.turns if item.split_row is not None else [
            i for i, m in enumerate(example.messages) if m.role == "assistant" and m.train is not False]  # fmt: skip
        messages, tools = stage.renderer.chat_messages(example), list(example.tools) or None
        for i in turns:
            target = oracle.inference_target(tok, messages, i, tools=tools)
            assert target is not None, f"{example.source} messages[{i}]: the oracle cannot decide the turn"
            want[target[1]] += 1
    return got, want


# ---------------------------------------------------------------- every Harbor trajectory, both templates


@pytest.mark.parametrize(("template", "kept", "rejected"), [("qwen2.5", 9, {"not_rendered": 1}), ("qwen3", 10, {})])
def test_every_harbor_trajectory_builds_and_trains_what_the_template_writes(template, kept, rejected) -> None:
    """Qwen2.5's template writes no reasoning: the one trajectory with reasoning_content is a true reject there."""
    st_ = stage(template)
    ran = st_.run(records())
    assert (ran.report.records, ran.report.examples, dict(ran.report.rejected)) == (10, kept, rejected)
    assert len({record for record, _, _ in ran.kept()}) == kept
    assert ran.report.notes[NoteCode.HARNESS_EVENT] == 2  # by example, not by the rows a split makes
    if rejected:
        (reject,) = ran.rejects
        assert reject.location.endswith("invalid-json.trajectory.json[0]") and "does not write reasoning" in reject.reason
    got, want = trained_texts(st_, ran)
    assert got == want


def test_system_steps_after_the_first_are_system_turns_where_the_template_writes_them() -> None:
    path = ATIF / "openhands-hello-world.trajectory.json"
    ran = stage("qwen2.5").run([(Location(str(path), index=0), json.loads(path.read_text()))])
    ((_, item, _),) = list(ran.kept())
    text = item.rendered.text
    assert "<|im_start|>system\nAdded workspace context<|im_end|>" in text
    assert text.index("<|im_start|>user\nCreate a file") < text.index("<|im_start|>system\nRetrieving content for:")


def test_a_late_system_turn_joins_the_user_turn_where_the_template_writes_none() -> None:
    doc = trajectory({"source": "user", "message": "make hello.txt"}, {"source": "system", "message": "workspace: /app"},
                     {"source": "agent", "message": "done"})  # fmt: skip
    gemma = Stage(tokenizer("gemma-3-it"), DataOptions(max_length=512))
    ((_, item, _),) = list(gemma.run([(Location("t.json", index=0), doc)]).kept())
    assert [(m.role, m.content) for m in item.example.messages] == [("user", "make hello.txt\n\nworkspace: /app"), ("assistant", "done")]
    assert [n.code for n in item.tokenized.notes] == [NoteCode.SYSTEM_MOVED]


def test_user_steps_in_a_row_render_as_the_template_renders_them() -> None:
    doc = trajectory({"source": "user", "message": "context copied"}, {"source": "user", "message": "now go"},
                     {"source": "agent", "message": "ok"})  # fmt: skip
    ran = stage("qwen2.5").run([(Location("t.json", index=0), doc)])
    ((_, item, _),) = list(ran.kept())
    assert "<|im_start|>user\ncontext copied<|im_end|>\n<|im_start|>user\nnow go<|im_end|>" in item.rendered.text


def test_a_harness_event_marker_is_not_a_turn_and_references_are_followed_or_reported() -> None:
    (summarized,) = to_examples(json.loads((ATIF / "terminus_2-hello-world-context-summarization.trajectory.json").read_text()),
                                Location(str(ATIF / "terminus_2-hello-world-context-summarization.trajectory.json")))  # fmt: skip
    assert not any("context summarization and handoff" in m.content for m in summarized.messages)
    notes = {n.code: n.text for n in summarized.notes}
    assert notes[NoteCode.HARNESS_EVENT] == "steps[4]: a harness event marker, not a chat turn: left out"
    assert notes[NoteCode.TRAJECTORY_FOUND].startswith("points to 3 trajectories (subagent trajectory.summarization-1-summary.json")
    linear = ATIF / "terminus_2-hello-world-context-summarization-linear-history.trajectory.json"
    (example,) = to_examples(json.loads(linear.read_text()), Location(str(linear)))
    notes = {n.code: n.text for n in example.notes}
    assert notes[NoteCode.TRAJECTORY_FOUND] == ("points to 1 trajectory (continuation trajectory.cont-1.json) in its folder: "
                                                "each builds as a record of its own where the folder is read")  # fmt: skip
    assert notes[NoteCode.TRAJECTORY_MISSING].startswith("points to 3 trajectories (subagent trajectory.summarization-1-summary")


def test_a_bad_trajectory_is_rejected_and_the_rest_of_the_folder_builds(tmp_path) -> None:
    good = trajectory({"source": "user", "message": "q"}, {"source": "agent", "message": "a"})
    bad = trajectory({"source": "user", "message": "q"}, {"source": "robot", "message": "a"})
    (tmp_path / "a.json").write_text(json.dumps(bad))
    (tmp_path / "b.json").write_text(json.dumps(good))
    ran = stage("qwen2.5").run(records(tmp_path))  # the default on_error
    assert dict(ran.report.rejected) == {"malformed": 1} and len(list(ran.kept())) == 1
    assert ran.rejects[0].reason == "steps[1].source: source must be system, user or agent, got 'robot'"


@pytest.mark.parametrize(("name", "says"), [
    ("openhands_trajectory.json", "is an OpenHands event .* convert the log to an ATIF trajectory"),
    ("gemini-cli-trajectory.json", "is a gemini-cli session log .* convert it to an ATIF trajectory"),
])  # fmt: skip
def test_harness_logs_that_are_not_atif_say_what_they_are_and_what_to_convert_to(name, says) -> None:
    rows = json.loads((NATIVE / name).read_text())
    with pytest.raises(RecordError, match=says):
        to_examples(rows[0] if isinstance(rows, list) else rows, Location(name, index=0))


def test_mini_swe_agent_messages_are_read_as_the_conversation_they_are() -> None:
    row = json.loads((NATIVE / "mini-swe-agent-trajectory.json").read_text())
    (example,) = to_examples(row, Location("m.json", index=0))
    assert [m.role for m in example.messages][:3] == ["system", "user", "assistant"]


# ---------------------------------------------------------------- true reasons, counts by record


def test_a_prompt_that_alone_passes_max_length_says_so() -> None:
    path = ATIF / "openhands-hello-world.trajectory.no_function_calling.json"
    ran = stage("qwen2.5", 2048).run([(Location(str(path), index=0), json.loads(path.read_text()))])
    (reject,) = ran.rejects
    assert reject.code.value == "prompt_too_long"
    assert reject.reason.startswith("prompt too long: the system prompt (4,607 tokens) is never cut, and cut as far as it goes")
    assert "> max_length 2,048; raise --max-length or shorten the system prompt" in reject.reason


def test_a_split_record_is_rejected_once_and_counted_once() -> None:
    """qwen3 splits the Harbor terminus trajectories into a row per turn; with truncation=drop at a max_length no
    row fits, every row fails: one reject per record, naming the other rows, and one count."""
    files = [r for r in records() if "terminus_2-hello-world-timeout" in r[0].source or "invalid-json" in r[0].source]
    drop = Stage(tokenizer("qwen2.5-instruct"), DataOptions(max_length=300, chat_template="qwen3", truncation="drop"))
    ran = drop.run(files)
    assert sum(1 for _, item, _ in ran.outcomes if item.split_row is not None) > 2  # several rows per record
    assert (ran.report.records, ran.report.n_rejected, ran.report.reject_ratio) == (2, 2, 1.0)
    assert dict(ran.report.rejected) == {"too_long": 2}
    assert len(ran.rejects) == 2 and all("; also row 2 of" in r.reason for r in ran.rejects)


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(turns=st.lists(st.integers(min_value=1, max_value=4), min_size=1, max_size=4), limit=st.sampled_from([60, 90, 400]))
def test_counts_are_by_record_however_many_rows_a_record_makes(turns, limit) -> None:
    """Agent loops whose observations come back as user turns (a row per turn on qwen3): rejected and kept records
    add up to the records read, and the reject ratio is rejected records over records, whatever the rows."""
    docs = []
    for k, n in enumerate(turns):
        steps: list[dict[str, Any]] = [{"source": "user", "message": f"task {k}"}]
        for j in range(n):
            steps.append({"source": "agent", "message": f"step {j} " + "x " * (10 * j), "reasoning_content": "think",
                          "observation": {"results": [{"content": f"output {j}"}]}})  # fmt: skip
        docs.append((Location(f"t{k}.json", index=0), trajectory(*steps)))
    ran = stage("qwen3", limit).run(docs)
    rejected = {r.location for r in ran.rejects if not r.kept}
    kept = {record for record, _, _ in ran.kept()}
    assert ran.report.n_rejected == len(rejected) == len(ran.rejects) - sum(r.kept for r in ran.rejects)
    assert ran.report.n_rejected + len(kept) == ran.report.records == len(turns)
    assert ran.report.examples == len(turns)
    assert ran.report.reject_ratio == len(rejected) / len(turns)


def test_recorded_ids_that_lack_only_the_stop_token_are_not_drift() -> None:
    st_ = stage("qwen2.5")
    doc = trajectory({"source": "user", "message": "2+2?"}, {"source": "agent", "message": "It is 4."})
    ((_, item, _),) = list(st_.run([(Location("t.json", index=0), doc)]).kept())
    (text,) = [t for _, t in oracle.row_runs(st_.tokenizer, item.tokenized.input_ids, item.tokenized.labels)]
    ids = st_.tokenizer(text, add_special_tokens=False)["input_ids"]
    doc["steps"][1]["metrics"] = {"completion_token_ids": ids[:-1]}  # the stream without <|im_end|>
    ran = st_.run([(Location("t.json", index=0), doc)])
    assert (ran.report.drift_turns, ran.report.drift_differ, ran.report.drift_stop) == (1, 0, 1)
    assert [n.code for n in ran.outcomes[0][1].tokenized.notes] == [NoteCode.STOP_MISSING]
    doc["steps"][1]["metrics"] = {"completion_token_ids": [ids[0], 7, *ids[2:]]}
    ran = st_.run([(Location("t.json", index=0), doc)])
    (note,) = ran.outcomes[0][1].tokenized.notes
    assert note.text == (f"messages[1]: its {len(ids)} recorded completion tokens and the {len(ids)} tokens trained differ, "
                         f"they share the first 1 and the last {len(ids) - 2} (retokenization drift)")  # fmt: skip


def test_a_cached_build_of_one_trajectory_is_not_served_once_the_file_it_points_to_appears(tmp_path) -> None:
    """A trajectory read alone says whether the continuation it points to lies beside it; that note depends on a
    file the build did not read, so the cache keeps the path (as it keeps a missing image) and rebuilds once the
    file is there: the report never says 'not in its folder' of a file that is."""
    import shutil

    import ftdata

    name = "terminus_2-hello-world-context-summarization-linear-history.trajectory"
    data, cache = tmp_path / "run" / f"{name}.json", tmp_path / "cache"
    data.parent.mkdir()
    shutil.copy(ATIF / f"{name}.json", data)

    def built(out: str) -> Any:
        options = {"tokenizer": str(TOKENIZERS / "qwen2.5-instruct"), "cache_dir": str(cache), "max_length": 8192}
        return ftdata.build(str(data), tmp_path / out, **options)

    first, again = built("o1"), built("o2")
    assert first.cached_from is None and again.cached_from is not None
    missing = again.report.note_texts[NoteCode.TRAJECTORY_MISSING]
    assert any("continuation trajectory.cont-1.json" in text for text in missing)
    assert NoteCode.TRAJECTORY_FOUND not in again.report.note_texts
    shutil.copy(ATIF / f"{name}.cont-1.json", data.parent)
    later = built("o3")
    assert later.cached_from is None
    assert later.report.note_texts[NoteCode.TRAJECTORY_FOUND] == [
        "points to 1 trajectory (continuation trajectory.cont-1.json) in its folder: each builds as a record of its "
        "own where the folder is read"
    ]
    assert built("o4").cached_from is not None  # and cached again, now with the file
