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

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ftdata.errors import ConfigError, Location, RecordError
from ftdata.records import tools
from ftdata.records.formats import Columns, _messages, _text, _unwrap, at_path, validate
from ftdata.records.reward_types import REWARD_TYPES, SKIP, parse_kind, type_of, typed
from ftdata.types import Example, Message

__all__ = [
    "PROMPT_FIELDS",
    "REWARD_TYPES",
    "PromptRecord",
    "RewardColumns",
    "looks_like_prompts",
    "nested_paths",
    "prompt_columns",
    "reward_values",
    "to_prompt",
    "type_of",
]

PROMPT_FIELDS: dict[str, tuple[str, ...]] = {
    "instruction": ("prompt", "question", "problem", "query", "instruction"),
    "input": ("input", "context"),
    "system": ("system",),
    "messages": ("messages", "conversations", "conversation"),
    "tools": ("tools",),
    "chat_template_kwargs": ("chat_template_kwargs",),
}
"""Where a row's prompt is (canonical field -> accepted columns); `--columns instruction=my_col` maps one."""

OWN_COLUMNS = ("prompt", "prompt_ids", "tools")
"""The columns every row of a prompt set holds: no reward column may take their names."""

# Columns that hold a completion: a row with one is SFT (or preference) data, unless told --task prompts.
_COMPLETIONS = ("output", "response", "answer", "completion", "chosen", "rejected", "solution")


def prompt_columns(mapping: Mapping[str, str] | None) -> Columns:
    """The column map of a prompt set: keys of PROMPT_FIELDS map the prompt; any other key names a column of the
    rows (`answer=reward_model.ground_truth`: an `answer` reward column read from a nested field)."""
    return Columns(mapping, fields=PROMPT_FIELDS, named=True)


def looks_like_prompts(row: Any, columns: Columns | None = None) -> bool:
    """Whether a row is a prompt with no completion (read through `columns`, a `prompt_columns` map): TRL's
    `prompt` (or a `question`/`query`) with no answer column, MATH's `problem` (beside no SFT instruction: its
    `solution` is a reward column), or messages with tools and no assistant turn that end on a user turn (without
    tools, such messages are SFT data missing its reply: a located error that names --task prompts)."""
    columns = columns or prompt_columns(None)
    if not isinstance(row, Mapping) or "chosen" in row or "rejected" in row:
        return False
    messages = columns.value(row, "messages")
    if isinstance(messages, list):
        roles = [str(m.get("role", m.get("from", ""))).lower() for m in messages if isinstance(m, Mapping)]
        asks = bool(roles) and roles[-1] in ("user", "human") and not {"assistant", "gpt"} & set(roles)
        return asks and bool(_unwrap(columns.value(row, "tools")))
    prompt = columns.value(row, "instruction")
    if (
        "instruction" not in columns.explicit
        and isinstance(row.get("problem"), str)
        and not any(key in row for key in ("instruction", "prompt", "question", "query"))
    ):
        return True
    completions = {name for name in _COMPLETIONS if name in row and name not in columns.claimed} | (
        set(columns.named) & set(_COMPLETIONS)
    )
    if isinstance(prompt, list) and not completions - {"answer", "solution"}:  # TRL's conversational prompt-only rows
        return True
    column = columns.column(row, "instruction")  # an `instruction` alone is SFT data's (self-instruct's `instances`)
    return (
        not completions
        and isinstance(prompt, (str, list))
        and (column in ("prompt", "question", "query") or "instruction" in columns.explicit)
    )


@dataclass(frozen=True, slots=True)
class PromptRecord:
    """One prompt: the conversation before the model's turn (its tools and template kwargs), and the row's
    reward columns as typed values (`RewardColumns`)."""

    example: Example
    columns: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> Location:
        return self.example.source


def to_prompt(
    row: Any, location: Location, *, columns: Columns, rewards: RewardColumns, roles: Mapping[str, str] | None = None
) -> PromptRecord:
    """Read one row as a prompt and its reward columns.

    >>> rewards = RewardColumns({"answer": "string"})
    >>> where = Location("d.jsonl", line=1)
    >>> record = to_prompt({"question": "2+2?", "answer": "4"}, where, columns=prompt_columns(None), rewards=rewards)
    >>> [(m.role, m.content) for m in record.example.messages], record.columns
    ([('user', '2+2?')], {'answer': '4'})

    Raises:
        RecordError: no prompt, a conversation that ends on an assistant turn, a reward column missing, null
            or of another type than the column's.
    """
    if not isinstance(row, Mapping):
        raise RecordError(
            f"a prompt set's record is an object with a prompt, got {type(row).__name__}", location=location
        )
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
    return PromptRecord(example, rewards.read(reward_values(row, columns, used, location), location))


