"""Formats: turn one raw row into `Example`s (conversations), detecting its shape per record.

Shapes (names accepted by `format=`):

- ``instruction``: ``instruction``/``input``/``output`` and their aliases (``prompt``,
  ``question``, ``query`` / ``context`` / ``response``, ``answer``, ``completion``), an optional
  ``system`` and an optional LLaMA-Factory ``history`` of ``[user, assistant]`` pairs.
  Self-instruct seeds (``instances: [{input, output}]``) become one example per instance.
  Values wrapped as ``{"0": text}`` (a pandas export, "nested Q&A") are unwrapped.
- ``messages``: OpenAI ``messages: [{role, content}]``; content may be a list of typed parts.
  Assistant turns may carry ``tool_calls`` (content then null or empty) and reasoning
  (``reasoning_content``, ``thinking``, ``reasoning``); ``tool`` turns carry ``tool_call_id``
  and ``name``.
- ``sharegpt``: ``conversations: [{from, value}]`` with ``human``/``gpt`` style roles;
  LLaMA-Factory's ``function_call`` turns become assistant tool calls, ``observation`` turns
  tool results.
- ``chat``: a bare list of messages (the row itself is a list).
- ``atif``: an agent trajectory in the Agent Trajectory Interchange Format (``schema_version``
  ``"ATIF-v1.x"``, ``steps``): `ftdata.records.atif` turns its steps into messages and its
  agent's ``tool_definitions`` into the record's tools; copied-context steps and deterministic
  dispatches (``llm_call_count: 0``) are not trained.

- ``text``: a plain ``text`` document and nothing to answer (TRL's language-modelling rows, LLaMA-Factory's
  pre-training stage): every token is trained, the tokenizer's end-of-text token closes it (`TEXT_RECORD`).
- ``segments``: axolotl's template-free ``input_output`` rows, ``segments: [{"text", "label"}]``: the texts joined
  as written (no template, no end-of-text added: the data writes its own), trained where ``label`` is true.
- ``claude_code``, ``codex``, ``pi``: an agent session file (one JSON event per line, read whole as one
  record by `ftdata.io.sessions`): `ftdata.records.sessions` turns its events into conversations. A row of
  `datasets`' agent-trace reader or of prime-rl's traces-to-HF export is a ``messages`` record
  (`ftdata.records.sessions.rows`).

- ``nemotron``, ``hermes``, ``openthoughts``, ``glaive``: published SFT sets as their authors wrote them
  (`ftdata.records.published`), detected before the shapes above.

Any shape may have a ``tools`` column (tool schemas) and a ``chat_template_kwargs`` column;
`ftdata.records.tools` reads them and defines the normal forms the renderer relies on.

A column map renames source fields to canonical ones: ``{"output": "std_answer"}``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from ftdata.records import atif, parts, published, sessions, supervision, tools
from ftdata.records.sessions.rows import trace_row
from ftdata.records.media import content_parts, has_media
from ftdata.records.unread import unread
from ftdata.errors import ConfigError, Location, RecordError, UnusableRecord
from ftdata.outcomes import Note, NoteCode, RejectCode
from ftdata.types import ROLES, SESSION_HARNESSES, Example, Message, TrainSpan

FORMATS = (
    "instruction",
    "messages",
    "sharegpt",
    "chat",
    "atif",
    "text",
    "segments",
    *SESSION_HARNESSES,
    *published.SHAPES,
)
# What other tools call the same shapes (LLaMA-Factory and axolotl's `alpaca`, OpenAI's chat format).
FORMAT_ALIASES = {"alpaca": "instruction", "openai": "messages"}


def format_name(value: Any) -> str | None:
    """`format` as given -> one of FORMATS (an alias mapped), or None for "detect".

    Raises:
        ConfigError: an unknown name, listing the valid ones.
    """
    if value is None:
        return None
    name = FORMAT_ALIASES.get(value, value) if isinstance(value, str) else value
    if name not in FORMATS:
        known = ", ".join((*FORMATS, *FORMAT_ALIASES))
        raise ConfigError(f"format must be one of {known}, got format={value!r}")
    return name


# Canonical instruction field -> accepted source names, in priority order.
FIELD_ALIASES: dict[str, tuple[str, ...]] = {
    "instruction": ("instruction", "prompt", "question", "query"),
    "input": ("input", "context"),
    "output": ("output", "response", "answer", "completion"),
    "system": ("system",),
    "history": ("history",),
    "messages": ("messages", "conversations", "conversation"),
    "tools": ("tools",),
    "chat_template_kwargs": ("chat_template_kwargs",),
    "text": ("text",),
    # The keys inside each message (LLaMA-Factory's role_tag/content_tag, axolotl's message_property_mappings);
    # unmapped, a message is read by role/content or ShareGPT's from/value.
    "role": ("role", "from"),
    "content": ("content", "value"),
}
MESSAGE_KEYS = ("role", "content")  # fields of each message, not columns of the row

ROLE_ALIASES: dict[str, str] = {
    "human": "user",
    "prompter": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "bing": "assistant",
    "function_call": "assistant",
    "tool_call": "assistant",  # ms-swift's agent format: a call turn, like ShareGPT's function_call
    "tool_response": "tool",
    "observation": "tool",
    "function": "tool",
    "ipython": "tool",
}
# A `function_call` / `tool_call` turn's value is the call itself (JSON), read into the assistant turn's tool_calls.
CALL_ROLES = frozenset({"function_call", "tool_call"})


def _unwrap(value: Any) -> Any:
    """`{"0": text}` (one pandas cell) -> text."""
    if isinstance(value, dict) and len(value) == 1:
        ((key, inner),) = value.items()
        if isinstance(key, str) and key.isdigit():
            return inner
    return value


def _text(value: Any, *, location: Location, field: str, required: bool = True) -> str:
    """Validate a text field: a string, or a list of typed text parts."""
    value = _unwrap(value)
    if value is None:
        if not required:
            return ""
        raise RecordError("is null; give a string", location=location, field=field)
    if isinstance(value, list):  # [{"type": "text", "text"|"value": "..."}]
        parts = []
        for part in value:
            if isinstance(part, dict) and part.get("type", "text") == "text":
                text = part.get("text", part.get("value"))
                if isinstance(text, str):
                    parts.append(text)
                    continue
            raise RecordError(
                f"has a content part {str(part)[:60]!r} that is not text; only text parts are supported",
                location=location,
                field=field,
            )
        return "".join(parts)
    if not isinstance(value, str):
        raise RecordError(f"must be a string, got {type(value).__name__} {value!r:.40}", location=location, field=field)
    return value


def at_path(row: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """`(found, value)` of column `path` in `row`: a column of that very name, else a dotted path into nested
    objects (`reward_model.ground_truth` -> `row["reward_model"]["ground_truth"]`)."""
    if path in row:
        return True, row[path]
    value: Any = row
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return False, None
        value = value[key]
    return "." in path, value


class Columns:
    """A column map `{canonical: source_column}` applied on top of the alias lists, before detection.

    `fields` is the alias table (canonical field -> accepted source names): SFT's FIELD_ALIASES by
    default; preference data adds its own fields (`ftdata.records.preference.PREFERENCE_FIELDS`). A source
    column may be a dotted path into a nested object (`answer=reward_model.ground_truth`). A column mapped to
    one field is read only as that field: no other field's alias list finds it (`instruction=input` leaves no
    `input` to read as the context). `named=True` (a prompt set) takes keys outside `fields` too: each names a
    column of the rows (`answer=reward_model.ground_truth` makes an `answer` reward column), in `named`.
    """

    def __init__(
        self,
        mapping: Mapping[str, str] | None = None,
        *,
        fields: Mapping[str, tuple[str, ...]] = FIELD_ALIASES,
        named: bool = False,
    ):
        mapping = dict(mapping or {})
        self.fields = fields
        canon = {alias: name for name, aliases in fields.items() for alias in aliases}
        self.explicit: dict[str, str] = {}
        self.named: dict[str, str] = {}  # a prompt set's columns made from a source column (keys outside `fields`)
        for key, column in mapping.items():
            if not isinstance(column, str) or not column:
                raise ConfigError(
                    f"column map: {key}={column!r} names no column; write {key}=COLUMN (a dotted path reads a "
                    "nested field)"
                )
            if key in canon:
                if canon[key] in self.explicit and self.explicit[canon[key]] != column:
                    raise ConfigError(
                        f"column map: {canon[key]} is mapped twice ({self.explicit[canon[key]]!r} and {column!r}); "
                        "keep one"
                    )
                self.explicit[canon[key]] = column
            elif named:
                self.named[key] = column
            else:
                names = ", ".join(sorted(fields))
                raise ConfigError(f"column map key must be one of {names}; got {key!r}={column!r}")
        # Top-level columns the map claims: a field's aliases never find them (a mapped column is read once).
        self.claimed = frozenset(
            c for k, c in (*self.explicit.items(), *self.named.items()) if "." not in c and k not in MESSAGE_KEYS
        )
        # Each field's aliases the map leaves to it, in order (every record asks these a dozen times).
        self._aliases = {name: tuple(a for a in aliases if a not in self.claimed) for name, aliases in fields.items()}

    @property
    def message_keys(self) -> dict[str, str]:
        """The keys of each message's role and content that the map names (`role=speaker`), for `_messages`."""
        return {key: self.explicit[key] for key in MESSAGE_KEYS if key in self.explicit}

    def find(self, row: Mapping[str, Any], name: str, *, location: Location) -> tuple[str | None, Any]:
        """The (column, value) for canonical field `name`, or (None, None). Rejects ambiguity."""
        if name in self.explicit:
            column = self.explicit[name]
            found, value = at_path(row, column)
            if not found:
                raise RecordError(
                    f"mapped column {column!r} is missing; columns are {', '.join(map(str, row))}",
                    location=location,
                    field=name,
                )
            return column, value
        present = [a for a in self._aliases[name] if a in row]
        if len(present) > 1:
            values = {a: _unwrap(row[a]) for a in present}
            if len({repr(v) for v in values.values()}) > 1:
                raise RecordError(
                    f"columns {' and '.join(present)} both look like the {name} and differ; "
                    f"choose one with a column map, e.g. --columns {name}={present[0]}",
                    location=location,
                    field=name,
                )
        return (present[0], row[present[0]]) if present else (None, None)

    def column(self, row: Mapping[str, Any], name: str) -> str | None:
        """The row's column (or dotted path) for field `name`, or None; never raises (detection asks every record)."""
        if name in self.explicit:
            return self.explicit[name] if at_path(row, self.explicit[name])[0] else None
        for alias in self._aliases[name]:
            if alias in row:
                return alias
        return None

    def value(self, row: Mapping[str, Any], name: str) -> Any:
        """The value of field `name` in `row` (None when the row has none); never raises."""
        column = self.column(row, name)
        return None if column is None else at_path(row, column)[1]


