"""Prefix renders read off one watched render (ftdata/chat/prefixes.py): every prefix it proves is, byte for byte,
what `apply_chat_template` writes for that prefix, with and without the generation prompt, on every chat template
TRL ships and every shared tokenizer's, and on any conversation (Hypothesis); the template shapes it refuses, and
the questions a template asks that leave a prefix to its own render (one edit of a template that proves them)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_direct import MESSAGE, TEMPLATES, TOOLS, _apply, _conversation, _tokenizer

from ftdata.chat import sandbox
from ftdata.chat.prefixes import ASK, PEEK, STEP, _ahead, firsts, loop_shaped
from ftdata.chat.renderer import Bound, ChatRenderer
from ftdata.errors import TemplateError

from support import make_char_tokenizer

ATIF = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "agent_traces" / "atif"

PLAIN = [
    {"role": "user", "content": "Hi."},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "And then?"},
    {"role": "assistant", "content": "Then this."},
]
SYSTEM = [{"role": "system", "content": "Be brief."}, *PLAIN]


def _checked(tok: Any, msgs: list[dict[str, Any]], tools: Any) -> list[int] | None:
    """The prefixes one watched render of `msgs` proves, each checked against `apply_chat_template` (the oracle)
    with and without the generation prompt, and what `Prefixes` answers of it; None where none is proven."""
    bound = ChatRenderer(tok).bind(msgs, tools=tools)
    try:
        text = bound(msgs)
    except TemplateError:
        return None
    proven = bound.prefixes(text)
    if proven is None:
        return None
    for n, (cut, written) in proven.cuts.items():
        bare, prompt = _apply(tok, msgs[:n], False, tools, {}), _apply(tok, msgs[:n], True, tools, {})
        assert bare == text[:cut] + written + proven.tails[0], n
        assert prompt == text[:cut] + written + proven.tails[1], n
        assert proven.starts(n) == text.startswith(bare)
        assert proven.prompt_end(n) == (len(prompt) if text.startswith(prompt) else None)
    return sorted(proven.cuts)


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_every_proven_prefix_is_its_render(name: str) -> None:
    tok = _tokenizer(name)
    for msgs, tools in ((_conversation(False), TOOLS), (_conversation(True), None), (PLAIN, None), (SYSTEM, None)):
        _checked(tok, msgs, tools)


def test_which_prefixes_are_proven() -> None:
    """Qwen 2.5's template reads `loop.last` (then the next message) in a tool result's pass: the prefixes that end
    on a tool result first differ there, and are proven by the second render, in which every pass is written as
    the last. Phi-3's loop asks nothing ahead."""
    msgs = _conversation(False)  # tool results at messages 3 and 7
    for name in ("qwen2_5", "shared/qwen2.5-instruct", "qwen3_instruct_2507", "phi3"):
        assert _checked(_tokenizer(name), msgs, TOOLS) == list(range(1, 10)), name
    assert _checked(_tokenizer("qwen2_5"), PLAIN, None) == [1, 2, 3, 4]
    # Llama 3 and Gemma 3 loop over the messages under another name, Gemma 3 from the second on after a system one
    for name in ("llama3", "shared/llama-3-8b-instruct", "gemma3", "shared/gemma-3-it"):
        assert _checked(_tokenizer(name), SYSTEM, None) == [1, 2, 3, 4, 5], name


@pytest.mark.parametrize("name", ["qwen2_5", "qwen3_vl", "phi3", "llama3", "gemma3", "shared/qwen2.5-instruct"])
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=st.lists(MESSAGE, min_size=1, max_size=8))
def test_proven_prefixes_of_any_conversation(name: str, msgs: list[dict[str, Any]]) -> None:
    _checked(_tokenizer(name), [{"role": "user", "content": "hi"}, *msgs], TOOLS)


LOOP = (
    "{% if messages[0]['role'] == 'system' %}[S]{% endif %}"
    "{% for message in messages %}<{{ message.role }}>{{ message.content }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def _proven(template: str, msgs: list[dict[str, Any]] = PLAIN) -> list[int] | None:
    return _checked(make_char_tokenizer(chat_template=template), msgs, None)


def test_a_loop_over_the_messages_proves_every_prefix() -> None:
    assert _proven(LOOP) == [1, 2, 3, 4]
    # `loop.first`, `loop.index0` and a look back ask nothing the prefix answers otherwise
    look = "{% if not loop.first and messages[loop.index0 - 1].role == 'user' %}!{% endif %}"
    behind = LOOP.replace("</s>", look + "</s>")
    assert _proven(behind) == [1, 2, 3, 4]
    # the messages from a constant start on, under their own name or another, set at the template's level
    assert _proven(LOOP.replace("in messages", "in messages[1:]")) == [1, 2, 3, 4]
    apart = (
        "{% if messages[0].role == 'system' %}{% set rest = messages[1:] %}{% else %}{% set rest = messages %}"
        "{% endif %}" + LOOP.replace("in messages", "in rest")
    )
    assert _proven(apart, SYSTEM) == [1, 2, 3, 4, 5] and _proven(apart) == [1, 2, 3, 4]
    assert _proven("{% set messages = messages[0:] %}" + LOOP) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("edit", "proven"),
    [
        # the loop looking ahead: proven by the render that writes every pass as the last
        ("{% if not loop.last %},{% endif %}</s>", [1, 2, 3, 4]),
        ("{% if message.role == 'user' and not loop.last %},{% endif %}</s>", [1, 2, 3, 4]),
        ("{% if loop.nextitem is defined %},{% endif %}</s>", [1, 2, 3, 4]),
        # a name set in a pass is looked up again in the next (Jinja's scoping): nothing is left to it
        ("{{ said }}{% set said = not loop.last %}{{ said }}</s>", [1, 2, 3, 4]),
        # but not where a pass leaves something to the next, or where the next message itself is asked
        ("{% if not loop.last %}{% set ns.k = ns.k + 1 %}{% endif %}{{ ns.k }}</s>", None),
        ("{% if loop.changed(loop.last) %}!{% endif %}</s>", None),
        ("{% if message.role == 'user' and messages[loop.index0 + 1] is defined %},{% endif %}</s>", [2, 4]),
        ("{{ loop.length }}</s>", None),
        ("{{ loop.revindex }}</s>", None),
    ],
)
def test_a_question_ahead_leaves_its_prefix_to_its_render(edit: str, proven: list[int] | None) -> None:
    assert _proven("{% set ns = namespace(k=0) %}" + LOOP.replace("</s>", edit)) == proven


