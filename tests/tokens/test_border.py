"""Issue 39, item 4: a token at the prompt/response border.

Inference tokenizes turn i's prompt alone and the model generates from a fresh token, so a row
must hold the prompt as tokenized alone up to the turn's first trained token, and the turn as
its text tokenized alone (`oracle.border_problems`, part of `oracle.compare`). Where the
prompt's end and the reply's start would merge into one token (chat markers that are plain
text to the tokenizer: `<think>` + `</think>` -> `></`, `</think>` + `You` -> `>You`), ftdata
splits the text there (`ftdata.tokens.border`, note `repaired`).

- Literal cases, real tokenizers and TRL's or the served templates: the three that failed before
  the fix (Gemma 3's whitespace token `\\n\\n` across the prompt's end; whitespace before a
  fallback turn's content left in the prompt; a regex pre-token across the border, Mistral-Nemo's
  `:\\n/` + `usr`), and the merges the split already handled.
- The oracle is not vacuous: labels from the whole-text tokenization fail it.
- Every TRL template on every base tokenizer (some markers plain text), every probe, thinking on
  and off (`benchmarks/template_matrix.py --base`): no record is wrong at a border; the other
  disagreements (stop tokens that are plain text, not borders) are listed in KNOWN.
  Default: a representative subset; `-m slow`: the whole table.
- Hypothesis: assistant contents drawn from the template's own markup, on the same subset.
- The border holds where truncation re-renders a record; with mask=last_assistant nothing
  earlier is trained, and the prompt is tokenized exactly as inference tokenizes it whole.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import oracle
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support import TOKENIZERS, matrix_module, tokenizer
from test_invariance import fragments, texts, writes_as_given

from ftdata.errors import FtdataError, Location, UnusableRecord
from ftdata.options import DataOptions
from ftdata.outcomes import NoteCode, has_note
from ftdata.run.stage import Stage
from ftdata.types import IGNORE_INDEX

pytestmark = pytest.mark.skipif(not TOKENIZERS.is_dir(), reason=f"real tokenizers not found at {TOKENIZERS}")
MATRIX = matrix_module()
RECORDS = {n: {"messages": m} for n, m in MATRIX.PROBES.items()} | MATRIX.CHAT_PROBES


@cache
def _trl() -> dict[str, Any]:
    return {case.name: case for case in MATRIX.cases(tokenizer)}


def _row(template: str, name: str, kwargs: dict[str, Any], record: dict[str, Any], **options: Any) -> Any:
    """ftdata's Tokenized row of `record` with TRL's `template` on the shared tokenizer `name`."""
    case = _trl()[template]
    with MATRIX.base_on(case, name, tokenizer) as tok:
        stage = Stage(tok, DataOptions(max_length=100_000, chat_template_kwargs=kwargs or None, **options))
        (example,) = stage.examples(Location("border"), record)
        return stage.tokenize(example)


def _served_row(name: str, probe: str) -> tuple[Any, Any]:
    case = next(c for c in MATRIX.served_cases() if c.name == name)
    with MATRIX.served_on(case) as tok:
        stage = Stage(tok, MATRIX.build_options(case.kwargs[0], case.stop_tokens))
        (example,) = stage.examples(Location("border"), MATRIX.served_records(case)[probe])
        return tok, stage.tokenize(example)


def _around(row: Any, run: int) -> tuple[list[int], list[int]]:
    """(the three tokens before trained run `run`, its first three tokens)."""
    starts = [
        k for k, x in enumerate(row.labels) if x != IGNORE_INDEX and (k == 0 or row.labels[k - 1] == IGNORE_INDEX)
    ]
    k = starts[run]
    return row.input_ids[k - 3 : k], row.input_ids[k : k + 3]


# ---------------------------------------------------------------- literal cases


def test_a_whitespace_token_across_the_prompt_end_is_split():
    """TRL's qwen3_8 on Gemma 3, thinking on: the prompt ends `<think>\\n`, the model writes `\\n</think>\\n\\n4.`.
    Gemma 3's `\\n\\n` (id 108) is an added token, so the text is one `\\n\\n` across the border. Before, an
    added token across a span's start by whitespace only stayed whole on the prompt side (the rule for
    Phi-3's `<|assistant|>`, which swallows the newline after its own text): the row held `\\n\\n` in the
    prompt, which inference never ends with, and trained from `</` (954): the model never learned the
    `\\n` it writes first. Now the text is split there, as inference tokenizes it."""
    row = _row("qwen3_8", "gemma-3-it", {"enable_thinking": True}, RECORDS["single"])
    assert _around(row, 0) == ([36345, 236813, 107], [107, 954, 36345])  # 'think' '>' '\n' | '\n' '</' 'think'
    assert has_note(row.notes, NoteCode.REPAIRED)


@pytest.mark.parametrize(("name", "trained"), [
    # `<｜Assistant｜>` then twelve spaces: the prompt (`<｜Assistant｜>\n`) holds none of them. Before: prompt
    # `<｜Assistant｜>` + `            ` (1797), trained from `Blue` (10331).
    ("vllm-deepseekv3", [(310, "           "), (8697, " Blue"), (374, " is")]),
    # `[/INST] Blue`: the prompt ends at `[/INST]`. Before: prompt `[/INST]` + ` ` (220), trained from `Blue` (10331).
    ("vllm-mistral-parallel", [(8697, " Blue"), (374, " is"), (825, " one")]),
])  # fmt: skip
def test_whitespace_before_a_fallback_turns_content_is_the_models(name, trained):
    """A fallback turn (the template rewrites history) began at its content, leaving the whitespace the
    template writes after the prompt's end in the prompt: a lone whitespace token no inference prompt
    ends with, and a first word without its space. The whitespace is the model's, in its first token."""
    tok, row = _served_row(name, "plain")
    before, first = _around(row, 0)
    assert [(i, tok.decode([i])) for i in first] == trained
    assert tok.decode([before[-1]]).strip()  # the prompt ends with the template's marker, not with whitespace