def detect(row: Any, columns: Columns) -> str:
    """The format name of one row, read through the column map (`messages=dialog` is a conversation whatever
    the column is called; `instruction=...` or `output=...` mapped: instruction data)."""
    if isinstance(row, list):
        return "chat"
    if not isinstance(row, Mapping):
        return "unknown"
    if atif.is_atif(row):
        return "atif"
    if (harness := sessions.harness(row)) is not None:
        return harness
    if not columns.explicit and (shape := published.detect(row)) is not None:  # a column map says how to read it
        return shape
    if _conversational_pair(row, columns):
        return "messages"
    if "messages" not in columns.explicit and {"instruction", "output"} & set(columns.explicit):
        return "instruction"
    if "messages" in columns.explicit or columns.column(row, "messages") is not None:
        value = columns.value(row, "messages")
        if isinstance(value, list) and value and isinstance(value[0], dict) and "from" in value[0]:
            return "sharegpt"
        return "messages"
    if any(columns.column(row, name) for name in ("instruction", "output")):
        return "instruction"
    if isinstance(row.get("segments"), list) and not columns.explicit:
        return SEGMENTS
    return "text" if columns.column(row, "text") is not None else "instruction"


# A prompt template's own header at the start of a line: data that is already formatted.
_TEMPLATE_HEADER = re.compile(r"^[ \t]*(### ?(?:Instruction|Question|Input|Response|Answer)):", re.M)


