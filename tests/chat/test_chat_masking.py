"""Chat-template masking against an independent oracle, on every real template.

The oracle does not use ftdata's span finder. It renders the conversation once more with
every content replaced by a numbered sentinel, which shows where the template puts each
message; aligning that skeleton with the real rendering gives each content's exact place.
A record is correct when the non-whitespace characters its trained tokens cover are exactly
those of the trained assistant contents plus the end-of-turn marker after each (a literal
per real tokenizer), in one run of tokens per turn. Anything else must be a rejection with
a reason. Hypothesis drives it with unicode, whitespace and marker-like text.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from contextlib import contextmanager

import oracle
import pytest
from support import DATASETS, ROOT, TOKENIZER_NAMES, TOKENIZERS, matrix_module, tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftdata import FtdataError, prepare
from ftdata.errors import Location, UnusableRecord
from ftdata.records.formats import to_examples
from ftdata.chat.renderer import ChatRenderer
from ftdata.tokens.masking import REPAIRED, Masker
from ftdata.chat.render import Renderer
from ftdata.types import IGNORE_INDEX, MaskPolicy, SystemMode
from ftdata.outcomes import Note, NoteCode

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")
ALL = [None, *TOKENIZER_NAMES]  # None = the bundled SmolLM2
# End-of-turn marker (middle turn, last turn) per real tokenizer: the oracle's literals.
EOT = {
    None: ("<|im_end|>", "<|im_end|>"),
    "qwen2.5-instruct": ("<|im_end|>", "<|im_end|>"),
    "llama-3-8b-instruct": ("<|eot_id|>", "<|eot_id|>"),
    "llama-3.2-instruct": ("<|eot_id|>", "<|eot_id|>"),
    "gemma-3-it": ("<end_of_turn>", "<end_of_turn>"),
    "mistral-nemo-instruct-2407": ("</s>", "</s>"),
    "phi-3-mini-4k-instruct": ("<|end|>", "<|end|>\n<|endoftext|>"),  # the template closes with EOS
    "deepseek-v3": ("<｜end▁of▁sentence｜>", "<｜end▁of▁sentence｜>"),
}
BYTE_LEVEL = [None, "qwen2.5-instruct", "llama-3-8b-instruct", "llama-3.2-instruct", "mistral-nemo-instruct-2407", "deepseek-v3"]
MARK = re.compile("\ue000(\\d+)\ue001")


# ---------------------------------------------------------------- the oracle


def content_spans(render: ChatRenderer, msgs: list[dict[str, str]]) -> list[tuple[int, int] | None] | None:
    """Where the template puts each message's content in render(msgs), or None if unknowable.

    The skeleton render (contents -> sentinels) splits into markup pieces; the real render
    must be the same markup with each content (as written, or with the whitespace a
    template trims) in place of its sentinel.
    """
    text = render(msgs)
    skeleton = render([{**m, "content": f"\ue000{k}\ue001"} for k, m in enumerate(msgs)])
    parts = MARK.split(skeleton)
    markup, order = parts[0::2], [int(k) for k in parts[1::2]]
    if len(order) != len(set(order)) or any(msgs[k]["role"] == "assistant" for k in set(range(len(msgs))) - set(order)):
        return None
    spans: list[tuple[int, int] | None] = [None] * len(msgs)
    pos = 0
    for j, k in enumerate(order):
        if not text.startswith(markup[j], pos):
            return None
        pos += len(markup[j])
        c = msgs[k]["content"]
        variants = sorted({c, c.strip(), c.lstrip(), c.rstrip(), c.strip("\n"), c.lstrip("\n"), c.rstrip("\n")}, key=len, reverse=True)
        last = j + 1 == len(order)
        for v in variants:
            after = pos + len(v)
            if text.startswith(v, pos) and (text[after:] == markup[j + 1] if last else text.startswith(markup[j + 1], after)):
                spans[k] = (pos, after)
                pos = after
                break
        else:
            return None
    return spans


def expected_chars(tok, text: str, spans, msgs, trained: list[bool], eots: tuple[str, str], prompts) -> list[tuple[set[int], range]]:
    """Per trained assistant turn: the non-whitespace char positions that must carry loss, and
    the range a whitespace-only trained token may lie in (never the separator after the turn).

    The rule: when the rendering starts with the turn's inference prompt `prompts[k]`, all it
    writes from there through the content is trained (a gpt-oss channel header, a think
    block); else what it writes from where it leaves the prompt, when that is after the message
    before and the prompt writes only markup beyond it (Nemotron 3 prompts with `<think>\n` and
    writes `<think></think>` into history turns: `</think>` is the model's), or only the content.
    Then the end-of-turn marker; a template without one is stopped by the next turn's first
    header token, and by the EOS appended after the last turn.
    """
    out = []
    for k, m in enumerate(msgs):
        if m["role"] != "assistant" or not trained[k]:
            continue
        a, b = spans[k]
        core_start = a + len(text[a:b]) - len(text[a:b].lstrip())
        core_end = a + len(text[a:b].rstrip())
        prompt = prompts[k]
        lead = len(prompt) if prompt is not None and text.startswith(prompt) and len(prompt) <= core_start else core_start
        if prompt is not None and not text.startswith(prompt):
            # Only where what the prompt writes beyond the parting point is markup (`<think>\n`), not
            # where it rewrote an earlier message (Mistral moves the system prompt into the last user turn).
            parted = oracle._tag_start(text, len(os.path.commonprefix([prompt, text])))
            markup = not oracle.TAG.sub("", prompt[parted:]).strip()
            lead = parted if markup and spans[k - 1][1] <= parted <= core_start else lead
        eot = eots[1] if k == len(msgs) - 1 else eots[0]
        p = core_end
        while p < len(text) and text[p].isspace() and not text.startswith(eot or "\0", p):
            p += 1
        if eot:
            assert text.startswith(eot, p), f"oracle: {eot!r} does not follow turn {k} in {text!r}"
            stop_end = p + len(eot)
        elif k == len(msgs) - 1:
            assert tok.eos_token and text.endswith(tok.eos_token), f"oracle: no EOS appended after the last turn in {text!r}"
            stop_end = len(text)
        else:
            stop_end = tok.backend_tokenizer.encode(text[p:], add_special_tokens=False).offsets[0][1] + p
        chars = set(range(lead, core_end)) | set(range(p, stop_end))
        lo = lead
        while lo > 0 and text[lo - 1].isspace():
            lo -= 1
        out.append(({i for i in chars if not text[i].isspace()}, range(lo, stop_end)))
    return out


def trained_runs(tok, rendered, tokenized) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Runs of consecutive trained tokens: (ids, char offsets), from an independent encoding."""
    n = tokenized.prefix
    ids, labels = tokenized.input_ids[n:], tokenized.labels[n:]
    assert tokenized.labels[:n] == [IGNORE_INDEX] * n, "the BOS ftdata adds is never trained"
    enc = tok.backend_tokenizer.encode(rendered.text, add_special_tokens=False)
    offsets = enc.offsets
    if REPAIRED not in tokenized.notes:
        assert ids == enc.ids, "the masker must keep the exact tokenization of the rendered text"
    else:  # re-tokenized at span edges: rebuild the offsets the same way, then check by decoding
        offsets = Masker(tok).border.split_encode(rendered)[1]
    runs, current = [], None
    for i, label in enumerate(labels):
        if label == IGNORE_INDEX:
            current = None
            continue
        assert label == ids[i], "a trained label equals its input id (no shifting)"
        if current is None:
            current = ([], [])
            runs.append(current)
        current[0].append(ids[i])
        current[1].append(offsets[i])
    return runs


def covered(offsets: list[tuple[int, int]]) -> set[int]:
    return {i for a, b in offsets for i in range(a, b)}


def check_record(tok, render: ChatRenderer, msgs, rendered, tokenized, trained, eots) -> None:
    """Assert the trained tokens are exactly the trained contents + end-of-turn markers."""
    spans = content_spans(render, msgs)
    assert spans is not None, f"oracle cannot align the rendering {rendered.text!r}"
    text = rendered.text
    prompts = []
    for k in range(len(msgs)):
        try:
            prompts.append(render(msgs[:k], generation=True) if k else None)
        except FtdataError:
            prompts.append(None)
    want = expected_chars(tok, text, spans, msgs, trained, eots, prompts)
    runs = trained_runs(tok, rendered, tokenized)
    assert len(runs) == len(want), f"{len(runs)} trained runs for {len(want)} trained turns in {text!r}"
    for (ids, offsets), (chars, room) in zip(runs, want):
        got = {i for i in covered(offsets) if not text[i].isspace()}
        shown = "".join(text[i] for i in sorted(got))
        assert got == chars, f"trained {shown!r}, expected {''.join(text[i] for i in sorted(chars))!r} in {text!r}"
        for a, b in offsets:  # a token of whitespace only: inside the turn, never the separator
            if not text[a:b].strip():
                assert a in room and b - 1 in room, f"trained whitespace {text[a:b]!r} at {a} outside the turn in {text!r}"


def decoded_matches(tok, rendered, tokenized) -> None:
    """Byte-level BPE decodes exactly: decode(trained ids) == the text they cover."""
    text = rendered.text
    for ids, offsets in trained_runs(tok, rendered, tokenized):
        start, end = min(a for a, _ in offsets), max(b for _, b in offsets)
        assert tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) == text[start:end]


