"""The rewards of a GRPO run: TRL reward functions that need no user code, and the named ones that do.

A reward function is what TRL's `GRPOTrainer` calls on every generation batch:

    reward(prompts=[...], completions=[...], completion_ids=[...], **columns) -> [1.0, 0.0, None, ...]

`completions` are strings (a prompt set built with a prompt template) or one assistant message each
(`[{"role": "assistant", "content": "..."}]`, a conversational prompt set); `columns` holds every other
column of the prompt set, one value per completion (the reward columns: `answer`, `solution`, ...).
A reward of None means "cannot be scored" (the row's reference is missing): TRL leaves it out.

Built in (`--rewards exact,format`, the default):

- `exact` / `exact:COLUMN`: 1.0 when the completion's final answer equals the reference's, else 0.0.
  The answer is what follows GSM8K's `#### `, else what the last `\\boxed{...}` holds, on both sides;
  a completion that marks neither is read for its last number (when the reference is a number) or
  taken whole. Both are normalised (whitespace, case, thousands commas, `$`, `\\!`, a trailing period)
  and numbers compare by value (`1.0` == `1`, `\\frac{1}{2}` == `0.5`). math_verify (TRL's
  `accuracy_reward`) would compare LaTeX symbolically, but it is not a dependency of ftdata: name
  `trl.rewards:accuracy_reward` (with --allow-code and a `solution` column) where it is installed.
- `format`: 1.0 when the completion, read after what the chat template already opened in the
  generation prompt (`opens`, build.json's `counts.prompt_opens`: `"<think>\\n"` for Qwen3-style templates),
  holds one reasoning block, closed, and a non-empty answer after it; TRL's `think_format_reward` on
  `opens + completion`, plus the answer. A template that opens nothing: the completion opens and
  closes the block itself.

      opens "<think>\\n"   completion "7 * 6 = 42\\n</think>\\n42"            -> 1.0
      opens ""            completion "<think>\\n7 * 6 = 42\\n</think>\\n42"   -> 1.0
      opens "<think>\\n"   completion "<think>\\n7 * 6 = 42\\n</think>\\n42"   -> 0.0 (opened twice)

- `package.module:function`: your own TRL reward function, imported only with `--allow-code`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ftdata.errors import ConfigError, FtdataError
from ftdata.io.config_files import code_function

__all__ = ["BUILTIN", "REFERENCE_COLUMNS", "ExactMatch", "ThinkFormat", "check_reward_names", "make_rewards"]

BUILTIN = ("exact", "format")
# The columns `exact` reads when it is not told one, in this order.
REFERENCE_COLUMNS = (
    "answer",
    "solution",
    "reference",
    "ground_truth",
    "gold",
    "target",
    "expected_answer",
    "final_answer",
)
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CHOICES = "exact, exact:COLUMN, format or package.module:function (with --allow-code)"

Reward = Callable[..., list[float | None]]


# --- names -------------------------------------------------------------------------------------


def is_code(name: str) -> bool:
    """True for `package.module:function` (a user's reward), False for `exact`, `exact:answer`, `format`."""
    return ":" in name and name.partition(":")[0] not in BUILTIN


def check_reward_names(names: Sequence[str]) -> None:
    """Each name is a reward; no reward is named twice (TRL logs each under its name).

    Raises:
        ConfigError: `rewards: unknown reward 'acurracy'; choose exact, exact:COLUMN, format or ...`.
    """
    seen: set[str] = set()
    for name in names:
        base, sep, arg = name.partition(":")
        if is_code(name):
            if not arg or not base or not arg.isidentifier():
                raise ConfigError(f"rewards: {name!r} is no package.module:function; choose {CHOICES}")
            base = arg
        elif base not in BUILTIN:
            raise ConfigError(f"rewards: unknown reward {name!r}; choose {CHOICES}")
        elif sep and (base == "format" or not arg):
            fix = "write format" if base == "format" else "write exact or exact:COLUMN"
            raise ConfigError(f"rewards: {name!r} takes {'no column' if base == 'format' else 'a column name'}; {fix}")
        if base in seen:
            raise ConfigError(
                f"rewards: {base} is named twice (rewards={','.join(names)}); TRL logs each reward by its name"
            )
        seen.add(base)


def make_rewards(names: Sequence[str], *, columns: Sequence[str] | Mapping[str, Any], opens: str = "") -> list[Reward]:
    """The reward functions of `names`, checked against the prompt set's `columns` (names, or the dataset's
    `features`: a struct column is a dict of its fields) before any step.

    `opens`: what the chat template writes after the assistant header in the generation prompt
    (build.json's `counts.prompt_opens`), which the `format` reward reads the completion after.

    >>> [r.__name__ for r in make_rewards(["exact", "format"], columns=["prompt", "prompt_ids", "answer"])]
    ['exact', 'format']

    Raises:
        ConfigError: `exact` without a reference column (or naming one the prompt set lacks), `format`
            after a generation prompt that already closes the reasoning block, or a code reward that
            cannot be imported or is not callable.
    """
    check_reward_names(names)
    made: list[Reward] = []
    for name in names:
        base, _, arg = name.partition(":")
        if is_code(name):
            made.append(_imported(name))
        elif base == "exact":
            made.append(ExactMatch(_reference_column(arg or None, columns)))
        else:
            made.append(ThinkFormat(opens))
    return made


def describe(rewards: Sequence[Reward]) -> list[dict[str, Any]]:
    """What run.json says of each reward: its name (the one TRL logs `rewards/<name>/mean` under) and settings."""
    out: list[dict[str, Any]] = []
    for reward in rewards:
        if isinstance(reward, ExactMatch):
            out.append({"name": reward.__name__, "reference": reward.column})
        elif isinstance(reward, ThinkFormat):
            out.append({"name": reward.__name__, "opens": reward.opens})
        else:
            out.append({"name": reward.__name__, "code": reward.code})  # type: ignore[attr-defined]  # a code reward: the only other kind
    return out


def _reference_column(named: str | None, columns: Sequence[str] | Mapping[str, Any]) -> str:
    """The column (or dotted path into a struct column) `exact` reads its reference from: `named`, else the first
    of REFERENCE_COLUMNS, else the one nested field named like one; of several, the one inside verl's `reward_model`
    (`reward_model.ground_truth`, what verl's own rewards read, over `extra_info.answer`).

    Raises:
        ConfigError: a named column the set lacks, a struct named (its fields are listed), no reference or several
            nested ones.
    """
    features = columns if isinstance(columns, Mapping) else dict.fromkeys(columns)
    readable = [
        c for c in features if c not in ("prompt", "prompt_ids", "tools")
    ]  # the reward columns (tools: the rendered schemas)
    leaves = {path: f for c in readable for path, f in _paths(c, features[c])}
    if named is not None:
        if named not in features and named not in leaves:
            raise ConfigError(
                f"rewards: exact:{named} names a column the prompt set lacks; it has "
                f"{', '.join(readable) or 'no reward columns'}"
            )
        struct = features.get(named, leaves.get(named))
        if isinstance(struct, Mapping):  # compared as text it would never equal an answer: refused, not scored 0.0
            fields = sorted(
                (p for p in leaves if p.startswith(named + ".")),
                key=lambda p: p.rsplit(".", 1)[1] not in REFERENCE_COLUMNS,
            )
            raise ConfigError(
                f"rewards: exact:{named} is a struct column ({', '.join(k for k in struct)}), not a reference; name "
                "the "
                f"field that holds the answer: exact:{fields[0] if fields else named + '.FIELD'}"
            )
        return named
    found = next((c for c in REFERENCE_COLUMNS if c in features and not isinstance(features[c], Mapping)), None)
    if found is not None:
        return found
    nested = [
        p
        for p, f in leaves.items()
        if "." in p and p.rsplit(".", 1)[1] in REFERENCE_COLUMNS and not isinstance(f, Mapping)
    ]
    verl = [p for p in nested if p.split(".")[0] == "reward_model"]  # verl's schema: the field its own rewards read
    if len(nested) == 1 or len(verl) == 1:
        return nested[0] if len(nested) == 1 else verl[0]
    if nested:
        raise ConfigError(
            f"rewards: exact finds several references ({', '.join(nested)}): name one with exact:{nested[0]}"
        )
    raise ConfigError(
        f"rewards: exact needs a reference column ({', '.join(REFERENCE_COLUMNS)}) and the prompt set has "
        f"{', '.join(readable) or 'no reward columns'}: name one with exact:COLUMN (exact:COLUMN.FIELD inside a "
        "struct), "
        "or drop exact from rewards"
    )


def _paths(name: str, feature: Any) -> list[tuple[str, Any]]:
    """`(dotted path, feature)` of a column and, for a struct (a dict of features), of every field inside it."""
    out = [(name, feature)]
    if isinstance(feature, Mapping):
        for key, inner in feature.items():
            out += _paths(f"{name}.{key}", inner)
    return out


def _imported(name: str) -> Reward:
    return CodeReward(name, code_function(name, what=f"rewards: {name!r}"))


# --- the rewards ---------------------------------------------------------------------------------


class ExactMatch:
    """`exact`: 1.0 when a completion's final answer equals its row's reference (`column`), 0.0 when not,
    None when the row has no reference.

    >>> ExactMatch("answer")(prompts=["q"], completions=["So she has 72.\\n#### 72"], answer=["... \\n#### 72"])
    [1.0]
    """

    __name__ = "exact"  # TRL's name for it: its log keys are rewards/exact/mean and rewards/exact/std

    def __init__(self, column: str) -> None:
        self.column = column  # a column, or a dotted path into a struct column (`reward_model.ground_truth`)

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        return [score_exact(answer_text(c), ref) for c, ref in zip(completions, self.references(columns), strict=True)]

    def references(self, columns: Mapping[str, Any]) -> list[Any]:
        """Each row's reference: the column's value, or the field its dotted path names inside it."""
        if self.column in columns:
            return list(columns[self.column])
        top, *keys = self.column.split(".")
        refs = list(columns[top])
        for key in keys:
            refs = [ref.get(key) if isinstance(ref, Mapping) else None for ref in refs]
        return refs


class ThinkFormat:
    """`format`: 1.0 when `opens` + the completion is one closed reasoning block and a non-empty answer.

    >>> ThinkFormat("<think>\\n")(prompts=["q"], completions=["6 * 7\\n</think>\\n42", "<think>6 * 7</think>42"])
    [1.0, 0.0]

    Raises:
        ConfigError: (on creation) `opens` already closes the block (`enable_thinking=False`: the
            completions hold no reasoning to check), or opens something that is not a think block.
    """

    __name__ = "format"

    def __init__(self, opens: str = "") -> None:
        if THINK_CLOSE in opens:
            raise ConfigError(
                f"rewards: the generation prompt already closes the reasoning block (it ends with {opens!r}), so "
                "completions hold no reasoning to check: drop format from rewards"
            )
        if opens.strip() and opens.strip() != THINK_OPEN:
            raise ConfigError(
                f"rewards: format checks <think> blocks and the generation prompt opens {opens!r}: drop format from "
                "rewards"
            )
        self.opens = opens

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float | None]:
        return [self.score(c) for c in completions]

    def score(self, completion: Any) -> float:
        parsed = _parsed_reasoning(completion)
        if parsed is not None:  # the tokenizer's response schema split the block off: it was closed
            answer = answer_text(completion)
            return float(bool(answer.strip()) and THINK_OPEN not in answer and THINK_CLOSE not in answer)
        from trl.rewards import think_format_reward  # trl loads with the trainer, not with the config that names this

        text = self.opens + (completion_text(completion) if self.opens else completion_text(completion).lstrip())
        if think_format_reward([[{"content": text}]])[0] != 1.0 or text.count(THINK_CLOSE) != 1:
            return 0.0
        return float(bool(text.split(THINK_CLOSE, 1)[1].strip()))


