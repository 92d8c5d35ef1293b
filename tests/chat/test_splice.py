"""The splice (ftdata/chat/splice.py): a batch of plain conversations rendered from a proven skeleton per role
sequence, byte for byte what `apply_chat_template` writes, spliced or fallen back.

Of the 72 chat templates TRL 1.16 ships (41 originals, vision ones included, and 31 `_training` copies), 37 splice a
one-user-turn prompt with the generation prompt: 20 originals (`SPLICED` below: Qwen 2.5/3/3-VL, Phi-3, DeepSeek,
GLM-4 MoE, LFM2, Nemotron 3, Cohere 2) and the 17 copies of those that TRL ships. The rest fall back to the
template per batch, as before the splice: they trim, split or strip the content (Llama 3, Gemma, Qwen 3.5+,
Cohere), call `strftime_now` (gpt-oss, Llama 3.2, Muse), or read contents as lists of parts (vision templates).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftdata.chat import splice
from ftdata.chat.renderer import ChatRenderer
from ftdata.chat.traced import Ask, Traced, UnspliceableUse, tracing

from support import make_char_tokenizer

SHARED_TOKENIZERS = Path(__file__).resolve().parents[3] / "shared" / "tokenizers"
ROLE_SEQUENCES = (("user",), ("system", "user"), ("user", "assistant", "user"))
TAG = re.compile(r"<[^<>\s]{1,40}>|\[[A-Za-z_/]{2,20}\]")
LITERAL = re.compile(r"'([^'\\\n]{1,24})'|\"([^\"\\\n]{1,24})\"")
ODD = ["", " ", "\n", "  \n ", "\t", "</think>", "<think>", "<think>\n", "'", '"', "{{", "{%", "}}", "\\", "é", "x"]
SPLICED = {
    *("cohere2", "deepseek_r1_distill", "deepseekv3", "glm4moe", "lfm2", "lfm2_2_5", "lfm2_2_5_v2", "lfm2_2_5_vl"),
    *("lfm2_v2", "nemotron_3_5_lightning", "nemotron_3_nano", "nemotron_3_super", "nemotron_3_ultra", "phi3"),
    *("phi3_5", "qwen2_5", "qwen2_5_vl", "qwen3", "qwen3_instruct_2507", "qwen3_vl"),
}


def _trl_templates() -> dict[str, str]:
    import trl

    folder = Path(trl.__file__).parent / "chat_templates"
    return {p.stem: p.read_text(encoding="utf-8") for p in sorted(folder.glob("*.jinja"))}


def _shared_templates() -> dict[str, tuple[str, dict[str, str]]]:
    """The chat template and special tokens of each shared tokenizer (read from its config: loading the
    tokenizers themselves takes longer than this whole file may)."""
    out = {}
    for config in sorted(SHARED_TOKENIZERS.glob("*/tokenizer_config.json")):
        data = json.loads(config.read_text(encoding="utf-8"))
        if isinstance(data.get("chat_template"), str):
            specials = {
                k: v if isinstance(v, str) else v["content"] for k in ("bos_token", "eos_token") if (v := data.get(k))
            }
            out[config.parent.name] = (data["chat_template"], specials)
    return out


TRL = _trl_templates()
SHARED = _shared_templates()


@cache
def _tokenizer(name: str):
    """A byte-level tokenizer with the template (and a shared tokenizer's BOS/EOS strings): the render of a text
    depends on the template and the special tokens' strings only."""
    if name in TRL:
        return make_char_tokenizer(chat_template=TRL[name])
    source, specials = SHARED[name]
    tok = make_char_tokenizer(chat_template=source)
    for attribute, value in specials.items():
        setattr(tok, attribute, value)
    return tok


@cache
def _skeletons(name: str) -> splice.Skeletons:
    return splice.Skeletons()


def _expected(tok, conversation, generation):
    try:
        return tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation)
    except Exception:  # noqa: BLE001 - the template's own error: render_all must give None too
        return None


def _contents(source: str):
    """Contents from odd strings, the template's own markup and literals, and any text."""
    found = TAG.findall(source) + [a or b for a, b in LITERAL.findall(source)]
    own = sorted(set(found))[:60] or ["x"]
    piece = st.one_of(st.sampled_from(ODD), st.sampled_from(own), st.text(max_size=6))
    return st.lists(piece, max_size=4).map("".join)