def preformatted(example: Example) -> Example:
    """`example`, with a note when a user turn already holds a prompt template's header
    (`### Question:`): the template wraps it again, and the model learns the doubled format."""
    for message in example.messages:
        if message.role == "user" and (found := _TEMPLATE_HEADER.search(message.content)):
            note = Note(
                NoteCode.PREFORMATTED,
                f"the prompt already holds a prompt template's {found.group(1) + ':'!r} header and the template wraps "
                "it again (the model learns both formats); strip the headers from the data if it is pre-formatted",
            )
            return replace(example, notes=(*example.notes, note))
    return example


def _is_messages(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, Mapping) and "role" in m for m in value)


def _conversational_pair(row: Mapping[str, Any], columns: Columns) -> bool:
    """TRL's conversational prompt-completion row: `{"prompt": [messages], "completion": [messages]}`; also
    under other names through the map (OpenRLHF's `input_key` messages + `output_key`: `--columns
    instruction=context_messages,output=response`), the completion then messages or one reply's text."""
    if columns.explicit.get("messages"):
        return False
    completion = columns.value(row, "output")
    return _is_messages(columns.value(row, "instruction")) and (_is_messages(completion) or isinstance(completion, str))


def _pair_messages(row: Mapping[str, Any], columns: Columns) -> tuple[str, list[Any]]:
    """The prompt's messages then the completion's, as one conversation, and where they came from. As in TRL,
    only the completion is trained: an assistant turn in the prompt is context (train=false) unless it says
    otherwise."""
    prompt_col, completion_col = columns.column(row, "instruction"), columns.column(row, "output")
    prompt = [
        m if m.get("role") != "assistant" or any(k in m for k in supervision.TRAIN_FLAGS) else {**m, "train": False}
        for m in columns.value(row, "instruction")
    ]
    completion = columns.value(row, "output")
    if isinstance(completion, str):  # one reply's text
        completion = [{"role": "assistant", "content": completion}]
    return f"{prompt_col}+{completion_col}", [*prompt, *completion]


def _role(raw: Any, *, location: Location, field: str, roles: Mapping[str, str]) -> str:
    if not isinstance(raw, str):
        raise RecordError(f"role must be a string, got {raw!r}", location=location, field=field)
    key = raw.strip().lower()
    role = roles.get(key) or ROLE_ALIASES.get(key) or (key if key in ROLES else None)
    if role is None:
        raise RecordError(
            f"unknown role {raw!r}; known roles are {', '.join(ROLES)} and aliases "
            f"{', '.join(sorted(ROLE_ALIASES))}; map it with roles={{{raw!r}: 'assistant'}}",
            location=location,
            field=field,
        )
    return role


