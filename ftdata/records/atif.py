"""ATIF: agent trajectories as agent harnesses record them (Harbor, terminal-bench, SWE-agent tooling).

One record is one trajectory, a JSON object (the Agent Trajectory Interchange Format, `schema_version`
`"ATIF-v1.x"`): `agent` (with the `tool_definitions` the agent had) and `steps`, each from `system`,
`user` or `agent`. A trajectory file is a source; a folder of them (one JSON per trajectory, as
harnesses write them) is a source of many. The steps become OpenAI messages, which `formats` reads as
any `messages` record:

    system step                   -> system message (after the first too: where the chat template writes
                                     none there, `ftdata.chat.late_system` joins it to a user turn)
    user step                     -> user message (user steps in a row stay so: the template renders them)
    agent step                    -> assistant message: `message` as content, `reasoning_content`,
                                     `tool_calls` ({tool_call_id, function_name, arguments})
    its observation.results       -> one tool message per result that answers a call (`source_call_id`);
                                     a result of no call (a terminal's output after a text action)
                                     -> a user message, as the harness sends it to the model
    embedded subagent_trajectories -> records of their own (more examples of the same record)
    a harness event marker        -> nothing (`_is_event`: a system step whose results only point to
                                     other trajectories), noted
    continued_trajectory_ref,     -> looked up next to the trajectory's file (`locate`): noted as in its
    subagent_trajectory_ref          folder (a record of its own when the folder is built) or missing

Harness logs that are not ATIF (an OpenHands event list, a gemini-cli session) are named with what to
convert them to (`harness_log`).

The spec's training rules: a step with `is_copied_context: true` was copied from an earlier trajectory
and is context, never trained; an agent step with `llm_call_count: 0` is a deterministic dispatch, not
the model's output, and is not trained. An agent step's `metrics.completion_token_ids` (v1.3+) are the
tokens the model generated: kept on the message (`Message.token_ids`) so a build can report how far its
own tokens drift from them (`ftdata.run.drift`).

>>> steps = [{"step_id": 1, "source": "user", "message": "hi"}, {"step_id": 2, "source": "agent", "message": "yo"}]
>>> read = to_messages({"schema_version": "ATIF-v1.8", "agent": {}, "steps": steps}, None)
>>> [(m["role"], m["content"]) for m in read.messages], read.origins
([('user', 'hi'), ('assistant', 'yo')], ['steps[0]', 'steps[1]'])
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.errors import Location, RecordError
from ftdata.outcomes import Note, NoteCode

SOURCES = {"system": "system", "user": "user", "agent": "assistant"}


def is_atif(row: Any) -> bool:
    """Whether a row is an ATIF trajectory: an object with `steps` and an `ATIF-…` `schema_version`."""
    return (
        isinstance(row, Mapping)
        and isinstance(row.get("steps"), list)
        and str(row.get("schema_version", "")).startswith("ATIF")
    )


def _content(value: Any, *, location: Location | None, field: str) -> str | list[dict[str, Any]]:
    """A step's `message` or a result's `content`: a string, or ContentPart objects as OpenAI parts."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise RecordError(
            f"must be a string or a list of content parts, got {type(value).__name__}", location=location, field=field
        )
    parts: list[dict[str, Any]] = []
    for i, part in enumerate(value):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "text", "text": part["text"]})
        elif (
            kind in ("image", "audio")
            and isinstance(part.get("source"), Mapping)
            and isinstance(part["source"].get("path"), str)
        ):
            parts.append({"type": kind, kind: part["source"]["path"]})
        else:
            raise RecordError(
                'must be {"type": "text", "text": ...} or {"type": "image"|"audio", "source": {"path": ...}}',
                location=location,
                field=f"{field}[{i}]",
            )
    return parts if any(p["type"] != "text" for p in parts) else "".join(p["text"] for p in parts)


