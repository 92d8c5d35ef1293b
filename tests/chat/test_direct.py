"""A conversation's renders with its template data built once (ftdata/chat/direct.py): byte for byte what
`apply_chat_template` writes, on every chat template TRL ships and every shared tokenizer's, for conversations with
a system prompt, tools, tool calls (arguments as dicts and as JSON strings), tool results and reasoning; on
their prefixes and on copies with messages changed; None (left to `apply_chat_template`) wherever that raises."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ftdata.chat.direct import Direct
from ftdata.chat.renderer import ChatRenderer
from ftdata.errors import TemplateError

from support import make_char_tokenizer

SHARED_TOKENIZERS = Path(__file__).resolve().parents[3] / "shared" / "tokenizers"


def _templates() -> dict[str, tuple[str, dict[str, str]]]:
    """TRL's shipped templates and each shared tokenizer's (with its BOS/EOS strings, read from its config)."""
    import trl

    out = {
        p.stem: (p.read_text(encoding="utf-8"), {})
        for p in sorted((Path(trl.__file__).parent / "chat_templates").glob("*.jinja"))
    }
    for config in sorted(SHARED_TOKENIZERS.glob("*/tokenizer_config.json")):
        data = json.loads(config.read_text(encoding="utf-8"))
        if isinstance(data.get("chat_template"), str):
            specials = {
                k: v if isinstance(v, str) else v["content"] for k in ("bos_token", "eos_token") if (v := data.get(k))
            }
            out[f"shared/{config.parent.name}"] = (data["chat_template"], specials)
    return out


TEMPLATES = _templates()


@cache
def _tokenizer(name: str) -> Any:
    source, specials = TEMPLATES[name]
    tok = make_char_tokenizer(chat_template=source)
    for attribute, value in specials.items():
        setattr(tok, attribute, value)
    return tok


TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "execute_bash",
            "description": "Run a shell command",
            "parameters": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]},
        },
    }
]


def _conversation(arguments_as_text: bool) -> list[dict[str, Any]]:
    args: Any = {"command": 'ls -la "/tmp"\n', "timeout": 1.5, "flags": ["é", None, True]}
    call = {
        "type": "function",
        "function": {"name": "execute_bash", "arguments": json.dumps(args) if arguments_as_text else args},
    }
    return [
        {"role": "system", "content": "You are a careful agent. <tags> 'quotes' \"and\" \\ slashes"},
        {"role": "user", "content": "List the files, then say hi."},
        {"role": "assistant", "content": "", "reasoning_content": "I should list them.", "tool_calls": [call]},
        {"role": "tool", "content": "a.txt\nb.txt", "tool_call_id": "call_0"},
        {"role": "assistant", "content": "Two files.", "reasoning": "Done.\n"},  # the older name: aliased
        {"role": "user", "content": "  Now say hi  "},
        {"role": "assistant", "content": "hi", "tool_calls": [call, call]},
        {"role": "tool", "content": "ok"},
        {"role": "assistant", "content": "Hi!"},
    ]


def _apply(tok: Any, msgs: list[dict[str, Any]], generation: bool, tools: Any, kwargs: dict[str, Any]) -> str | None:
    try:
        return tok.apply_chat_template(msgs, tools=tools, tokenize=False, add_generation_prompt=generation, **kwargs)
    except Exception:  # noqa: BLE001 (the template raises on this conversation: Direct must leave it)
        return None


def _check(tok: Any, msgs: list[dict[str, Any]], *, tools: Any, kwargs: dict[str, Any]) -> int:
    """Every prefix of `msgs`, with and without the generation prompt, and a copy with one message changed:
    Direct's text is apply_chat_template's, or None where that raises. Returns how many rendered."""
    direct = Direct(tok, msgs, tools=tools, kwargs=kwargs)
    renders = [(msgs[:n], g) for n in range(1, len(msgs) + 1) for g in (False, True)]
    renders.append(([*msgs[:2], {**msgs[2], "content": "\ue000"}, *msgs[3:]], False))
    rendered = 0
    for messages, generation in renders:
        expected = _apply(tok, messages, generation, tools, kwargs)
        got = direct(messages, generation=generation, what="the chat template")
        assert got == expected, (len(messages), generation)
        rendered += expected is not None
    return rendered


@pytest.mark.parametrize("name", sorted(TEMPLATES))
@pytest.mark.parametrize("arguments_as_text", [False, True])
def test_direct_render_is_apply_chat_template(name: str, arguments_as_text: bool) -> None:
    tok = _tokenizer(name)
    msgs = _conversation(arguments_as_text)
    _check(tok, msgs, tools=TOOLS, kwargs={"enable_thinking": True})
    _check(tok, msgs, tools=None, kwargs={})


def test_direct_renders_most_templates() -> None:
    """The fast path is taken, not left to apply_chat_template: on Qwen 2.5's template every render holds."""
    tok = _tokenizer("qwen2_5")
    msgs = _conversation(False)
    assert _check(tok, msgs, tools=TOOLS, kwargs={}) == 2 * len(msgs) + 1