def test_a_pre_token_across_the_border_is_split():
    """Mistral-Nemo's pre-tokenizer glues `/` to the punctuation and newlines before it (`[\\r\\n/]*`):
    Alpaca's `### Response:\\n` + `/usr/bin/env python` is one pre-token `:\\n/`, which BPE cuts as
    `:\\n` `/` `usr`: a token boundary at the border, so nothing was split, and the row trained `/` (1047)
    `usr` (17441). Generated after the prompt, the reply starts a pre-token of its own: `/usr` (99074)."""
    from ftdata import prepare

    tok = tokenizer("mistral-nemo-instruct-2407")
    result = prepare(
        [{"instruction": "Where is env?", "output": "/usr/bin/env python"}], tokenizer=tok, template="alpaca"
    )
    row = result.dataset[0]
    k = next(i for i, x in enumerate(row["labels"]) if x != IGNORE_INDEX)
    assert row["input_ids"][k - 2 : k + 3] == [
        15050,
        1877,
        99074,
        24446,
        57407,
    ]  # ' Response' ':\n' | '/usr' '/bin' '/env'
    assert tok.backend_tokenizer.encode("### Response:\n/usr", add_special_tokens=False).ids[-3:] == [1877, 1047, 17441]
    assert result.report.notes == {"repaired": 1}
    # A chat template on the same tokenizer: TRL's qwen3_5_think (thinking off) writes `</think>\n\n/<|im_end|>`.
    row = _row("qwen3_5_think", "mistral-nemo-instruct-2407", {"enable_thinking": False},
               {"messages": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "/"}]})  # fmt: skip
    assert _around(row, 0) == ([1885, 74045, 3318], [75263, 1124, 1329])  # '</' 'think' '>\n\n' | '/<' '|' 'im'


