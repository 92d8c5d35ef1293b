"""ftdata's labels against an independent oracle of the inference-consistency rule.

For every text-only chat template TRL ships and every tokenizer in ../shared/tokenizers (its
own template), with `enable_thinking` on and off where the template reads it, Hypothesis
generates plain multi-turn, tool-call (dict and JSON-string arguments, parallel calls, tool
results) and reasoning conversations in OpenAI format. `tests/oracle.py` says, from
`apply_chat_template` alone, which characters each assistant turn must train; ftdata's
labels (through `Stage`, one record at a time) must train exactly those, or ftdata must
reject the record with a reason where the rule cannot be followed.

A record fails the test when ftdata
- trains anything else than the rule says (decided turns), or trains another message's
  text, or ends a trained turn without a stop token (turns the rule cannot decide);
- trains a record whose tool calls, reasoning or content the template never writes;
- rejects a record the rule decides completely.
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from contextlib import contextmanager
from functools import cache
from typing import Any

import oracle
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from support import TOKENIZER_NAMES, TOKENIZERS, matrix_module, tokenizer

from ftdata.errors import FtdataError, Location, UnusableRecord
from ftdata.options import DataOptions
from ftdata.run.stage import Stage

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")


MATRIX = matrix_module()

# ---------------------------------------------------------------- which templates, which kwargs

# Llama 3.x templates print today's date: pin it so two renders of one record agree.
PINNED = {"date_string": "26 Jul 2024"}


def _trl_sources() -> dict[str, str]:
    try:
        folder = MATRIX.template_dir()
    except ImportError:  # trl is an optional dependency (the `train` extra)
        return {}
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.jinja"))
            if not p.stem.endswith("_training") and not MATRIX.VISION.search(p.stem)}  # fmt: skip


def _own_source(name: str) -> str:
    config = json.loads((TOKENIZERS / name / "tokenizer_config.json").read_text(encoding="utf-8"))
    return str(config.get("chat_template") or "")


def _variants(source: str) -> list[dict[str, Any]]:
    base = dict(PINNED) if "date_string" in source else {}
    if "enable_thinking" in source:
        return [{**base, "enable_thinking": True}, {**base, "enable_thinking": False}]
    return [base]


def _config_id(where: str, name: str, kwargs: dict[str, Any]) -> str:
    thinking = {True: "-think", False: "-nothink"}.get(kwargs.get("enable_thinking"), "")
    return f"{where}:{name}{thinking}"


CONFIGS = [("trl", name, kw) for name, source in _trl_sources().items() for kw in _variants(source)] + [
    ("own", name, kw) for name in TOKENIZER_NAMES for kw in _variants(_own_source(name))
]
CONFIG_IDS = [_config_id(*c) for c in CONFIGS]


@cache
def _cases() -> dict[str, Any]:
    return {case.name: case for case in MATRIX.cases(tokenizer)}


@contextmanager
def configured(where: str, name: str):
    """The tokenizer of a config with its chat template set (restored afterwards)."""
    if where == "own":
        yield tokenizer(name)
        return
    case = _cases()[name]
    if case.skip:
        pytest.skip(f"{name}: {case.skip}")
    with MATRIX.template_on(case, tokenizer) as tok:
        yield tok


# ---------------------------------------------------------------- conversations (OpenAI format)

# Text a tokenizer's normalizer keeps as is (NFKC-stable): Hangul jamo that compose would
# make the decoded tokens differ from the rendering in characters, not in meaning.
WORD = st.one_of(
    st.text(st.characters(whitelist_categories=("Lu", "Ll", "Lo", "Nd"), max_codepoint=0xFFFF), min_size=1, max_size=7)
    .filter(lambda w: unicodedata.normalize("NFKC", w) == w),
    st.sampled_from(["😀", "ça", "你好", "ä", "x=1", "50%", "a-b", "(ok)", "don't", "end."]),
)
SEPARATOR = st.sampled_from([" ", " ", " ", "\n", "\n\n", ", "])
EDGE = st.sampled_from(["", "", "", " ", "\n"])


def text(tag: str):
    """Words behind a tag unique in the record (the oracle finds each message by its text)."""
    return st.builds(lambda lead, words, sep, trail: f"{lead}{tag} {sep.join(words)}{trail}",
                     EDGE, st.lists(WORD, min_size=1, max_size=5), SEPARATOR, EDGE)  # fmt: skip


FUNCTIONS = {
    "get_weather": {"city": "string", "unit": "string"},
    "search_docs": {"query": "string", "limit": "integer"},
    "send_note": {"body": "string"},
}


def schema(name: str) -> dict[str, Any]:
    params = FUNCTIONS[name]
    return {"type": "function", "function": {
        "name": name, "description": f"Tool {name.replace('_', ' ')} for the test.",
        "parameters": {"type": "object", "properties": {k: {"type": t} for k, t in params.items()},
                       "required": [next(iter(params))]}}}  # fmt: skip


@st.composite
def plain_records(draw):
    msgs = [{"role": "system", "content": draw(text("S0Q"))}] if draw(st.booleans()) else []
    for k in range(draw(st.integers(1, 3))):
        msgs += [{"role": "user", "content": draw(text(f"U{k}Q"))}, {"role": "assistant", "content": draw(text(f"A{k}Q"))}]
    return {"messages": msgs}


@st.composite
def tool_records(draw):
    names = draw(st.lists(st.sampled_from(sorted(FUNCTIONS)), min_size=1, max_size=2, unique=True))
    tools = [schema(n) for n in names]
    msgs = [{"role": "system", "content": draw(text("S0Q"))}] if draw(st.booleans()) else []
    msgs.append({"role": "user", "content": draw(text("U0Q"))})
    calls, results = [], []
    for c in range(draw(st.integers(1, 2))):  # two: parallel calls
        name = draw(st.sampled_from(names))
        args: dict[str, Any] = {}
        for key, kind in FUNCTIONS[name].items():
            if kind == "string":
                args[key] = draw(text(f"V{c}{key[0]}Q"))
            elif draw(st.booleans()):
                args[key] = draw(st.integers(0, 99))
        call_id = f"call_{c}"
        arguments = json.dumps(args, ensure_ascii=False) if draw(st.booleans()) else args
        calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
        results.append({"role": "tool", "tool_call_id": call_id, "name": name, "content": draw(text(f"R{c}Q"))})
    content = draw(st.sampled_from([None, "", "text"]))
    msgs.append({"role": "assistant", "content": draw(text("A0Q")) if content == "text" else content, "tool_calls": calls})
    msgs += results
    msgs.append({"role": "assistant", "content": draw(text("A1Q"))})
    if draw(st.booleans()):
        msgs += [{"role": "user", "content": draw(text("U2Q"))}, {"role": "assistant", "content": draw(text("A2Q"))}]
    return {"messages": msgs, "tools": json.dumps(tools) if draw(st.booleans()) else tools}


@st.composite
def reasoning_records(draw):
    msgs = [{"role": "system", "content": draw(text("S0Q"))}] if draw(st.booleans()) else []
    n = draw(st.integers(1, 2))
    key = draw(st.sampled_from(["reasoning_content", "reasoning_content", "thinking"]))
    for k in range(n):
        msgs.append({"role": "user", "content": draw(text(f"U{k}Q"))})
        turn = {"role": "assistant", "content": draw(text(f"A{k}Q"))}
        if k == n - 1 or draw(st.booleans()):
            turn[key] = draw(text(f"T{k}Q"))
        msgs.append(turn)
    return {"messages": msgs}


KINDS = {"plain": plain_records(), "tools": tool_records(), "reasoning": reasoning_records()}


# ---------------------------------------------------------------- one record: ftdata vs the oracle


def oracle_view(record: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    tools = record.get("tools")
    return record["messages"], json.loads(tools) if isinstance(tools, str) else tools


def ftdata_result(stage: Stage, record: dict[str, Any]) -> Any:
    """ftdata's Tokenized for the record, or the reason it rejected it."""
    try:
        examples = stage.examples(Location("oracle", index=0), record)
        assert len(examples) == 1, f"one conversation, {len(examples)} examples"
        result = stage.tokenize(examples[0])
    except UnusableRecord as exc:
        return exc.reason
    except FtdataError as exc:
        return str(exc)
    return result.reason if isinstance(result, UnusableRecord) else result