def test_direct_leaves_what_it_cannot_prove() -> None:
    tok = _tokenizer("qwen2_5")
    msgs = _conversation(False)
    # a kwarg apply_chat_template takes for itself, a tool that is not a dict, a message that is not one, no messages
    assert Direct(tok, msgs, tools=None, kwargs={"padding": True})(msgs, generation=False, what="t") is None
    assert Direct(tok, msgs, tools=[lambda: None], kwargs={})(msgs, generation=False, what="t") is None
    assert Direct(tok, msgs, tools=None, kwargs={})([*msgs, "hi"], generation=False, what="t") is None
    assert Direct(tok, msgs, tools=None, kwargs={})([], generation=False, what="t") is None
    # a template that raises: left to apply_chat_template, which says why
    raising = make_char_tokenizer(chat_template="{{ raise_exception('no tools here') }}")
    assert Direct(raising, msgs, tools=None, kwargs={})(msgs, generation=False, what="t") is None
    with pytest.raises(TemplateError, match="chat template raised for roles .*: no tools here"):
        ChatRenderer(raising).bind(msgs)(msgs)


def test_a_copy_rendered_again_is_written_as_it_holds_now() -> None:
    """The template data of a copy (a message with a piece replaced, as the sentinel renders make) is kept for the
    next render of that same copy, and served only while the copy holds the very values it held."""
    tok = _tokenizer("qwen2_5")
    msgs = _conversation(False)
    direct = Direct(tok, msgs, tools=None, kwargs={})
    copy = {**msgs[1], "content": "first"}
    changed = [msgs[0], copy, *msgs[2:]]
    assert direct(changed, generation=False, what="t") == tok.apply_chat_template(changed, tokenize=False)
    assert direct(changed, generation=False, what="t") == tok.apply_chat_template(changed, tokenize=False)
    copy["content"] = "second"  # the same dict, another value: its data is made again
    again = direct(changed, generation=False, what="t")
    assert "second" in again and "first" not in again and again == tok.apply_chat_template(changed, tokenize=False)
    copy["name"] = "x"  # a key more
    assert direct(changed, generation=False, what="t") == tok.apply_chat_template(changed, tokenize=False)


def test_bound_renderer_is_the_renderer() -> None:
    """`ChatRenderer.bind` renders what the renderer renders, the record's kwargs over the build's."""
    renderer = ChatRenderer(_tokenizer("qwen3"), {"enable_thinking": False})
    msgs = _conversation(False)
    bound = renderer.bind(msgs, tools=TOOLS, kwargs={"enable_thinking": True})
    for n in range(1, len(msgs) + 1):
        for generation in (False, True):
            expected = renderer(msgs[:n], generation=generation, tools=TOOLS, kwargs={"enable_thinking": True})
            assert bound(msgs[:n], generation=generation) == expected


TEXT = st.lists(st.sampled_from([*"ab \n\t'\"\\<>{}%é", "</think>", "<think>", "<|im_end|>"]), max_size=8).map("".join)
MESSAGE = st.one_of(
    st.builds(lambda t: {"role": "user", "content": t}, TEXT),
    st.builds(lambda t: {"role": "system", "content": t}, TEXT),
    st.builds(lambda t: {"role": "tool", "content": t}, TEXT),
    st.builds(
        lambda t, r, a: {
            "role": "assistant",
            "content": t,
            **({"reasoning_content": r} if r is not None else {}),
            **(
                {
                    "tool_calls": [
                        {"type": "function", "function": {"name": "execute_bash", "arguments": {"command": a}}}
                    ]
                }
                if a is not None
                else {}
            ),
        },
        TEXT,
        st.none() | TEXT,
        st.none() | TEXT,
    ),
)


@pytest.mark.parametrize(
    "name", ["qwen2_5", "qwen3", "qwen3_5_think", "llama3_1", "gptoss", "shared/mistral-nemo-instruct-2407"]
)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(msgs=st.lists(MESSAGE, min_size=1, max_size=6))
def test_direct_render_on_any_conversation(name: str, msgs: list[dict[str, Any]]) -> None:
    _check(
        _tokenizer(name),
        [{"role": "user", "content": "hi"}, {"role": "user", "content": "x"}, *msgs],
        tools=TOOLS,
        kwargs={},
    )


def test_bound_render_keys_are_the_render_keys() -> None:
    """A bound conversation's renders are shared within a unit (`shared_renders`) under the key an unbound render
    of the same arguments has: put together from each message's JSON, it is the same key; other arguments (a
    prefix, the generation prompt, tools and kwargs, one message changed) have keys of their own."""
    from ftdata.chat.renderer import _render_key, _written

    msgs = _conversation(False)
    known, with_tools = _written(msgs), _written([*msgs, TOOLS])  # as `bind` writes them: the tools too
    changed = [*msgs[:2], {**msgs[2], "content": "\ue000"}, *msgs[3:]]
    keys = []
    for messages in [*(msgs[:n] for n in range(len(msgs) + 1)), changed]:
        for generation in (False, True):
            for tools, kwargs in ((TOOLS, {"enable_thinking": True}), (None, None)):
                plain = _render_key(messages, generation, tools, kwargs)
                assert plain is not None and _render_key(messages, generation, tools, kwargs, known) == plain
                assert _render_key(messages, generation, tools, kwargs, with_tools) == plain
                keys.append(plain)
    assert len(set(keys)) == len(keys) == 4 * (len(msgs) + 2)
    assert _render_key([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], False, None, None) != _render_key(
        [{"role": "user", "content": 'a"}, {"role": "user", "content": "b'}], False, None, None
    )  # JSON keeps one message apart from two