@pytest.mark.parametrize(("template", "name", "kwargs", "probe", "run", "whole", "before", "first"), [
    # `<think>` + `</think>`: the text is one `></` (1500) across the border; the prompt alone ends `>` (29).
    ("nemotron_3_nano", "llama-3-8b-instruct", {"enable_thinking": True}, "single", 0,
     [14023, 771, 1500, 27963], [14023, 771, 29], [524, 27963, 29]),
    # `</think>` + `You are welcome.`: Llama 3 merges the tag's `>` with the first word, `>You` (55621).
    ("nemotron_3_nano", "llama-3-8b-instruct", {"enable_thinking": False}, "tools-dict", 2,
     [1500, 27963, 55621, 527], [1500, 27963, 29], [2675, 527, 10788]),
    # `<|assistant|>` + `\n<think>`: `>\n` (397) across the border; the prompt alone ends `>` (29), the reply `\n` (198).
    ("glm4moe", "llama-3-8b-instruct", {"enable_thinking": True}, "single", 0,
     [78191, 91, 397, 14023], [78191, 91, 29], [198, 14023, 771]),
])  # fmt: skip
def test_a_marker_fragment_merged_across_the_border_is_split(template, name, kwargs, probe, run, whole, before, first):
    """Markers that are plain text merge with the reply's first characters in the whole text; the row
    holds the prompt as tokenized alone and the reply from a fresh token (this held before the fix)."""
    row = _row(template, name, kwargs, RECORDS[probe])
    case = _trl()[template]
    with MATRIX.base_on(case, name, tokenizer) as tok:
        text = tok.apply_chat_template(
            RECORDS[probe]["messages"], tools=RECORDS[probe].get("tools"), tokenize=False, **kwargs
        )
        ids = tok.backend_tokenizer.encode(text, add_special_tokens=False).ids
    assert any(ids[k : k + len(whole)] == whole for k in range(len(ids)))  # the merge is in the whole text
    assert _around(row, run) == (before, first)
    assert has_note(row.notes, NoteCode.REPAIRED)


# ---------------------------------------------------------------- the oracle is not vacuous


def test_the_border_oracle_flags_labels_from_the_whole_text():
    """glm4moe on Llama 3: labels laid over the whole-text tokenization (a token trained when its
    characters reach into the span) train `>\\n` (397), half prompt; ftdata's split row passes."""
    case, kwargs, record = _trl()["glm4moe"], {"enable_thinking": True}, RECORDS["single"]
    row = _row("glm4moe", "llama-3-8b-instruct", kwargs, record)
    with MATRIX.base_on(case, "llama-3-8b-instruct", tokenizer) as tok:
        exp = oracle.expect(tok, record["messages"], kwargs=kwargs, edge_cases=True)
        enc = tok.backend_tokenizer.encode(exp.text, add_special_tokens=False)
        (s, e), = [t.span for t in exp.turns]  # fmt: skip
        ids = [tok.bos_token_id, *enc.ids]
        labels = [IGNORE_INDEX] + [i if a < e and s < b else IGNORE_INDEX for i, (a, b) in zip(enc.ids, enc.offsets)]
        problems = oracle.border_problems(exp, tok, ids, labels)
        assert len(problems) == 1 and "397 '>\\n'" in problems[0] and "29 '>'" in problems[0]
        assert oracle.compare(exp, tok, row.input_ids, row.labels) == []
        # The same labels one token short at the start (the `\n` left out): also wrong.
        first = next(k for k, x in enumerate(row.labels) if x != IGNORE_INDEX)
        short = [*row.labels[:first], IGNORE_INDEX, *row.labels[first + 1 :]]
        assert oracle.border_problems(exp, tok, row.input_ids, short)


# ---------------------------------------------------------------- every TRL template on every base tokenizer

BASE = ("deepseek-v3", "gemma-3-it", "llama-3-8b-instruct", "llama-3.2-instruct", "mistral-nemo-instruct-2407",
        "phi-3-mini-4k-instruct", "qwen2.5-instruct")  # fmt: skip


def _known() -> dict[tuple[str, str, str], str]:
    """(template variant, tokenizer, probe) -> the disagreement that is no border case, on base tokenizers.

    DeepSeek's `<｜end▁of▁sentence｜>` decodes with a space for `▁` on SentencePiece-style tokenizers (the decode
    check rejects it). The stops a template writes as plain text on a base tokenizer (GLM-4-MoE's `<|user|>` and
    `<|observation|>` headers, Gemma 4's `<|tool_response>` after a call) are stops there as its end-of-turn
    markers are (`chat.stops.turn_stops`): those records train as the oracle says."""
    out = {}
    for template in ("deepseekv3", "deepseek_r1_distill"):
        for name in ("gemma-3-it", "phi-3-mini-4k-instruct"):
            out |= {(template, name, p): "false reject" for p in MATRIX.PROBES}
    return out


