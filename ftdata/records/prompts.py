"""Prompt sets (`task=prompts`, for GRPO/RLOO): one prompt a row, and the row's other columns for the rewards.

    {"prompt": "2+2?", "answer": "4"}                        TRL's prompt-only rows (text or messages)
    {"question": "...", "answer": "...#### 18"}              GSM8K (`--task prompts`: question/answer is SFT data too)
    {"problem": "...", "solution": "...\\boxed{3}", ...}      MATH
    {"messages": [..., {"role": "user", ...}], "tools": []}  OpenAI messages that end on a user (or tool) turn

The prompt becomes a conversation (`Example`): a text is one user turn (after the row's `system`);
messages are read as SFT reads them and must end before the model's turn. Every other column is a
reward column, kept as the data has it and typed (`RewardColumns`): a column each record must carry,
with one type (the first record's, or the types given with `reward_columns`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ftdata.errors import ConfigError, Location, RecordError
from ftdata.records import tools
from ftdata.records.formats import Columns, _messages, _text, _unwrap, validate
from ftdata.types import Example, Message

__all__ = ["PROMPT_FIELDS", "REWARD_TYPES", "PromptRecord", "RewardColumns", "looks_like_prompts", "prompt_columns", "to_prompt"]

PROMPT_FIELDS: dict[str, tuple[str, ...]] = {
    "instruction": ("prompt", "question", "problem", "query", "instruction"),
    "input": ("input", "context"),
    "system": ("system",),
    "messages": ("messages", "conversations", "conversation"),
    "tools": ("tools",),
    "chat_template_kwargs": ("chat_template_kwargs",),
}
"""Where a row's prompt is (canonical field -> accepted columns); `--columns instruction=my_col` maps one."""

# Columns that hold a completion: a row with one is SFT (or preference) data, unless told --task prompts.
_COMPLETIONS = ("output", "response", "answer", "completion", "chosen", "rejected", "solution")

REWARD_TYPES = ("string", "int", "float", "bool", "list[string]", "list[int]", "list[float]", "json")
"""The types a reward column may have; `json`: any other JSON value, stored as its JSON text. A trailing `?`
(`string?`) lets a record leave the column out or null (a recipe's sources that lack a column another has)."""


def prompt_columns(mapping: Mapping[str, str] | None) -> Columns:
    """The column map of a prompt set (keys: PROMPT_FIELDS; raises ConfigError for another key)."""
    return Columns(mapping, fields=PROMPT_FIELDS)


def looks_like_prompts(row: Any) -> bool:
    """Whether a row is a prompt with no completion: TRL's `prompt` (or a `question`/`query`) with no answer
    column, MATH's `problem` (beside no SFT instruction: its `solution` is a reward column), or messages
    without an assistant turn that end on a user turn."""
    if not isinstance(row, Mapping) or "chosen" in row or "rejected" in row:
        return False
    for key in PROMPT_FIELDS["messages"]:
        if isinstance(value := row.get(key), list):
            roles = [str(m.get("role", m.get("from", ""))).lower() for m in value if isinstance(m, Mapping)]
            return bool(roles) and roles[-1] in ("user", "human") and not {"assistant", "gpt"} & set(roles)
    if isinstance(row.get("problem"), str) and not any(key in row for key in ("instruction", "prompt", "question", "query")):
        return True
    if isinstance(row.get("prompt"), list) and "completion" not in row:  # TRL's conversational prompt-only rows
        return True
    if any(name in row for name in _COMPLETIONS):
        return False
    return any(isinstance(row.get(key), (str, list)) for key in ("prompt", "question", "query"))


@dataclass(frozen=True, slots=True)
class PromptRecord:
    """One prompt: the conversation before the model's turn (its tools and template kwargs), and the row's
    reward columns as typed values (`RewardColumns`)."""

    example: Example
    columns: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> Location:
        return self.example.source


