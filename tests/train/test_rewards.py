"""The built-in GRPO rewards on literal completions: `exact` (GSM8K `####`, MATH `\\boxed{}`, last number,
normalisation, missing reference), `format` (after what the template opened), and how rewards are named."""

from __future__ import annotations

import re

import pytest

from ftdata.errors import ConfigError, FtdataError
from ftdata.train.rewards import (
    ExactMatch,
    ThinkFormat,
    check_reward_names,
    describe,
    make_rewards,
    marked_answer,
    normalize,
    same_answer,
)

GSM8K_ANSWER = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"
MATH_SOLUTION = r"The sum is $\frac{1}{2}$, so the answer is $\boxed{\frac{1}{2}}$."


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def test_exact_reads_gsm8k_answers() -> None:
    completions = [
        "She sold 48 + 24 = 72 clips.\n#### 72",  # marked as the data marks it
        "48 / 2 = 24, and 48 + 24 = 72. The answer is 72.",  # unmarked: its last number
        "48 + 24 = 70",
        "#### 72.0",  # numbers compare by value
        "In total: $72.",  # $ and the trailing period go
        "72 clips, then 3 more",  # the last number is the answer read
    ]
    rewards = ExactMatch("answer")(prompts=[None] * 6, completions=completions, answer=[GSM8K_ANSWER] * 6)
    assert rewards == [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]


def test_exact_reads_math_boxed_answers_after_the_reasoning() -> None:
    completions = [
        _assistant("<think>\nhalf of 1\n</think>\nSo $\\boxed{\\dfrac{1}{2}}$."),  # \dfrac is \frac
        _assistant("\\boxed{0.5}"),  # 1/2 == 0.5
        _assistant("<think>\nmaybe \\boxed{\\frac{1}{2}}\n</think>\n\\boxed{\\frac{1}{3}}"),  # the answer after </think>
        _assistant("\\boxed{\\frac{1}{2}"),  # never closed: not an answer
    ]
    assert ExactMatch("solution")(prompts=[None] * 4, completions=completions, solution=[MATH_SOLUTION] * 4) == [
        1.0, 1.0, 0.0, 0.0,
    ]  # fmt: skip


def test_exact_without_a_reference_is_none_and_other_references_as_written() -> None:
    rewards = ExactMatch("reference")(
        prompts=[None] * 6,
        completions=["7", "7", "7", "Paris.", "the capital is Paris", "1,000,000"],
        reference=[None, "  ", float("nan"), "paris", "Paris", 1000000],  # typed columns: a number stays one
    )
    assert rewards == [None, None, None, 1.0, 0.0, 1.0]


def test_normalisation_and_answer_marks() -> None:
    assert [normalize(a) for a in (" $1,000.$ ", "\\text{ Paris }", "10,\\!000", "\\left( 3, 4 \\right)", "50\\%")] == [
        "1000", "paris", "10000", "(3,4)", "50",
    ]  # fmt: skip
    assert marked_answer("a\n#### 1,234") == "1,234" and marked_answer("\\fbox{x^2}") == "x^2"
    assert marked_answer("\\boxed{\\frac{a}{b}} then \\boxed{2}") == "2" and marked_answer("42") is None
    assert same_answer("1.0", "1") and same_answer("\\frac{3}{4}", "0.75") and same_answer("-3/4", "-0.75")
    assert not same_answer("1/0", "1/0.0") and not same_answer("12", "1.2")