NEEDS_ROLE_AND_CONTENT = "needs 'role' and 'content' (or ShareGPT 'from' and 'value')"


def _messages(
    items: Any, *, location: Location, field: str, roles: Mapping[str, str], keys: Mapping[str, str] | None = None
) -> tuple[tuple[Message, ...], list[Note]]:
    """The messages of `items`; `keys`: the keys of each message's role and content (`Columns.message_keys`)."""
    keys = keys or {}
    if not isinstance(items, list) or not items:
        raise RecordError("must be a non-empty list of messages", location=location, field=field)
    out: list[Message] = []
    notes: list[Note] = []
    items, origins = _exchanges(items, field)
    calling = False  # the message before was a call turn
    for i, msg in enumerate(items):
        where = origins[i]
        if not isinstance(msg, Mapping):
            raise RecordError(
                f"must be an object with role and content, got {type(msg).__name__}", location=location, field=where
            )
        role_key = keys.get("role") or ("role" if "role" in msg else "from")
        content_key = keys.get("content") or ("content" if "content" in msg else "value")
        if role_key not in msg:
            raise RecordError(NEEDS_ROLE_AND_CONTENT, location=location, field=where)
        raw_role = msg[role_key]
        role = _role(raw_role, location=location, field=f"{where}.{role_key}", roles=roles)
        if role != str(raw_role).strip().lower():
            notes.append(Note(NoteCode.ROLE_MAPPED, f"role {raw_role!r} mapped to {role!r}"))
        if str(raw_role).strip().lower() not in CALL_ROLES:
            out.append(_message(msg, role, content_key, location=location, where=where))
            calling = False
            continue
        # ShareGPT (LLaMA-Factory) `function_call`, ms-swift `tool_call`: the turn's value is the call itself, JSON
        # {name, arguments}; ms-swift writes parallel calls as call turns in a row, joined into one assistant turn.
        calls = tools.function_call_turn(msg.get(content_key), location=location, field=f"{where}.{content_key}")
        if out and out[-1].role == "assistant" and (calling or not out[-1].tool_calls):  # text, then its calls
            last = out.pop()
            out.append(replace(last, tool_calls=(*last.tool_calls, *calls)))
            if not calling:
                joined = f"a {str(raw_role).strip().lower()} turn joined the assistant text before it"
                notes.append(Note(NoteCode.FUNCTION_CALL_JOINED, joined))
        else:
            out.append(
                Message("assistant", "", supervision.train_flag(msg, location=location, field=where), tool_calls=calls)
            )
        calling = True
    return tools.name_tool_results(out), notes


# ms-swift's and Firefly/MOSS's exchanges: `conversation: [{"human": q, "assistant": a}, ...]`, one dict a round.
EXCHANGE_KEYS = {"human": "user", "user": "user", "assistant": "assistant", "gpt": "assistant"}


def _exchange(item: Any) -> bool:
    return isinstance(item, Mapping) and not {"role", "from"} & set(item) and bool(EXCHANGE_KEYS.keys() & set(item))


def _exchanges(items: list[Any], field: str) -> tuple[list[Any], list[str]]:
    """The messages of `items`, an exchange dict (no role key; `human`/`assistant` keys) read as its user turn
    then its assistant turn; and where each message came from (`conversation[2].assistant`)."""
    if not any(map(_exchange, items)):
        return items, [f"{field}[{i}]" for i in range(len(items))]
    out: list[Any] = []
    origins: list[str] = []
    for i, item in enumerate(items):
        if _exchange(item):
            for key, value in item.items():
                out.append({"role": EXCHANGE_KEYS.get(key, key), "content": value})
                origins.append(f"{field}[{i}].{key}")
        else:
            out.append(item)
            origins.append(f"{field}[{i}]")
    return out, origins