def _calls(step: Mapping[str, Any], *, location: Location | None, field: str) -> list[dict[str, Any]]:
    calls = step.get("tool_calls") or []
    if not isinstance(calls, list):
        raise RecordError(
            f"must be a list of tool calls, got {type(calls).__name__}", location=location, field=f"{field}.tool_calls"
        )
    out = []
    for j, call in enumerate(calls):
        where = f"{field}.tool_calls[{j}]"
        if not isinstance(call, Mapping) or not isinstance(call.get("function_name"), str):
            raise RecordError('must be {"tool_call_id", "function_name", "arguments"}', location=location, field=where)
        out.append(
            {
                "type": "function",
                **({"id": str(call["tool_call_id"])} if call.get("tool_call_id") is not None else {}),
                "function": {"name": call["function_name"], "arguments": call.get("arguments") or {}},
            }
        )
    return out


def _token_ids(step: Mapping[str, Any], *, location: Location | None, field: str) -> list[int] | None:
    metrics = step.get("metrics")
    ids = metrics.get("completion_token_ids") if isinstance(metrics, Mapping) else None
    if ids is None:
        return None
    if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in ids):
        raise RecordError(
            "must be a list of token ids (non-negative integers)",
            location=location,
            field=f"{field}.metrics.completion_token_ids",
        )
    return ids


@dataclass(frozen=True, slots=True)
class Reference:
    """A trajectory another one points to: its continuation (`continued_trajectory_ref`) or a subagent's
    (`observation.results[].subagent_trajectory_ref`), by file (`path`) or by embedded id (`trajectory_id`)."""

    kind: str  # "continuation" or "subagent"
    field: str
    path: str | None = None
    trajectory_id: str | None = None


@dataclass(frozen=True, slots=True)
class Trajectory:
    """A trajectory read into OpenAI messages (`to_messages`).

    `origins`: each message's step (`steps[3]`, `steps[3].observation.results[0]`); `events`: the steps
    that are harness event markers, not chat turns; `subagents`: the embedded subagent trajectories.
    """

    messages: list[dict[str, Any]]
    definitions: list[Any] | None
    origins: list[str]
    subagents: list[Mapping[str, Any]]
    references: tuple[Reference, ...] = ()
    events: tuple[str, ...] = ()


def _refs(result: Mapping[str, Any], *, location: Location | None, field: str) -> list[Reference]:
    refs = result.get("subagent_trajectory_ref")
    if refs is None:
        return []
    if not isinstance(refs, list) or not all(isinstance(r, Mapping) for r in refs):
        raise RecordError(
            "must be a list of {trajectory_path or trajectory_id}",
            location=location,
            field=f"{field}.subagent_trajectory_ref",
        )
    return [
        Reference(
            "subagent",
            f"{field}.subagent_trajectory_ref[{i}]",
            r.get("trajectory_path") if isinstance(r.get("trajectory_path"), str) else None,
            r.get("trajectory_id") if isinstance(r.get("trajectory_id"), str) else None,
        )
        for i, r in enumerate(refs)
    ]


def _is_event(step: Mapping[str, Any]) -> bool:
    """A harness event marker: a system step whose results only point to other trajectories (Harbor's
    "Performed context summarization and handoff…"). It records what the harness did; no model read it."""
    observation = step.get("observation")
    results = observation.get("results") if isinstance(observation, Mapping) else None
    return (
        step.get("source") == "system"
        and isinstance(results, list)
        and bool(results)
        and all(
            isinstance(r, Mapping) and r.get("subagent_trajectory_ref") and r.get("content") is None for r in results
        )
    )


def _message(step: Mapping[str, Any], role: str, *, location: Location | None, field: str) -> dict[str, Any]:
    content = _content(step.get("message"), location=location, field=f"{field}.message")
    msg: dict[str, Any] = {"role": role, "content": content}
    if role == "assistant":
        if calls := _calls(step, location=location, field=field):
            msg["tool_calls"] = calls
        if step.get("reasoning_content") is not None:
            msg["reasoning_content"] = step["reasoning_content"]
        if step.get("is_copied_context") is True or step.get("llm_call_count") == 0:
            msg["train"] = False  # copied context, or a deterministic dispatch: not the model's output
        if (ids := _token_ids(step, location=location, field=field)) is not None:
            msg["token_ids"] = ids
    return msg


