"""Preference formats: which shape a preference row has, and its sides as whole conversations.

Each side is read as an SFT record by `ftdata.records.formats.to_examples` (roles, tool calls,
reasoning, typed content parts, `system`/`tools`/`chat_template_kwargs` columns, validation): a
view of the row holds the columns every side shares and the side's own messages or reply under a
key that errors show (``"conversations+chosen"``). `ftdata.records.preference` splits the two
conversations into a pair; the shapes are listed there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ftdata.records.formats import at_path, ROLE_ALIASES, Columns, _unwrap, to_examples
from ftdata.errors import Location, RecordError
from ftdata.types import Example

# The columns every side of a record shares, by canonical name.
SHARED = ("system", "tools", "chat_template_kwargs")
INSTRUCTION = ("instruction", "input", "history", *SHARED)

# Anthropic HH: each turn starts "\n\nHuman:" or "\n\nAssistant:" (the first one without the blank line).
_HH_TURN = re.compile(r"(?:\A|\n\n)(Human|Assistant):")
_HH_START = re.compile(r"\s*Human:")
_HH_HUMAN = re.compile(r"(?:\A\s*|\n\n)Human:")

NEEDS_BOTH = "give both as text, both as message lists, or both as single message objects"


def conversation(
    row: Mapping[str, Any],
    columns: Columns,
    shared: Sequence[str],
    key: str,
    value: Any,
    *,
    fmt: str,
    location: Location,
    roles: Mapping[str, str],
) -> Example:
    """One side as the SFT record `to_examples` reads: the row's `shared` columns, and `value` under
    `key` as the messages (fmt="messages") or as the response (fmt="instruction")."""
    mapping = {name: col for name in shared if (col := columns.find(row, name, location=location)[0]) is not None}
    view = {col: at_path(row, col)[1] for col in mapping.values()} | {key: value}
    mapping["messages" if fmt == "messages" else "output"] = key
    mapping |= columns.message_keys  # each message's role and content keys, as the map names them
    try:
        (example,) = to_examples(view, location, format=fmt, columns=Columns(mapping), roles=roles)
    except RecordError as exc:  # the conversation rules name a turn "messages[i]": name it by `key`
        if fmt != "messages" or key == "messages" or not (exc.field or "").startswith("messages["):
            raise
        field = key + (exc.field or "")[len("messages") :]
        raise type(exc)(exc.reason, location=location, field=field, code=exc.code) from None
    return example


def pair_sides(
    row: Mapping[str, Any],
    columns: Columns,
    sides: Mapping[str, tuple[str, Any]],
    *,
    location: Location,
    roles: Mapping[str, str],
) -> tuple[str, Example, Example]:
    """The shape of a row with chosen and rejected (`sides`: each side's column and value), and its two
    sides as whole conversations.

    Raises:
        RecordError: the sides are of different kinds, or lack the prompt their kind needs.
    """
    (chosen_col, chosen), (rejected_col, rejected) = sides["chosen"], sides["rejected"]
    chosen, rejected = _unwrap(chosen), _unwrap(rejected)
    prompt_col, prompt = columns.find(row, "instruction", location=location)
    prompt = _unwrap(prompt)
    cols = (chosen_col, rejected_col)

    def read(shared: Sequence[str], keys: Sequence[str], values: Sequence[Any], fmt: str) -> tuple[Example, Example]:
        a, b = (
            conversation(row, columns, shared, key, value, fmt=fmt, location=location, roles=roles)
            for key, value in zip(keys, values)
        )
        return a, b

    def after(shape: str, found: tuple[str | None, Any], replies: Sequence[list[Any]], need: str, *, usual: str):
        """The sides as the prompt's messages (`found`: its column, else `usual`, and value), then each reply."""
        context_col, context = found
        if not isinstance(context, list):
            what = f"{need}; give it, or give each side as a whole conversation"
            raise RecordError(what, location=location, field=context_col or usual)
        keys = [f"{context_col}+{col}" for col in cols]
        return shape, *read(SHARED, keys, [[*context, *reply] for reply in replies], "messages")

    if isinstance(chosen, str) and isinstance(rejected, str):
        head = prompt if isinstance(prompt, str) and _HH_START.match(prompt) else ""
        # Text sides are HH transcripts only where there is no plain prompt: a reply may quote a transcript.
        if (prompt_col is None or head) and _is_hh(head + chosen):
            keys = [f"{prompt_col}+{col}" if head else col for col in cols]
            turns = [hh_messages(head + text, location=location, field=k) for k, text in zip(keys, (chosen, rejected))]
            return "hh", *read(SHARED, keys, turns, "messages")
        if isinstance(prompt, list):
            what = 'is a list of messages but chosen and rejected are text; give each as [{"role": "assistant", ...}]'
            raise RecordError(what, location=location, field=prompt_col)
        return "instruction", *read(INSTRUCTION, cols, (chosen, rejected), "instruction")
    if isinstance(chosen, Mapping) and isinstance(rejected, Mapping):  # LLaMA-Factory: one message object a side
        need = "chosen and rejected are single messages, so the prompt must be a conversations (or messages) list"
        found = columns.find(row, "messages", location=location)
        return after("sharegpt", found, ([chosen], [rejected]), need, usual="conversations")
    if isinstance(chosen, list) and isinstance(rejected, list):
        replies = {_starts_with_reply(chosen, roles=roles), _starts_with_reply(rejected, roles=roles)}
        if len(replies) > 1:
            raise RecordError(
                "one side is a whole conversation and the other starts with the assistant's reply; give both "
                "sides the same way",
                location=location,
                field=rejected_col,
            )
        if replies == {False}:
            if isinstance(prompt, list):
                raise RecordError(
                    "prompt is a list of messages and chosen/rejected are whole conversations that start with a "
                    "user or system turn; give either the prompt and the replies, or whole conversations",
                    location=location,
                    field=prompt_col,
                )
            return "implicit", *read(SHARED, cols, (chosen, rejected), "messages")
        # TRL's prompt list; else LLaMA-Factory's conversations with reply lists.
        found = (prompt_col, prompt) if isinstance(prompt, list) else columns.find(row, "messages", location=location)
        need = (
            "chosen and rejected hold only the replies (they start with an assistant turn), so the prompt must be a "
            'list of messages [{"role": "user", "content": ...}]'
        )
        return after("conversational", found, (chosen, rejected), need, usual="prompt")
    what = f"chosen is {_kind(chosen)} and rejected is {_kind(rejected)}; {NEEDS_BOTH}"
    raise RecordError(what, location=location, field=chosen_col)


def unpaired_side(
    row: Mapping[str, Any], columns: Columns, *, location: Location, roles: Mapping[str, str]
) -> tuple[str, str, Example]:
    """The shape of a KTO row, the name its errors use, and its conversation (the prompt, then the completion).

    Raises:
        RecordError: no completion and no messages, or a message-list completion after a text prompt.
    """
    prompt_col, prompt = columns.find(row, "instruction", location=location)
    out_col, completion = columns.find(row, "output", location=location)
    prompt, completion = _unwrap(prompt), _unwrap(completion)

    def read(shared: Sequence[str], key: str, value: Any, fmt: str) -> Example:
        return conversation(row, columns, shared, key, value, fmt=fmt, location=location, roles=roles)

    if isinstance(completion, list):  # TRL's conversational prompt + completion
        if not isinstance(prompt, list):
            raise RecordError(
                'completion is a list of messages, so the prompt must be one too: [{"role": "user", ...}]',
                location=location,
                field=prompt_col or "prompt",
            )
        key = f"{prompt_col}+{out_col}"
        return "conversational", key, read(SHARED, key, [*prompt, *completion], "messages")
    if out_col is not None:
        return "instruction", out_col, read(INSTRUCTION, out_col, completion, "instruction")
    conv_col, conv = columns.find(row, "messages", location=location)
    if conv_col is None:
        raise RecordError(
            "no completion and no messages; a KTO record is prompt + completion + label, or messages + label "
            f"(columns are {', '.join(map(str, row))}); map them with --columns",
            location=location,
            field="completion",
        )
    return "messages", conv_col, read(SHARED, conv_col, conv, "messages")


def hh_messages(text: str, *, location: Location, field: str) -> list[dict[str, str]]:
    """An HH transcript as messages, each turn's text stripped.

    >>> hh_messages("\\n\\nHuman: hi\\n\\nAssistant: hello", location=Location("d"), field="chosen")
    [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'}]

    Raises:
        RecordError: text before the first turn.
    """
    parts = _HH_TURN.split(text.lstrip())
    if parts[0].strip():
        raise RecordError(f"has text {parts[0][:40]!r} before its first 'Human:' turn", location=location, field=field)
    return [
        {"role": "user" if who == "Human" else "assistant", "content": body.strip()}
        for who, body in zip(parts[1::2], parts[2::2])
    ]


def _is_hh(text: str) -> bool:
    """Whether `text` is an HH transcript: a Human turn and an Assistant turn."""
    return "\n\nAssistant:" in text and _HH_HUMAN.search(text) is not None


def _kind(value: Any) -> str:
    kinds: dict[type, str] = {str: "text", list: "a list", dict: "a message object"}
    return kinds.get(type(value), type(value).__name__)


def _starts_with_reply(items: list[Any], *, roles: Mapping[str, str]) -> bool:
    """Whether a side's message list starts with the assistant's turn (TRL's explicit-prompt form)."""
    first = items[0] if items else None
    role = first.get("role", first.get("from")) if isinstance(first, Mapping) else None
    if not isinstance(role, str):
        return False  # reading the side says what is wrong with it
    key = role.strip().lower()
    return (roles.get(key) or ROLE_ALIASES.get(key) or key) == "assistant"