def _message(msg: Mapping[str, Any], role: str, content_key: str, *, location: Location, where: str) -> Message:
    """One OpenAI-style message: content, tool calls, reasoning, and a tool result's name and call id."""
    msg = parts.lift(msg, content_key, location=location, field=where)  # reasoning / tool_call content parts
    calls = tools.tool_calls(msg.get("tool_calls"), location=location, field=f"{where}.tool_calls")
    if not calls and msg.get("function_call") is not None:  # OpenAI's legacy single `function_call`
        calls = (tools.tool_call(msg["function_call"], location=location, field=f"{where}.function_call"),)
    if content_key not in msg and not calls:
        raise RecordError(NEEDS_ROLE_AND_CONTENT, location=location, field=where)
    content = msg.get(content_key)
    if content is None and role == "assistant":  # OpenAI writes null content on a turn that only calls tools
        content = ""
    media: tuple[Any, ...] = ()
    if isinstance(content, list) and has_media(
        content
    ):  # image parts: a placeholder per image, its reference in `media`
        content, media = content_parts(content, location=location, field=f"{where}.{content_key}")
    # A tool result names its tool and the call it answers; other turns' `name` (OpenAI's
    # participant name) is not read.
    name, call_id = (
        (_text(msg.get(key), location=location, field=f"{where}.{key}", required=False) or None)
        if role == "tool"
        else None
        for key in ("name", "tool_call_id")
    )
    text = _text(content, location=location, field=f"{where}.{content_key}")
    return Message(
        role,  # type: ignore[arg-type]  # a role checked against the roles above; its type stays str
        text,
        supervision.train_flag(msg, location=location, field=where),
        tool_calls=calls,
        reasoning=tools.reasoning(msg, location=location, field=where),
        name=name,
        tool_call_id=call_id,
        media=media,
        loss_weight=supervision.loss_weight(msg, location=location, field=where),
        train_detail=supervision.train_detail(
            msg.get("train_detail"), text, location=location, field=f"{where}.train_detail"
        ),
    )


def validate(
    messages: tuple[Message, ...],
    *,
    location: Location,
    field: str = "messages",
    reply: bool = True,
    trajectory: bool = False,
) -> None:
    """Conversation rules every renderer relies on. `reply`: it must hold an assistant turn (a prompt set's
    prompt, which ends before the model's turn, need not). `trajectory`: an agent trajectory (ATIF), whose
    spec allows a system step anywhere and user steps in a row: those are left to the chat template, which
    renders them or says why not (`ftdata.chat.render`).

    Raises:
        UnusableRecord: no assistant turn, an assistant turn with neither text nor tool calls,
            or an assistant turn before any user turn (well-formed, but nothing sound to train on).
        RecordError: a system turn that is not first; two user/assistant turns in a row; tool
            calls or reasoning on a turn that is not the assistant's; a tool result that does
            not follow an assistant turn with tool calls (or another tool result), or whose
            `tool_call_id` matches none of that turn's call ids.
    """
    seen_user = False
    calling: Message | None = None  # the last assistant turn that called tools
    for i, (prev, msg) in enumerate(zip((None, *messages), messages)):
        where = f"{field}[{i}]"
        if msg.role == "system" and i != 0 and not trajectory:
            raise RecordError("a system message must come first", location=location, field=where)
        if msg.role != "assistant" and (msg.tool_calls or msg.reasoning is not None):
            raise RecordError(
                f"a {msg.role} turn cannot carry tool calls or reasoning; move them to an assistant turn",
                location=location,
                field=where,
            )
        if msg.role == "user":
            seen_user = True
        if msg.role == "assistant":
            if not seen_user:
                raise UnusableRecord(
                    "assistant turn before any user turn; add the user message",
                    location=location,
                    field=where,
                    code=RejectCode.ASSISTANT_FIRST,
                )
            if not msg.content.strip() and not msg.tool_calls:
                replies = [j for j, m in enumerate(messages) if m.role == "assistant"]
                raise UnusableRecord(
                    f"empty assistant response at {where} (assistant turn {replies.index(i) + 1} of {len(replies)}, "
                    f"message {i + 1} of {len(messages)}); remove the record or fill the response",
                    location=location,
                    field=where,
                    code=RejectCode.EMPTY_RESPONSE,
                )
            calling = msg if msg.tool_calls else None
        if msg.role == "tool":
            tools.check_result(msg, prev, calling, location=location, field=where)
        in_a_row = prev is not None and prev.role == msg.role and msg.role in ("user", "assistant")
        if in_a_row and not (trajectory and msg.role == "user"):
            raise RecordError(f"two {msg.role} turns in a row; merge them into one", location=location, field=where)
    if reply and not any(m.role == "assistant" for m in messages):
        raise UnusableRecord(
            "no assistant turn; nothing to train on: add the reply, or, if these are prompts for GRPO/RLOO, build a "
            "prompt set with --task prompts",
            location=location,
            field=field,
            code=RejectCode.NO_ASSISTANT,
        )


def _nearest(row: Mapping[str, Any]) -> str:
    """For an unreadable row: its columns whose names are near a field's (`instrution`, `respone`, `conversation_a`),
    as the column map that reads them ("" for none)."""
    canon = {alias: name for name, aliases in FIELD_ALIASES.items() for alias in aliases}
    near = {
        str(column): canon[match[0]]
        for column in row
        if (match := difflib.get_close_matches(str(column).lower(), canon, n=1, cutoff=0.75))
    }
    if not near:
        return ""
    return " (nearest: --columns " + ",".join(f"{field}={column}" for column, field in near.items()) + ")"


