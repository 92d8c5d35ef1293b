"""R1-style reasoning (`<think>…</think>answer` in the assistant content) on the templates this data is made for.

Each template is the served one (tests/templates/served/, sources in SOURCES.md there) over a copy of a real
tokenizer with `<think>` and `</think>` added as tokens, as QwQ-32B (Qwen2.5's vocabulary), DeepSeek-V3.1/V3.2
(DeepSeek-V3's) and Nemotron Nano 2 add them. The template writes those tags itself (it opens or closes a think
block in the generation prompt, or cuts the block out of history contents), so in a leading think block they are
its syntax: the record trains, with the tags as the tokenizer's own tokens, on what `oracle.trajectory` (the
template's own `apply_chat_template` renders, nothing of ftdata) says inference generates. A `<think>` anywhere
else in the data is still control text.
"""

from __future__ import annotations

import json
from typing import Any

import oracle
import pytest
from support import ROOT, TOKENIZERS, tokenizer

from ftdata.chat.chat_tokens import copy_tokenizer
from ftdata.errors import Location
from ftdata.options import DataOptions
from ftdata.outcomes import NoteCode
from ftdata.run.sft import Measured
from ftdata.run.stage import Stage

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

SERVED = ROOT / "tests" / "templates" / "served"
ENTRIES = {e["name"]: e for e in json.loads((SERVED / "sources.json").read_text(encoding="utf-8"))["templates"]}
BASE = {"qwq-32b": "qwen2.5-instruct", "deepseek-v3.1": "deepseek-v3", "deepseek-v3.2": "deepseek-v3",
        "nemotron-nano-v2": "qwen2.5-instruct", "gemma-4-31b": "qwen2.5-instruct",
        "command-r7b-tool-use": "qwen2.5-instruct"}  # fmt: skip
_TOKENIZERS: dict[str, Any] = {}


def served(name: str) -> Any:
    """A copy of the real tokenizer `BASE[name]` with the served template `name`, its markers as special tokens
    and `<think>`/`</think>` as added tokens (not special, as in QwQ-32B's and DeepSeek-V3.1's tokenizer.json)."""
    if name not in _TOKENIZERS:
        entry = ENTRIES[name]
        tok = copy_tokenizer(tokenizer(BASE[name]))
        marks = [*entry["special_tokens"], *entry["stop_tokens"], *(t for t in (entry["bos"], entry["eos"]) if t)]
        split = [t for t in dict.fromkeys(marks) if len(tok.backend_tokenizer.encode(t, add_special_tokens=False).ids) != 1]
        tok.add_tokens(split, special_tokens=True)
        tok.add_tokens(["<think>", "</think>"])
        tok.chat_template = (SERVED / entry["file"]).read_text(encoding="utf-8")
        tok.bos_token, tok.eos_token = entry["bos"], entry["eos"]
        _TOKENIZERS[name] = tok
    return _TOKENIZERS[name]


def r1(reasoning: str, answer: str) -> dict[str, Any]:
    return {"role": "assistant", "content": f"<think>\n{reasoning}\n</think>\n\n{answer}"}


RECORD = [{"role": "user", "content": "What is 2+2?"}, r1("Add two and two.", "4"),
          {"role": "user", "content": "And 3+3?"}, r1("Add three and three.", "6")]  # fmt: skip


def outcomes(tok: Any, kwargs: dict[str, Any], messages: list[dict[str, Any]], **options: Any) -> list[Any]:
    stop = tuple(ENTRIES[next(n for n, t in _TOKENIZERS.items() if t is tok)]["stop_tokens"])
    stage = Stage(tok, DataOptions(max_length=8192, chat_template_kwargs=kwargs, stop_tokens=stop, **options))
    return [item for _, item, _ in stage.run([(Location("r1.jsonl", line=1), {"messages": messages})]).outcomes]


@pytest.mark.parametrize(("name", "thinking"), [
    ("qwq-32b", True), ("qwq-32b", False), ("deepseek-v3.1", True), ("deepseek-v3.1", False), ("deepseek-v3.2", True), ("deepseek-v3.2", False),
    ("nemotron-nano-v2", True), ("nemotron-nano-v2", False)])  # fmt: skip
