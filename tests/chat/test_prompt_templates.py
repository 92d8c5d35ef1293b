"""Prompt templates: literal renders, user files, and template errors that name the problem."""

from __future__ import annotations

import pytest

from ftdata.errors import Location, RecordError, TemplateError
from ftdata.chat.prompt_templates import builtin_names, load_prompt_template, render_prompt_template
from ftdata.types import Example, Message
from ftdata.outcomes import Note, NoteCode


def test_builtins():
    assert builtin_names() == ("alpaca", "instruction-response", "question-answer")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("alpaca", "Below is an instruction that describes a task, paired with an input that provides further context. "
         "Write a response that appropriately completes the request.\n\n### Instruction:\nAdd\n\n### Input:\n1+1\n\n### Response:\n"),
        ("instruction-response", "### Instruction:\nAdd\n\n### Input:\n1+1\n\n### Response:\n"),
        ("question-answer", "### Question:\nAdd\n\n1+1\n\n### Answer:\n"),
    ],
)  # fmt: skip
def test_builtin_renders_with_input(name, expected):
    assert load_prompt_template(name).render(instruction="Add", input="1+1") == expected


def test_alpaca_without_input_matches_stanford_text():
    from support import DATASETS

    import json

    row = json.loads((DATASETS / "alpaca" / "stanford_alpaca_first100_torchtune.json").read_text())[0]
    prompt = load_prompt_template("alpaca").render(instruction=row["instruction"], input=row["input"])
    assert row["text"] == prompt + row["output"]


def test_user_file_and_its_errors(tmp_path):
    good = tmp_path / "mine.jinja"
    good.write_text("{{ system }}|Q: {{ instruction }}\nA: ")
    tpl = load_prompt_template(str(good))
    assert tpl.uses_system
    assert tpl.render(instruction="hi", system="S") == "S|Q: hi\nA: "

    bad = tmp_path / "bad.jinja"
    bad.write_text("Q: {{ question }}\nA: ")
    with pytest.raises(TemplateError, match=r"template '.*bad.jinja' uses unknown variable\(s\) question; available variables: instruction, input, system"):
        load_prompt_template(str(bad))

    broken = tmp_path / "broken.jinja"
    broken.write_text("line one\n{% if instruction %}Q")
    with pytest.raises(TemplateError, match=r"broken.jinja' line 2: syntax error"):
        load_prompt_template(str(broken))

    with pytest.raises(TemplateError, match="does not exist"):
        load_prompt_template(str(tmp_path / "missing.jinja"))
    with pytest.raises(TemplateError, match="unknown template 'vicuna'; built-ins are alpaca"):
        load_prompt_template("vicuna")


def test_a_template_file_is_read_again_on_every_load_and_declared_by_its_bytes(tmp_path):
    """The same path naming edited bytes is another template (it was cached by path: a process saw the old one)."""
    import hashlib

    path = tmp_path / "t.jinja"
    path.write_text("### Q: {{ instruction }}\n### A: ")
    first = load_prompt_template(str(path))
    path.write_text("### Question: {{ instruction }}\n### A: ")
    second = load_prompt_template(str(path))
    assert second.render(instruction="hi") == "### Question: hi\n### A: " != first.render(instruction="hi")
    assert (second.input.kind.value, second.input.name, second.input.path) == ("template", str(path), str(path))
    assert second.input.digest == hashlib.sha256(path.read_bytes()).hexdigest() != first.input.digest
    alpaca = load_prompt_template("alpaca")
    assert (alpaca.input.name, alpaca.input.path) == ("alpaca", "")


def test_render_spans_multi_turn_and_notes():
    ex = Example(
        (Message("system", "S"), Message("user", "q1"), Message("assistant", "a1"), Message("user", "q2"), Message("assistant", "a2")),
        Location("x", index=0),
        context="ctx",
    )
    tpl = load_prompt_template("question-answer")
    out = render_prompt_template(ex, tpl, eos="</s>", trained=[False, False, True, False, True])
    assert out.text == "### Question:\nq1\n\nctx\n\n### Answer:\na1</s>### Question:\nq2\n\n### Answer:\na2</s>"
    assert [out.text[s:e] for s, e in out.spans] == ["a1</s>", "a2</s>"]
    assert out.boundaries == (out.text.index("a1</s>") + 6,)
    assert out.notes == (Note(NoteCode.SYSTEM_IGNORED, "system message ignored: template 'question-answer' has no {{ system }}"),)