def check_record(tok: Any, stage: Stage, record: dict[str, Any], kwargs: dict[str, Any], stops: oracle.StopTokens,
                 stats: Counter) -> None:  # fmt: skip
    messages, tools = oracle_view(record)
    exp = oracle.expect(tok, messages, tools=tools, kwargs=kwargs, stops=stops, edge_cases=True)
    # A last turn whose context A writes otherwise than its inference prompt (a closed think block before its
    # reasoning) is trained after that prompt: the rule's row is P_i and the turn.
    exp = oracle.as_prompt_row(tok, messages, exp, tools=tools, kwargs=kwargs)
    got = ftdata_result(stage, record)
    shown = json.dumps(record, ensure_ascii=False)
    if isinstance(got, str):
        assert got.strip(), f"a rejection without a reason for {shown}"
        stats["rejected"] += 1
        stats[f"rejected: {got[:70]}"] += 1
        assert not exp.decidable, f"ftdata rejected a record the rule masks ({got}): {shown}\nA = {exp.text!r}"
        return
    assert not exp.must_reject, f"ftdata trained a record it must reject ({exp.must_reject}): {shown}"
    problems = oracle.compare(exp, tok, got.input_ids, got.labels)
    assert not problems, f"{problems}\nrecord: {shown}\nA = {exp.text!r}"
    stats["verified by the rule" if exp.decidable else "weak check"] += 1