def _instruction(row: Mapping[str, Any], columns: Columns, location: Location) -> tuple[Example, ...]:
    instr_col, instruction = columns.find(row, "instruction", location=location)
    if instr_col is None and "input_ids" in row:
        raise RecordError(
            "is already tokenized (input_ids); ftdata builds rows from text, so it cannot check what these ids train: "
            "give the records as text (messages, or instruction/output), or train the tokenized file as it is "
            "(`datasets.load_from_disk` / TRL with dataset_kwargs={'skip_prepare_dataset': True})",
            location=location,
            field="input_ids",
        )
    if instr_col is None:
        raise RecordError(
            f"no instruction field (looked for {', '.join(FIELD_ALIASES['instruction'])}); columns are "
            f"{', '.join(map(str, row))}; map one with --columns instruction=COLUMN{_nearest(row)}",
            location=location,
            field="instruction",
        )
    instruction = _text(instruction, location=location, field=instr_col)
    _, system = columns.find(row, "system", location=location)
    system = _text(system, location=location, field="system", required=False)
    prefix: list[Message] = [Message("system", system)] if system else []
    _, history = columns.find(row, "history", location=location)
    for i, pair in enumerate(history or []):
        if not (isinstance(pair, list) and len(pair) == 2):
            raise RecordError("must be a list of [user, assistant] pairs", location=location, field=f"history[{i}]")
        prefix.append(Message("user", _text(pair[0], location=location, field=f"history[{i}][0]")))
        prefix.append(Message("assistant", _text(pair[1], location=location, field=f"history[{i}][1]")))

    if "instances" in row and columns.find(row, "output", location=location)[0] is None:
        cases = row["instances"]
        if not isinstance(cases, list) or not cases:
            raise RecordError("must be a non-empty list of {input, output}", location=location, field="instances")
        pairs = [(c, f"instances[{i}].") for i, c in enumerate(cases)]
    else:
        pairs = [(row, "")]
    examples = []
    for case, path in pairs:
        if not isinstance(case, Mapping):
            raise RecordError("must be an object", location=location, field=path.rstrip("."))
        out_col, output = columns.find(case, "output", location=location)
        if out_col is None:
            raise RecordError(
                f"no response field (looked for {', '.join(FIELD_ALIASES['output'])}); columns are "
                f"{', '.join(map(str, case))}; map one with --columns output=COLUMN",
                location=location,
                field=f"{path}output",
            )
        output = _text(output, location=location, field=path + out_col)
        if not output.strip():
            raise UnusableRecord(
                "empty response; remove the record or fill the response",
                location=location,
                field=path + out_col,
                code=RejectCode.EMPTY_RESPONSE,
            )
        in_col, context = columns.find(case, "input", location=location)
        context = _text(context, location=location, field=path + (in_col or "input"), required=False)
        messages = (*prefix, Message("user", instruction), Message("assistant", output))
        validate(messages, location=location, field="history")
        examples.append(Example(messages, location, context=context, format="instruction"))
    return tuple(examples)


TEXT_RECORD = "text"
"""The `format` of a plain-text document: one assistant message holding the whole text, trained whole, with no
template around it (`ftdata.chat.render` writes it as the text and the end-of-text token)."""
SEGMENTS = "segments"
"""The `format` of axolotl's template-free rows: one assistant message holding the joined segments, each segment a
`train_detail` span (`ftdata.chat.supervision` masks the untrained ones); rendered as written (`ftdata.chat.render`)."""


def _segments(row: Mapping[str, Any], location: Location) -> tuple[Example, ...]:
    """Axolotl's `input_output` row, `segments: [{"text": ..., "label": true|false}]`, as one document.

    Raises:
        RecordError: segments that are not a list of {text, label} objects.
        UnusableRecord: no segment is trained, or the text is empty.
    """
    texts: list[str] = []
    spans: list[TrainSpan] = []
    at = 0
    for i, segment in enumerate(row["segments"]):
        where = f"segments[{i}]"
        if not isinstance(segment, Mapping) or not isinstance(segment.get("text"), str):
            raise RecordError('must be {"text": str, "label": true|false}', location=location, field=where)
        text, label = segment["text"], segment.get("label", True)
        if not isinstance(label, bool):
            raise RecordError(f"label is {label!r:.30}; give true or false", location=location, field=where)
        if text:
            spans.append(TrainSpan(at, at + len(text) - 1, label))  # end inclusive, as train_detail
        texts.append(text)
        at += len(text)
    content = "".join(texts)
    if not any(span.train for span in spans):
        raise UnusableRecord(
            "no segment with label true holds text; nothing to train",
            location=location,
            field="segments",
            code=RejectCode.NOTHING_TO_TRAIN,
        )
    return (Example((Message("assistant", content, train_detail=tuple(spans)),), location, format=SEGMENTS),)