def build(tok, rows, **kw):
    """Render + mask raw rows as the pipeline stage does: [(msgs, example, Rendered|reason, Tokenized|reason)]."""
    renderer = Renderer(tok, **kw)
    masker = Masker(tok)
    out = []
    for i, row in enumerate(rows):
        try:
            (example,) = to_examples(row, Location("t", index=i))
            rendered = renderer(example)
        except UnusableRecord as exc:
            out.append((None, None, exc.reason, None))
            continue
        result = masker([rendered])[0]
        out.append((example, rendered, None, result))
    return renderer, out


# ---------------------------------------------------------------- hypothesis: every real template

MARKER_TEXT = ["<|im_end|>", "<|im_start|>", "[INST]", "[/INST]", "### Response:", "<|eot_id|>", "</s>", "<s>",
               "<end_of_turn>", "<|end|>", "<｜User｜>", "<|endoftext|>"]  # fmt: skip
PLAIN_PIECES = ["\n", " ", "  ", "\t", "\r\n", "\n\n", "你好，世界", "😀", "🇫🇷", "ça", "ä", "<b>x</b>", "{{ name }}", "# Title", "1.", "```py\nx=1\n```"]
TEXT = st.text(st.characters(max_codepoint=0x3FFFF, blacklist_categories=("Cs", "Co", "Cc", "Cn"), whitelist_characters="\n\t"), max_size=16)