def _results(
    step: Mapping[str, Any], msg: Mapping[str, Any], *, location: Location | None, field: str
) -> tuple[list[Any], list[Reference]]:
    """(message, origin) pairs of a step's observation, and the trajectories its results point to."""
    observation = step.get("observation")
    if observation is None:
        return [], []
    results = observation.get("results") if isinstance(observation, Mapping) else None
    if not isinstance(results, list):
        raise RecordError("must be an object with a results list", location=location, field=f"{field}.observation")
    names = {c.get("id"): c["function"]["name"] for c in msg.get("tool_calls", ())}
    out, refs = [], []
    for r, result in enumerate(results):
        where = f"{field}.observation.results[{r}]"
        if not isinstance(result, Mapping):
            raise RecordError(f"must be a result object, got {type(result).__name__}", location=location, field=where)
        refs += _refs(result, location=location, field=where)
        call_id = result.get("source_call_id")
        if result.get("content") is None and result.get("subagent_trajectory_ref") and call_id is None:
            continue  # only points to a subagent's trajectory: nothing the model read here
        content = _content(result.get("content"), location=location, field=f"{where}.content")
        if call_id is not None and msg["role"] == "assistant":
            out.append(
                (
                    {
                        "role": "tool",
                        "content": content,
                        "tool_call_id": str(call_id),
                        **({"name": names[str(call_id)]} if str(call_id) in names else {}),
                    },
                    where,
                )
            )
        else:  # the environment's answer to no call (a terminal's output after a text action): the next user turn
            out.append(({"role": "user", "content": content}, where))
    return out, refs


def to_messages(row: Mapping[str, Any], location: Location | None) -> Trajectory:
    """The trajectory as OpenAI messages, with the agent's tool definitions, each message's origin, the
    embedded subagent trajectories and the trajectories it points to.

    A message that must not be trained carries `"train": false`; an agent step's completion token ids ride
    on its message as `"token_ids"`. A harness event marker (`_is_event`) makes no message.

    Raises:
        RecordError: a step that is not an object, an unknown `source`, a step field of the wrong type.
    """
    messages: list[dict[str, Any]] = []
    origins: list[str] = []
    refs: list[Reference] = []
    events: list[str] = []
    for k, step in enumerate(row["steps"]):
        field = f"steps[{k}]"
        if not isinstance(step, Mapping):
            raise RecordError(f"must be a step object, got {type(step).__name__}", location=location, field=field)
        role = SOURCES.get(step.get("source"))  # type: ignore[arg-type]  # a missing source looks up None: no role, refused below
        if role is None:
            raise RecordError(
                f"source must be system, user or agent, got {step.get('source')!r}",
                location=location,
                field=f"{field}.source",
            )
        msg = _message(step, role, location=location, field=field)
        results, found = _results(step, msg, location=location, field=field)
        refs += found
        if _is_event(step):
            events.append(field)
            continue
        messages.append(msg)
        origins.append(field)
        for result, where in results:
            messages.append(result)
            origins.append(where)
    agent = row.get("agent")
    definitions = agent.get("tool_definitions") if isinstance(agent, Mapping) else None
    subagents = row.get("subagent_trajectories") or []
    if not isinstance(subagents, list) or not all(is_atif(s) for s in subagents):
        raise RecordError(
            "must be a list of ATIF trajectories (objects with steps and schema_version)",
            location=location,
            field="subagent_trajectories",
        )
    if isinstance(cont := row.get("continued_trajectory_ref"), str) and cont:
        refs.append(Reference("continuation", "continued_trajectory_ref", cont))
    return Trajectory(messages, definitions, origins, subagents, tuple(refs), tuple(events))