@pytest.mark.parametrize(
    ("template", "shaped"),
    [
        (LOOP.replace("[S]", "{{ messages|length }}"), False),  # a filter on the messages
        (LOOP.replace("in messages", "in messages[1:3]"), False),  # a slice that ends
        (LOOP.replace("in messages", "in messages[::2]"), False),  # or steps
        ("{% set rest = messages[loop_start:] %}" + LOOP.replace("in messages", "in rest"), False),  # a start not known
        (LOOP.replace("in messages", "in rest").replace("</s>", "{% set rest = messages %}</s>"), False),  # in the loop
        (LOOP.replace("in messages", "in messages if message.role != 'system'"), False),  # a filtered loop
        (LOOP.replace("</s>", "{% if add_generation_prompt %}?{% endif %}</s>"), False),  # the prompt in the loop
        ("{% set ns = namespace(n=0) %}" + LOOP.replace("</s>", "{% set ns.n = ns.n + 1 %}</s>") + "{{ ns.n }}", False),
        ("{% set messages = messages|list %}" + LOOP, False),  # rebound to another value
        (LOOP + "{% for message in messages %}{% endfor %}", False),  # two loops
        ("{% macro m(x) %}{{ x|length }}{% endmacro %}{{ m(messages) }}" + LOOP, False),  # handed on
        # shaped, but what they ask is asked before every prefix ends
        ("{{ messages[-1].role }}" + LOOP, True),  # the last message: another one per prefix
        ("{{ messages['count'] is defined }}" + LOOP, True),  # a name: a list's attribute, not a message
    ],
)
def test_other_shapes_prove_nothing(template: str, shaped: bool) -> None:
    assert loop_shaped(sandbox.bounded_chat_template(template).environment, template) is shaped
    assert _proven(template) is None


def test_where_each_prefix_first_differs() -> None:
    """`firsts` from a literal record of questions: (reach, kind, where)."""
    asked = [(0, ASK, 0), (0, STEP, 3), (1, STEP, 10), (2, ASK, 15), (2, STEP, 20), (3, PEEK, 25), (3, STEP, 30)]
    asked.append((4, STEP, 44))
    # 2: asked for message 2 before the loop stepped to it; 3: first looked ahead to it
    assert firsts(asked, 4) == {1: (STEP, 10), 3: (PEEK, 25), 4: (STEP, 44)}
    assert firsts([(3, ASK, 0), (4, STEP, 9)], 4) == {4: (STEP, 9)}  # the count asked first: only the whole


def test_where_a_pass_written_as_the_last_is_read() -> None:
    """`_ahead` from a literal record of a render that lies: each pass's first look ahead and the next step."""
    asked = [(0, STEP, 0), (1, PEEK, 5), (1, STEP, 8), (2, ASK, 9), (2, STEP, 12), (3, PEEK, 15), (3, PEEK, 16)]
    asked += [(3, STEP, 20), (4, STEP, 30)]
    assert _ahead(asked, {1, 2, 3}) == {1: (5, 8), 3: (15, 20)}  # 2: its pass asked for message 2 itself
    assert _ahead(asked, {3}) == {3: (15, 20)}
    # the count asked in the first pass (`loop.length`, which the loop keeps): no later pass is read
    asked = [(0, STEP, 0), (3, ASK, 1), (1, PEEK, 2), (1, STEP, 3), (2, PEEK, 4), (2, STEP, 5), (3, PEEK, 6)]
    assert _ahead([*asked, (3, STEP, 7), (4, STEP, 8)], {1, 2, 3}) == {}


def _rows(monkeypatch: pytest.MonkeyPatch, *, proofs: bool) -> str:
    import transformers

    from ftdata import prepare

    if not proofs:
        monkeypatch.setattr(Bound, "prefixes", lambda self, text: None)
    tok = transformers.AutoTokenizer.from_pretrained(str(ATIF.parents[2] / "tokenizers" / "qwen2.5-instruct"))
    out = prepare(ATIF, tokenizer=tok, max_length=65536, history="inference")
    digest = hashlib.sha256(repr(sorted(out.dataset.to_dict().items())).encode()).hexdigest()
    return f"{digest} {dict(out.report.rejected)}"


@pytest.mark.skipif(not ATIF.is_dir(), reason="needs ../shared/datasets/agent_traces/atif")
def test_real_trajectories_build_the_same_rows_with_and_without_proofs(monkeypatch: pytest.MonkeyPatch) -> None:
    with_proofs = _rows(monkeypatch, proofs=True)
    assert with_proofs == _rows(monkeypatch, proofs=False)