def _document(row: Mapping[str, Any], columns: Columns, location: Location) -> tuple[Example, ...]:
    """A plain `text` record as one document: every character trained.

    Raises:
        RecordError: no text column, or a text that is not a string.
        UnusableRecord: an empty text (`empty_response`).
    """
    column, value = columns.find(row, "text", location=location)
    if column is None:
        raise RecordError(
            f"format 'text' needs a 'text' column; columns are {', '.join(map(str, row))}; map one with --columns "
            "text=COLUMN",
            location=location,
            field="text",
        )
    text = _text(value, location=location, field=column)
    if not text.strip():
        raise UnusableRecord(
            "empty text; remove the record", location=location, field=column, code=RejectCode.EMPTY_RESPONSE
        )
    return (Example((Message("assistant", text),), location, format=TEXT_RECORD),)


def to_examples(
    row: Any,
    location: Location,
    *,
    format: str | None = None,
    columns: Columns | None = None,
    roles: Mapping[str, str] | None = None,
) -> tuple[Example, ...]:
    """Convert one raw row to examples (one, or one per self-instruct instance).

    Raises:
        RecordError: the row does not fit its (detected or given) format; the message names
            the location, the field and the fix.
    """
    if isinstance(row, RecordError):  # a reader could not read this row faithfully (see readers.py)
        raise row
    examples = _to_examples(row, location, format=format, columns=columns, roles=roles)
    return tuple(map(preformatted, unread(examples, row, location, (columns or Columns()).claimed)))


def _to_examples(
    row: Any, location: Location, *, format: str | None, columns: Columns | None, roles: Mapping[str, str] | None
) -> tuple[Example, ...]:
    columns = columns or Columns()
    roles = {k.lower(): v for k, v in (roles or {}).items()}
    if format is None and (native := atif.harness_log(row)) is not None:
        raise RecordError(native, location=location)
    if format in (None, "messages") and (published_row := trace_row(row, location)) is not None:
        found = _to_examples(published_row[0], location, format="messages", columns=columns, roles=roles)
        return tuple(replace(e, notes=(*e.notes, *published_row[1])) for e in found)
    name = format or detect(row, columns)
    if name == "atif":
        return _trajectory(row, location, roles)
    if name in SESSION_HARNESSES:
        return _session(row, location, roles, name)
    if name in published.SHAPES:
        return _published(name, row, location, roles)
    if name == "chat":
        if not isinstance(row, list):
            raise RecordError(f"format 'chat' needs a list of messages, got {type(row).__name__}", location=location)
        msgs, notes = _messages(row, location=location, field="messages", roles=roles, keys=columns.message_keys)
    elif name in ("messages", "sharegpt"):
        if not isinstance(row, Mapping):
            raise RecordError(f"expected an object, got {type(row).__name__}", location=location)
        col, items = columns.find(row, "messages", location=location)
        if col is None and _conversational_pair(row, columns):
            col, items = _pair_messages(row, columns)
        if col is None:
            raise RecordError(
                f"format {name!r} needs a 'messages' or 'conversations' list", location=location, field="messages"
            )
        msgs, notes = _messages(items, location=location, field=col, roles=roles, keys=columns.message_keys)
        msgs = supervision.keep_loss(msgs, row.get("keep_loss"), location=location)
        _, system = columns.find(row, "system", location=location)
        if system:
            text = _text(system, location=location, field="system")
            if not (msgs and msgs[0].role == "system"):
                msgs = (Message("system", text), *msgs)
            elif msgs[0].content.strip() != text.strip():  # two system prompts: neither is dropped silently
                raise RecordError(
                    "has a system message and a 'system' column that differ; keep one of them",
                    location=location,
                    field="system",
                )
    elif name == SEGMENTS:
        if not isinstance(row, Mapping) or not isinstance(row.get("segments"), list):
            raise RecordError("format 'segments' needs a 'segments' list", location=location, field="segments")
        return _segments(row, location)
    elif name == TEXT_RECORD:
        if not isinstance(row, Mapping):
            raise RecordError(f"format 'text' needs an object, got {type(row).__name__}", location=location)
        return _document(row, columns, location)
    elif name == "instruction":
        if not isinstance(row, Mapping):
            raise RecordError(f"expected an object, got {type(row).__name__}", location=location)
        return _with_row_extras(_instruction(row, columns, location), row, columns, location)
    else:
        raise RecordError(f"cannot read a {type(row).__name__} as a record; expected an object", location=location)
    validate(msgs, location=location, field="messages")
    examples = (Example(msgs, location, format=name, notes=tuple(dict.fromkeys(notes))),)
    return _with_row_extras(examples, row, columns, location) if isinstance(row, Mapping) else examples


def _published(name: str, row: Any, location: Location, roles: Mapping[str, str]) -> tuple[Example, ...]:
    """A published SFT set's record (`ftdata.records.published`): its messages read as any `messages` record's."""
    if not isinstance(row, Mapping):
        raise RecordError(f"format {name!r} needs an object, got {type(row).__name__}", location=location)
    chat = published.read(name, row, location)
    msgs, notes = _messages(chat.messages, location=location, field=chat.field, roles=roles)
    validate(msgs, location=location, field=chat.field)
    notes = [*notes, *chat.notes]
    return (Example(msgs, location, format=name, notes=tuple(dict.fromkeys(notes)), tools=chat.tools),)


