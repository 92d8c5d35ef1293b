"""Published SFT sets, read as their authors wrote them: each shape becomes OpenAI-style messages (and tool
schemas) that `ftdata.records.formats` then reads like any `messages` record.

Shapes (names accepted by `format=`; each is also detected per record):

- ``nemotron``: Llama-Nemotron post-training (``nvidia/Llama-Nemotron-Post-Training-Dataset``): ``input`` (a list
  of messages) + ``output`` (the assistant's reply, ``<think>…</think>answer`` when ``reasoning`` is ``"on"``);
  ``system_prompt`` (``"detailed thinking on"``) becomes the system turn. The think block is R1-style content
  (`ftdata.chat.think`).
- ``hermes``: Hermes function calling v1 (``NousResearch/hermes-function-calling-v1``): ShareGPT
  ``conversations`` whose system text holds the tool schemas in ``<tools>…</tools>``, whose ``gpt`` turns call
  tools as ``<tool_call>{…}</tool_call>`` text (a JSON or Python-dict body) and whose ``tool`` turns hold
  ``<tool_response>…</tool_response>``. The schemas become the record's ``tools``, the calls ``tool_calls``, each
  response one ``tool`` message; the system text that only carried the schemas and Hermes' call syntax is
  dropped (the target chat template writes its own tool prompt), with a note.
- ``openthoughts``: OpenThoughts-114k: ShareGPT ``conversations`` (``user``/``assistant``) + ``system``; an
  assistant value ``<|begin_of_thought|>…<|end_of_thought|>`` ``<|begin_of_solution|>…<|end_of_solution|>`` is
  the turn's reasoning and its answer.
- ``glaive``: raw glaive-function-calling-v2 (``glaiveai/glaive-function-calling-v2``): ``system``
  (``"SYSTEM: … -"`` then the function schemas as JSON objects) + ``chat`` (``"USER: … ASSISTANT: … <|endoftext|>"``
  with ``<functioncall> {"name", "arguments": '{…}'}`` calls and ``FUNCTION RESPONSE: …`` results).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ftdata.errors import Location, RecordError
from ftdata.outcomes import Note, NoteCode
from ftdata.records import tools

SHAPES = ("nemotron", "hermes", "openthoughts", "glaive")

TOOLS_DROPPED = Note(
    NoteCode.PUBLISHED_SHAPE,
    "the system text that carried the tool schemas and their call syntax became the record's tools; the chat "
    "template writes its own tool prompt",
)


@dataclass(frozen=True, slots=True)
class Chat:
    """A published record as messages: OpenAI-style message dicts, tool schemas, notes, and the record's field
    the messages came from (for errors)."""

    messages: list[dict[str, Any]]
    tools: tuple[dict[str, Any], ...]
    notes: tuple[Note, ...]
    field: str


def _sharegpt(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, Mapping) and "from" in m for m in value)


def _conversations(row: Mapping[str, Any], location: Location) -> list[Any]:
    if not _sharegpt(row.get("conversations")):
        raise RecordError(
            "must be a non-empty ShareGPT list of {from, value} turns", location=location, field="conversations"
        )
    return list(row["conversations"])


def _values(row: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(role as written, value) of each ShareGPT turn that has text."""
    turns = row["conversations"]
    return [(str(m.get("from", "")).lower(), m["value"]) for m in turns if isinstance(m.get("value"), str)]


def detect(row: Mapping[str, Any]) -> str | None:
    """The published shape of `row`, or None (then the ordinary shapes apply)."""
    if isinstance(row.get("chat"), str) and isinstance(row.get("system"), str) and "ASSISTANT:" in row["chat"]:
        return "glaive"
    inputs = row.get("input")
    if (
        isinstance(row.get("output"), str)
        and isinstance(inputs, list)
        and inputs
        and all(isinstance(m, Mapping) and "role" in m for m in inputs)
    ):
        return "nemotron"
    if not _sharegpt(row.get("conversations")):
        return None
    turns = _values(row)
    answers = [v for role, v in turns if role in ("assistant", "gpt")]
    if any("<|begin_of_thought|>" in v or "<|begin_of_solution|>" in v for v in answers):
        return "openthoughts"
    if any(role == "tool" or "<tool_call>" in v or (role == "system" and "<tools>" in v) for role, v in turns):
        return "hermes"
    return None


def read(shape: str, row: Mapping[str, Any], location: Location) -> Chat:
    """`row`, a record of published shape `shape`, as messages.

    Raises:
        RecordError: the record does not hold what its shape writes; the field and the fix are named.
    """
    readers = {"nemotron": _nemotron, "hermes": _hermes, "openthoughts": _openthoughts, "glaive": _glaive}
    return readers[shape](row, location)


