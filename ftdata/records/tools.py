"""Tool use and reasoning in chat data: tool calls, tool schemas, reasoning, template kwargs.

`formats` calls these while it reads a record; each raises a located `RecordError` that
names the field, echoes the value and says the fix. The normal forms, which the renderer
relies on:

- **Tool call**: `ToolCall(name, arguments, id)`. Read from the OpenAI/HF shape
  ``{"id"?, "type": "function", "function": {"name", "arguments"}}`` or the flat
  ``{"name", "arguments", "id"?}``. ``arguments`` stays as the data gave it: a dict, or a
  string holding a JSON object (checked here, not re-encoded); missing or null is ``{}``.
- **Tool schema**: the OpenAI wrapped form ``{"type": "function", "function": {"name", ...}}``,
  the shape `transformers.utils.get_json_schema` returns. A bare ``{"name", "description",
  "parameters"}`` schema is wrapped; its contents are not changed.
- **Reasoning**: one string from ``reasoning_content`` (OpenAI, Qwen, vLLM), ``thinking``
  (gpt-oss) or ``reasoning``; None when absent, null or blank.
- **Template kwargs**: a dict of keyword arguments for the chat template, as given, less
  null values (a key the row lacks, in Arrow-backed datasets).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ftdata.errors import Location, RecordError
from ftdata.types import Message, ToolCall

REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")
ARGUMENTS_FIX = 'give the arguments as an object or a JSON object string such as \'{"city": "Paris"}\''


def _json(value: Any, *, location: Location, field: str, kind: type | tuple[type, ...], what: str, fix: str) -> Any:
    """`value` parsed when it is a string, then checked to be `kind` (described as `what`)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise RecordError(
                f"is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}) in {value!r:.60}; {fix}",
                location=location,
                field=field,
            ) from None
    if not isinstance(value, kind):
        raise RecordError(
            f"must be {what}, got {type(value).__name__} {value!r:.40}; {fix}", location=location, field=field
        )
    return value


def _function(item: Any, *, location: Location, field: str, what: str) -> tuple[dict[str, Any], str]:
    """The function object of a call or schema, wrapped (`{"function": {...}}`) or flat, and its field path."""
    if not isinstance(item, Mapping):
        raise RecordError(f"must be {what}, got {type(item).__name__} {item!r:.40}", location=location, field=field)
    # Arrow-backed datasets fill keys a row lacks with None: a null `type` or `function` is absent.
    kind = item.get("type") or "function"
    if kind != "function":
        raise RecordError(
            f"has type {kind!r}; only function tools are supported", location=location, field=f"{field}.type"
        )
    if item.get("function") is None:
        return {k: v for k, v in item.items() if k != "function"}, field
    if not isinstance(item["function"], Mapping):
        raise RecordError(
            f"must be an object, got {item['function']!r:.40}", location=location, field=f"{field}.function"
        )
    return dict(item["function"]), f"{field}.function"


def _name(func: Mapping[str, Any], *, location: Location, field: str) -> str:
    name = func.get("name")
    if not isinstance(name, str) or not name.strip():
        raise RecordError(
            f"must be the function's name as a non-empty string, got {name!r:.40}",
            location=location,
            field=f"{field}.name",
        )
    return name


def tool_call(item: Any, *, location: Location, field: str) -> ToolCall:
    """One call, from the OpenAI/HF shape or the flat `{name, arguments}` shape.

    >>> call = {"type": "function", "function": {"name": "f", "arguments": '{"x": 1}'}}
    >>> tool_call(call, location=Location("d"), field="c")
    ToolCall(name='f', arguments='{"x": 1}', id=None)
    """
    func, path = _function(item, location=location, field=field, what="a call object {name, arguments}")
    arguments = func.get("arguments")
    if arguments is None:
        arguments = {}
    parsed = _json(
        arguments, location=location, field=f"{path}.arguments", kind=dict, what="a JSON object", fix=ARGUMENTS_FIX
    )
    call_id = item.get("id")
    if call_id is not None and not isinstance(call_id, str):
        raise RecordError(f"must be a string, got {call_id!r:.40}", location=location, field=f"{field}.id")
    return ToolCall(
        _name(func, location=location, field=path), arguments if isinstance(arguments, str) else parsed, call_id
    )


def tool_calls(value: Any, *, location: Location, field: str) -> tuple[ToolCall, ...]:
    """An OpenAI `tool_calls` list (null is no calls)."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise RecordError(
            f"must be a list of calls, got {type(value).__name__} {value!r:.40}", location=location, field=field
        )
    return tuple(tool_call(item, location=location, field=f"{field}[{j}]") for j, item in enumerate(value))


def function_call_turn(value: Any, *, location: Location, field: str) -> tuple[ToolCall, ...]:
    """The value of a ShareGPT `function_call` turn: a call `{name,
    arguments}` or a list of them (JSON text or parsed)."""
    fix = 'give {"name": ..., "arguments": {...}} or a list of such calls'
    parsed = _json(
        value, location=location, field=field, kind=(dict, list), what="a call object or a list of calls", fix=fix
    )
    if isinstance(parsed, dict):
        return (tool_call(parsed, location=location, field=field),)
    if not parsed:
        raise RecordError(f"is an empty list of calls; {fix}", location=location, field=field)
    return tuple(tool_call(item, location=location, field=f"{field}[{j}]") for j, item in enumerate(parsed))


def tool_schemas(value: Any, *, location: Location, field: str) -> tuple[dict[str, Any], ...]:
    """A `tools` column (a list of schemas, or JSON text of one) in the wrapped OpenAI form.

    >>> tool_schemas('[{"name": "f", "parameters": {}}]', location=Location("d"), field="tools")
    ({'type': 'function', 'function': {'name': 'f', 'parameters': {}}},)
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return ()
    fix = "give a JSON list of {name, description, parameters} objects"
    items = _json(value, location=location, field=field, kind=list, what="a list of tool schemas", fix=fix)
    schemas = []
    for j, item in enumerate(items):
        where = f"{field}[{j}]"
        func, path = _function(
            item, location=location, field=where, what="a tool schema {name, description, parameters}"
        )
        _name(func, location=location, field=path)
        if path == where:  # bare schema: wrap it (a Responses-API style "type": "function" moves out)
            func.pop("type", None)
            schemas.append({"type": "function", "function": func})
        else:
            schemas.append({"type": "function", **{k: v for k, v in item.items() if k != "type"}})
    return tuple(schemas)


