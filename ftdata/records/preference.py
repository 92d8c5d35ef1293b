"""Preference data: one raw row -> `Pair`s (DPO and the other paired losses) or `Unpaired` records (KTO).

Every shape is read as two conversations, one per side, by the SFT formats themselves
(`ftdata.records.preference_formats`), then split once:

    chosen side    [sys, user, asst, user, CHOSEN]      prompt = the longest common prefix
    rejected side  [sys, user, asst, user, REJECTED]    (messages as the template sees them)
                   '-------- prompt -------'            rest = exactly one assistant turn per side

A completion is one assistant turn (text, tool calls, reasoning): what the model writes after the
prompt. Messages a side holds before its last turn (a tool call and its result) are context the
model reads, not text it writes there: equal on both sides they join the prompt; different, the
pair is rejected (`prompt_mismatch`). Train flags and loss weights in the data are not read: a
completion is trained whole (one that says otherwise is an error), a prompt never.

Pair shapes, detected per record (`Pair.prompt.format` names the one read):

- ``instruction``: text pairs. TRL's standard ``prompt``/``chosen``/``rejected`` strings, Alpaca
  ``instruction``/``input`` + ``chosen``/``rejected`` (LLaMA-Factory's alpaca ranking format), with
  ``system`` and ``history`` as in SFT. The prompt is an instruction record: prompt templates apply.
- ``conversational``: TRL's explicit prompt: ``prompt`` a list of messages, ``chosen``/``rejected``
  lists starting with the assistant's turn.
- ``implicit``: ``chosen``/``rejected`` whole conversations: TRL's implicit prompt, UltraFeedback
  binarized (with ``score_chosen``/``score_rejected``, and a ``prompt`` text that must be the last
  user turn), LLaMA-Factory v1 ``chosen_messages``/``rejected_messages`` (typed content parts).
- ``sharegpt``: LLaMA-Factory's ``conversations`` (the prompt) + ``chosen``/``rejected`` message objects.
- ``hh``: Anthropic HH strings, ``\\n\\nHuman: ...\\n\\nAssistant: ...`` per side; also an HH
  ``prompt`` ending in ``Assistant:`` with bare replies (Dahoas/full-hh-rlhf). Turn texts are stripped.
- ``ultrafeedback``: OpenBMB's raw rows, ``instruction`` + ``completions: [{response, overall_score}]``:
  the first highest-scored response is chosen, the first lowest-scored rejected (tied: `no_preference`);
  the per-completion ``custom_system_prompt`` is not part of the prompt (HuggingFaceH4's binarization
  leaves it out too).

Unpaired (KTO) shapes: TRL's ``prompt``/``completion``/``label`` (strings or message lists),
LLaMA-Factory's ``messages`` (or ShareGPT ``conversations``) + ``label``; and every pair shape, read as
two records (chosen desirable, rejected not), as TRL's KTOTrainer unpairs paired data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ftdata.records.formats import FIELD_ALIASES, Columns, _unwrap
from ftdata.errors import Location, RecordError, UnusableRecord
from ftdata.outcomes import RejectCode
from ftdata.records import scores
from ftdata.records.preference_formats import INSTRUCTION, conversation, pair_sides, unpaired_side
from ftdata.types import Example, Message, Pair, Task, Unpaired

PREFERENCE_FIELDS: dict[str, tuple[str, ...]] = {
    **FIELD_ALIASES,
    "chosen": ("chosen", "chosen_messages"),
    "rejected": ("rejected", "rejected_messages", "rejected_response"),  # ms-swift: `rejected_response`
    "label": ("label", "kto_tag", "tag"),  # TRL and LLaMA-Factory's demo; LLaMA-Factory's `kto_tag`; its docs' `tag`
    "score_chosen": ("score_chosen",),
    "score_rejected": ("score_rejected",),
    "completions": ("completions",),
}
"""SFT's fields plus preference data's own, for a column map: ``{"chosen": "response_a"}``."""


def preference_columns(mapping: Mapping[str, str] | Columns | None = None) -> Columns:
    """A column map over PREFERENCE_FIELDS (an SFT `Columns` is read again with the preference fields).

    Raises:
        ConfigError: a key that is no field, listing the valid ones.
    """
    if isinstance(mapping, Columns):
        if mapping.fields is PREFERENCE_FIELDS:
            return mapping
        mapping = mapping.explicit
    return Columns(mapping, fields=PREFERENCE_FIELDS)


def looks_like_preference(row: Any, columns: Columns | None = None) -> Task | None:
    """The preference task a row's shape names, or None for SFT data.

    PREFERENCE: a `chosen` or a `rejected` column (either alone too: a broken pair is still not SFT
    data), or UltraFeedback's rated `completions`. KTO: a true/false `label` (a JSON bool, or the
    text "true"/"false") beside SFT-shaped data (a completion/output, or messages). A `label` that is
    a class name or a number is SFT data's own column and names no task; so is a label beside a
    `text` column (classification data). The SFT path calls this on every record (pass a
    `preference_columns` object to build it once) and refuses a record that names a task: see
    `detect_task`.
    """
    if not isinstance(row, Mapping):
        return None
    columns = preference_columns(columns)
    if _column(row, columns, "chosen") or _column(row, columns, "rejected") or _rated(row, columns):
        return Task.PREFERENCE
    label = _column(row, columns, "label")
    if (
        label
        and _bool_like(columns.value(row, "label"))
        and (_column(row, columns, "output") or _column(row, columns, "messages"))
    ):
        return Task.KTO
    return None


def detect_task(row: Any, location: Location, *, columns: Columns | None = None) -> Task:
    """The task of one row when the build names none (`--task` unset).

    A JSON true/false under a KTO label's names (`label`, `kto_tag`, `tag`) beside SFT-shaped data is KTO: TRL's
    unpaired rows, LLaMA-Factory's `messages` + `label` and its alpaca rows + `kto_tag`/`tag` (the build's task
    line says so; `--task sft` ignores the label). The same label as text ("true") is asked, never guessed: text
    columns hold class names too.

    Raises:
        RecordError: a true/false label written as text beside SFT-shaped data.
    """
    task = looks_like_preference(row, columns)
    if task is not Task.KTO:
        return task or Task.SFT
    columns = preference_columns(columns)
    label = _column(row, columns, "label")
    if isinstance(_unwrap(columns.value(row, "label")), bool):
        return Task.KTO
    raise RecordError(
        f"a label written as text ({_unwrap(columns.value(row, 'label'))!r}) beside a completion: KTO data or SFT "
        "data with a label column; choose with --task kto (train on it as desirable/undesirable) or --task sft "
        "(ignore the label)",
        location=location,
        field=label,
    )


def to_pairs(
    row: Any, location: Location, *, columns: Columns | None = None, roles: Mapping[str, str] | None = None
) -> tuple[Pair, ...]:
    """Read one row as preference pairs (one pair a row; a tuple, as `to_examples` returns).

    >>> (pair,) = to_pairs({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, Location("d.jsonl", line=1))
    >>> [m.content for m in pair.prompt.messages], pair.chosen.content, pair.rejected.content
    (['2+2?'], '4', '5')

    Raises:
        UnusableRecord: a well-formed pair with nothing sound to train; its code says why
            (chosen_is_rejected, prompt_mismatch, not_assistant_end, no_preference, empty_response, ...).
        RecordError: a row that does not fit its shape; the message names the location, the field and the fix.
    """
    if isinstance(row, RecordError):  # a reader could not read this row faithfully
        raise row
    if not isinstance(row, Mapping):
        raise RecordError(f"expected an object with chosen and rejected, got {type(row).__name__}", location=location)
    columns = preference_columns(columns)
    roles = {key.lower(): value for key, value in (roles or {}).items()}
    if not (_column(row, columns, "chosen") or _column(row, columns, "rejected")) and _rated(row, columns):
        return (_best_against_worst(row, columns, location=location, roles=roles),)
    sides = {side: columns.find(row, side, location=location) for side in ("chosen", "rejected")}
    if sides["chosen"][0] is None and (swift := _rejected_response(row, columns, sides["rejected"])) is not None:
        sides = swift
    for side, other in (("chosen", "rejected"), ("rejected", "chosen")):
        if sides[side][0] is None:
            has = f"has {other} but no {side}" if sides[other][0] else "has no chosen and rejected"
            raise RecordError(
                f"{has}; a pair needs both (columns are {', '.join(map(str, row))}); map them with "
                "--columns chosen=COLUMN,rejected=COLUMN",
                location=location,
                field=side,
            )
    found = {side: (column, value) for side, (column, value) in sides.items() if column is not None}  # both, by now
    shape, chosen, rejected = pair_sides(row, columns, found, location=location, roles=roles)
    pair = _split(chosen, rejected, shape=shape, fields=(found["chosen"][0], found["rejected"][0]), location=location)
    if shape == "implicit":
        _check_prompt_text(row, columns, pair, location=location)
    return (scores.with_scores(pair, row, columns, location=location),)


def _rejected_response(
    row: Mapping[str, Any], columns: Columns, rejected: tuple[str | None, Any]
) -> dict[str, tuple[str | None, Any]] | None:
    """ms-swift's pair: `messages` ending on the chosen reply, and `rejected_response` the rejected reply's text;
    as two whole conversations (the chosen one as given, the rejected one with the last reply replaced). None for
    any other row."""
    column, text = rejected
    messages_col = columns.column(row, "messages")
    messages = columns.value(row, "messages")
    if column is None or messages_col is None or not isinstance(_unwrap(text), str) or not isinstance(messages, list):
        return None
    if not messages or not isinstance(messages[-1], Mapping) or messages[-1].get("role") != "assistant":
        return None
    other = [*messages[:-1], {"role": "assistant", "content": _unwrap(text)}]
    return {"chosen": (messages_col, messages), "rejected": (f"{messages_col}+{column}", other)}


def unpair(pair: Pair) -> tuple[Unpaired, Unpaired]:
    """A pair as two KTO records, the chosen turn desirable and the rejected one not (TRL's
    `unpair_preference_dataset`, which KTOTrainer applies to paired data)."""
    return (
        Unpaired(pair.prompt, pair.chosen, True, pair.chosen_rest),
        Unpaired(pair.prompt, pair.rejected, False, pair.rejected_rest),
    )


def to_unpaired(
    row: Any, location: Location, *, columns: Columns | None = None, roles: Mapping[str, str] | None = None
) -> tuple[Unpaired, ...]:
    """Read one row as unpaired preference records (KTO): one, or two for a pair-shaped row.

    >>> (record,) = to_unpaired({"prompt": "2+2?", "completion": "4", "label": True}, Location("d.jsonl", line=1))
    >>> record.completion.content, record.label
    ('4', True)

    Raises:
        UnusableRecord: the completion is not an assistant turn (not_assistant_end), or is empty.
        RecordError: no label, a label that is not true/false, or a row that fits no shape.
    """
    if isinstance(row, RecordError):
        raise row
    if not isinstance(row, Mapping):
        what = f"expected an object with a completion and a label, got {type(row).__name__}"
        raise RecordError(what, location=location)
    columns = preference_columns(columns)
    if looks_like_preference(row, columns) is Task.PREFERENCE:
        pairs = to_pairs(row, location, columns=columns, roles=roles)
        return tuple(record for pair in pairs for record in unpair(pair))
    label_col, label = columns.find(row, "label", location=location)
    if label_col is None:
        raise RecordError(
            f"no label; KTO needs label true (desirable) or false per record (columns are {', '.join(map(str, row))}); "
            "map one with --columns label=COLUMN",
            location=location,
            field="label",
        )
    desirable = _label(label, location=location, field=label_col)
    roles = {key.lower(): value for key, value in (roles or {}).items()}
    shape, key, example = unpaired_side(row, columns, location=location, roles=roles)
    *prompt, completion = example.messages
    where = key if shape == "instruction" else f"{key}[{len(prompt)}]"
    if completion.role != "assistant":
        raise UnusableRecord(
            f"ends with a {completion.role} turn; the completion must be the assistant's turn",
            location=location,
            field=where,
            code=RejectCode.NOT_ASSISTANT_END,
        )
    prompt_example = replace(example, messages=tuple(map(_plain, prompt)), format=shape)
    return (Unpaired(prompt_example, _reply(completion, location=location, field=where), desirable),)


def _split(chosen: Example, rejected: Example, *, shape: str, fields: tuple[str, str], location: Location) -> Pair:
    """The pair of two whole conversations: their common prefix, then each side's completion: from its first
    assistant turn after the prefix to its last message, an assistant turn (an agent trajectory's side holds tool
    calls, their results and further turns; `Pair.chosen_rest`)."""
    for example, field in zip((chosen, rejected), fields):
        last = example.messages[-1]
        if last.role != "assistant":
            raise UnusableRecord(
                f"ends with a {last.role} turn; each side must end with the assistant turn it prefers or rejects",
                location=location,
                field=f"{field}[{len(example.messages) - 1}]",
                code=RejectCode.NOT_ASSISTANT_END,
            )
    a, b = (tuple(map(_plain, e.messages)) for e in (chosen, rejected))
    shared = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if shared == len(a) == len(b):
        raise UnusableRecord(
            "chosen and rejected are the same conversation; nothing to prefer: remove the record or fix the rejected "
            "side",
            location=location,
            field=fields[1],
            code=RejectCode.CHOSEN_IS_REJECTED,
        )
    if shared in (len(a), len(b)):
        raise UnusableRecord(
            f"one side is the other's start: they differ from message {shared} ({_brief(a, shared)} vs "
            f"{_brief(b, shared)}); a pair diverges at an assistant turn on both sides",
            location=location,
            field=fields[1],
            code=RejectCode.PROMPT_MISMATCH,
        )
    for side, field in zip((a, b), fields):
        if side[shared].role != "assistant":
            raise UnusableRecord(
                f"the sides differ at message {shared} ({_brief(a, shared)} vs {_brief(b, shared)}), a "
                f"{side[shared].role} turn the model does not write; a pair diverges at an assistant turn (what "
                "follows it may differ: tool results, further calls, the answer)",
                location=location,
                field=f"{field}[{shared}]",
                code=RejectCode.PROMPT_MISMATCH,
            )
    notes = tuple(dict.fromkeys((*chosen.notes, *rejected.notes)))
    completions = [
        tuple(
            _reply(m, location=location, field=f"{field}[{shared + i}]") if m.role == "assistant" else _plain(m)
            for i, m in enumerate(side[shared:])
        )
        for side, field in zip((chosen.messages, rejected.messages), fields)
    ]
    return Pair(
        replace(chosen, messages=a[:shared], format=shape, notes=notes),
        completions[0][0],
        completions[1][0],
        chosen_rest=completions[0][1:],
        rejected_rest=completions[1][1:],
    )


def _plain(message: Message) -> Message:
    """The message as the template sees it: no train flag, loss weight or train_detail."""
    if message.train is None and message.loss_weight is None and message.train_detail is None:
        return message
    return replace(message, train=None, loss_weight=None, train_detail=None)


def _reply(message: Message, *, location: Location, field: str) -> Message:
    """A completion: trained whole, so a train=false, a loss weight or train_detail on it contradicts the data."""
    if message.train is False or message.loss_weight is not None or message.train_detail is not None:
        raise RecordError(
            "a preference completion is trained whole; it cannot carry train=false, a loss weight or train_detail; "
            "remove them",
            location=location,
            field=field,
        )
    return _plain(message)


def _brief(messages: tuple[Message, ...], i: int) -> str:
    """Message `i` in a few words, for a reject's reason."""
    if i >= len(messages):
        return "nothing"
    m = messages[i]
    if m.tool_calls and not m.content:
        return f"{m.role} calling {m.tool_calls[0].name}"
    return f"{m.role} {m.content!r:.40}"


def _column(row: Mapping[str, Any], columns: Columns, name: str) -> str | None:
    """The row's column for field `name`, or None; never raises (detection runs on every SFT record)."""
    return columns.column(row, name)


def _bool_like(value: Any) -> bool:
    """A label that says desirable or not: a JSON bool or its text. Not 0/1: those are class labels."""
    value = _unwrap(value)
    return isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false"))


def _label(value: Any, *, location: Location, field: str) -> bool:
    """A KTO label: true/false, their text, or 1/0 (a build told --task kto reads 1/0 too).

    Raises:
        RecordError: any other value.
    """
    value = _unwrap(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    what = f"must be true (desirable) or false (undesirable), got {value!r:.40}"
    raise RecordError(what, location=location, field=field)


def _rated(row: Mapping[str, Any], columns: Columns) -> bool:
    """UltraFeedback's `completions`: a list of objects with a `response`."""
    column = _column(row, columns, "completions")
    value = row.get(column) if column else None
    return isinstance(value, list) and bool(value) and all(isinstance(c, Mapping) and "response" in c for c in value)


def _best_against_worst(
    row: Mapping[str, Any], columns: Columns, *, location: Location, roles: Mapping[str, str]
) -> Pair:
    """An UltraFeedback row's pair: its first best-scored response against its first worst-scored one.

    Each completion's `custom_system_prompt` differs, so it is no part of the shared prompt
    (HuggingFaceH4's binarization leaves it out too)."""
    col, completions = columns.find(row, "completions", location=location)
    (best, high), (worst, low) = scores.best_and_worst(completions, location=location, field=col or "completions")
    chosen, rejected = (
        conversation(
            row,
            columns,
            INSTRUCTION,
            f"{col}[{j}].response",
            completions[j]["response"],
            fmt="instruction",
            location=location,
            roles=roles,
        )
        for j in (best, worst)
    )
    fields = (f"{col}[{best}]", f"{col}[{worst}]")
    pair = _split(chosen, rejected, shape="ultrafeedback", fields=fields, location=location)
    return replace(pair, chosen_score=high, rejected_score=low)


def _check_prompt_text(row: Mapping[str, Any], columns: Columns, pair: Pair, *, location: Location) -> None:
    """UltraFeedback binarized holds the prompt twice: a `prompt` text beside whole conversations. It must
    be the prompt's last user turn, or the columns disagree about what was asked.

    Raises:
        RecordError: the text differs from that turn.
    """
    col, text = columns.find(row, "instruction", location=location)
    text = _unwrap(text)
    if not isinstance(text, str):
        return
    asked = next((m.content for m in reversed(pair.prompt.messages) if m.role == "user"), None)
    if text != asked:
        raise RecordError(
            f"is {text!r:.40} but the conversations' last user turn is {asked!r:.40}; the columns disagree about the "
            "prompt: fix one, or drop the prompt column",
            location=location,
            field=col,
        )


__all__ = [
    "PREFERENCE_FIELDS",
    "detect_task",
    "looks_like_preference",
    "preference_columns",
    "to_pairs",
    "to_unpaired",
    "unpair",
]
