"""`obj.name` in ftdata's bounded sandbox reads what Jinja's own sandbox reads: its dict fast path (a name no dict
attribute shadows is a key) changes no read, found or missing, safe or refused.

The oracle is `jinja2.sandbox.ImmutableSandboxedEnvironment` itself (what transformers renders chat templates in),
rendering the same template on the same values."""

from __future__ import annotations

from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ftdata.chat.sandbox import chat_environment

DICT_NAMES = sorted(n for n in dir(dict) if n.isidentifier())
NAMES = st.one_of(st.sampled_from(DICT_NAMES), st.sampled_from(["role", "content", "tool_calls", "name"]),
                  st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True))  # fmt: skip
VALUES = st.one_of(st.none(), st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=2))


def reads(env, name: str, value) -> str:
    """`value.name` as the environment reads it: its text, whether it is defined, and what a test of it says."""
    template = env.from_string(f"{{{{ v.{name} is defined }}}}|{{{{ v.{name} is callable }}}}|{{{{ v.{name} }}}}")
    try:
        return template.render(v=value)
    except Exception as exc:  # noqa: BLE001 - a refused read raises: the same error must be raised
        return f"raised {type(exc).__name__}: {exc}"


@pytest.fixture(scope="module")
def envs():
    return chat_environment(), ImmutableSandboxedEnvironment()


@settings(max_examples=300, deadline=None)
@given(name=NAMES, keys=st.lists(NAMES, max_size=4), values=st.lists(VALUES, min_size=4, max_size=4))
def test_a_dicts_attribute_reads_as_jinjas_sandbox_reads_it(envs, name, keys, values):
    ours, jinja = envs
    message = dict(zip([*keys, name][-4:], values))  # the name as a key, or not
    for value in (message, OrderedDict(message), [message]):  # a subclass and a list take the sandbox's own path
        assert reads(ours, name, value) == reads(jinja, name, value)


@pytest.mark.parametrize("name", ["role", "items", "keys", "get", "pop", "__class__", "__len__", "missing"])
def test_the_names_a_chat_template_reads_and_the_ones_a_dict_shadows(envs, name):
    ours, jinja = envs
    message = {"role": "user", "items": "a key", "keys": 1, "pop": 2, "__class__": 3, "__len__": 4}
    assert reads(ours, name, message) == reads(jinja, name, message)
    if name == "role":
        assert reads(ours, name, message) == "True|False|user"
    if name == "missing":
        assert reads(ours, name, message) == "False|True|"  # Jinja's Undefined is callable