def _trajectory(row: Any, location: Location, roles: Mapping[str, str], prefix: str = "") -> tuple[Example, ...]:
    """An ATIF trajectory's examples: its own conversation, then each embedded subagent's (`prefix`: where a
    subagent lies in the record, for errors).

    Raises:
        RecordError: not a trajectory.
        UnusableRecord: a step that does not make a valid conversation (named by its step, code `malformed`):
            one bad trajectory of a folder is rejected and the others build, whatever `on_error`.
    """
    if not atif.is_atif(row):
        raise RecordError(
            "format 'atif' needs an ATIF trajectory: an object with 'steps' and a 'schema_version' such as 'ATIF-v1.8'",
            location=location,
            field=prefix.rstrip(".") or None,
        )
    try:
        read = atif.to_messages(row, location)
    except RecordError as exc:  # a trajectory is a file of a folder of runs: rejected, the others build
        raise _rejected(exc, location, prefix + (exc.field or "")) from None
    items, origins = read.messages, read.origins
    try:
        msgs, notes = _messages(items, location=location, field="messages", roles=roles)
        validate(msgs, location=location, field="messages", trajectory=True)
        schemas = tools.tool_schemas(read.definitions, location=location, field="agent.tool_definitions")
    except RecordError as exc:  # named by the step it came from, not by the message it became
        field = re.sub(r"^messages\[(\d+)\]", lambda m: origins[int(m[1])], exc.field or "")
        raise _rejected(exc, location, prefix + field) from None
    msgs = tuple(
        replace(m, token_ids=tuple(items[i]["token_ids"])) if "token_ids" in items[i] else m for i, m in enumerate(msgs)
    )
    notes += atif.notes(read, location.source, prefix)
    files = atif.probed(read, location.source)
    own = Example(msgs, location, format="atif", notes=tuple(dict.fromkeys(notes)), tools=schemas, files=files)
    subs = [
        e
        for i, sub in enumerate(read.subagents)
        for e in _trajectory(sub, location, roles, f"{prefix}subagent_trajectories[{i}].")
    ]
    return (own, *subs)


def _session(row: Any, location: Location, roles: Mapping[str, str], name: str) -> tuple[Example, ...]:
    """An agent session file's examples (`ftdata.records.sessions`): its own conversation, then each
    sidechain's and compaction segment's. A conversation that is not a valid chat rejects the session, named
    by the `file:line` of the event its message came from."""
    if not isinstance(row, Mapping):
        raise RecordError(f"format {name!r} needs a session file, got a {type(row).__name__}", location=location)
    read = sessions.read(row, location, name)
    examples = []
    for conversation in read.conversations:
        try:
            msgs, notes = _messages(conversation.messages, location=location, field="messages", roles=roles)
            validate(msgs, location=location, field="messages", trajectory=True)
        except RecordError as exc:
            where = sessions.line_of(location, conversation, exc.field)
            label = f"{conversation.label}: " if conversation.label else ""
            raise UnusableRecord(f"{label}{exc.reason}", location=where, field=exc.field, code=exc.code) from None
        examples.append(Example(msgs, location, format=name, notes=tuple(dict.fromkeys([*notes, *read.notes]))))
    return tuple(examples)  # at least one: `sessions.read` rejects a session with no conversation


def _rejected(exc: RecordError, location: Location, field: str) -> UnusableRecord:
    """A trajectory's error as its reject, the step named in the reason (the rejects file keeps reasons only)."""
    reason = f"{field}: {exc.reason}" if field else exc.reason
    return UnusableRecord(reason, location=location, field=field or None, code=exc.code)


def _with_row_extras(
    examples: tuple[Example, ...], row: Mapping[str, Any], columns: Columns, location: Location
) -> tuple[Example, ...]:
    """Examples carrying the row's `tools` and `chat_template_kwargs` columns, when it has them; verl's
    `enable_thinking` column is that template kwarg."""
    tools_col, schemas = columns.find(row, "tools", location=location)
    kwargs_col, kwargs = columns.find(row, "chat_template_kwargs", location=location)
    schemas = tools.tool_schemas(_unwrap(schemas), location=location, field=tools_col or "tools")
    kwargs = tools.template_kwargs(_unwrap(kwargs), location=location, field=kwargs_col or "chat_template_kwargs")
    if (thinking := row.get("enable_thinking")) is not None and "enable_thinking" not in columns.claimed:
        if not isinstance(thinking, bool) or kwargs.get("enable_thinking", thinking) != thinking:
            raise RecordError(
                f"is {thinking!r:.30}; give true or false (the chat template's enable_thinking, as verl reads it), "
                "once: not also a different one in chat_template_kwargs",
                location=location,
                field="enable_thinking",
            )
        kwargs = {**kwargs, "enable_thinking": thinking}
    if not (schemas or kwargs):
        return examples
    return tuple(replace(e, tools=schemas, template_kwargs=dict(kwargs)) for e in examples)
