"""Every trained turn trained as inference sees it (history=inference), in the fewest rows.

The oracle is independent of ftdata's span finder: a turn's inference target is what `tests/oracle.py`
(from `apply_chat_template` alone) trains for the turn as the LAST turn of its own conversation,
`messages[:i+1]`, and its context is everything that render writes before it. A row of ftdata's (its
tokens decoded) must hold, for every run of trained tokens, exactly the context and the target of one
turn; every trained turn of a record is trained in exactly one row; and a record makes no more rows than
an exhaustive search over the rows `render(messages[:j+1])` can make.
"""

from __future__ import annotations

import json
from itertools import combinations
from typing import Any

import oracle
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import TOKENIZERS, tokenizer
from test_chat_tools import GLM_TAGS, GPTOSS_TAGS, template_tokenizer

import ftdata
from ftdata.chat.chat_template import with_template
from ftdata.errors import Location
from ftdata.options import DataOptions
from ftdata.run.report import Reject
from ftdata.run.sft import Measured
from ftdata.run.stage import Stage
from ftdata.types import SplitReason

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

THINK = ("<think>", "</think>")
TEMPLATES = {  # name -> (tokenizer factory, whether a stop token closes every turn: the row-count oracle needs it)
    "qwen3": (lambda: template_tokenizer("qwen3", THINK), True),
    "qwen3_6": (lambda: template_tokenizer("qwen3_6", THINK), True),
    "gptoss": (lambda: template_tokenizer("gptoss", GPTOSS_TAGS), True),
    "glm4moe": (lambda: template_tokenizer("glm4moe", GLM_TAGS, eos="<|endoftext|>"), False),
    "qwen2.5-instruct": (lambda: tokenizer("qwen2.5-instruct"), True),
    "llama-3.2-instruct": (lambda: tokenizer("llama-3.2-instruct"), True),
    "mistral-nemo-instruct-2407": (lambda: tokenizer("mistral-nemo-instruct-2407"), True),
}
PINNED = {"date_string": "26 Jul 2024"}  # Llama 3.x prints today's date


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def assistant(text: str, reasoning: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": text, **({"reasoning_content": reasoning} if reasoning is not None else {}), **kw}


def rows_of(tok, messages, **options: Any) -> list[Measured | Reject]:
    options = {"history": "inference", **options}
    stage = Stage(tok, DataOptions(max_length=8192, chat_template_kwargs=PINNED, **options))
    return [item for _, item, _ in stage.run([(Location("t.jsonl", line=1), {"messages": messages})]).outcomes]


def runs(tok, item: Measured) -> list[tuple[str, str]]:
    """(context, trained text) of each run of trained tokens of a row, decoded."""
    ids, labels = item.tokenized.input_ids, item.tokenized.labels
    out, k = [], 0
    while k < len(ids):
        if labels[k] == -100:
            k += 1
            continue
        end = k
        while end < len(ids) and labels[end] != -100:
            end += 1
        out.append((tok.decode(ids[:k]), tok.decode(ids[k:end])))
        k = end
    return out


def target(tok, messages, i) -> tuple[str, str] | None:
    """The oracle's (context, trained text) of turn i as inference sees it; None where it cannot decide. The context
    is the turn's inference prompt where the render through the turn writes one that conflicts with it."""
    exp = oracle.expect(tok, messages[: i + 1], kwargs=PINNED, edge_cases=True)
    if exp.must_reject or exp.turns[-1].status != "rule":
        return None
    a, b = exp.turns[-1].span
    names = [c["function"]["name"] for c in messages[i].get("tool_calls") or ()]
    if not all(name in exp.text[a:b] for name in names):  # a call turn whose end the oracle cannot place (gpt-oss)
        return None
    return oracle.inference_prompt(tok, messages, i, exp.text[:a], kwargs=PINNED), exp.text[a:b]


def fewest_rows(tok, messages, trained: list[int]) -> int | None:
    """The fewest rows `render(messages[:j+1])` (j a trained turn) in which every trained turn is written as its
    target: an exhaustive search over sets of rows (oracle's own renders, no ftdata)."""
    targets = {i: target(tok, messages, i) for i in trained}
    if None in targets.values():
        return None
    renders = {j: tok.apply_chat_template(messages[: j + 1], tokenize=False, **PINNED) for j in trained}
    # A turn whose inference prompt no render writes is a row of its own (that prompt and the turn).
    alone = [i for i in trained if not renders[i].startswith("".join(targets[i]))]  # type: ignore[arg-type]
    rest = [i for i in trained if i not in alone]
    holds = {j: {i for i in rest if i <= j and renders[j].startswith("".join(targets[i]))} for j in rest}  # type: ignore[arg-type]
    for n in range(len(rest) + 1):
        if any(set().union(set(), *(holds[j] for j in rows)) >= set(rest) for rows in combinations(rest, n)):
            return n + len(alone)
    raise AssertionError("no cover")


def _body(text: str, tok, closes: bool) -> str:
    """A trained text less its stop token where a template closes no turn (GLM): a history turn stops on the
    next turn's header, the same turn as the last on the appended EOS; both end generation."""
    text = text.strip()
    if closes:
        return text
    for stop in (tok.eos_token, "<|user|>", "<|observation|>"):
        if text.endswith(stop):
            return text[: -len(stop)]
    return text


def check_record(tok, messages, *, closes: bool = True) -> list[Measured]:
    """The oracle's verdict on ftdata's rows of one record (all assistant turns trained); returns the rows.
    `closes`: the template ends every turn with a stop token (the row count is then held to the fewest)."""
    items = rows_of(tok, messages)
    assert all(isinstance(item, Measured) for item in items), [getattr(item, "reason", "") for item in items]
    trained = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    got = [run for item in items for run in runs(tok, item)]  # type: ignore[arg-type]
    assert len(got) == len(trained), f"{len(got)} trained runs for {len(trained)} trained turns"
    for i in trained:
        expected = target(tok, messages, i)
        if expected is None:
            continue
        context, text = expected
        hits = [g for g in got if g[0].rstrip() == context.rstrip() and _body(g[1], tok, closes) == _body(text, tok, closes)]
        assert hits, f"turn {i}: at inference {text!r} after {context[-160:]!r}; trained {got!r}"
    if closes and (fewest := fewest_rows(tok, messages, trained)) is not None:
        assert len(items) == fewest
    return items  # type: ignore[return-value]


# ---------------------------------------------------------------- literal records


def test_qwen3_trains_a_history_turn_with_its_reasoning_in_a_row_of_its_own() -> None:
    """The issue's record: on TRL's qwen3 template the history turn's reasoning is dropped from the full render,
    so the record becomes two rows, each turn trained with its think block after its inference prompt."""
    tok = TEMPLATES["qwen3"][0]()
    messages = [user("What is 2+2?"), assistant("4", "Add two and two."), user("And 3+3?"), assistant("6", "Add three and three.")]
    first, second = check_record(tok, messages)
    assert [text for _, text in runs(tok, first)] == ["<think>\nAdd three and three.\n</think>\n\n6<|im_end|>"]
    assert runs(tok, second) == [
        ("<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<think>\nAdd two and two.\n</think>\n\n4<|im_end|>")
    ]  # fmt: skip
    assert (first.split_row.index, first.split_row.count, first.split_row.turns) == (0, 2, (3,))  # type: ignore[union-attr]
    assert second.split_row.turns == (1,) and second.split_row.reasons == ((1, SplitReason.REASONING),)  # type: ignore[union-attr]
    assert "drops its reasoning from history" in second.split_row.describe()  # type: ignore[union-attr]
    assert all(not item.tokenized.notes for item in (first, second))  # nothing is trained without its reasoning


def test_one_row_keeps_the_full_render_and_says_what_it_trains_without_reasoning() -> None:
    tok = TEMPLATES["qwen3"][0]()
    messages = [user("What is 2+2?"), assistant("4", "Add two and two."), user("And 3+3?"), assistant("6", "Add three and three.")]
    (item,) = rows_of(tok, messages, history="one_row")
    assert [text for _, text in runs(tok, item)] == ["4<|im_end|>", "<think>\nAdd three and three.\n</think>\n\n6<|im_end|>"]
    assert item.split_row is None and [n.code.value for n in item.tokenized.notes] == ["reasoning_dropped"]


def test_an_agent_loop_after_one_user_query_stays_one_row_on_qwen3() -> None:
    """Qwen3 keeps the reasoning of every assistant turn after the last user query: the loop is one row."""
    tok = TEMPLATES["qwen3"][0]()
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = [
        user("Weather in Paris?"), assistant("", "I should call the tool.", tool_calls=[call]),
        {"role": "tool", "content": "22C"}, assistant("It is 22C.", "The tool said 22C."),
    ]  # fmt: skip
    (item,) = check_record(tok, messages)
    assert item.split_row is None and len(runs(tok, item)) == 2


def test_a_plain_chat_on_a_prefix_stable_template_is_one_row_byte_for_byte() -> None:
    tok = TEMPLATES["qwen2.5-instruct"][0]()
    messages = [user("hi"), assistant("hello"), user("2+2?"), assistant("4"), user("and 3+3?"), assistant("6")]
    (item,) = check_record(tok, messages)
    (same,) = rows_of(tok, messages, history="one_row")
    assert item.split_row is None and item.tokenized == same.tokenized  # type: ignore[union-attr]


def test_qwen3s_empty_think_block_splits_a_plain_chat_and_says_so() -> None:
    """Qwen3 writes `<think>\\n\\n</think>\\n\\n` into the last turn only: a plain history turn is trained, as
    at inference, after the prompt with the block it writes (reason: target)."""
    tok = TEMPLATES["qwen3"][0]()
    messages = [user("hi"), assistant("hello"), user("2+2?"), assistant("4")]
    first, second = check_record(tok, messages)
    assert runs(tok, second)[0][1] == "<think>\n\n</think>\n\nhello<|im_end|>"
    assert second.split_row.reasons == ((1, SplitReason.TARGET),)  # type: ignore[union-attr]


# Mistral 7B v0.3's rule, written out: the system prompt goes into the conversation's last user turn.
MISTRAL_V3 = (
    "{%- set sys = messages[0].content if messages[0].role == 'system' else none %}"
    "{%- set msgs = messages[1:] if sys else messages %}{%- set ns = namespace(last=-1) %}"
    "{%- for m in msgs %}{%- if m.role == 'user' %}{%- set ns.last = loop.index0 %}{%- endif %}{%- endfor %}{{ bos_token }}"
    "{%- for m in msgs %}{%- if m.role == 'user' %}[INST]{% if sys and loop.index0 == ns.last %}{{ sys }}\n\n{% endif %}"
    "{{ m.content }}[/INST]{%- else %}{{ m.content }}{{ eos_token }}{%- endif %}{%- endfor %}"
)


def test_a_moved_system_prompt_trains_a_history_turn_in_the_context_its_inference_prompt_gives() -> None:
    """Mistral v0.3 writes the system prompt into the last user turn: a history turn's context at inference
    holds the system prompt before its own user turn, which the full render does not (reason: context)."""
    tok = with_template(tokenizer("mistral-nemo-instruct-2407"), MISTRAL_V3)
    messages = [{"role": "system", "content": "Be brief."}, user("hi"), assistant("hello"), user("2+2?"), assistant("4")]
    first, second = check_record(tok, messages)
    assert second.split_row.reasons == ((2, SplitReason.CONTEXT),)  # type: ignore[union-attr]
    assert runs(tok, second) == [("<s>[INST]Be brief.\n\nhi[/INST]", "hello</s>")]


def test_a_build_keeps_a_records_rows_on_one_side_of_the_split_and_counts_them(tmp_path) -> None:
    tok = TEMPLATES["qwen3"][0]()
    path = tmp_path / "chats.jsonl"
    records = [
        {"messages": [user(f"q{k}"), assistant(f"a{k}", f"r{k}"), user(f"p{k}"), assistant(f"b{k}", f"s{k}")]} for k in range(10)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = ftdata.build(path, tokenizer=tok, test_size=3, seed=1, history="inference")
    report = result.report
    assert (report.records, report.sequences, report.split_records) == (10, 20, 10)
    assert dict(report.added_rows) == {"reasoning": 10} and report.added_tokens > 0
    assert "10 split into 20 rows" in report.summary()
    # The three test records' six rows are there, and no turn of theirs is in train.
    test = [tok.decode(row["input_ids"]) for row in result.dataset["test"]]
    train = [tok.decode(row["input_ids"]) for row in result.dataset["train"]]
    assert len(test) == 6 and len(train) == 14
    held = {text.split("user\n")[1].split("<")[0] for text in test}
    assert not any(text.split("user\n")[1].split("<")[0] in held for text in train)


def test_engine_processes_splits_the_records_engine_local_splits(monkeypatch) -> None:
    """The real glaive tool-call chats on TRL's qwen3 template (its empty think block splits every multi-turn
    record): worker processes build the rows, rejects and counts of the in-process build."""
    from support import DATASETS

    from ftdata.run import executors

    glaive = DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json"
    options = dict(tokenizer=str(TOKENIZERS / "qwen2.5-instruct"), chat_template="qwen3", max_length=1024, limit=40,
                   batch_size=8, on_error="skip", test_size=0.2)  # fmt: skip

    def build(**more: Any) -> tuple[Any, dict[str, Any]]:
        result = ftdata.prepare(glaive, **options, **more)
        report = result.report.to_dict()
        for volatile in ("seconds", "rejects_path", "cached", "fingerprint"):
            report.pop(volatile)
        return {name: split.to_dict() for name, split in result.dataset.items()}, report

    local = build()
    monkeypatch.setattr(executors, "IN_PROCESS_BELOW", 0)  # a pool even for 40 records
    assert build(engine="processes", num_workers=2) == local
    assert local[1]["split_records"] > 0 and dict(local[1]["added_rows"]).keys() == {"target"}


def test_a_row_that_fails_rejects_its_record_once_naming_the_row() -> None:
    """A split record's row that cannot be kept (here: the history turn's row does not fit max_length under
    truncation=drop) rejects the record with one reject; its other rows go with it."""
    tok = TEMPLATES["qwen3"][0]()
    long = "word " * 200
    messages = [user("q"), assistant("a", long), user("p"), assistant("b", "short")]
    stage = Stage(tok, DataOptions(max_length=120, truncation="drop", history="inference"))
    ran = stage.run([(Location("t.jsonl", line=1), {"messages": messages})])
    assert all(not result.rows for _, _, result in ran.outcomes)
    (reject,) = ran.rejects
    assert "row 2 of 2: trains messages[1]" in reject.reason


def test_apriels_call_turn_is_split_off_and_trained_as_the_last_turn_writes_it() -> None:
    """Apriel 1.6 writes a call's id in history only and closes a last call turn with nothing: the call turn is
    trained in a row of its own as the model writes it at inference (no id, its closing markup, then the EOS);
    the record's full row trains the answer. Before: the history form, with the id, was trained."""
    from support import matrix_module

    matrix = matrix_module()
    case = next(c for c in matrix.served_cases() if c.name == "apriel-1.6")
    record = matrix.served_records(case)["call-dict"]
    with matrix.served_on(case) as tok:
        stage = Stage(tok, DataOptions(max_length=100_000, history="inference", stop_tokens=list(case.stop_tokens)))
        items = [item for _, item, _ in stage.run([(Location("t.jsonl", line=1), record)]).outcomes]
        assert [i.split_row.turns for i in items] == [(3,), (1,)]
        assert [text for _, text in runs(tok, items[1])] == [
            '\n<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}]</tool_calls></s>']
        assert [text for _, text in runs(tok, items[0])] == ["It is mild in Paris.</s>"]


def test_a_turn_whose_last_turn_form_cannot_be_located_is_rejected_not_trained_as_history_writes_it() -> None:
    """A template that writes a last call turn with a plain-text trailer and no stop token (its history call turns
    end with <|im_end|>): what the model writes there is undecidable (the oracle cannot decide it either), so
    history=inference rejects the record, naming the turn; history=one_row trains the history form, by the user's
    choice."""
    template = (
        "{%- for m in messages %}{%- if m.role == 'assistant' %}<|im_start|>assistant\n{{ m.content or '' }}"
        "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }} {{ c.function.arguments | tojson }}</tool_call>{% endfor %}"
        "{% if loop.last and m.tool_calls %} (waiting){% else %}<|im_end|>\n{% endif %}"
        "{%- else %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{%- endif %}{%- endfor %}"
        "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    tok = with_template(tokenizer("qwen2.5-instruct"), template)
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    messages = [user("Weather?"), assistant("", tool_calls=[call]), {"role": "tool", "tool_call_id": "c1", "content": "5C"},
                assistant("It is 5C.")]
    assert oracle.undecided(tok, messages) == [1]
    stage = Stage(tok, DataOptions(max_length=4096, history="inference"))
    (reject,) = stage.run([(Location("t.jsonl", line=1), {"messages": messages})]).rejects
    assert reject.reason.startswith("assistant turn 1 cannot be trained as inference sees it: as the last turn it does not end")
    one_row = Stage(tok, DataOptions(max_length=4096, history="one_row"))
    (item,) = [item for _, item, _ in one_row.run([(Location("t.jsonl", line=1), {"messages": messages})]).outcomes]
    assert [text for _, text in runs(tok, item)] == ['<tool_call>get_weather {"city": "Oslo"}</tool_call><|im_end|>', "It is 5C.<|im_end|>"]


# ---------------------------------------------------------------- properties over templates

WORDS = ["hi", "4", "ok", "user", "assistant", "system", "think", "tool", "\n", " ", "answer", "</", "Paris"]
text = st.lists(st.sampled_from(WORDS), min_size=1, max_size=4).map("".join).filter(lambda s: s.strip())


@st.composite
def conversations(draw, *, tools: bool) -> list[dict[str, Any]]:
    """Multi-turn chats with reasoning in some turns; with `tools`, agent loops (calls, results) too. Words of the
    templates' own markup, each text ending in its own number (the oracle finds a message's text by searching)."""
    out: list[dict[str, Any]] = []
    n = iter(range(100))

    def words() -> str:
        return f"{draw(text)} w{next(n)}"

    def reasoning() -> str | None:
        return words() if draw(st.booleans()) else None

    if draw(st.booleans()):
        out.append({"role": "system", "content": words()})
    for _ in range(draw(st.integers(1, 3))):
        out.append(user(words()))
        if tools and draw(st.booleans()):
            call = {"type": "function", "function": {"name": "lookup", "arguments": {"q": words()}}}
            out.append(assistant("", reasoning(), tool_calls=[call]))
            out.append({"role": "tool", "content": words()})
        out.append(assistant(words(), reasoning()))
    return out


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_trained_turn_is_trained_once_on_its_inference_target_in_the_fewest_rows(name, data) -> None:
    factory, closes = TEMPLATES[name]
    tok = factory()
    messages = data.draw(conversations(tools=name in ("qwen3", "qwen3_6", "gptoss", "glm4moe", "qwen2.5-instruct")))
    if name in ("mistral-nemo-instruct-2407", "llama-3.2-instruct"):  # templates without reasoning
        messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
    items = rows_of(tok, messages)
    if any(isinstance(item, Reject) for item in items):
        return  # a record the template cannot train (test_inference_rule holds rejects to the oracle)
    check_record(tok, messages, closes=closes)


@pytest.mark.parametrize("name", ["qwen3", "gptoss", "glm4moe", "mistral-nemo-instruct-2407"])
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_the_rows_of_a_record_do_not_depend_on_the_users_words(name, data) -> None:
    """Metamorphic: changing what the users say (by a word, or a fragment of the template's own markup) changes
    neither which turns each row trains nor what they train."""
    tok = TEMPLATES[name][0]()
    messages = data.draw(conversations(tools=False))
    if name == "mistral-nemo-instruct-2407":
        messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
    words = st.sampled_from(["hi", "a", "think", "assistant", "\n", "<", "<|im_", "</thi", "[/INS"])
    edited = [user(m["content"] + data.draw(words)) if m["role"] == "user" else m for m in messages]

    def shape(items: list[Measured | Reject]) -> list[Any]:
        return [(i.split_row and i.split_row.turns, [text for _, text in runs(tok, i)]) if isinstance(i, Measured) else "reject" for i in items]

    assert shape(rows_of(tok, edited)) == shape(rows_of(tok, messages))


# ---------------------------------------------------------------- every template (benchmarks/template_matrix.py --history)


def test_every_trl_and_served_template_builds_the_history_probes_as_the_oracle_says_and_the_docs_show() -> None:
    """Seven multi-turn records (plain, reasoning, calls, agent loops over two queries, think-in-content) on every
    TRL and served template, thinking on and off: each record's rows agree with `oracle.trajectory` (every turn
    trained once on its inference target, no more rows than the fewest), except the known entries, which must
    still disagree (a fix deletes its entry); docs/history-matrix.md is what the script prints."""
    from support import ROOT, matrix_module

    matrix = matrix_module()
    history = matrix.history_matrix(tokenizer)  # support's cached tokenizers: the script's loader reloads per case
    wrong = {(variant, probe) for variant, vs in history.items() for probe, v in vs.items() if not v.agrees}
    assert wrong == set(matrix.HISTORY_KNOWN), {
        key: history[key[0]][key[1]].problems for key in wrong ^ set(matrix.HISTORY_KNOWN) if key[0] in history}
    assert len(history) > 100 and sum(v.rows > 1 for vs in history.values() for v in vs.values()) > 100
    page = (ROOT / "docs" / "history-matrix.md").read_text(encoding="utf-8")
    assert matrix.history_table(history) in page and matrix.history_summary(history) in page, (
        "regenerate with: .venv/bin/python benchmarks/template_matrix.py --history")