def contents(markers: list[str]):
    """Unicode text and whitespace; with `markers`, about one content in five holds one."""
    plain = st.lists(st.one_of(TEXT, st.sampled_from(PLAIN_PIECES)), max_size=4).map("".join)
    if not markers:
        return plain
    marked = st.tuples(plain, st.sampled_from(markers), plain).map("".join)
    return st.one_of(plain, plain, plain, plain, marked)


@st.composite
def conversations(draw, markers: list[str], *, plain: bool = False):
    """System? + 1-3 user/assistant exchanges; `plain`: no empty answers."""
    text = contents(markers)
    nonempty = text.filter(lambda s: s.strip())
    answer = nonempty if plain else st.one_of(nonempty, nonempty, nonempty, text)
    msgs = []
    if draw(st.booleans()):
        msgs.append({"role": "system", "content": draw(text.filter(lambda s: s.strip()) if plain else text)})
    for _ in range(draw(st.integers(1, 3))):
        msgs.append({"role": draw(st.sampled_from(["user", "human"])) if not plain else "user", "content": draw(text)})
        msgs.append({"role": "assistant", "content": draw(answer)})
    return msgs


_CONTROL_IDS: dict[int, set[int]] = {}


def _control(tok, msgs) -> bool:
    """Whether a content encodes to a control token: a special added token, or one the template
    itself writes (found by encoding a rendering of a tiny conversation), independently of ftdata."""
    if id(tok) not in _CONTROL_IDS:
        added = tok.backend_tokenizer.get_added_tokens_decoder()
        markup = tok.apply_chat_template([{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], tokenize=False)
        used = set(tok.backend_tokenizer.encode(markup, add_special_tokens=False).ids)
        _CONTROL_IDS[id(tok)] = {i for i, a in added.items() if a.content.strip() and (a.special or i in used)}
    ids = _CONTROL_IDS[id(tok)]
    return any(set(tok.backend_tokenizer.encode(m["content"], add_special_tokens=False).ids) & ids for m in msgs)


def _spells(tok, text: str) -> bool:
    enc = tok.backend_tokenizer.encode(text, add_special_tokens=False)
    return "".join(tok.backend_tokenizer.decode(enc.ids, skip_special_tokens=False).split()) == "".join(text.split())


_RENDERERS: dict[str | None, Renderer] = {}
_MASKERS: dict[str | None, Masker] = {}


def _check_one(name, msgs, stats: Counter) -> None:
    tok = tokenizer(name)
    if name not in _RENDERERS:  # one per template (`setdefault` would build one per example and drop it)
        _RENDERERS[name], _MASKERS[name] = Renderer(tok), Masker(tok)
    renderer = _RENDERERS[name]
    try:
        (example,) = to_examples({"messages": msgs}, Location("h"))
        rendered = renderer(example)
    except UnusableRecord as exc:
        assert exc.reason, "a rejection always says why"
        stats["rejected"] += 1
        stats[exc.reason[:40]] += 1
        if "control token" in exc.reason:
            assert _control(tok, msgs)
        elif "empty assistant response" not in exc.reason:
            raise AssertionError(f"unexpected rejection for {msgs!r}: {exc}")  # plain text is never rejected
        return
    assert not _control(tok, msgs), "control-token text must be rejected"
    result = _MASKERS[name]([rendered])[0]
    if isinstance(result, UnusableRecord):
        # Only allowed when the vocabulary cannot spell an assistant content at all.
        assert "cannot spell" in result.reason, f"verification rejected {msgs!r}: {result.reason}"
        assert not all(_spells(tok, m["content"]) for m in msgs if m["role"] == "assistant"), result.reason
        stats["unspellable"] += 1
        return
    chat = example.chat_messages()
    trained = [m["role"] == "assistant" for m in chat]
    check_record(tok, renderer.chat, chat, rendered, result, trained, EOT[name])
    if name in BYTE_LEVEL:
        decoded_matches(tok, rendered, result)
    stats[rendered.method] += 1


@pytest.mark.parametrize("name", ALL, ids=lambda n: n or "smollm2")
def test_random_conversations_verify_or_are_rejected_with_reason(name):
    stats: Counter = Counter()

    @settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None)
    # Half the conversations carry no marker text, so enough records train whatever Hypothesis
    # mixes into its strings (it also draws constants it finds in the imported modules).
    @given(st.one_of(conversations([], plain=True), conversations(MARKER_TEXT)))
    def run(msgs):
        _check_one(name, msgs, stats)

    run()
    assert stats["prefix"] + stats["fallback"] >= 15, stats  # enough records train to mean something


