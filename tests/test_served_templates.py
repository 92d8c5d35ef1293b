"""ftdata on the chat templates real models are served with (tests/templates/served).

For every template of the corpus (sources.json says where each came from, its special
tokens, bos/eos and the model's stop set), with thinking on and off where it reads
`enable_thinking`/`thinking`, every probe of issue 21 (plain, tool calls with dict and string
arguments, parallel calls, a call followed by text, reasoning, reasoning with a call, special
tokens in data) goes through ftdata and through the independent oracle (tests/oracle.py with
its served edge cases). A record passes when ftdata trains exactly what the oracle says, or
rejects it where the oracle says the template truly cannot write it.

Today's failures are listed one by one in XFAIL (strict): a fix flips its entries to XPASS,
which fails until the entry is deleted here.
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
XFAIL: dict[tuple[str, str], str] = {
    ("glm-4.6-nothink", "reasoning"): "issue 21 class 4, mis-trained: whitespace: the newline after a closed think block (the oracle leaves it out, ftdata trains it as written)",
    ("glm-4.6-nothink", "reasoning+call"): "issue 21 class 4, mis-trained: whitespace: the newline after a closed think block (the oracle leaves it out, ftdata trains it as written)",
    ("deepseek-v3.2-think", "call+text"): "issue 21 class 1, mis-trained: DeepSeek-V3.2 writes </think> before an answer that follows a tool result; ftdata starts the turn at the answer",
    ("nemotron-3-nano-nothink", "reasoning"): "issue 21 class 4, mis-trained: whitespace: the newline after a closed think block (the oracle leaves it out, ftdata trains it as written)",
    ("nemotron-3-nano-nothink", "reasoning+call"): "issue 21 class 4, mis-trained: whitespace: the newline after a closed think block (the oracle leaves it out, ftdata trains it as written)",
    ("command-r7b-tool-use-think", "plain"): "issue 21 class 3, mis-trained: differ on Command R7B's <|START_RESPONSE|>: the oracle takes it as header, ftdata trains it (the prompt ends in <|START_THINKING|>)",
    ("command-r7b-tool-use-think", "call-dict"): "issue 21 class 3, mis-trained: differ on Command R7B's <|START_RESPONSE|>: the oracle takes it as header, ftdata trains it (the prompt ends in <|START_THINKING|>)",
    ("command-r7b-tool-use-think", "call-str"): "issue 21 class 3, mis-trained: differ on Command R7B's <|START_RESPONSE|>: the oracle takes it as header, ftdata trains it (the prompt ends in <|START_THINKING|>)",
    ("command-r7b-tool-use-think", "parallel"): "issue 21 class 3, mis-trained: differ on Command R7B's <|START_RESPONSE|>: the oracle takes it as header, ftdata trains it (the prompt ends in <|START_THINKING|>)",
    ("command-r7b-tool-use-think", "reasoning+call"): "issue 21 class 3, mis-trained: differ on Command R7B's <|START_RESPONSE|>: the oracle takes it as header, ftdata trains it (the prompt ends in <|START_THINKING|>)",
    ("command-r7b-tool-use-nothink", "plain"): "issue 21 class 1, mis-trained: oracle: takes the generation prompt Command R7B writes after every conversation as the last turn's closer; ftdata keeps it prompt",
    ("command-r7b-tool-use-nothink", "call-dict"): "issue 21 class 1, mis-trained: oracle: takes the generation prompt Command R7B writes after every conversation as the last turn's closer; ftdata keeps it prompt",
    ("command-r7b-tool-use-nothink", "call-str"): "issue 21 class 1, mis-trained: oracle: takes the generation prompt Command R7B writes after every conversation as the last turn's closer; ftdata keeps it prompt",
    ("command-r7b-tool-use-nothink", "parallel"): "issue 21 class 1, mis-trained: oracle: takes the generation prompt Command R7B writes after every conversation as the last turn's closer; ftdata keeps it prompt",
    ("command-r7b-tool-use-nothink", "reasoning+call"): "issue 21 class 4, mis-trained: oracle: takes the generation prompt Command R7B writes after every conversation as the last turn's closer; ftdata keeps it prompt",
    ("gpt-oss", "call+text"): "oracle: it counts the content of a gpt-oss call turn as written; the template drops it (ftdata is right): assistant turn 1 cannot be masked safely: the chat template drops its content",
    ("vllm-deepseekv3", "call-dict"): "issue 21 class 1, mis-trained: oracle: trains the tool result's <｜tool▁outputs▁end｜> as the next turn's start",
    ("vllm-deepseekv3", "call-str"): "issue 21 class 1, mis-trained: oracle: trains the tool result's <｜tool▁outputs▁end｜> as the next turn's start",
    ("vllm-deepseekv3", "parallel"): "issue 21 class 1, mis-trained: oracle: trains the tool result's <｜tool▁outputs▁end｜> as the next turn's start",
    ("vllm-deepseekv3", "call+text"): "issue 21 class 1, mis-trained: oracle: trains the tool result's <｜tool▁outputs▁end｜> as the next turn's start",
    ("vllm-phi4-mini", "call-dict"): "issue 21 class 1, mis-trained: argument form: the template prints a dict as a Python dict, ftdata writes JSON-string arguments, the oracle the dict",
    ("vllm-phi4-mini", "call-str"): "issue 21 class 1, mis-trained: argument form: the template prints a dict as a Python dict, ftdata writes JSON-string arguments, the oracle the dict",
    ("vllm-phi4-mini", "parallel"): "issue 21 class 1, mis-trained: argument form: the template prints a dict as a Python dict, ftdata writes JSON-string arguments, the oracle the dict",
}  # fmt: skip


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
    """vLLM's Mistral parallel template ignores add_generation_prompt: after a tool result, the
    `[/INST]`-less header it writes before the answer stays prompt."""
    exp, spans = _expect("vllm-mistral-parallel", "call-dict", {})
    assert exp.decidable
    assert spans[1] == ("It is mild in Paris.</s>", ("header",))
    assert spans[0][0].startswith("[TOOL_CALLS] [{") and spans[0][0].endswith("}]</s>")


def test_oracle_probes_a_template_that_needs_tools_with_a_schema():
    exp, spans = _expect("hermes-3-tool-use", "call-dict", {})
    assert exp.stops.needs_tools and exp.decidable
    assert spans[0][0].startswith("<tool_call>\n{") and spans[0][0].endswith("</tool_call><|im_end|>")