class CodeReward:
    """A user's reward function (`package.module:function`), named as TRL names it, its failures one line."""

    def __init__(self, code: str, func: Callable[..., Any]) -> None:
        self.code, self.func = code, func
        self.__name__ = getattr(func, "__name__", code.rpartition(":")[2])

    def __call__(self, *args: Any, **kwargs: Any) -> list[float | None]:
        try:
            return self.func(*args, **kwargs)
        except FtdataError:
            raise
        except Exception as exc:  # the user's code: any failure is reported in one line
            raise FtdataError(f"reward {self.code!r} failed: {type(exc).__name__}: {exc}") from exc


# --- reading completions and answers -------------------------------------------------------------


def completion_text(completion: Any) -> str:
    """The text of a completion: a string as is, a conversational one's (last) message content."""
    if isinstance(completion, str):
        return completion
    message = completion[-1] if isinstance(completion, list) and completion else completion
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return content or ""


def _parsed_reasoning(completion: Any) -> str | None:
    """The reasoning a response schema parsed out of a conversational completion (TRL's `parse_response`)."""
    message = completion[-1] if isinstance(completion, list) and completion else None
    if not isinstance(message, Mapping):
        return None
    return next((message[k] for k in ("reasoning_content", "reasoning", "thinking") if message.get(k)), None)