@pytest.mark.parametrize("name", ALL, ids=lambda n: n or "smollm2")
def test_plain_text_is_never_rejected(name):
    stats: Counter = Counter()

    @settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True, database=None)
    @given(conversations([], plain=True))
    def run(msgs):
        _check_one(name, msgs, stats)

    run()
    assert stats["rejected"] == 0, stats


# ---------------------------------------------------------------- every chat template shipped with TRL

MATRIX = matrix_module()
try:
    TRL_NAMES = sorted(p.stem for p in MATRIX.template_dir().glob("*.jinja") if not p.stem.endswith("_training"))
except ImportError:  # trl is an optional dependency (the `train` extra)
    TRL_NAMES = []


def trl_template(name: str) -> str:
    pytest.importorskip("trl")
    return (MATRIX.template_dir() / f"{name}.jinja").read_text(encoding="utf-8")


def _closer_is_control(tok, closer: str) -> bool:
    """A closer made only of added tokens (and whitespace): no plain text is trained beyond content."""
    added = set(tok.backend_tokenizer.get_added_tokens_decoder())
    enc = tok.backend_tokenizer.encode(closer, add_special_tokens=False)
    return all(i in added or not closer[a:b].strip() for i, (a, b) in zip(enc.ids, enc.offsets))


@pytest.fixture(scope="module")
def matrix():
    """Every TRL template: its table row, and every oracle failure of its verified records."""
    pytest.importorskip("trl")
    out = {}
    for case in MATRIX.cases(tokenizer):
        if case.skip:
            out[case.name] = (MATRIX.row(MATRIX.Outcome(case)), [], None)
            continue
        with MATRIX.template_on(case, tokenizer) as tok:
            outcome = MATRIX.run(case, tok)
            problems = []
            m = outcome.markers
            for record in outcome.records:
                if record.reason:
                    continue
                try:
                    render = ChatRenderer(tok)
                    trained = [msg["role"] == "assistant" for msg in record.messages]
                    check_record(tok, render, record.messages, record.rendered, record.result, trained, (m.eot, m.final_eot))
                    for closer in {m.eot, m.final_eot} - {""}:
                        assert _closer_is_control(tok, closer), f"closer {closer!r} is not made of control tokens"
                except AssertionError as exc:
                    problems.append(f"{record.name}: {exc}")
            out[case.name] = (MATRIX.row(outcome), problems, outcome)
    return out