def reward_values(row: Mapping[str, Any], columns: Columns, used: set[str], location: Location) -> dict[str, Any]:
    """The columns of `row` that are not its prompt (`used`) nor mapped away, and the columns the map names
    (`answer=reward_model.ground_truth`), by name.

    Raises:
        RecordError: a named column's source is missing, or the row already has a column of that name.
    """
    values = {k: v for k, v in row.items() if k not in used and k not in columns.claimed}
    for name in OWN_COLUMNS:
        if name in values:
            raise RecordError(
                f"is a column named like one a prompt set's row holds ({', '.join(OWN_COLUMNS)}) and it is not the "
                f"prompt here; map the prompt from it (--columns instruction={name}) or rename it",
                location=location,
                field=name,
            )
    for name, source in columns.named.items():
        found, value = at_path(row, source)
        if not found:
            raise RecordError(
                f"mapped column {source!r} is missing; columns are {', '.join(map(str, row))}",
                location=location,
                field=name,
            )
        if name in values:
            raise RecordError(
                f"the column map makes a column {name} from {source} and the record has its own {name}; map it to "
                "another name",
                location=location,
                field=name,
            )
        values[name] = value
    return values


def _conversation(
    row: Mapping[str, Any], columns: Columns, location: Location, used: set[str], roles: Mapping[str, str]
) -> tuple[Message, ...]:
    """The prompt of `row` as messages, each column read added to `used`."""
    column, value = columns.find(row, "messages", location=location)
    if column is None:
        column, value = columns.find(row, "instruction", location=location)
    if column is None:
        names = ", ".join(sorted({a for f in ("instruction", "messages") for a in PROMPT_FIELDS[f]}))
        raise RecordError(
            f"has no prompt: expected one of {names} (or map one: --columns instruction=COLUMN)", location=location
        )
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
        if (text := _text(system, location=location, field=system_col, required=False)) and messages[
            0
        ].role != "system":
            messages = (Message("system", text), *messages)
    if messages[-1].role not in ("user", "tool"):
        raise RecordError(
            f"ends on a {messages[-1].role} turn; a prompt ends before the model's turn (on a user or tool turn): "
            "drop the reply, or build it as SFT data (--task sft)",
            location=location,
            field=f"{column}[{len(messages) - 1}]",
        )
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
                try:
                    if not isinstance(kind, str):
                        raise ConfigError(kind)
                    parse_kind(kind.removesuffix("?"))
                except ConfigError:
                    raise ConfigError(
                        f"reward_columns: {name}={kind!r} is no type; choose one of {', '.join(REWARD_TYPES)} (a "
                        "trailing ? "
                        "lets a record leave it null)"
                    ) from None
        self.types = dict(types) if types is not None else None

    @classmethod
    def of_row(cls, row: Any, columns: Columns) -> RewardColumns:
        """The reward columns of a prompt set whose first record is `row`: every column that is not its prompt
        (and each column the map names), typed as the data nests it."""
        if not isinstance(row, Mapping):
            return cls({})
        prompt = set()
        for name in PROMPT_FIELDS:
            column = columns.column(row, name)
            if column is not None:
                prompt.add(column)
        values = reward_values(row, columns, prompt, Location("first record"))
        return cls({name: type_of(value) for name, value in values.items() if value is not None})

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
                        f"reward column {name} is {out[name].removesuffix('?')} in source {seen[name]} and {kind} "
                        f"in source {source}; "
                        "give it one type in every source (or set reward_columns)"
                    )
                out.setdefault(name, kind)
                seen.setdefault(name, source)
        every = [set(c.types or {}) for c in named.values()]
        return cls(
            {
                name: kind if all(name in names for names in every) else kind.removesuffix("?") + "?"
                for name, kind in out.items()
            }
        )

    def read(self, values: Mapping[str, Any], location: Location) -> dict[str, Any]:
        """`values` (a row's columns that are not its prompt) checked against the types, as stored; a `skip`
        column is left out."""
        types = self.types if self.types is not None else {name: type_of(v) for name, v in values.items()}
        for name in values:
            if name not in types:
                named = "; ".join(f"{n}: {k}" for n, k in types.items()) or "none"
                raise RecordError(
                    f"is not one of the prompt set's columns ({named}; typed from its first record, or named by "
                    "reward_columns): give every record the same columns, or name it in reward_columns "
                    f"({name}=TYPE, or {name}={SKIP} to leave it out)",
                    location=location,
                    field=name,
                )
        return {
            name: typed(values.get(name), kind, name=name, location=location)
            for name, kind in types.items()
            if kind != SKIP
        }


def nested_paths(row: Any, name: str, prefix: str = "") -> list[str]:
    """The dotted paths inside `row` whose last key is `name` (`ground_truth` -> `reward_model.ground_truth`)."""
    if not isinstance(row, Mapping):
        return []
    found = [f"{prefix}{key}" for key in row if key == name and prefix]
    for key, value in row.items():
        if isinstance(key, str) and isinstance(value, Mapping):
            found += nested_paths(value, name, f"{prefix}{key}.")
    return found