def test_format_reads_the_completion_after_what_the_template_opened() -> None:
    completions = [
        "6 * 7 = 42\n</think>\n42",  # closes the block the prompt opened, then answers
        "<think>\n6 * 7\n</think>\n42",  # opens and closes a block of its own
        "6 * 7 = 42",  # no block closed
        "6 * 7\n</think>\n  \n",  # no answer after it
        "6 * 7\n</think>\n42</think>",  # closed twice
    ]
    assert ThinkFormat("<think>\n")(prompts=[None] * 5, completions=completions) == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert ThinkFormat("")(prompts=[None] * 5, completions=completions) == [0.0, 1.0, 0.0, 0.0, 0.0]
    assert ThinkFormat("")(prompts=[None], completions=[_assistant("\n<think>a</think>b")]) == [1.0]  # leading space
    # A tokenizer with a response schema parses the block off into the message's reasoning: it was closed.
    parsed = [{"role": "assistant", "content": "42", "reasoning_content": "6 * 7"}]
    assert ThinkFormat("<think>\n")(prompts=[None], completions=[parsed]) == [1.0]


def test_format_refuses_templates_whose_prompt_leaves_nothing_to_check() -> None:
    with pytest.raises(ConfigError, match=re.escape("the generation prompt already closes the reasoning block (it ends with "
                                                    "'<think>\\n\\n</think>\\n\\n'), so completions hold no reasoning to check: "
                                                    "drop format from rewards")):  # fmt: skip
        ThinkFormat("<think>\n\n</think>\n\n")
    with pytest.raises(ConfigError, match=r"^rewards: format checks <think> blocks and the generation prompt opens '<\|channel\|>'"):
        ThinkFormat("<|channel|>")


def test_reward_names_are_checked_before_any_step() -> None:
    check_reward_names(["exact:answer", "format", "my_rewards.math:score"])
    cases = [
        (["acurracy"], "rewards: unknown reward 'acurracy'; choose exact, exact:COLUMN, format or package.module:function (with --allow-code)"),
        (["exact", "exact:answer"], "rewards: exact is named twice (rewards=exact,exact:answer); TRL logs each reward by its name"),
        (["format:answer"], "rewards: 'format:answer' takes no column; write format"),
        (["exact:"], "rewards: 'exact:' takes a column name; write exact or exact:COLUMN"),
        (["pkg.mod:not-a-name"], "rewards: 'pkg.mod:not-a-name' is no package.module:function; choose exact, exact:COLUMN, format or package.module:function (with --allow-code)"),
    ]  # fmt: skip
    for names, message in cases:
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            check_reward_names(names)


def test_rewards_are_made_against_the_prompt_set_columns() -> None:
    made = make_rewards(["exact", "format"], columns=["prompt", "prompt_ids", "question", "solution"], opens="<think>\n")
    assert describe(made) == [{"name": "exact", "reference": "solution"}, {"name": "format", "opens": "<think>\n"}]
    assert describe(make_rewards(["exact:question"], columns=["prompt", "question", "answer"])) == [
        {"name": "exact", "reference": "question"}
    ]
    with pytest.raises(ConfigError, match=re.escape(
        "rewards: exact needs a reference column (answer, solution, reference, ground_truth, gold, target, expected_answer, "
        "final_answer) and the prompt set has question: name one with exact:COLUMN (exact:COLUMN.FIELD inside a struct), or drop exact from rewards"
    )):  # fmt: skip
        make_rewards(["exact"], columns=["prompt", "prompt_ids", "question"])
    with pytest.raises(ConfigError, match=r"^rewards: exact:label names a column the prompt set lacks; it has question, answer$"):
        make_rewards(["exact:label"], columns=["prompt", "prompt_ids", "question", "answer"])
    with pytest.raises(ConfigError, match=r"^rewards: 'no_such_module_xyz:f' cannot be imported: No module named 'no_such_module_xyz'$"):
        make_rewards(["no_such_module_xyz:f"], columns=["prompt"])


def test_a_code_reward_keeps_its_name_and_fails_in_one_line() -> None:
    (reward,) = make_rewards(["math:sqrt"], columns=["prompt"])  # any importable callable: named as TRL names it
    assert describe([reward]) == [{"name": "sqrt", "code": "math:sqrt"}]
    with pytest.raises(FtdataError, match=r"^reward 'math:sqrt' failed: TypeError: "):
        reward(prompts=["q"], completions=["a"])