@pytest.mark.parametrize("name", TRL_NAMES)
def test_trl_template_is_verified_or_rejected_with_reason(name, matrix):
    row, problems, outcome = matrix[name]
    assert not problems, problems  # never a wrong mask
    if outcome is None:
        assert row["result"].startswith("skipped: ")
        return
    assert outcome.records, "every probe conversation went through"
    for record in outcome.records:
        assert record.status in ("prefix", "fallback", "rejected")
        if record.status == "rejected":
            assert len(record.reason) > 20, record.reason  # a reason a person can act on
        else:
            assert isinstance(record.result.labels, list)
    if not outcome.markers.eot:
        assert any("no end-of-turn marker" in w for w in outcome.markers.warnings)


def test_trl_matrix_expectations(matrix):
    """Spot checks: the verdicts the docs table reports."""
    result = {name: row["result"] for name, (row, _, _) in matrix.items()}
    assert result["qwen2_5"] == result["llama3"] == result["gemma3"] == result["phi3"] == "verified-prefix"
    assert result["qwen3"] == "verified-prefix"  # the last turn's empty think block is written after the prompt: trained
    assert result["gemma"] == "verified except system"  # Gemma 1/2 raise on system turns
    (system,) = [r for r in matrix["gemma"][2].records if r.name == "system"]
    assert "use system_mode='fold'" in system.reason
    assert matrix["gptoss"][2].markers.final_eot == "<|return|>" and matrix["gptoss"][2].markers.eot == "<|end|>"
    assert all(result[n].startswith("skipped: vision") for n in ("llava_next", "idefics3", "smolvlm", "qwen2_5_vl"))


def test_docs_table_and_previews_are_the_generated_ones(matrix):
    rows = [matrix[name][0] for name in TRL_NAMES]
    docs = (ROOT / "docs" / "masking.md").read_text(encoding="utf-8")
    assert MATRIX.table(rows) in docs, "regenerate with: .venv/bin/python benchmarks/template_matrix.py"
    assert MATRIX.previews(tokenizer) in docs, "regenerate with: .venv/bin/python benchmarks/template_matrix.py --previews"