def _string(row: Mapping[str, Any], key: str, location: Location) -> str:
    value = row.get(key)
    if not isinstance(value, str):
        raise RecordError(f"must be a string, got {type(value).__name__} {value!r:.40}", location=location, field=key)
    return value


# ---------------------------------------------------------------- Nemotron


def _nemotron(row: Mapping[str, Any], location: Location) -> Chat:
    if not isinstance(row.get("input"), list):
        raise RecordError(
            "must be a list of {role, content} messages (Nemotron's input)", location=location, field="input"
        )
    output = _string(row, "output", location)
    switch = row.get("reasoning")
    if switch is not None and switch not in ("on", "off"):
        raise RecordError(f"must be 'on' or 'off', got {switch!r:.40}", location=location, field="reasoning")
    if switch == "off" and re.match(r"\s*<think>\s*\S", output):
        raise RecordError(
            "holds a <think> block with text but reasoning is 'off'; fix the reasoning field or the output",
            location=location,
            field="output",
        )
    messages = [dict(m) for m in row["input"]]
    system = row.get("system_prompt")
    if system is not None and not isinstance(system, str):
        raise RecordError(f"must be a string, got {type(system).__name__}", location=location, field="system_prompt")
    if system and system.strip():
        if messages and messages[0].get("role") == "system":
            raise RecordError(
                "input starts with a system message and system_prompt is set too; keep one of them",
                location=location,
                field="system_prompt",
            )
        messages.insert(0, {"role": "system", "content": system})
    return Chat([*messages, {"role": "assistant", "content": output}], (), (), "input")


# ---------------------------------------------------------------- OpenThoughts

_THOUGHT = re.compile(
    r"\s*<\|begin_of_thought\|>(.*?)<\|end_of_thought\|>\s*<\|begin_of_solution\|>(.*?)<\|end_of_solution\|>\s*",
    re.DOTALL,
)


def _openthoughts(row: Mapping[str, Any], location: Location) -> Chat:
    messages: list[dict[str, Any]] = []
    if row.get("system") is not None:
        messages.append({"role": "system", "content": _string(row, "system", location)})
    for i, turn in enumerate(_conversations(row, location)):
        role, value = str(turn.get("from", "")).lower(), turn.get("value")
        if role not in ("assistant", "gpt") or not isinstance(value, str) or "<|begin_of_" not in value:
            messages.append(dict(turn))
            continue
        found = _THOUGHT.fullmatch(value)
        if found is None:
            raise RecordError(
                "must be <|begin_of_thought|>…<|end_of_thought|> then <|begin_of_solution|>…<|end_of_solution|> and "
                "nothing else; fix the markers or give the reasoning in a reasoning_content field",
                location=location,
                field=f"conversations[{i}].value",
            )
        messages.append({"role": "assistant", "content": found[2].strip(), "reasoning_content": found[1].strip()})
    return Chat(messages, (), (), "conversations")


# ---------------------------------------------------------------- Hermes function calling v1

_TOOLS = re.compile(r"<tools>(.*?)</tools>", re.DOTALL)
_CALL = re.compile(r"<tool_call>(.*?)</tool_call>", re.DOTALL)
_RESPONSE = re.compile(r"<tool_response>(.*?)</tool_response>", re.DOTALL)


_UNREAD = object()