def test_tool_turns_need_a_chat_template():
    ex = Example((Message("user", "q"), Message("tool", "t"), Message("assistant", "a")), Location("x", index=3))
    with pytest.raises(RecordError, match=r"x\[3\]: field 'messages\[1\]': tool turns cannot be rendered"):
        render_prompt_template(ex, load_prompt_template("alpaca"), eos="", trained=[False, False, True])


def test_constants_are_the_template_text_around_the_values():
    alpaca = load_prompt_template("alpaca")
    values = {"instruction": "Add", "input": "1+1", "system": ""}
    prompt = alpaca.render(**values)
    constants = alpaca.constants(prompt, values)
    assert [text for _, text in constants] == [
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n### Instruction:\n",
        "\n\n### Input:\n",
        "\n\n### Response:\n",
    ]
    assert all(prompt.startswith(text, start) for start, text in constants)
    # no input: the other branch, its own constants
    values = {"instruction": "Add", "input": "", "system": ""}
    assert [t[-16:] for _, t in alpaca.constants(alpaca.render(**values), values)] == [
        "## Instruction:\n",
        "\n\n### Response:\n",
    ]


def test_a_record_the_template_writes_otherwise_has_no_constants(tmp_path):
    # branches on a value's content: the probe took one branch, this record the other
    path = tmp_path / "t.jinja"
    path.write_text("{% if 'x' in instruction %}X: {% else %}Q: {% endif %}{{ instruction }}\nA:\n")
    branching = load_prompt_template(str(path))
    values = {"instruction": "hi", "input": "", "system": ""}
    assert branching.constants(branching.render(**values), values) == ((0, "Q: "), (5, "\nA:\n"))
    values = {"instruction": "x marks", "input": "", "system": ""}
    assert branching.constants(branching.render(**values), values) == ()
    # transforms a value: never found verbatim
    path.write_text("Q: {{ instruction | upper }}\nA:\n")
    upper = load_prompt_template(str(path))
    values = {"instruction": "hi", "input": "", "system": ""}
    assert upper.constants(upper.render(**values), values) == ()


def test_rendered_records_carry_their_constants():
    alpaca = load_prompt_template("alpaca")
    messages = (Message("user", "Add"), Message("assistant", "2"), Message("user", "Twice?"), Message("assistant", "4"))
    example = Example(messages, Location("x", index=0))
    out = render_prompt_template(example, alpaca, eos="</s>", trained=[False, True, False, True])
    assert [out.text[s : s + len(t)] == t for s, t in out.constants] == [True] * 4
    assert [t[-5:] for _, t in out.constants] == ["ion:\n", "nse:\n", "ion:\n", "nse:\n"]
    assert out.constants[2][0] == len(alpaca.render(instruction="Add")) + len("2</s>")


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

VALUES = st.sampled_from(["", " ", "\n", "x", "{{ x }}", "{% raw %}", "é\n "])


@pytest.mark.parametrize("name", builtin_names())
@settings(max_examples=60, deadline=None)
@given(instruction=st.lists(VALUES, max_size=3).map("".join), context=st.lists(VALUES, max_size=3).map("".join))
def test_a_template_written_from_its_plan_is_its_jinja_render(name, instruction, context):
    template = load_prompt_template(name)
    assert template.plan is not None  # the built-ins only write text and variables
    text, constants = template.render_parts(instruction=instruction, input=context, system="S")
    assert text == template.render(instruction=instruction, input=context, system="S")
    assert all(text.startswith(c, s) and c for s, c in constants)
    ends = [s + len(c) for s, c in constants]
    assert all(end < start for end, (start, _) in zip(ends, constants[1:]))  # never two constants side by side


def test_a_template_that_does_more_than_write_has_no_plan_and_is_rendered_by_jinja(tmp_path):
    path = tmp_path / "t.jinja"
    path.write_text("Q: {{ instruction | trim }}\n{% for c in input %}{{ c }}{% endfor %}A:\n")
    template = load_prompt_template(str(path))
    assert template.plan is None
    assert template.render_parts(instruction=" hi ", input="ab") == ("Q: hi\nabA:\n", ())