# ---------------------------------------------------------------- literal behaviour of span finding

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ CONTENT }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Rewrites assistant contents: newlines become spaces (probe contents have none, so the
# template is accepted, and only records with a newline in a response fail).
JOINS_LINES = CHATML.replace("{{ CONTENT }}", "{{ m.content | replace('\\n', ' ') if m.role == 'assistant' else m.content }}")
UPPER = CHATML.replace("{{ CONTENT }}", "{{ m.content | upper if m.role == 'assistant' else m.content }}")
RAISES_ON_SYSTEM = (
    "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@contextmanager
def chat_template(tok, source: str):
    """Set a chat template on a (cached, shared) tokenizer for the duration of a test."""
    old = tok.chat_template
    tok.chat_template = source
    try:
        yield tok
    finally:
        tok.chat_template = old


def trained_texts(tok, rendered, tokenized) -> list[str]:
    """The text under each run of trained tokens."""
    out = []
    for _, offsets in trained_runs(tok, rendered, tokenized):
        out.append(rendered.text[min(a for a, _ in offsets) : max(b for _, b in offsets)])
    return out


def chat(*turns: str, roles=("user", "assistant"), **extra) -> dict:
    return {"messages": [{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)], **extra}


def one(tok, row, **kw):
    """(Rendered, Tokenized) of one raw row, or the rejection reason."""
    _, [(example, rendered, reason, result)] = build(tok, [row], **kw)
    if reason:
        return reason
    return rendered, result


def test_template_that_rewrites_a_response_rejects_that_record_with_the_reason(smol):
    with chat_template(smol, JOINS_LINES):
        reason = one(smol, chat("hi", "line one\nline two"))
        rendered, result = one(smol, chat("hi", "one line"))
        assert trained_texts(smol, rendered, result) == ["one line<|im_end|>"]
    assert reason == (
        "assistant turn 1 cannot be masked safely: the template renders it as 'line one line two' (it rewrites the content)"
    )


def test_every_record_rejected_raises_one_error_naming_the_template_problem(smol):
    rows = [chat("hi", "a\nb"), chat("yo", "c\nd")]
    with chat_template(smol, JOINS_LINES), pytest.raises(FtdataError, match=r"every record was rejected \(2 of 2\); first: .*rewrites the content"):
        prepare(rows, tokenizer=smol)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (UPPER, "chat template drops or rewrites the content of the first assistant, second assistant turn"),
        (CHATML.replace("{{ CONTENT }}", "{{ '(answer withheld)' if m.role == 'assistant' else m.content }}"),
         "chat template drops or rewrites the content of the first assistant, second assistant turn"),
        (CHATML.replace("{{ CONTENT }}", "{{ m.content }}").replace("{% for m in messages %}", "{% for m in messages | reverse %}"),
         "chat template reorders message contents"),
    ],
    ids=["uppercases", "drops", "reorders"],
)
def test_template_that_rewrites_every_content_is_refused_up_front(smol, source, message):
    with chat_template(smol, source), pytest.raises(FtdataError, match=re.escape(message)):
        prepare([chat("hi", "yo")], tokenizer=smol)


def test_template_that_drops_the_reasoning_trains_the_answer_and_says_so():
    tok = tokenizer("qwen2.5-instruct")
    source = trl_template("qwen3")
    row = chat("q1", "<think>\nr1\n</think>\n\na1", "q2", "<think>r2</think>a2")
    with chat_template(tok, source):
        rendered, result = one(tok, row)
    assert rendered.text == (
        "<|im_start|>user\nq1<|im_end|>\n<|im_start|>assistant\na1<|im_end|>\n"
        "<|im_start|>user\nq2<|im_end|>\n<|im_start|>assistant\n<think>\nr2\n</think>\n\na2<|im_end|>\n"
    )
    # Turn 1's reasoning is gone from the render: only its answer; the last turn's reasoning
    # is re-rendered as a think block, trained as the model will write it.
    assert trained_texts(tok, rendered, result) == ["a1<|im_end|>", "<think>\nr2\n</think>\n\na2<|im_end|>"]
    assert rendered.method == "prefix"  # both turns start where their inference prompts end
    # Both think blocks were the turns' reasoning (ftdata.chat.think), and the template drops turn 1's.
    assert [n.code for n in result.notes] == [NoteCode.REASONING_DROPPED, NoteCode.REASONING_MOVED, NoteCode.REASONING_MOVED]