@pytest.mark.parametrize("name", [*TRL, *SHARED])
@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_splice_writes_what_apply_chat_template_writes(name, data):
    """Every TRL template and every shared tokenizer's template: spliced or fallen back, the same bytes."""
    tok = _tokenizer(name)
    contents = data.draw(st.lists(_contents(tok.chat_template), min_size=3, max_size=3))
    for roles in ROLE_SEQUENCES:
        conversation = [{"role": role, "content": content} for role, content in zip(roles, contents)]
        for generation in (True, False):
            got = splice.render_all(
                tok, [conversation], generation=generation, tools=None, kwargs={}, skeletons=_skeletons(name)
            )
            expected = _expected(tok, conversation, generation)
            assert (got[0] if got else None) == expected, (roles, generation)


def test_shipped_templates_that_splice():
    """Which TRL templates splice a one-user prompt (the docs' count); `_training` copies splice as their originals."""
    found = set()
    for name in TRL:
        tok = _tokenizer(name)
        spliced = splice.splice_all(
            tok,
            [[{"role": "user", "content": "q"}]],
            generation=True,
            tools=None,
            kwargs={},
            skeletons=_skeletons(name),
        )
        if spliced != [None]:
            found.add(name)
    assert {n for n in found if not n.endswith("_training")} == SPLICED
    assert {n.removesuffix("_training") for n in found} == SPLICED
    assert (len(TRL), len(found)) == (72, 37)


def _case(template: str):
    tok = make_char_tokenizer(chat_template=template)
    return tok, splice.Skeletons()


def _conversation(*contents: str) -> list[dict[str, str]]:
    roles = ("user", "assistant", "user")
    return [{"role": role, "content": content} for role, content in zip(roles, contents)]


def _both(tok, skeletons, conversations):
    """What splice_all splices (None: fell back) and what render_all gives, checked against the template."""
    spliced = splice.splice_all(tok, conversations, generation=True, tools=None, kwargs={}, skeletons=skeletons)
    rendered = splice.render_all(tok, conversations, generation=True, tools=None, kwargs={}, skeletons=skeletons)
    assert rendered == [_expected(tok, c, True) for c in conversations]
    return spliced, rendered


def test_a_plain_template_is_spliced_into_its_skeleton():
    tok, skeletons = _case("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}")
    spliced, rendered = _both(tok, skeletons, [_conversation("  hi  "), _conversation("", "</s>")])
    assert spliced == rendered == ["<user>  hi  </s>", "<user></s><assistant></s></s>"]
    template = splice._template(tok, None, {})
    skeleton = splice.probe_skeleton(template, ("user",), generation=True)
    assert skeleton == splice.Skeleton(("<user>", "</s>"), ())


def test_trim_is_not_spliced_and_stays_exact():
    tok, skeletons = _case("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] | trim }}</s>{% endfor %}")
    spliced, rendered = _both(tok, skeletons, [_conversation("  hi  ")])
    assert spliced == [None]
    assert rendered == ["<user>hi</s>"]


def test_think_predicate_splices_records_that_answer_as_the_probe():
    tok, skeletons = _case(
        "{% for m in messages %}{% if '</think>' in m.content %}{{ m.content.split('</think>')[-1] }}"
        "{% else %}[{{ m.content }}]{% endif %}{% endfor %}"
    )
    spliced, rendered = _both(tok, skeletons, [_conversation("plain"), _conversation("<think>r</think>answer")])
    assert spliced == ["[plain]", None]
    assert rendered == ["[plain]", "answer"]
    (skeleton,) = [s for s in skeletons._found.values() if s is not None]
    assert [(p.form, p.ask, p.arg, p.answer) for p in skeleton.predicates] == [((0,), Ask.CONTAINS, "</think>", False)]


def test_tojson_is_not_spliced():
    tok, skeletons = _case("{% for m in messages %}{{ m.content | tojson }}{% endfor %}")
    spliced, rendered = _both(tok, skeletons, [_conversation('say "hi"')])
    assert spliced == [None]
    assert rendered == ['"say \\"hi\\""']


@pytest.mark.parametrize(
    "body",
    [
        "{{ m.content }}{{ m.content }}",  # written twice
        "{{ '%s' % m.content }}",  # str() of it, outside the output
        "{{ m.content[:3] }}",
        "{{ m.content | length }}",
        "{{ m.content.replace('a', 'b') }}",
        "{% set ns = namespace(c=m.content) %}{{ ns.c | replace('<', '') }}",
        "{{ (m.content ~ '!') | upper }}",  # a transform of text built from it
        "{{ [m.content] | join(',') }}",
        "{{ 'x'.join([m.content, 'y']) }}",
        "{{ m | tojson }}",
        "{% if m.content in {'a': 1} %}a{% endif %}{{ m.content }}",  # hashed
        "{{ strftime_now('%Y') }}{{ m.content }}",  # changes over time
        "{% if m.content > 'a' %}a{% endif %}{{ m.content }}",
        "{{ messages[m.content] }}{{ m.content }}",  # a content as a key
    ],
)
def test_uses_that_are_not_followed_fall_back(body):
    tok, skeletons = _case("{% for m in messages %}" + body + "{% endfor %}")
    spliced, _ = _both(tok, skeletons, [_conversation("a<b> c")])
    assert spliced == [None]