KNOWN = _known()
# One pair per way a border goes wrong: a whitespace added token (Gemma 3), `>\n` (GLM on Llama 3), `></` and
# `>You` (Nemotron, a fallback template, on Llama 3 and DeepSeek-V3), `<think>` as text on Qwen2.5, Metaspace
# (Phi-3), `><` between tags (Cohere2), a generation prompt opening `<think>\n` (DeepSeek-R1-Distill on Mistral).
SUBSET = [("qwen3_8", "gemma-3-it"), ("qwen3_5_think", "gemma-3-it"), ("glm4moe", "llama-3-8b-instruct"),
          ("nemotron_3_nano", "llama-3-8b-instruct"), ("nemotron_3_nano", "deepseek-v3"), ("qwen3", "qwen2.5-instruct"),
          ("qwen2_5", "phi-3-mini-4k-instruct"), ("cohere2", "llama-3.2-instruct"),
          ("deepseek_r1_distill", "mistral-nemo-instruct-2407"),
          # stops written as plain text: Gemma 4's `<|tool_response>` after a call, GLM's headers with `</tool_call>` a token
          ("gemma4", "qwen2.5-instruct"), ("glm4moe", "qwen2.5-instruct")]  # fmt: skip


def _pairs(subset: bool) -> list[Any]:
    """The subset, or every text-only TRL template with every shared tokenizer (read from the file
    names only: collecting must not render; a pair that is no base pair is skipped when run)."""
    if not TOKENIZERS.is_dir():
        return []
    try:
        names = [p.stem for p in sorted(MATRIX.template_dir().glob("*.jinja"))
                 if not p.stem.endswith("_training") and not MATRIX.VISION.search(p.stem)]  # fmt: skip
    except ImportError:  # trl is an optional dependency (the `train` extra)
        return []
    pairs = SUBSET if subset else [(t, n) for t in names for n in BASE]
    return [pytest.param(t, n, id=f"{t}:{n}") for t, n in pairs]


def base_case(template: str, name: str) -> Any:
    """The TRL case, when its template has markers that are plain text to tokenizer `name` (else skip)."""
    case = _trl()[template]
    with MATRIX.base_on(case, name, tokenizer) as tok:
        if case.skip or not MATRIX.text_markers(case.source, tok):
            pytest.skip(f"{template} on {name}: every marker is a token there, or it does not render")
    return case


def check_pair(template: str, name: str) -> None:
    case = base_case(template, name)
    with MATRIX.base_on(case, name, tokenizer) as tok:
        for kwargs in MATRIX.base_kwargs(case):
            flag = {True: "-think", False: "-nothink"}.get(kwargs.get("enable_thinking"), "")
            for probe, v in MATRIX.run_base(tok, kwargs).items():
                kind = v.kind if v.kind not in ("agrees", "true reject") else ""
                assert kind != "border", f"{template}{flag} {probe}: {v.oracle}"
                assert kind == KNOWN.get((template + flag, name, probe), ""), (
                    f"{template}{flag} {probe}: {kind}: {v.reason or v.oracle}"
                )


@pytest.mark.parametrize(("template", "name"), _pairs(subset=True))
def test_base_tokenizers_keep_the_border(template, name):
    check_pair(template, name)


@pytest.mark.slow
@pytest.mark.parametrize(("template", "name"), _pairs(subset=False))
def test_base_tokenizers_keep_the_border_everywhere(template, name):
    check_pair(template, name)


def test_known_entries_name_base_pairs():
    """No stale entry: every KNOWN (template, tokenizer) is a base pair of the table."""
    pairs = {(case.name, name) for case, name in MATRIX.base_pairs(tokenizer)}
    variants = {(v.removesuffix("-think").removesuffix("-nothink"), n) for v, n, _ in KNOWN}
    assert variants <= pairs, sorted(variants - pairs)


# ---------------------------------------------------------------- contents from the template's markup


def check_markup_contents(template: str, name: str, *, examples: int) -> None:
    """Two plain exchanges whose assistant contents are markup fragments (whole or cut) and arbitrary
    text (`>`, `\\n`, `<think>`, `|`, ...: what merges with a prompt's end): where ftdata trains the
    record and places its turns' characters as the oracle does, its tokens at every border are what
    inference has there."""
    case = base_case(template, name)
    with MATRIX.base_on(case, name, tokenizer) as tok:
        for kwargs in MATRIX.base_kwargs(case):
            _markup_property(case, tok, kwargs, examples)


BASE_RECORD = [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."},
               {"role": "user", "content": "Another one?"}, {"role": "assistant", "content": "Green."}]  # fmt: skip


