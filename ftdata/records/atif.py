"""ATIF: agent trajectories as agent harnesses record them (Harbor, terminal-bench, SWE-agent tooling).

One record is one trajectory, a JSON object (the Agent Trajectory Interchange Format, `schema_version`
`"ATIF-v1.x"`): `agent` (with the `tool_definitions` the agent had) and `steps`, each from `system`,
`user` or `agent`. A trajectory file is a source; a folder of them (one JSON per trajectory, as
harnesses write them) is a source of many. The steps become OpenAI messages, which `formats` reads as
any `messages` record:

    system step                   -> system message
    user step                     -> user message
    agent step                    -> assistant message: `message` as content, `reasoning_content`,
                                     `tool_calls` ({tool_call_id, function_name, arguments})
    its observation.results       -> one tool message per result that answers a call (`source_call_id`);
                                     a result of no call (a terminal's output after a text action)
                                     -> a user message, as the harness sends it to the model
    embedded subagent_trajectories -> records of their own (more examples of the same record)

The spec's training rules: a step with `is_copied_context: true` was copied from an earlier trajectory
and is context, never trained; an agent step with `llm_call_count: 0` is a deterministic dispatch, not
the model's output, and is not trained. An agent step's `metrics.completion_token_ids` (v1.3+) are the
tokens the model generated: kept on the message (`Message.token_ids`) so a build can report how far its
own tokens drift from them (`ftdata.run.drift`).

>>> steps = [{"step_id": 1, "source": "user", "message": "hi"}, {"step_id": 2, "source": "agent", "message": "yo"}]
>>> messages, tools, origins, subagents = to_messages({"schema_version": "ATIF-v1.8", "agent": {}, "steps": steps}, None)
>>> [(m["role"], m["content"]) for m in messages], origins
([('user', 'hi'), ('assistant', 'yo')], ['steps[0]', 'steps[1]'])
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ftdata.errors import Location, RecordError

SOURCES = {"system": "system", "user": "user", "agent": "assistant"}


def is_atif(row: Any) -> bool:
    """Whether a row is an ATIF trajectory: an object with `steps` and an `ATIF-…` `schema_version`."""
    return isinstance(row, Mapping) and isinstance(row.get("steps"), list) and str(row.get("schema_version", "")).startswith("ATIF")


def _content(value: Any, *, location: Location | None, field: str) -> str | list[dict[str, Any]]:
    """A step's `message` or a result's `content`: a string, or ContentPart objects as OpenAI parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise RecordError(f"must be a string or a list of content parts, got {type(value).__name__}", location=location, field=field)
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif kind in ("image", "audio") and isinstance(part.get("source"), Mapping) and isinstance(part["source"].get("path"), str):
            parts.append({"type": kind, kind: part["source"]["path"]})
        else:
            raise RecordError(
                'must be {"type": "text", "text": ...} or {"type": "image"|"audio", "source": {"path": ...}}',
                location=location, field=f"{field}[{i}]",
            )  # fmt: skip
    return parts if any(p["type"] != "text" for p in parts) else "".join(p["text"] for p in parts)


def _calls(step: Mapping[str, Any], *, location: Location | None, field: str) -> list[dict[str, Any]]:
    calls = step.get("tool_calls") or []
    if not isinstance(calls, list):
        raise RecordError(f"must be a list of tool calls, got {type(calls).__name__}", location=location, field=f"{field}.tool_calls")
    out = []
    for j, call in enumerate(calls):
        where = f"{field}.tool_calls[{j}]"
        if not isinstance(call, Mapping) or not isinstance(call.get("function_name"), str):
            raise RecordError('must be {"tool_call_id", "function_name", "arguments"}', location=location, field=where)
        out.append({"type": "function", **({"id": str(call["tool_call_id"])} if call.get("tool_call_id") is not None else {}),
                    "function": {"name": call["function_name"], "arguments": call.get("arguments") or {}}})  # fmt: skip
    return out


def _token_ids(step: Mapping[str, Any], *, location: Location | None, field: str) -> list[int] | None:
    metrics = step.get("metrics")
    ids = metrics.get("completion_token_ids") if isinstance(metrics, Mapping) else None
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise RecordError("must be a list of token ids (non-negative integers)", location=location, field=f"{field}.metrics.completion_token_ids")
    return ids


def to_messages(
    row: Mapping[str, Any], location: Location | None
) -> tuple[list[dict[str, Any]], list[Any] | None, list[str], list[Mapping[str, Any]]]:
    """(OpenAI messages, the agent's tool definitions, each message's origin (`steps[3]`,
    `steps[3].observation.results[0]`), the embedded subagent trajectories).

    A message that must not be trained carries `"train": false`; an agent step's completion token ids ride
    on its message as `"token_ids"`.

    Raises:
        RecordError: a step that is not an object, an unknown `source`, a step field of the wrong type.
    """
    steps = row["steps"]
    messages: list[dict[str, Any]] = []
    origins: list[str] = []
    for k, step in enumerate(steps):
        field = f"steps[{k}]"
        if not isinstance(step, Mapping):
            raise RecordError(f"must be a step object, got {type(step).__name__}", location=location, field=field)
        role = SOURCES.get(step.get("source"))  # type: ignore[arg-type]  # a missing source looks up None: no role, refused below
        if role is None:
            raise RecordError(f"source must be system, user or agent, got {step.get('source')!r}", location=location, field=f"{field}.source")
        msg: dict[str, Any] = {"role": role, "content": _content(step.get("message"), location=location, field=f"{field}.message")}
        calls: list[dict[str, Any]] = []
        if role == "assistant":
            calls = _calls(step, location=location, field=field)
            if calls:
                msg["tool_calls"] = calls
            if step.get("reasoning_content") is not None:
                msg["reasoning_content"] = step["reasoning_content"]
            if step.get("is_copied_context") is True or step.get("llm_call_count") == 0:
                msg["train"] = False  # copied context, or a deterministic dispatch: not the model's output
            if (ids := _token_ids(step, location=location, field=field)) is not None:
                msg["token_ids"] = ids
        messages.append(msg)
        origins.append(field)
        observation = step.get("observation")
        if observation is None:
            continue
        results = observation.get("results") if isinstance(observation, Mapping) else None
        if not isinstance(results, list):
            raise RecordError("must be an object with a results list", location=location, field=f"{field}.observation")
        names = {c.get("id"): c["function"]["name"] for c in calls}
        for r, result in enumerate(results):
            where = f"{field}.observation.results[{r}]"
            if not isinstance(result, Mapping):
                raise RecordError(f"must be a result object, got {type(result).__name__}", location=location, field=where)
            content = _content(result.get("content"), location=location, field=f"{where}.content")
            call_id = result.get("source_call_id")
            if call_id is not None and role == "assistant":
                messages.append({"role": "tool", "content": content, "tool_call_id": str(call_id),
                                 **({"name": names[str(call_id)]} if str(call_id) in names else {})})  # fmt: skip
            else:  # the environment's answer to no call (a terminal's output after a text action): the next user turn
                messages.append({"role": "user", "content": content})
            origins.append(where)
    agent = row.get("agent")
    definitions = agent.get("tool_definitions") if isinstance(agent, Mapping) else None
    subagents = row.get("subagent_trajectories") or []
    if not isinstance(subagents, list) or not all(is_atif(s) for s in subagents):
        raise RecordError("must be a list of ATIF trajectories (objects with steps and schema_version)", location=location,
                          field="subagent_trajectories")  # fmt: skip
    return messages, definitions, origins, subagents
