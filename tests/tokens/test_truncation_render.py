"""Truncation keeps the chat's structure, on every real tokenizer and every TRL chat template (Hypothesis).

The property, for keep_response, keep_end and split on long multi-turn records: every kept
token row is exactly the masked rendering of a shorter conversation (tokenize(render(c)),
labels verified by the masker), fits max_length, and that conversation is valid for the
template: the system message kept, then a run of the record's own messages that starts with
a user turn (so never inside a tool result), each the record's message or, for prompt
messages (and keep_end's responses), a cut of its text. keep_response keeps every response
of the kept turns whole. The default suite runs a few records per template; `-m slow` many.
"""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import TOKENIZER_NAMES, TOKENIZERS, matrix_module, tokenizer

from ftdata.errors import FtdataError, Location
from ftdata.tokens.masking import REPAIRED, Tokenized
from ftdata.options import DataOptions
from ftdata.outcomes import RejectCode
from ftdata.run.stage import Stage
from ftdata.tokens.shorten import MARKER
from ftdata.tokens.truncation import Truncator
from ftdata.types import Example, PromptCut, TruncationPolicy

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")

POLICIES = (TruncationPolicy.KEEP_RESPONSE, TruncationPolicy.KEEP_END, TruncationPolicy.SPLIT)
REJECTED = {RejectCode.RESPONSE_TOO_LONG, RejectCode.NO_RESPONSE_LEFT}
WORDS = st.sampled_from(["alpha", "beta", "gamma", "delta", "x", "42", "naïve", "café", "—", "so,", "end.", "\n"])


def text(max_words: int) -> st.SearchStrategy[str]:
    return st.lists(WORDS, min_size=1, max_size=max_words).map(" ".join).map(str.strip).filter(bool)


@st.composite
def records(draw: st.DrawFn) -> dict:
    """A multi-turn chat: an optional system prompt, 1-4 exchanges, prompts long or short."""
    messages = [{"role": "system", "content": draw(text(8))}] if draw(st.booleans()) else []
    for _ in range(draw(st.integers(1, 4))):
        messages.append({"role": "user", "content": draw(text(draw(st.sampled_from([6, 80]))))})
        messages.append({"role": "assistant", "content": draw(text(12))})
    return {"messages": messages}


def is_cut_of(new: str, old: str, side: PromptCut) -> bool:
    if side is PromptCut.END:
        return old.startswith(new)
    if side is PromptCut.START:
        return old.endswith(new)
    head, _, tail = new.partition(MARKER)
    return old.startswith(head) and old.endswith(tail) and len(head) + len(tail) <= len(old)


def check(stage: Stage, tok, record: dict, fraction: float, policy: TruncationPolicy, prompt_cut: PromptCut) -> None:
    """Every row of the record (several where history=inference splits it), truncated, holds the property."""
    try:
        rows = [measured for _, measured in stage.measure([(Location("h", index=0), record)])]
    except FtdataError:
        return
    for measured in rows:
        if hasattr(measured, "tokenized"):  # else the template cannot render this record: nothing to truncate
            _check_row(stage, tok, measured, fraction, policy, prompt_cut)


def _check_row(stage: Stage, tok, measured, fraction: float, policy: TruncationPolicy, prompt_cut: PromptCut) -> None:
    max_length = max(8, int(measured.total * fraction))
    if measured.total <= max_length:
        return
    truncator = Truncator(stage.renderer, stage.masker, max_length=max_length, prompt_cut=prompt_cut)
    result = truncator(measured.example, measured.tokenized, policy=policy)
    if not result.rows:
        assert result.code in REJECTED or result.reason, result
        return
    assert len(result.rows) == len(result.conversations) and (policy is TruncationPolicy.SPLIT or len(result.rows) == 1)
    original = measured.example.messages
    side = PromptCut.START if policy is TruncationPolicy.KEEP_END else prompt_cut
    for (ids, labels), conv in zip(result.rows, result.conversations):
        assert len(ids) <= max_length
        again = stage.tokenize(conv)
        assert isinstance(again, Tokenized), again  # rendered, masked and verified like any record
        assert (again.input_ids, again.labels) == (ids, labels)
        if REPAIRED not in again.notes:  # a record split at span edges is tokenized piecewise on purpose
            rendered = stage.renderer(conv).text
            assert ids[again.prefix :] == tok(rendered, add_special_tokens=False)["input_ids"]
        _check_structure(conv, original, policy, side)


def _check_structure(conv: Example, original, policy: TruncationPolicy, side: PromptCut) -> None:
    msgs = conv.messages
    has_system = original[0].role == "system"
    if has_system:
        assert msgs[0] == original[0], "the system message is kept as it is"
    body, whole = msgs[has_system:], original[has_system:]
    assert body and body[0].role == "user", "a conversation starts with a user turn"
    fits = [s for s in range(len(whole) - len(body) + 1) if all(_kept(new, old, policy, side) for new, old in zip(body, whole[s:]))]
    assert fits, "the conversation is a run of the record's messages, prompts maybe cut"