def run_config(config: tuple[str, str, dict[str, Any]], *, examples: int, shrink: bool) -> tuple[Counter, list[str]]:
    """Every kind of record on one template + kwargs: (counts, the first failure of each kind)."""
    where, name, kwargs = config
    stats: Counter = Counter()
    failures = []
    phases = tuple(Phase) if shrink else (Phase.explicit, Phase.reuse, Phase.generate)
    with configured(where, name) as tok:
        try:
            stage = Stage(tok, DataOptions(max_length=100_000, chat_template_kwargs=kwargs or None))
        except FtdataError as exc:  # a template ftdata refuses up front (it says why)
            assert str(exc).strip()
            pytest.skip(f"ftdata refuses the template: {exc}")
        stops = oracle.stop_tokens(tok, kwargs)
        for kind, records in KINDS.items():

            @settings(max_examples=examples, deadline=None, derandomize=True, database=None, phases=phases,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
            @given(records)
            def run(record):
                check_record(tok, stage, record, kwargs, stops, stats)

            try:
                run()
            except AssertionError as exc:
                failures.append(f"[{kind}] {str(exc).splitlines()[0][:2000]}\n" + "\n".join(str(exc).splitlines()[1:4]))
    return stats, failures


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_labels_follow_the_inference_rule(config):
    stats, failures = run_config(config, examples=3, shrink=False)
    assert not failures, "\n\n".join(failures)
    assert sum(stats.values()), stats


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_labels_follow_the_inference_rule_sweep(config):
    stats, failures = run_config(config, examples=40, shrink=True)
    assert not failures, "\n\n".join(failures)
    assert stats["verified by the rule"] + stats["weak check"], stats  # some records were trained and checked


# ---------------------------------------------------------------- the oracle itself, on literal renders


def test_oracle_on_chatml_with_a_tool_call():
    tok = tokenizer("qwen2.5-instruct")
    record = {"messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "18C"},
        {"role": "assistant", "content": "It is 18C."}], "tools": [schema("get_weather")]}  # fmt: skip
    exp = oracle.expect(tok, record["messages"], tools=record["tools"])
    assert [exp.text[a:b] for a, b in (t.span for t in exp.turns)] == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "It is 18C.<|im_end|>",
    ]
    assert exp.decidable and not exp.string_arguments
    assert any(exp.text[a:b] == "18C" for a, b in exp.forbidden)


def test_oracle_stop_tokens_of_three_kinds_of_template():
    tok = tokenizer("qwen2.5-instruct")
    assert oracle.stop_tokens(tok, {}).describe() == "<|im_end|>"
    case = _cases().get("gptoss")
    if case is None:
        pytest.skip("trl not installed")
    with MATRIX.template_on(case, tokenizer) as tok:
        assert oracle.stop_tokens(tok, {}).describe() == "<|end|> / last <|return|> / call <|call|>"
    with MATRIX.template_on(_cases()["glm4moe"], tokenizer) as tok:
        stops = oracle.stop_tokens(tok, {})
        assert stops.describe() == "none: next header / EOS"
        exp = oracle.expect(tok, [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                                  {"role": "user", "content": "q2"}, {"role": "assistant", "content": "a2"}],
                            kwargs={"enable_thinking": False}, stops=stops)  # fmt: skip
        assert [exp.text[a:b] for a, b in (t.span for t in exp.turns)] == ["\na1<|user|>", f"\na2{tok.eos_token}"]
        assert exp.eos_appended