def _parsed(text: str) -> Any:
    """A JSON value, or a Python literal (Hermes writes schemas and calls as `repr` of a dict); `_UNREAD` if neither."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNREAD


def _literal(text: str, *, location: Location, field: str, what: str) -> Any:
    """`_parsed(text)`, or a located error naming `what` it should have been."""
    value = _parsed(text)
    if value is _UNREAD:
        raise RecordError(
            f"holds {what} that is neither JSON nor a Python literal: {text.strip()!r:.80}; fix the record",
            location=location,
            field=field,
        )
    return value


def _hermes(row: Mapping[str, Any], location: Location) -> Chat:
    messages: list[dict[str, Any]] = []
    schemas: tuple[dict[str, Any], ...] = ()
    notes: tuple[Note, ...] = ()
    for i, turn in enumerate(_conversations(row, location)):
        role, value, where = str(turn.get("from", "")).lower(), turn.get("value"), f"conversations[{i}].value"
        if not isinstance(value, str):
            messages.append(dict(turn))
        elif role == "system" and (blocks := [b for b in _TOOLS.findall(value) if b.strip()]):
            # The preamble names the tags ("within <tools> </tools> XML tags"): the schemas are the block with text.
            for block in blocks:
                found = _literal(block, location=location, field=where, what="a <tools> list")
                listed = found if isinstance(found, list) else [found]
                schemas += tools.tool_schemas(listed, location=location, field=where)
            notes = (TOOLS_DROPPED,)
        elif role in ("gpt", "assistant") and "<tool_call>" in value:
            calls = [_call(body, location=location, field=where) for body in _CALL.findall(value)]
            messages.append({"role": "assistant", "content": _CALL.sub("", value).strip(), "tool_calls": calls})
        elif role == "tool":
            bodies = _RESPONSE.findall(value) or [value]
            messages += [{"role": "tool", "content": body.strip(), **_result_name(body)} for body in bodies]
        else:
            messages.append(dict(turn))
    return Chat(messages, schemas, notes, "conversations")


def _call(body: str, *, location: Location, field: str) -> dict[str, Any]:
    """A `<tool_call>` body, `{"name", "arguments"}` (JSON or a Python dict), as a flat call."""
    call = _literal(body, location=location, field=field, what="a <tool_call>")
    if not isinstance(call, dict):
        raise RecordError(
            f"holds a <tool_call> that is not an object: {body.strip()!r:.60}", location=location, field=field
        )
    return {"name": call.get("name"), "arguments": call.get("arguments")}


def _result_name(body: str) -> dict[str, str]:
    """`{"name": tool}` when a `<tool_response>` body names its tool (Hermes writes `{"name", "content"}`)."""
    parsed = _parsed(body)
    name = parsed.get("name") if isinstance(parsed, dict) else None
    return {"name": name} if isinstance(name, str) and name else {}


# ---------------------------------------------------------------- glaive-function-calling-v2

_SPEAKER = re.compile(
    r"(?:\A|\n{2,})[ \t]*(USER|ASSISTANT|FUNCTION RESPONSE):[ \t]?"
)  # glaive separates turns by blank lines
_FUNCTION_CALL = re.compile(r"<functioncall>\s*(.*)", re.DOTALL)
_GLAIVE_ROLES = {"USER": "user", "ASSISTANT": "assistant", "FUNCTION RESPONSE": "tool"}


def _glaive(row: Mapping[str, Any], location: Location) -> Chat:
    system = _string(row, "system", location).strip()
    system = system.removeprefix("SYSTEM:").strip()
    schemas, intro = _glaive_functions(system, location)
    messages: list[dict[str, Any]] = [{"role": "system", "content": intro}] if intro and not schemas else []
    chat = _string(row, "chat", location)
    pieces = _SPEAKER.split(chat)
    if pieces[0].strip():
        raise RecordError(
            f"must start with 'USER:'; it starts {pieces[0].strip()!r:.40}", location=location, field="chat"
        )
    for k, (speaker, text) in enumerate(zip(pieces[1::2], pieces[2::2])):
        text = text.strip().removesuffix("<|endoftext|>").strip()
        role = _GLAIVE_ROLES[speaker]
        if role == "assistant" and (call := _FUNCTION_CALL.search(text)):
            body = call[1].strip().removesuffix("<|endoftext|>").strip()
            field = f"chat (turn {k + 1}, <functioncall>)"
            messages.append(
                {
                    "role": "assistant",
                    "content": text[: call.start()].strip(),
                    "tool_calls": [_glaive_call(body, location=location, field=field)],
                }
            )
        else:
            messages.append({"role": role, "content": text})
    return Chat(messages, schemas, (TOOLS_DROPPED,) if schemas else (), "chat")


def _glaive_functions(system: str, location: Location) -> tuple[tuple[dict[str, Any], ...], str]:
    """(the schemas, the text before them) of a glaive system string: a sentence, then JSON objects."""
    start = system.find("{")
    if start < 0:
        return (), system
    decoder, found, at = json.JSONDecoder(), [], start
    while at < len(system):
        try:
            schema, end = decoder.raw_decode(system, at)
        except json.JSONDecodeError as exc:
            raise RecordError(
                f"holds a function schema that is not valid JSON ({exc.msg} at character {exc.pos}); fix the record",
                location=location,
                field="system",
            ) from None
        found.append(schema)
        at = end
        while at < len(system) and system[at] in " \t\r\n,":
            at += 1
    return tools.tool_schemas(found, location=location, field="system"), system[:start].strip()


# `{"name": "f", "arguments": '{"x": 1}'}`: glaive quotes the arguments' JSON text in single quotes.
_QUOTED_ARGUMENTS = re.compile(r"""\A\{\s*"name"\s*:\s*"([^"]+)"\s*,\s*"arguments"\s*:\s*'(.*)'\s*\}\Z""", re.DOTALL)


def _glaive_call(body: str, *, location: Location, field: str) -> dict[str, Any]:
    if quoted := _QUOTED_ARGUMENTS.match(body):
        return {"name": quoted[1], "arguments": quoted[2]}
    call = _literal(body, location=location, field=field, what="a function call")
    if not isinstance(call, dict):
        raise RecordError(f"holds a function call that is not an object: {body!r:.60}", location=location, field=field)
    return {"name": call.get("name"), "arguments": call.get("arguments")}