def to_prompt(row: Any, location: Location, *, columns: Columns, rewards: RewardColumns, roles: Mapping[str, str] | None = None) -> PromptRecord:
    """Read one row as a prompt and its reward columns.

    >>> rewards = RewardColumns({"answer": "string"})
    >>> record = to_prompt({"question": "2+2?", "answer": "4"}, Location("d.jsonl", line=1), columns=prompt_columns(None), rewards=rewards)
    >>> [(m.role, m.content) for m in record.example.messages], record.columns
    ([('user', '2+2?')], {'answer': '4'})

    Raises:
        RecordError: no prompt, a conversation that ends on an assistant turn, a reward column missing, null
            or of another type than the column's.
    """
    if not isinstance(row, Mapping):
        raise RecordError(f"a prompt set's record is an object with a prompt, got {type(row).__name__}", location=location)
    used: set[str] = set()
    messages = _conversation(row, columns, location, used, roles or {})
    extras: dict[str, Any] = {}
    for name in ("tools", "chat_template_kwargs"):
        column, value = columns.find(row, name, location=location)
        if column is not None:
            used.add(column)
            extras[name] = _unwrap(value)
    schemas = tools.tool_schemas(extras.get("tools"), location=location, field="tools")
    kwargs = tools.template_kwargs(extras.get("chat_template_kwargs"), location=location, field="chat_template_kwargs")
    example = Example(messages, location, format="prompt", tools=schemas, template_kwargs=dict(kwargs))
    return PromptRecord(example, rewards.read({k: v for k, v in row.items() if k not in used}, location))


def _conversation(row: Mapping[str, Any], columns: Columns, location: Location, used: set[str], roles: Mapping[str, str]) -> tuple[Message, ...]:
    """The prompt of `row` as messages, each column read added to `used`."""
    column, value = columns.find(row, "messages", location=location)
    if column is None:
        column, value = columns.find(row, "instruction", location=location)
    if column is None:
        names = ", ".join(sorted({a for f in ("instruction", "messages") for a in PROMPT_FIELDS[f]}))
        raise RecordError(f"has no prompt: expected one of {names} (or map one: --columns instruction=COLUMN)", location=location)
    used.add(column)
    value = _unwrap(value)
    if isinstance(value, list):
        messages, _ = _messages(value, location=location, field=column, roles=roles)
    else:
        text = _text(value, location=location, field=column)
        context_col, context = columns.find(row, "input", location=location)
        if context_col is not None:
            used.add(context_col)
            if extra := _text(context, location=location, field=context_col, required=False):
                text = f"{text}\n\n{extra}"
        messages = (Message("user", text),)
    system_col, system = columns.find(row, "system", location=location)
    if system_col is not None:
        used.add(system_col)
        if (text := _text(system, location=location, field=system_col, required=False)) and messages[0].role != "system":
            messages = (Message("system", text), *messages)
    if messages[-1].role not in ("user", "tool"):
        raise RecordError(
            f"ends on a {messages[-1].role} turn; a prompt ends before the model's turn (on a user or tool turn): "
            "drop the reply, or build it as SFT data (--task sft)",
            location=location, field=f"{column}[{len(messages) - 1}]",
        )  # fmt: skip
    validate(messages, location=location, field=column, reply=False)
    return messages