def test_system_prompt_moved_by_the_template_is_found_by_the_fallback():
    tok = tokenizer("mistral-nemo-instruct-2407")
    rendered, result = one(tok, chat("q1", "a1", "q2", "a2"), system_prompt="Be brief.", system_mode=SystemMode.FOLD)
    assert rendered.text == "<s>[INST]Be brief.\n\nq1[/INST]a1</s>[INST]q2[/INST]a2</s>"
    assert trained_texts(tok, rendered, result) == ["a1</s>", "a2</s>"]
    # Without folding, Mistral's template drops the system prompt of a training record.
    rendered, result = one(tok, {"messages": [{"role": "system", "content": "Be brief."}, *chat("q1", "a1")["messages"]]})
    assert rendered.text == "<s>[INST]q1[/INST]a1</s>"
    assert [n.code for n in result.notes] == [NoteCode.SYSTEM_DROPPED]


@pytest.mark.parametrize(
    ("name", "trained"),
    [(None, False), ("qwen2.5-instruct", False), ("llama-3-8b-instruct", True), ("gemma-3-it", True), ("mistral-nemo-instruct-2407", True)],
)
def test_marker_text_in_content_trains_as_text_or_is_rejected(name, trained):
    """`<|im_end|>` is a control token for ChatML tokenizers (rejected) and plain text elsewhere."""
    tok = tokenizer(name)
    out = one(tok, chat("say it", "the end is <|im_end|> here"))
    if not trained:
        assert out == (
            "contains '<|im_end|>', which the tokenizer reads as a control token, not as text; the tokens would not "
            "say what the data says (remove or escape it, or special_tokens_in_data='text' to train it as plain text)"
        )
        return
    rendered, result = out
    eot = EOT[name][1]
    assert trained_texts(tok, rendered, result)[0].endswith(f"the end is <|im_end|> here{eot}")
    ids = [i for i in result.labels if i != IGNORE_INDEX]
    assert tok.backend_tokenizer.token_to_id("<|im_end|>") not in ids  # spelled as text, never the id


@pytest.mark.parametrize(
    ("content", "rejected"),
    [
        ("half a marker <|im_end and <|im_start", None),  # prefixes of control tokens are text
        ("a | b < c > d [x] (y) * z", None),  # regex metacharacters of the control tokens' text
        ("two: <|im_start|> then <|im_end|>", "<|im_start|>"),  # the message names the longest hit, as ever
        ("reversed <|im_end|> <|im_start|>", "<|im_start|>"),
    ],
)
def test_control_tokens_are_found_exactly(content, rejected):
    out = one(tokenizer("qwen2.5-instruct"), chat("say it", content))
    if rejected is None:
        assert not isinstance(out, str), out
    else:
        assert out.startswith(f"contains {rejected!r}, which the tokenizer reads as a control token")


# ---------------------------------------------------------------- policies

def test_all_assistant_turns_by_default_last_only_on_request(smol):
    row = chat("q1", "a1", "q2", "a2")
    rendered, result = one(smol, row)
    assert trained_texts(smol, rendered, result) == ["a1<|im_end|>", "a2<|im_end|>"]
    rendered, result = one(smol, row, mask=MaskPolicy.LAST_ASSISTANT)
    assert trained_texts(smol, rendered, result) == ["a2<|im_end|>"]


def test_train_on_prompt_trains_every_token_of_the_rendering():
    tok = tokenizer("llama-3-8b-instruct")
    rendered, result = one(tok, chat("q1", "a1"), mask=MaskPolicy.TRAIN_ON_PROMPT)
    assert result.labels == result.input_ids
    assert trained_texts(tok, rendered, result) == [rendered.text]


def test_per_message_train_flags_win_over_the_policy(smol):
    row = {"messages": [
        {"role": "user", "content": "q1", "loss_weight": 1.0},
        {"role": "assistant", "content": "a1", "loss_weight": 0.0},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "a2", "train": True},
    ]}  # fmt: skip
    rendered, result = one(smol, row)
    assert trained_texts(smol, rendered, result) == ["a2<|im_end|>"]
    assert [n.code for n in result.notes] == [NoteCode.USER_TRAIN_IGNORED]
    row["messages"][3]["train"] = False
    assert one(smol, row) == "every assistant turn has train=false; nothing to train on"
    del row["messages"][1]["loss_weight"]  # no flag: the policy decides, and last_assistant says no
    assert one(smol, row, mask=MaskPolicy.LAST_ASSISTANT) == (
        "mask=last_assistant and the last assistant turn has train=false; nothing to train on"
    )
    rendered, result = one(smol, row)  # all_assistant trains the unflagged turn
    assert trained_texts(smol, rendered, result) == ["a1<|im_end|>"]