def _markup_property(case: Any, tok: Any, kwargs: dict[str, Any], examples: int) -> None:
    stage = Stage(tok, DataOptions(max_length=100_000, chat_template_kwargs=kwargs or None))
    stops = oracle.stop_tokens(tok, kwargs)
    frags = fragments(case.source, tok.apply_chat_template(BASE_RECORD, tokenize=False, **kwargs))

    @settings(
        max_examples=examples, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.lists(texts(frags), min_size=2, max_size=2))
    def prop(contents: list[str]) -> None:
        assume(all(c.strip() for c in contents) and not any(c in t for c in stage.renderer.controls for t in contents))
        user1, answer1, user2, answer2 = BASE_RECORD
        record = {"messages": [user1, {**answer1, "content": contents[0]}, user2, {**answer2, "content": contents[1]}]}
        assume(writes_as_given(stage, record, {(1, "content"): contents[0], (3, "content"): contents[1]}))
        exp = oracle.expect(tok, record["messages"], kwargs=kwargs, stops=stops, edge_cases=True)
        try:
            (example,) = stage.examples(Location("border"), record)
            row = stage.tokenize(example)
        except FtdataError as exc:
            row = UnusableRecord(str(exc))
        if isinstance(row, UnusableRecord):
            return  # rejected with its reason: never trained wrong
        assert not exp.must_reject, f"{contents!r}: trained a record it must reject ({exp.must_reject})"
        border = oracle.border_problems(exp, tok, row.input_ids, row.labels)
        # Where ftdata and the oracle place a turn's characters differently (a content that is the
        # prompt's own tail, `<think>` after a prompt ending `<think>\\n`), the characters are the
        # concern of test_inference_rule and test_invariance; here: the tokens at every border.
        assume(oracle.compare(exp, tok, row.input_ids, row.labels) == border)
        assert border == [], f"{contents!r}"

    prop()


@pytest.mark.parametrize(("template", "name"), _pairs(subset=True))
def test_contents_from_the_templates_markup_keep_the_border(template, name):
    check_markup_contents(template, name, examples=8)


@pytest.mark.slow
@pytest.mark.parametrize(("template", "name"), _pairs(subset=False))
def test_contents_from_the_templates_markup_keep_the_border_at_length(template, name):
    check_markup_contents(template, name, examples=60)


# ---------------------------------------------------------------- truncation, mask=last_assistant


def test_truncation_re_renders_with_the_same_border():
    """keep_response drops the oldest exchange and renders the rest again: the kept row is the row of the
    shorter conversation, split at its border as any record is."""
    from ftdata import prepare

    kwargs, messages = {"enable_thinking": True}, RECORDS["multi"]["messages"]
    whole = _row("qwen3_8", "gemma-3-it", kwargs, RECORDS["multi"])
    shorter = _row("qwen3_8", "gemma-3-it", kwargs, {"messages": messages[2:]})
    case = _trl()["qwen3_8"]
    with MATRIX.base_on(case, "gemma-3-it", tokenizer) as tok:
        built = prepare([{"messages": messages}], tokenizer=tok, max_length=len(whole.input_ids) - 1,
                        truncation="keep_response", chat_template_kwargs=kwargs).dataset[0]  # fmt: skip
    assert (built["input_ids"], built["labels"]) == (shorter.input_ids, shorter.labels)
    assert _around(shorter, 0) == ([36345, 236813, 107], [107, 954, 36345])


def test_with_only_the_last_turn_trained_the_prompt_is_tokenized_whole():
    """mask=last_assistant: the earlier turn is context, tokenized as inference tokenizes the whole
    history (P_i alone), and only the last turn's border is split."""
    kwargs, record = {"enable_thinking": False}, RECORDS["tools-dict"]
    row = _row("nemotron_3_nano", "llama-3-8b-instruct", kwargs, record, mask="last_assistant")
    case = _trl()["nemotron_3_nano"]
    with MATRIX.base_on(case, "llama-3-8b-instruct", tokenizer) as tok:
        prompt = tok.apply_chat_template(record["messages"][:-1], tools=record["tools"], tokenize=False,
                                         add_generation_prompt=True, **kwargs)  # fmt: skip
        alone = tok(prompt)["input_ids"]
    first = next(k for k, x in enumerate(row.labels) if x != IGNORE_INDEX)
    assert row.input_ids[:first] == alone
    assert row.input_ids[first : first + 3] == [2675, 527, 10788]  # 'You' ' are' ' welcome'
