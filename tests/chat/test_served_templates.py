"""ftdata on the chat templates real models are served with (tests/templates/served).

For every template of the corpus (sources.json says where each came from, its special
tokens, bos/eos and the model's stop set), with thinking on and off where it reads
`enable_thinking`/`thinking`, every probe of issue 21 (plain, tool calls with dict and string
arguments, parallel calls, a call followed by text, reasoning, reasoning with a call, special
tokens in data) goes through ftdata and through the independent oracle (tests/oracle.py with
its served edge cases). A record passes when ftdata trains exactly what the oracle says, or
rejects it where the oracle says the template truly cannot write it.

Failures would be listed one by one in XFAIL (strict: a fix flips an entry to XPASS, which
fails until the entry is deleted here); none is left.
"""

from __future__ import annotations

import json
from functools import cache

import oracle
import pytest
from support import ROOT, TOKENIZERS, matrix_module

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")
SERVED = ROOT / "tests" / "templates" / "served"


MATRIX = matrix_module()

# (template variant, probe) -> why it fails today. Delete an entry when its fix makes it pass.
XFAIL: dict[tuple[str, str], str] = {}


@cache
def served() -> dict[str, dict[str, object]]:
    """variant -> probe -> Verdict, computed once for the whole corpus."""
    return MATRIX.served_matrix()


def _params() -> list[object]:
    out = []
    for case in MATRIX.served_cases():
        for kwargs in case.kwargs:
            variant = MATRIX.variant_id(case, kwargs)
            for probe in MATRIX.SERVED_PROBES:
                why = XFAIL.get((variant, probe))
                marks = [pytest.mark.xfail(strict=True, reason=why)] if why else []
                out.append(pytest.param(variant, probe, marks=marks, id=f"{variant}:{probe}"))
    return out


@pytest.mark.parametrize(("variant", "probe"), _params())
def test_served_template_follows_the_rule(variant, probe):
    verdict = served()[variant][probe]
    if verdict.status == "rejected":
        assert verdict.reason.strip(), "a rejection without a reason"
    assert verdict.kind in ("agrees", "true reject"), f"{verdict.kind}: {verdict.reason or verdict.oracle}"


def test_xfail_entries_name_real_cases():
    """No stale entry: every listed (variant, probe) is in the corpus."""
    known = {(MATRIX.variant_id(c, kw), p) for c in MATRIX.served_cases() for kw in c.kwargs for p in MATRIX.SERVED_PROBES}
    assert set(XFAIL) <= known, sorted(set(XFAIL) - known)


def test_sources_list_every_template_once():
    entries = json.loads((SERVED / "sources.json").read_text(encoding="utf-8"))["templates"]
    assert sorted(e["file"] for e in entries) == sorted(p.name for p in SERVED.glob("*.jinja"))
    assert len(entries) >= 30
    for e in entries:
        assert e["repository"] and e["path"] and len(e["commit"]) == 40 and e["eos"] and e["stop_tokens"], e["name"]


# ---------------------------------------------------------------- the oracle's edge cases, literally


def _expect(name: str, probe: str, kwargs: dict[str, object]):
    case = next(c for c in MATRIX.served_cases() if c.name == name)
    with MATRIX.served_on(case) as tok:
        record = MATRIX.served_records(case)[probe]
        exp = oracle.expect(tok, record["messages"], tools=record.get("tools"), kwargs=kwargs,
                            model_stops=case.stop_tokens, edge_cases=True)  # fmt: skip
    return exp, [(exp.text[a:b], t.case) for a, b, t in ((*t.span, t) for t in exp.turns)]


def test_oracle_anchors_a_call_only_turn_where_the_prompt_opens_a_think_block():
    """QwQ's generation prompt ends in `<think>\\n`, its history turns have none."""
    exp, spans = _expect("qwq-32b", "call-dict", {"enable_thinking": True})
    assert exp.decidable
    assert spans == [
        ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}\n</tool_call><|im_end|>', ("think-opened",)),
        ("It is mild in Paris.<|im_end|>", ("think-opened",)),
    ]


def test_oracle_trains_the_answer_only_after_a_prompt_that_closes_the_think_block():
    exp, spans = _expect("qwen3", "reasoning", {"enable_thinking": False})
    assert [s for s, _ in spans] == ["It is 5.<|im_end|>", "It is 8.<|im_end|>"]
    assert spans[1][1] == ("think-closed",)


def test_oracle_keeps_the_header_as_prompt_where_the_generation_prompt_adds_nothing():
    """transformers' test template ignores add_generation_prompt: the header it writes before the
    answer (`<|im_start|>assistant\\n`) stays prompt."""
    from support import tokenizer
    from test_text_markers import GENERATION_CHATML, PEER_CONVERSATIONS

    tok = tokenizer("llama-3-8b-instruct")  # its markers are plain text there
    old, tok.chat_template = tok.chat_template, GENERATION_CHATML
    try:
        exp = oracle.expect(tok, PEER_CONVERSATIONS[0], edge_cases=True)
    finally:
        tok.chat_template = old
    assert exp.decidable and exp.stops.no_generation_prompt
    assert [(exp.text[a:b], t.case) for a, b, t in ((*t.span, t) for t in exp.turns)] == [
        ("start turn 1 assistant message. end turn 1<|im_end|>", ("header",)),
        ("start turn 2 assistant message. end turn 2<|im_end|>", ("header",)),
    ]