def _kept(new, old, policy: TruncationPolicy, side: PromptCut) -> bool:
    """`new` is `old`, or a cut of its text where the policy may cut it."""
    if new.role != old.role:
        return False
    if new.content == old.content:
        return True
    if new.role == "assistant" and policy is not TruncationPolicy.KEEP_END:
        return False  # keep_response and split never cut a response
    return is_cut_of(new.content, old.content, side)


def _stage(tok) -> Stage | None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return Stage(tok, DataOptions())
        except FtdataError:
            return None


def _run(stage: Stage, tok, examples: int) -> None:
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(records(), st.floats(0.25, 0.95), st.sampled_from(POLICIES), st.sampled_from(list(PromptCut)))
    def prop(record, fraction, policy, prompt_cut):
        check(stage, tok, record, fraction, policy, prompt_cut)

    prop()


@pytest.mark.parametrize("name", [None, *TOKENIZER_NAMES])
def test_truncated_rows_are_renderings_of_shorter_valid_conversations(name):
    tok = tokenizer(name)
    _run(_stage(tok), tok, examples=12)


@pytest.mark.slow
@pytest.mark.parametrize("name", [None, *TOKENIZER_NAMES])
def test_truncated_rows_are_renderings_of_shorter_valid_conversations_exhaustive(name):
    tok = tokenizer(name)
    _run(_stage(tok), tok, examples=300)


# ---------------------------------------------------------------- every chat template shipped with TRL


MATRIX = matrix_module()
try:
    TRL_NAMES = sorted(p.stem for p in MATRIX.template_dir().glob("*.jinja") if not p.stem.endswith("_training"))
except ImportError:  # trl is an optional dependency (the `train` extra)
    TRL_NAMES = []


@pytest.fixture(scope="module")
def trl_cases():
    pytest.importorskip("trl")
    return {case.name: case for case in MATRIX.cases(tokenizer)}


def _trl(name: str, cases, examples: int) -> None:
    case = cases[name]
    if case.skip:
        pytest.skip(case.skip)
    with MATRIX.template_on(case, tokenizer) as tok:
        stage = _stage(tok)
        if stage is None:
            pytest.skip("the template is refused up front")
        _run(stage, tok, examples)


@pytest.mark.parametrize("name", TRL_NAMES)
def test_trl_templates_truncate_to_renderings_of_shorter_conversations(name, trl_cases):
    _trl(name, trl_cases, examples=3)


@pytest.mark.slow
@pytest.mark.parametrize("name", TRL_NAMES)
def test_trl_templates_truncate_to_renderings_of_shorter_conversations_exhaustive(name, trl_cases):
    _trl(name, trl_cases, examples=100)


def test_a_cut_that_leaves_no_assistant_turn_is_a_reject_not_a_crash() -> None:
    """A conversation that ends on a user turn: keep_response drops the one exchange with an answer, and what is
    left has nothing to train (it was `ValueError: max() arg is an empty sequence`, a traceback)."""
    from ftdata.build.api import build

    records = [
        {"messages": [{"role": "user", "content": "hello there " * 5}, {"role": "assistant", "content": "General Kenobi."},
                      {"role": "user", "content": "and then a long user turn " * 10}]},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo."}]},
    ]  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = build(records, max_length=48, truncation="keep_response")
    assert dict(result.report.rejected) == {RejectCode.NO_ASSISTANT: 1}
    assert len(result.dataset) == 1


@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_re_render_past_a_limit_is_never_taken_for_does_not_fit(on_error, monkeypatch, tmp_path) -> None:
    """Truncation re-renders shorter conversations; one that passes a time or size limit (a busy machine: the
    render time limit is wall-clock) must stop or reject the record, never pick another cut silently."""
    from ftdata.build.api import build
    from ftdata.guard.limits import RecordOverLimit

    from ftdata.chat.render import Renderer

    records = [{"messages": [{"role": "user", "content": "hello there " * 30}, {"role": "assistant", "content": "Hi."}]}]
    original, calls = Renderer.__call__, []

    def busy(self, example, **options):  # the record's own render succeeds; truncation's trial renders run out of time
        calls.append(example)
        if len(calls) > 1:
            raise RecordOverLimit(f"the chat template on record {example.source}: took longer than 10 s")
        return original(self, example, **options)

    monkeypatch.setattr(Renderer, "__call__", busy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if on_error == "raise":  # the render's own error (exit 5), as for the record's first render
            with pytest.raises(RecordOverLimit, match="took longer than 10 s"):
                build(records, max_length=64, truncation="keep_response", on_error=on_error)
            return
        with pytest.raises(FtdataError, match="every record was rejected"):
            build(records, max_length=64, truncation="keep_response", on_error=on_error, rejects_path=str(tmp_path / "r.jsonl"))
    (reject,) = [json.loads(line) for line in (tmp_path / "r.jsonl").read_text().splitlines()]
    assert (reject["stage"], reject["code"]) == ("truncate", "over_limit")  # not response_too_long: no cut was judged
    assert "took longer than 10 s" in reject["reason"]