def test_llamafactory_loss_weights_from_a_real_file():
    rows = [json.loads(line) for line in (DATASETS / "messages" / "llamafactory_v1_sft_demo.jsonl").open()][:20]
    tok = tokenizer("llama-3-8b-instruct")
    _, out = build(tok, rows)
    for row, (example, rendered, reason, result) in zip(rows, out):
        assert reason is None
        assert [m.train for m in example.messages] == [False, True]  # loss_weight 0.0 / 1.0
        answer = row["messages"][1]["content"][0]["value"]
        assert trained_texts(tok, rendered, result) == [f"{answer.strip()}<|eot_id|>"]


@pytest.mark.parametrize(
    ("mode", "prompt", "expected"),
    [
        (SystemMode.ADD, "Be kind.", "<|im_start|>system\nOwn.<|im_end|>\n<|im_start|>user\nq<|im_end|>\n"),
        (SystemMode.OVERRIDE, "Be kind.", "<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nq<|im_end|>\n"),
        (SystemMode.FOLD, None, "<|im_start|>user\nOwn.\n\nq<|im_end|>\n"),
    ],
)
def test_system_prompt_add_override_fold(smol, mode, prompt, expected):
    row = {"messages": [{"role": "system", "content": "Own."}, *chat("q", "a")["messages"]]}
    with chat_template(smol, RAISES_ON_SYSTEM.replace("{{ raise_exception('System role not supported') }}", "")):
        rendered, result = one(smol, row, system_prompt=prompt, system_mode=mode)
    assert rendered.text == expected + "<|im_start|>assistant\na<|im_end|>\n"
    assert trained_texts(smol, rendered, result) == ["a<|im_end|>"]


def test_system_prompt_is_added_only_where_a_record_has_none(smol):
    rendered, _ = one(smol, chat("q", "a"), system_prompt="Be kind.")
    assert rendered.text.startswith("<|im_start|>system\nBe kind.<|im_end|>\n<|im_start|>user\nq")


def test_fold_rescues_a_template_that_raises_on_system_turns(smol):
    row = {"messages": [{"role": "system", "content": "Own."}, *chat("q", "a")["messages"]]}
    with chat_template(smol, RAISES_ON_SYSTEM):
        reason = one(smol, row)
        rendered, result = one(smol, row, system_mode=SystemMode.FOLD)
        with pytest.raises(FtdataError, match="use system_mode='fold'"):
            prepare([row], tokenizer=smol)
        assert prepare([row], tokenizer=smol, system_mode="fold").report.examples == 1
    assert reason == (
        "chat template raised for roles [system,user,assistant]: System role not supported; "
        "this template has no system role: use system_mode='fold'"
    )
    assert rendered.text == "<|im_start|>user\nOwn.\n\nq<|im_end|>\n<|im_start|>assistant\na<|im_end|>\n"
    assert trained_texts(smol, rendered, result) == ["a<|im_end|>"]


# ---------------------------------------------------------------- notes

def test_mapped_role_names_are_noted_on_the_record(smol):
    row = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    rendered, result = one(smol, row)
    assert rendered.notes == result.notes == (
        Note(NoteCode.ROLE_MAPPED, "role 'human' mapped to 'user'"),
        Note(NoteCode.ROLE_MAPPED, "role 'gpt' mapped to 'assistant'"),
    )
    assert trained_texts(smol, rendered, result) == ["yo<|im_end|>"]
    report = prepare([row], tokenizer=smol).report
    assert report.notes == {NoteCode.ROLE_MAPPED: 1}  # one example, however many roles it maps
    assert report.note_texts == {NoteCode.ROLE_MAPPED: ["role 'human' mapped to 'user'", "role 'gpt' mapped to 'assistant'"]}