@pytest.mark.parametrize(
    ("body", "contents", "spliced"),
    [
        ("{{ '[' + m.content + ']' }}", ["x", ""], ["[x]", "[]"]),
        ("{{ '[' ~ m.content ~ ']' }}", ["x"], ["[x]"]),
        ("{% macro w(c) %}({{ c }}){% endmacro %}{{ w(m.content) }}", ["x"], ["(x)"]),
        ("{% set b %}<{{ m.content }}>{% endset %}{% if '<x' in b %}!{% endif %}{{ b }}", ["x", "y"], [None, "<y>"]),
        ("{% if m.content %}{{ m.content }}{% else %}empty{% endif %}", ["x", ""], ["x", None]),
        ("{% if m.content in 'abc' %}in{% endif %}{{ m.content }}", ["x", "ab"], ["x", None]),
        ("{% if m.content.startswith('/') %}cmd{% endif %}{{ m.content }}", ["x", "/go"], ["x", None]),
        ("{% if m.content == 'hi' %}!{% endif %}{{ m.content | default('') }}", ["x", "hi"], ["x", None]),
        ("{{ m.get('content', '') }}", ["x"], ["x"]),
    ],
)
def test_followed_uses_splice_where_the_record_answers_as_the_probe(body, contents, spliced):
    tok, skeletons = _case("{% for m in messages %}" + body + "{% endfor %}")
    got, _ = _both(tok, skeletons, [[{"role": "user", "content": c}] for c in contents])
    assert got == spliced


def test_other_fields_and_non_string_contents_are_not_spliced():
    tok, skeletons = _case("{% for m in messages %}{{ m.content }}{% endfor %}")
    conversations = [[{"role": "user", "content": "x", "name": "n"}], [{"role": "user", "content": 3}]]
    spliced = splice.splice_all(tok, conversations, generation=True, tools=None, kwargs={}, skeletons=skeletons)
    assert spliced == [None, None]


def test_skeletons_are_cached_and_bounded():
    skeletons = splice.Skeletons(size=2)
    made = []
    for key in ("a", "b", "a", "c"):
        skeletons.get(key, lambda key=key: made.append(key))
    assert made == ["a", "b", "c"]
    assert list(skeletons._found) == ["b", "c"]


def test_the_renderer_splices_the_bundled_template(smol):
    """A GSM8K-style batch on SmolLM2's own template: one skeleton, every text the template's."""
    renderer = ChatRenderer(smol)
    conversations = [[{"role": "user", "content": f"What is {i} + {i}? "}] for i in range(3)]
    conversations.append([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
    texts = renderer.render_all(conversations, generation=True)
    assert texts == [smol.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in conversations]
    assert sum(s is not None for s in renderer.skeletons._found.values()) == 2


def test_probes_through_apply_chat_template_prove_nothing():
    """transformers rebuilds messages from plain types before rendering (it asks each value for `.model_dump`, then
    turns str subclasses into str): a probe passed through it is a fatal use, never a recorded write, so `splice`
    renders the compiled template itself and compares the text with `apply_chat_template`'s."""
    tok = make_char_tokenizer(chat_template="{% for m in messages %}{{ m.content }}{% endfor %}")
    with tracing() as trace, pytest.raises(UnspliceableUse):
        tok.apply_chat_template([{"role": "user", "content": Traced(" x ", (0,))}], tokenize=False)
    assert trace.fatal == ["reads .model_dump of a content"]


@pytest.mark.parametrize(
    ("name", "tools", "kwargs"),
    [
        ("qwen3", None, {"enable_thinking": False}),
        ("qwen3", None, {"enable_thinking": True}),
        ("qwen2_5", [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {}}}], {}),
    ],
)
def test_kwargs_and_tools_are_part_of_the_skeleton(name, tools, kwargs):
    tok, skeletons = _tokenizer(name), splice.Skeletons()
    conversations = [[{"role": "user", "content": f"q{i}"}] for i in range(2)]
    spliced = splice.splice_all(tok, conversations, generation=True, tools=tools, kwargs=kwargs, skeletons=skeletons)
    expected = [
        tok.apply_chat_template(c, tools=tools, tokenize=False, add_generation_prompt=True, **kwargs)
        for c in conversations
    ]
    assert spliced == expected