def answer_text(completion: Any) -> str:
    """What follows the reasoning: the text after the last `</think>`, else the whole completion."""
    text = completion_text(completion)
    return text.rpartition(THINK_CLOSE)[2] if THINK_CLOSE in text else text


def marked_answer(text: str) -> str | None:
    """The answer `text` marks: after GSM8K's last `####`, else inside the last `\\boxed{...}`; None when unmarked.

    >>> marked_answer("3 + 4 = 7\\n#### 7"), marked_answer("so $x = \\\\boxed{\\\\frac{1}{2}}$."), marked_answer("7")
    ('7', '\\\\frac{1}{2}', None)
    """
    if "####" in text:
        return text.rpartition("####")[2].strip()
    return _last_boxed(text)


def _last_boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    brace = text.find("{", start)
    if brace < 0:
        return None
    depth = 0
    for i in range(brace, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[brace + 1 : i]
    return None  # never closed


_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|-?\.\d+")


def last_number(text: str) -> str | None:
    """The last number written in `text` ("1,234.5", "-3", "3/4"), or None."""
    found = _NUMBER.findall(text)
    return found[-1] if found else None


def normalize(answer: str) -> str:
    """An answer as compared: LaTeX spacing and wrappers dropped, thousands commas, `$` and a trailing
    period removed, no whitespace, lower case.

    >>> normalize(" $1,000.$ "), normalize("\\\\text{ Paris }"), normalize("\\\\dfrac{1}{2}")
    ('1000', 'paris', '\\\\frac{1}{2}')
    """
    text = answer.strip()
    text = re.sub(r"\\text\{([^{}]*)\}", r"\1", text)
    for old, new in (
        ("\\!", ""),
        ("\\,", ""),
        ("\\;", ""),
        ("\\left", ""),
        ("\\right", ""),
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\$", ""),
        ("$", ""),
        ("\\%", ""),
        ("%", ""),
    ):
        text = text.replace(old, new)
    text = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", text)
    text = re.sub(r"\s+", "", text).lower()
    return text.rstrip(".")


def number(answer: str) -> float | None:
    """The value of a normalised answer that is a number: "72", "-0.5", "3/4", "\\frac{3}{4}"; else None."""
    if re.fullmatch(r"-?\d+(?:\.\d+)?|-?\.\d+", answer):
        return float(answer)
    fraction = re.fullmatch(r"(-?)(?:\\frac\{(-?\d+)\}\{(\d+)\}|(-?\d+)/(\d+))", answer)
    if fraction is None:
        return None
    sign, top, bottom = (
        fraction.group(1),
        fraction.group(2) or fraction.group(4),
        fraction.group(3) or fraction.group(5),
    )
    if int(bottom) == 0:
        return None
    return (-1 if sign else 1) * int(top) / int(bottom)


def same_answer(a: str, b: str) -> bool:
    """Equal normalised answers, or equal numbers (`72.0` == `72`)."""
    if a == b:
        return True
    x, y = number(a), number(b)
    return x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12)


def score_exact(completion: str, reference: Any) -> float | None:
    """1.0 when `completion`'s final answer is `reference`'s, 0.0 when not, None without a reference.

    >>> score_exact("She pays 3 * 24 = 72 dollars.", "Each costs 24...\\n#### 72")
    1.0
    """
    if reference is None or (isinstance(reference, float) and math.isnan(reference)):
        return None
    reference = str(reference)
    if not reference.strip():
        return None
    expected = normalize(marked_answer(reference) or reference)
    given = marked_answer(completion)
    if given is None:
        given = (last_number(completion) if number(expected) is not None else None) or completion
    return float(same_answer(normalize(given), expected))