def test_oracle_catches_a_wrong_mask():
    """The comparison is not vacuous: labels off by one token, or one turn untrained, fail."""
    tok = tokenizer("qwen2.5-instruct")
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"},
            {"role": "user", "content": "again"}, {"role": "assistant", "content": "sure"}]  # fmt: skip
    exp = oracle.expect(tok, msgs)
    ids = tok.backend_tokenizer.encode(exp.text, add_special_tokens=False).ids
    offsets = tok.backend_tokenizer.encode(exp.text, add_special_tokens=False).offsets
    def labels(*spans):
        return [i if any(a <= o[0] and o[1] <= b for a, b in spans) else -100 for i, o in zip(ids, offsets)]

    spans = [t.span for t in exp.turns]
    good = labels(*spans)
    assert oracle.compare(exp, tok, ids, good) == []
    first = next(k for k, x in enumerate(good) if x != -100)
    assert oracle.compare(exp, tok, ids, good[:first] + [-100] + good[first + 1 :])  # one token short
    assert oracle.compare(exp, tok, ids, good[: first - 1] + [ids[first - 1]] + good[first:])  # one token early
    assert oracle.compare(exp, tok, ids, labels(spans[1]))  # a turn untrained
    everything = list(ids)
    assert any("another message" in p for p in oracle.compare(exp, tok, ids, everything))


# ---------------------------------------------------------------- literal records the oracle found wrong


def trained_and_rule(where: str, name: str, record: dict[str, Any], kwargs: dict[str, Any] | None = None):
    """(what ftdata trains, or why it cannot be placed / why it rejected; what the rule trains)."""
    kwargs = kwargs or {}
    with configured(where, name) as tok:
        stage = Stage(tok, DataOptions(max_length=100_000, chat_template_kwargs=kwargs or None))
        messages, tools = oracle_view(record)
        exp = oracle.expect(tok, messages, tools=tools, kwargs=kwargs)
        rule = [exp.text[a:b] for a, b in (t.span for t in exp.turns if t.span)]
        got = ftdata_result(stage, record)
        if isinstance(got, str):
            return got, rule
        runs = oracle.trained_runs(tok, exp.text, got.input_ids, got.labels)
        return (runs if isinstance(runs, str) else [exp.text[r[0][0] : r[-1][1]] for r in runs]), rule


def _one_call(arguments: Any, content: str | None = None) -> dict[str, Any]:
    call = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": arguments}}
    return {"tools": [schema("get_weather")], "messages": [
        {"role": "user", "content": "Paris?"}, {"role": "assistant", "content": content, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "18C"},
        {"role": "assistant", "content": "Warm."}]}  # fmt: skip


@pytest.mark.parametrize(
    ("name", "call"),
    [
        ("gemma4", '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|><|tool_response>'),
        ("gemma4_v2", '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|><turn|>'),
        ("gemma4_v5", '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|><|tool_response>'),
        ("qwen2_5", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>'),
        ("gptoss", ' to=functions.get_weather<|channel|>commentary json<|message|>{"city": "Paris"}<|call|>'),
    ],
)
def test_json_string_arguments_are_written_as_the_template_writes_a_dict(name, call):
    """A JSON-string `arguments` trains the call the template writes for the dict, never `{{"city": ...}}`."""
    if name not in _trl_sources():
        pytest.skip("trl not installed")
    got, rule = trained_and_rule("trl", name, _one_call('{"city": "Paris"}'))
    assert rule[0] == call
    assert got == rule


def test_a_tool_result_the_template_writes_inside_the_model_turn_is_never_trained():
    """Gemma 4 writes the response inside the model turn, then the calling turn's text: the call
    trains through <|tool_response> (what stops generation there), the response never."""
    if "gemma4" not in _trl_sources():
        pytest.skip("trl not installed")
    got, rule = trained_and_rule("trl", "gemma4", _one_call({"city": "Paris"}, content="Let me check."))
    assert rule == ['<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|><|tool_response>', "Warm.<turn|>"]
    assert got == rule


def test_a_token_across_the_end_of_the_inference_prompt_is_not_trained():
    """ChatML writes `assistant\\n`; an answer starting with a newline makes one `\\n\\n` token
    across the prompt's end. At inference the prompt ends with its own `\\n` token, so the
    label must start at the answer's `\\n` (re-tokenized at the edge), not take the prompt's."""
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "\nyo"}]}
    got, rule = trained_and_rule("own", "qwen2.5-instruct", record)
    assert rule == ["\nyo<|im_end|>"]
    assert got == rule