def locate(ref: Reference, source: str) -> Path | None:
    """The file `ref` names, next to the trajectory file `source`, or None. Harnesses write one run's files
    as `trajectory.json`, `trajectory.cont-1.json`, ...; a copy that prefixed them all
    (`run-7.trajectory.json`) keeps the prefix on the files it points to, so both names are tried."""
    return next((c for c in _candidates(ref, source) if c.is_file()), None)


def _candidates(ref: Reference, source: str) -> list[Path]:
    """The paths `locate` tries for `ref`, in order."""
    if ref.path is None or "://" in ref.path:
        return []
    folder, name, target = Path(source).parent, Path(source).name, Path(ref.path)
    candidates = [folder / target]
    stem = target.name.split(".", 1)[0] + "."
    if not target.is_absolute() and len(target.parts) == 1 and (at := name.find(stem)) > 0:
        candidates.append(folder / (name[:at] + target.name))
    return candidates


def probed(read: Trajectory, source: str) -> tuple[str, ...]:
    """Every path `notes` looks for a referenced trajectory at: what its notes depend on besides the record."""
    return tuple(str(c) for ref in read.references for c in _candidates(ref, source))


def notes(read: Trajectory, source: str, prefix: str = "") -> list[Note]:
    """What a build says about a trajectory's event markers and the trajectories it points to: a file in its
    folder builds as a record of its own when the folder is the source (an embedded subagent as more examples
    of this record, nothing to say); any other is reported, never silently left out."""
    out = []
    if read.events:
        where = ", ".join(prefix + e for e in read.events)
        out.append(Note(NoteCode.HARNESS_EVENT, f"{where}: a harness event marker, not a chat turn: left out"))
    embedded = {s.get("trajectory_id") for s in read.subagents} - {None}
    found: list[str] = []
    missing: list[str] = []
    for ref in read.references:
        if ref.path is None and ref.trajectory_id in embedded:
            continue
        name = ref.path or f"trajectory_id {ref.trajectory_id!r}"
        (found if locate(ref, source) is not None else missing).append(f"{ref.kind} {name}")
    if found:
        text = f"points to {_many(found)} in its folder: each builds as a record of its own where the folder is read"
        out.append(Note(NoteCode.TRAJECTORY_FOUND, text))
    if missing:
        text = f"points to {_many(missing)} not in its folder: not built; add the files to the source to train them"
        out.append(Note(NoteCode.TRAJECTORY_MISSING, text))
    return out


def _many(names: list[str]) -> str:
    return f"{len(names)} trajector{'y' if len(names) == 1 else 'ies'} ({', '.join(names)})"


def harness_log(row: Any) -> str | None:
    """What a harness's own log is and what to convert it to, for a row that is one (else None): these logs
    record what the harness did, not the conversation the model saw, in a shape of their own."""
    if (
        isinstance(row, Mapping)
        and row.get("source") in ("agent", "user", "environment")
        and "id" in row
        and ("action" in row or "observation" in row)
    ):
        return (
            "is an OpenHands event (id, source, action/observation), a line of an OpenHands event log, not a "
            "conversation: convert the log to an ATIF trajectory (Harbor's OpenHands agent writes trajectory.json "
            "from these events) or to OpenAI messages, and build that"
        )
    messages = row.get("messages") if isinstance(row, Mapping) else None
    gemini = isinstance(messages, list) and any(isinstance(m, Mapping) and m.get("type") == "gemini" for m in messages)
    if gemini and "sessionId" in row:
        return (
            "is a gemini-cli session log (sessionId, messages of type user/gemini), not ATIF or OpenAI messages: "
            "convert it to an ATIF trajectory (Harbor's gemini-cli agent writes trajectory.json from it) or to "
            "OpenAI messages (type gemini -> role assistant), and build that"
        )
    return None