def test_r1_content_trains_on_the_templates_it_is_made_for_as_inference_generates_it(name: str, thinking: bool) -> None:
    """DeepSeek-V3.1 cuts the block out of every content (its reasoning is never written: the answer is trained,
    noted); Nemotron Nano 2 writes the content as given after its own `<think>\n` (it takes no thinking kwarg)."""
    tok = served(name)
    kwargs = {"enable_thinking": thinking}
    items = outcomes(tok, kwargs, RECORD)
    assert all(isinstance(i, Measured) for i in items), [getattr(i, "reason", "") for i in items]
    rows = [(list(i.tokenized.input_ids), list(i.tokenized.labels)) for i in items]
    stops = oracle.stop_tokens(tok, kwargs, ENTRIES[name]["stop_tokens"])
    problems, _ = oracle.trajectory(tok, RECORD, rows, kwargs=kwargs, stops=stops, edge_cases=True)
    assert not problems


def test_with_thinking_off_qwq_trains_the_answer_after_the_think_block_its_prompt_closes() -> None:
    """QwQ's prompt with thinking off is `<think>\n</think>`: the model cannot write the reasoning after it, so only
    the answer is trained, each turn as the last one, and a note says so (DESIGN: the think-closed rule; the oracle
    decides that rule for reasoning fields only, so the trained text is written out here)."""
    from oracle import row_runs

    tok = served("qwq-32b")
    items = outcomes(tok, {"enable_thinking": False}, RECORD)
    got = [([text for _, text in row_runs(tok, i.tokenized.input_ids, i.tokenized.labels)],
            {n.code for n in i.tokenized.notes}) for i in items]  # fmt: skip
    closed = {NoteCode.REASONING_PROMPT_CLOSED, NoteCode.PROMPT_ROW}
    assert sorted(got, key=str) == [(["\n\n4<|im_end|>"], closed), (["\n\n6<|im_end|>"], closed)]
    # Each after its inference prompt, which ends in the closed block (before: after the turn's own reasoning).
    context = tok.decode(items[0].tokenized.input_ids)
    assert context.endswith("<|im_start|>user\nAnd 3+3?<|im_end|>\n<|im_start|>assistant\n<think>\n</think>\n\n6<|im_end|>")


@pytest.mark.parametrize("name", ["qwq-32b", "deepseek-v3.2", "nemotron-nano-v2"])
def test_the_tags_are_the_tokenizers_own_tokens_in_the_trained_ids(name: str) -> None:
    """QwQ with thinking on: the prompt opens `<think>\\n`, the model writes the reasoning and the `</think>` token."""
    tok = served(name)
    think, close = tok.convert_tokens_to_ids(["<think>", "</think>"])
    items = outcomes(tok, {"enable_thinking": True}, RECORD[:2])
    (item,) = items
    trained = [t for t, label in zip(item.tokenized.input_ids, item.tokenized.labels) if label != -100]
    assert close in item.tokenized.input_ids and (close in trained or think in trained)
    assert "Add two and two." in tok.decode(trained)


@pytest.mark.parametrize("name", ["qwq-32b", "deepseek-v3.1"])
def test_a_think_tag_outside_the_leading_block_is_still_control_text(name: str) -> None:
    tok = served(name)
    (reject,) = outcomes(tok, {"enable_thinking": True}, [{"role": "user", "content": "say <think> please"}, r1("ok", "x")])
    assert reject.code.value == "control_token" and "<think>" in reject.reason
    (reject,) = outcomes(tok, {"enable_thinking": True}, [RECORD[0], {"role": "assistant", "content": "4 <think>"}])
    assert reject.code.value == "control_token"


@pytest.mark.parametrize("name", ["gemma-4-31b", "command-r7b-tool-use"])
def test_where_the_template_writes_no_reasoning_on_a_plain_turn_the_block_stays_content(name: str) -> None:
    """Gemma 4 writes reasoning only on a turn that calls tools, Command R7B only in its tool-use turns: the block
    of a plain answer stays content and is trained as the template writes it (it was rejected as reasoning the
    template does not write, although the record had no reasoning field)."""
    tok = served(name)
    (item,) = outcomes(tok, {"enable_thinking": True}, RECORD[:2])
    assert isinstance(item, Measured), item.reason
    assert NoteCode.REASONING_MOVED not in {n.code for n in item.tokenized.notes}
    trained = tok.decode([t for t, label in zip(item.tokenized.input_ids, item.tokenized.labels) if label != -100])
    assert "<think>\nAdd two and two.\n</think>\n\n4" in trained