def test_oracle_takes_whitespace_alone_for_no_header():
    """vLLM's Mistral parallel template ignores add_generation_prompt and writes ` It is mild…` after a
    tool result: inference prompts with `[/TOOL_RESULTS]`, and the model writes the space in its first
    token (` It`). Before, the oracle took the space for a header and the turn as `It is mild…`, which
    starts the row's answer after a lone ` ` token that no inference prompt ends with."""
    exp, spans = _expect("vllm-mistral-parallel", "call-dict", {})
    assert exp.decidable
    assert spans[1] == (" It is mild in Paris.</s>", ())
    assert spans[0][0].startswith("[TOOL_CALLS] [{") and spans[0][0].endswith("}]</s>")


def test_oracle_probes_a_template_that_needs_tools_with_a_schema():
    exp, spans = _expect("hermes-3-tool-use", "call-dict", {})
    assert exp.stops.needs_tools and exp.decidable
    assert spans[0][0].startswith("<tool_call>\n{") and spans[0][0].endswith("</tool_call><|im_end|>")


def test_oracle_trains_the_whitespace_the_model_writes_after_a_closed_think_block():
    """GLM-4.6's prompt ends at `</think>` and A writes `\\n` before the answer: the prefix turn trains
    it, and so does the turn whose reasoning the prompt closed (only what P_i writes after its
    closing tag is prompt: Qwen3's `</think>\\n\\n`)."""
    exp, spans = _expect("glm-4.6", "reasoning", {"enable_thinking": False})
    assert spans == [("\nIt is 5.<|user|>", ()), ("\nIt is 8.<|endoftext|>", ("think-closed",))]
    exp, spans = _expect("qwen3", "reasoning", {"enable_thinking": False})
    assert spans[1] == ("It is 8.<|im_end|>", ("think-closed",))


def test_oracle_takes_a_prompt_written_after_every_conversation_as_a_prompt():
    """Command R7B writes `<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>` after every conversation: it is the
    generation prompt (so `<|START_RESPONSE|>` is the model's, no header), and never a closer."""
    exp, spans = _expect("command-r7b-tool-use", "plain", {"enable_thinking": True})
    assert not exp.stops.no_generation_prompt and exp.stops.final == "<|END_OF_TURN_TOKEN|>"
    assert [s for s, _ in spans] == ["<|START_RESPONSE|>Blue is one.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>",
                                     "<|START_RESPONSE|>Green works too.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"]  # fmt: skip
    exp, spans = _expect("command-r7b-tool-use", "plain", {"enable_thinking": False})
    assert spans[1][0] == "<|START_RESPONSE|>Green works too.<|END_RESPONSE|><|END_OF_TURN_TOKEN|>"


def test_oracle_leaves_a_closer_the_prompt_holds_to_the_prompt():
    """vLLM's DeepSeek-V3 template closes the tool results in the prompt and again, after other
    whitespace, before the answer: the closer is the prompt's, the answer the model's."""
    exp, spans = _expect("vllm-deepseekv3", "call-dict", {})
    assert spans[1] == ("It is mild in Paris.<｜end▁of▁sentence｜>", ("think-opened",))


def test_oracle_writes_arguments_as_json_where_a_dict_would_print_as_python():
    exp, spans = _expect("vllm-phi4-mini", "call-dict", {})
    assert exp.string_arguments
    assert spans[0][0] == '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}<|end|>'


def test_oracle_rejects_a_record_whose_content_history_drops():
    """gpt-oss writes a call turn's content only when no final answer follows it."""
    exp, _ = _expect("gpt-oss", "call+text", {})
    assert exp.must_reject == "the template does not write the content of turn 1"


def test_oracle_ends_a_middle_turn_on_a_closer_written_only_before_the_next_message():
    """Apriel 1.6 writes `\\n<|end|>\\n` between turns and nothing after the last: the first tag after the
    whitespace that follows a middle turn stops it (before, the turn was undecided); the last gets EOS."""
    exp, spans = _expect("apriel-1.6", "plain", {})
    assert exp.decidable and exp.eos_appended
    assert [s for s, _ in spans] == ["Blue is one.\n<|end|>", "Green works too.</s>"]
    exp, spans = _expect("apriel-1.6", "call-dict", {})
    assert spans[0][0].startswith("\n<tool_calls>[{") and spans[0][0].endswith("]</tool_calls>\n<|end|>")


def test_oracle_finds_arguments_a_template_writes_with_ensure_ascii():
    """Reka Edge (reproduction) writes a dict of arguments with tojson(ensure_ascii=True): the call is
    written, dict and string arguments render the same text, and the rule trains both alike."""
    dict_exp, dict_spans = _expect("reka-edge", "call-dict", {})
    str_exp, str_spans = _expect("reka-edge", "call-str", {})
    assert not dict_exp.must_reject and dict_exp.text == str_exp.text and dict_spans == str_spans