def escaped_forms(mark: str) -> tuple[str, ...]:
    """The forms a template can write the private-use sentinel `mark` in: as given, JSON-escaped
    (`tojson(ensure_ascii=True)`, Python's `json.dumps` default, and `repr` of a dict: the six
    characters `\\ue000`, in either case; past the BMP a surrogate pair, or `repr`'s `\\U000f0000`) and as
    an HTML character reference (`&#57344;`, `&#xe000;`).

    A template writes a call's arguments through such filters (Reka Edge: `arguments | tojson(ensure_ascii=True)`);
    a sentinel found in none of these forms is one the template did not write.
    """
    code = ord(mark)
    html = (f"&#{code};", f"&#x{code:x};", f"&#x{code:X};")
    if code <= 0xFFFF:
        return (mark, f"\\u{code:04x}", f"\\u{code:04X}", *html)
    high, low = 0xD800 + ((code - 0x10000) >> 10), 0xDC00 + ((code - 0x10000) & 0x3FF)  # JSON: a surrogate pair
    return (mark, f"\\u{high:04x}\\u{low:04x}", f"\\u{high:04X}\\u{low:04X}", f"\\U{code:08x}", *html)


def writes(mark: str, text: str, original: str = "") -> bool:
    """Whether `text` (a render with `mark` in place of a piece of data) holds `mark` in any form a
    template can write it (`escaped_forms`) more often than `original` (the render without it) does:
    data may hold the six characters `\\ue000` itself."""
    return any(text.count(form) > original.count(form) for form in escaped_forms(mark))


def template_kwargs(value: Any, *, location: Location, field: str) -> dict[str, Any]:
    """A per-record `chat_template_kwargs` value: an object, or JSON text of one."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    fix = 'give an object such as {"enable_thinking": false}'
    kwargs = _json(
        value, location=location, field=field, kind=dict, what="an object of chat template arguments", fix=fix
    )
    for key in kwargs:
        if not isinstance(key, str) or not key.isidentifier():
            raise RecordError(
                f"has key {key!r}, which is not a keyword argument name; {fix}", location=location, field=field
            )
    # A null value is a key this row lacks: Arrow-backed datasets give every row every key.
    return {key: v for key, v in kwargs.items() if v is not None}


def reasoning(msg: Mapping[str, Any], *, location: Location, field: str) -> str | None:
    """The reasoning text of a message, from whichever of REASONING_KEYS it uses."""
    found = {key: msg[key] for key in REASONING_KEYS if msg.get(key) is not None}
    for key, text in found.items():
        if not isinstance(text, str):
            raise RecordError(
                f"must be a string, got {type(text).__name__} {text!r:.40}; give the reasoning as text",
                location=location,
                field=f"{field}.{key}",
            )
    texts = {text for text in found.values() if text.strip()}
    if len(texts) > 1:
        raise RecordError(f"{' and '.join(found)} differ; keep one reasoning field", location=location, field=field)
    return texts.pop() if texts else None


def check_result(
    msg: Message, prev: Message | None, calling: Message | None, *, location: Location, field: str
) -> None:
    """A tool result must answer a call: follow the calling assistant turn (`calling`) or another result.

    Raises:
        RecordError: it follows something else, or its `tool_call_id` matches none of the call ids.
    """
    if prev is None or calling is None or prev.role not in ("assistant", "tool"):
        raise RecordError(
            "a tool result must follow an assistant turn with tool_calls (or another tool result); "
            "add the call to the assistant turn before it, or remove this turn",
            location=location,
            field=field,
        )
    ids = [call.id for call in calling.tool_calls if call.id is not None]
    if msg.tool_call_id is not None and ids and msg.tool_call_id not in ids:
        raise RecordError(
            f"tool_call_id {msg.tool_call_id!r} answers no call of the assistant turn before it "
            f"(its call ids: {', '.join(ids)}); fix the id",
            location=location,
            field=f"{field}.tool_call_id",
        )


def name_tool_results(messages: Sequence[Message]) -> tuple[Message, ...]:
    """Fill the `name` of tool results that lack one from the call they answer.

    A result answers the call with its `tool_call_id`; without a matching id, the k-th result
    after an assistant turn answers its k-th call when the counts are equal (LLaMA-Factory's
    `function_call` / `observation` pairs carry no ids). Otherwise the name stays unset.
    """
    out = list(messages)
    for i, msg in enumerate(out):
        if msg.role != "assistant" or not msg.tool_calls:
            continue
        end = i + 1
        while end < len(out) and out[end].role == "tool":
            end += 1
        by_id = {call.id: call.name for call in msg.tool_calls if call.id is not None}
        in_order = end - i - 1 == len(msg.tool_calls)
        for k, j in enumerate(range(i + 1, end)):
            result = out[j]
            named = by_id.get(result.tool_call_id) if result.tool_call_id is not None else None
            name = named or (msg.tool_calls[k].name if in_order else None)
            if result.name is None and name is not None:
                out[j] = replace(result, name=name)
    return tuple(out)