class RewardColumns:
    """The reward columns of a prompt set: each name's type. Every record carries each one, with that type;
    a missing or null column, a value of another type, or a column the set does not have is a record error.

    `types` None: learnt from the first record read (`learn`), as `type_of` names its values.
    """

    def __init__(self, types: Mapping[str, str] | None = None):
        if types is not None:
            for name, kind in types.items():
                if not isinstance(kind, str) or kind.removesuffix("?") not in REWARD_TYPES:
                    raise ConfigError(f"reward_columns: {name}={kind!r} is no type; choose one of {', '.join(REWARD_TYPES)}")
        self.types = dict(types) if types is not None else None

    @classmethod
    def of_row(cls, row: Any, columns: Columns) -> RewardColumns:
        """The reward columns of a prompt set whose first record is `row`: every column that is not its prompt."""
        if not isinstance(row, Mapping):
            return cls({})
        prompt = set()
        for name in PROMPT_FIELDS:
            column, _ = columns.find(row, name, location=Location("first record"))
            if column is not None:
                prompt.add(column)
        return cls({name: type_of(value) for name, value in row.items() if name not in prompt and value is not None})

    @classmethod
    def union(cls, named: Mapping[str, RewardColumns]) -> RewardColumns:
        """The reward columns of a recipe's prompt sets (`named`: each source's): a column some source lacks
        may be missing (`type?`); a column two sources type differently is refused.

        Raises:
            ConfigError: two sources give a column two types.
        """
        out: dict[str, str] = {}
        seen: dict[str, str] = {}
        for source, columns in named.items():
            for name, kind in (columns.types or {}).items():
                if name in out and out[name].removesuffix("?") != kind.removesuffix("?"):
                    raise ConfigError(
                        f"reward column {name} is {out[name].removesuffix('?')} in source {seen[name]} and {kind} in source {source}; "
                        "give it one type in every source (or set reward_columns)"
                    )  # fmt: skip
                out.setdefault(name, kind)
                seen.setdefault(name, source)
        every = [set(c.types or {}) for c in named.values()]
        return cls({name: kind if all(name in names for names in every) else kind.removesuffix("?") + "?" for name, kind in out.items()})

    def read(self, values: Mapping[str, Any], location: Location) -> dict[str, Any]:
        """`values` (a row's columns that are not its prompt) checked against the types, as stored."""
        types = self.types if self.types is not None else {name: type_of(v) for name, v in values.items()}
        for name in values:
            if name not in types:
                raise RecordError(
                    f"is a column the prompt set's first record does not have (its reward columns: {', '.join(types) or 'none'}); "
                    "give every record the same columns, or name them with reward_columns",
                    location=location, field=name,
                )  # fmt: skip
        return {name: _typed(values.get(name), kind, name=name, location=location) for name, kind in types.items()}


def type_of(value: Any) -> str:
    """The reward type that holds `value`: `json` for anything but a scalar or a flat list of one scalar type."""
    value = _unwrap(value)
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list) and value:
        inner = {type_of(v) for v in value}
        if len(inner) == 1 and (kind := inner.pop()) in ("string", "int", "float"):
            return f"list[{kind}]"
        if inner <= {"int", "float"}:
            return "list[float]"
    return "json"


def _typed(value: Any, kind: str, *, name: str, location: Location) -> Any:
    """`value` as a `kind` column stores it. Raises RecordError: missing, null, or of another type."""
    value = _unwrap(value)
    if value is None and kind.endswith("?"):
        return None
    kind = kind.removesuffix("?")
    if value is None:
        raise RecordError(f"is missing or null; every record of the prompt set carries the reward column {name} ({kind})", location=location, field=name)
    if kind == "json":
        try:
            return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):
            raise RecordError(f"holds a value that is not JSON ({type(value).__name__})", location=location, field=name) from None
    if kind.startswith("list["):
        if not isinstance(value, list):
            raise RecordError(f"is {type_of(value)}, the column holds {kind}; make every record's {name} a list", location=location, field=name)
        return [_scalar(v, kind[5:-1], name=f"{name}[{i}]", location=location) for i, v in enumerate(value)]
    return _scalar(value, kind, name=name, location=location)


def _scalar(value: Any, kind: str, *, name: str, location: Location) -> Any:
    got = type_of(value)
    if got == kind or (kind == "float" and got == "int"):
        if kind == "float" and not math.isfinite(value):
            raise RecordError(f"is {value!r}, not a finite number", location=location, field=name)
        return float(value) if kind == "float" else value
    raise RecordError(
        f"is {got} ({_brief(value)}), the column holds {kind} (as the first record, or reward_columns, says); "
        f"write every record's {name.split('[')[0]} as {kind}",
        location=location, field=name,
    )  # fmt: skip


def _brief(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
