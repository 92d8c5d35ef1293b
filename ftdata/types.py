"""The records that flow between stages, and the closed choices that steer them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Literal, Self, TypedDict, get_args

from ftdata.errors import ConfigError, Location
from ftdata.outcomes import Note

IGNORE_INDEX = -100
"""Label value that carries no loss (PyTorch's cross-entropy default)."""


def count_trained(labels: Sequence[int]) -> int:
    """Tokens that carry loss."""
    return sum(1 for x in labels if x != IGNORE_INDEX)


SESSION_FILE = "session_file"
"""The key of the one row an agent session file is read as (`ftdata.io.sessions`, `ftdata.records.sessions`)."""
SESSION_HARNESSES = ("claude_code", "codex", "pi")
"""The harnesses whose session files are read as records: also their format names."""

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = get_args(Role)


class _Choice(str, Enum):
    """A closed choice that CLI/YAML strings convert to once, at the boundary."""

    @classmethod
    def parse(cls, value: str | _Choice, *, name: str) -> Self:
        if isinstance(value, cls):
            return value
        text = str(value).strip().lower().replace("-", "_")
        for member in cls:
            if text == member.value or text in getattr(member, "aliases", ()):
                return member
        choices = ", ".join(m.value for m in cls)
        raise ConfigError(f"{name} must be one of {choices}; got {name}={value!r}")


class MaskPolicy(_Choice):
    """Which tokens carry loss. Per-message `train` flags in the data always win."""

    ALL_ASSISTANT = "all_assistant"  # every assistant turn (default)
    LAST_ASSISTANT = "last_assistant"  # only the final assistant turn
    TRAIN_ON_PROMPT = "train_on_prompt"  # every token of the rendered text


class TruncationPolicy(_Choice):
    """What to do with a record longer than `max_length` tokens (see `ftdata.tokens.truncation`)."""

    KEEP_RESPONSE = (
        "keep_response"  # drop oldest exchanges, then shorten the longest prompt message; never cut a response
    )
    KEEP_START = "keep_start"  # keep the first max_length tokens (right truncation)
    KEEP_END = "keep_end"  # drop oldest exchanges, then cut the start of prompt messages (and of a response)
    SPLIT = "split"  # several conversations cut at exchange boundaries, the system prompt in each
    DROP = "drop"  # reject the record
    ERROR = "error"  # raise RecordError


# Classic tokenizer vocabulary: truncation_side="right" keeps the start, "left" keeps the end.
TruncationPolicy.KEEP_START.aliases = ("right",)  # type: ignore[attr-defined]  # aliases: an attribute set on enum members after the class
TruncationPolicy.KEEP_END.aliases = ("left",)  # type: ignore[attr-defined]  # as above


class PromptCut(_Choice):
    """Which part of a too-long prompt message `keep_response` and `split` cut away."""

    END = "end"  # keep its head
    MIDDLE = "middle"  # keep its head and its tail, a "[...]" line between
    START = "start"  # keep its tail (the text nearest the response)


class HistoryMode(_Choice):
    """How the history turns of a multi-turn record are trained, where the chat template writes a turn
    differently in history than when it is the last one (Qwen3 drops old reasoning; Mistral moves the system
    prompt): docs/masking.md, "Rows of a record"."""

    INFERENCE = "inference"  # every trained turn as inference sees it: the record splits into the fewest rows that do
    ONE_ROW = "one_row"  # one row per record: history turns trained as the full render writes them (noted)
    TREE = "tree"  # inference's rows of a record as one prefix tree: each shared prefix written once (tokens/tree.py)

    @property
    def exact(self) -> bool:
        """Every trained turn as inference sees it (inference and tree: the same rows, laid out two ways)."""
        return self is not HistoryMode.ONE_ROW


class SplitReason(_Choice):
    """Why a trained turn of a record is trained in a row of its own (`HistoryMode.INFERENCE`)."""

    CONTEXT = "context"  # the template writes the turns before it differently than its inference prompt
    REASONING = "reasoning"  # the template drops the turn's reasoning from history
    TARGET = "target"  # the template writes the turn itself differently when it is the last (an empty think block)
    PROMPT = "prompt"  # no render of the conversation writes its inference prompt before it: a row of that prompt


class SystemMode(_Choice):
    """How `system_prompt` combines with the record's own system message."""

    ADD = "add"  # use system_prompt only where a record has none
    OVERRIDE = "override"  # replace every record's system message
    FOLD = "fold"  # fold the system message into the first user turn


@dataclass(frozen=True, slots=True)
class ToolCall:
    """One function call an assistant turn makes.

    `arguments` is kept as the data gave it (a dict, or a JSON string); the renderer turns it
    into what the chat template expects (most templates `tojson` a dict; a few print a string).
    """

    name: str
    arguments: dict[str, Any] | str
    id: str | None = None


@dataclass(frozen=True, slots=True)
class TrainSpan:
    """Axolotl's `train_detail` entry: characters `begin..end` of a message's content, END INCLUSIVE
    (Axolotl's convention: `{"begin_offset": 0, "end_offset": 4}` covers 5 characters)."""

    begin: int
    end: int
    train: bool


@dataclass(frozen=True, slots=True)
class Message:
    """One turn. `train=None` leaves the choice to the masking policy.

    An assistant turn may carry `tool_calls` (its `content` may then be empty) and `reasoning`
    (OpenAI/Qwen `reasoning_content`, gpt-oss `thinking`). A `tool` turn is a tool's result:
    `name` is the tool, `tool_call_id` the call it answers.
    """

    role: Role
    content: str
    train: bool | None = None
    tool_calls: tuple[ToolCall, ...] = ()
    reasoning: str | None = None
    name: str | None = None
    tool_call_id: str | None = None
    media: tuple[
        Any, ...
    ] = ()  # media references (`records.media.Ref`), one per placeholder (`records.media.MEDIA`) in `content`
    # Span-level and weighted supervision (`ftdata.chat.supervision`): a float loss weight for the
    # turn's trained tokens (None: 1), and Axolotl's character spans of `content` (None: the whole content).
    loss_weight: float | None = None
    train_detail: tuple[TrainSpan, ...] | None = None
    # The tokens the model generated for this turn, as an agent harness recorded them (ATIF's
    # `metrics.completion_token_ids`): a build reports how far its own tokens drift from them.
    token_ids: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class Example:
    """One record as a conversation.

    Instruction data becomes one user turn (the instruction) and one assistant turn (the
    output); its optional `input`/`context` stays in `context` so a prompt template can place
    it, and chat rendering joins it to the first user turn.
    """

    messages: tuple[Message, ...]
    source: Location
    context: str = ""
    format: str = ""
    notes: tuple[Note, ...] = field(default=())
    tools: tuple[dict[str, Any], ...] = ()  # tool (function) schemas passed to the chat template as `tools`
    template_kwargs: dict[str, Any] = field(default_factory=dict)  # this record's chat_template_kwargs
    # files beside the record whose presence what a build says of it depends on (the trajectories an ATIF
    # trajectory points to): a cached build is served only while each is as it was (`guard.inputs.Manifest`)
    files: tuple[str, ...] = ()

    def with_input_joined(self, separator: str) -> Example:
        """This example with its `context` (an instruction's input) joined to the instruction's user turn (the
        last one: after any history) with `separator`, empty parts left out, as LLaMA-Factory joins `prompt` and
        `query` with "\n"; an example with no context as it is."""
        at = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=-1)
        if not self.context or at < 0:
            return self
        turn = self.messages[at]
        joined = replace(turn, content=separator.join(part for part in (turn.content, self.context) if part))
        return replace(self, messages=(*self.messages[:at], joined, *self.messages[at + 1 :]), context="")

    def chat_messages(self) -> list[dict[str, Any]]:
        """Messages as chat-template dicts, with `context` joined to the first user turn.

        What templates read: OpenAI `tool_calls` ([{"type": "function", "id", "function":
        {"name", "arguments"}}]), reasoning as both `reasoning_content` (Qwen, GLM) and
        `thinking` (gpt-oss), `name`/`tool_call_id` on tool turns. Keys are present only when
        the message has them: some templates branch on `"tool_calls" in message`. Content is
        always a string ("" for a turn that only calls tools): templates test it with `in`.
        """
        out: list[dict[str, Any]] = []
        joined = not self.context
        for m in self.messages:
            content = m.content
            if not joined and m.role == "user":
                content = f"{content}\n\n{self.context}"
                joined = True
            msg: dict[str, Any] = {"role": m.role, "content": content}
            if m.tool_calls:
                msg["tool_calls"] = [
                    {
                        "type": "function",
                        **({"id": c.id} if c.id is not None else {}),
                        "function": {"name": c.name, "arguments": c.arguments},
                    }
                    for c in m.tool_calls
                ]
            if m.reasoning is not None:
                msg["reasoning_content"] = msg["thinking"] = m.reasoning
            if m.name is not None:
                msg["name"] = m.name
            if m.tool_call_id is not None:
                msg["tool_call_id"] = m.tool_call_id
            out.append(msg)
        return out


class Task(_Choice):
    """What a build makes from its records (`--task`). The table of tasks: the task named `x` is implemented by the
    `TASK` of `ftdata.run.x` (`ftdata.run.stage.task_module`), so an added task is its module and its line here."""

    SFT = "sft"  # input_ids + labels (the default shapes: instruction, messages, sharegpt, chat)
    PREFERENCE = "preference"  # prompt_ids, chosen_ids, rejected_ids: DPO and the other paired losses
    KTO = "kto"  # prompt_ids, completion_ids, label: unpaired preference
    PROMPTS = "prompts"  # prompt (messages or text) + prompt_ids + the data's reward columns: GRPO/RLOO prompt sets


Task.PREFERENCE.aliases = ("dpo", "pairs")  # type: ignore[attr-defined]  # as above
Task.PROMPTS.aliases = ("grpo", "rloo", "prompt")  # type: ignore[attr-defined]  # as above


@dataclass(frozen=True, slots=True)
class Pair:
    """One preference pair: the prompt both sides share, and each side's completion.

    `prompt` is the conversation both sides share; its `tools`, `template_kwargs`, `context`,
    `format` and `notes` hold for both sides. `chosen` and `rejected` are each side's first
    assistant turn after it (text, tool calls, reasoning): what the model writes after that prompt.
    An agent trajectory that diverges mid-way goes on: `chosen_rest` / `rejected_rest` are the
    messages after that turn (tool results, further calls, the answer), ending on an assistant turn.
    The scores are the data's own (UltraFeedback), None where it has none.
    """

    prompt: Example
    chosen: Message
    rejected: Message
    chosen_score: float | None = None
    rejected_score: float | None = None
    chosen_rest: tuple[Message, ...] = ()
    rejected_rest: tuple[Message, ...] = ()

    def chosen_example(self) -> Example:
        """The prompt followed by the chosen completion, as one conversation."""
        return replace(self.prompt, messages=(*self.prompt.messages, self.chosen, *self.chosen_rest))

    def rejected_example(self) -> Example:
        """The prompt followed by the rejected completion, as one conversation."""
        return replace(self.prompt, messages=(*self.prompt.messages, self.rejected, *self.rejected_rest))


@dataclass(frozen=True, slots=True)
class Unpaired:
    """One unpaired preference record (KTO): a prompt, one assistant turn, and whether that turn
    is desirable (`label=True`) or not."""

    prompt: Example
    completion: Message
    label: bool
    rest: tuple[Message, ...] = ()  # the messages after `completion` (a trajectory's side of a pair, unpaired)

    def example(self) -> Example:
        """The prompt followed by the completion, as one conversation."""
        return replace(self.prompt, messages=(*self.prompt.messages, self.completion, *self.rest))


@dataclass(frozen=True, slots=True)
class Rendered:
    """The exact text the tokenizer sees and the character spans that carry loss.

    `boundaries` are char offsets where a whole exchange ends (after an assistant turn's
    end-of-turn marker): keep_response truncation drops oldest exchanges at these cuts.
    `literal` are char spans of control-token text that came from the data
    (`special_tokens_in_data="text"`): they are tokenized as plain text, not as control tokens.
    """

    text: str
    spans: tuple[tuple[int, int], ...]
    method: str
    boundaries: tuple[int, ...] = ()
    notes: tuple[Note, ...] = ()
    literal: tuple[tuple[int, int], ...] = ()
    media: tuple[Any, ...] = ()  # media items expanded in `text` (`ftdata.media.expand.Placed`), in order
    # Loss weight of each span (empty: every span weighs 1), and character ranges inside the spans
    # that carry no loss (train_detail): a token wholly inside one is masked, a token across its
    # edge stays trained (Axolotl's rule).
    weights: tuple[float, ...] = ()
    holes: tuple[tuple[int, int], ...] = ()
    # Trained turns (message indices of the example) that this text does not write as inference sees them,
    # each with why: the record is split into rows (`ftdata.chat.trajectory`); empty for a row that holds.
    unheld: tuple[tuple[int, SplitReason], ...] = ()
    # Template text that every render writes the same, as (start, text): its token ids are reused where the
    # tokenizer's pre-tokenizer proves its borders (`ftdata.tokens.reuse.Constants`); checked against `text`.
    constants: tuple[tuple[int, str], ...] = ()


class TokenRow(TypedDict):
    """A tokenized, masked record: plain int lists, Arrow-friendly."""

    input_ids: list[int]
    attention_mask: list[int]
    labels: list[int]


class PackedRow(TokenRow):
    """A packed row: several sequences, positions restarting at each."""

    position_ids: list[int]
    seq_lengths: list[int]


class Engine(_Choice):
    """Where the per-record work runs."""

    LOCAL = "local"
    PROCESSES = "processes"
    RAY = "ray"


class Padding(_Choice):
    """Whether unpacked rows are padded to max_length."""

    NONE = "none"
    MAX_LENGTH = "max_length"


class PaddingSide(_Choice):
    """Where padding goes when padding=max_length."""

    RIGHT = "right"
    LEFT = "left"


class OnError(_Choice):
    """What a malformed record does: stop the build at the first, or become a reject."""

    RAISE = "raise"
    SKIP = "skip"


class SpecialTokens(_Choice):
    """A record whose text holds a control token (`special_tokens_in_data`)."""

    REJECT = "reject"  # reject the record
    TEXT = "text"  # train it as the plain text it is (tokenized with special tokens split)


class AudioWindow(_Choice):
    """A clip longer than the processor's window."""

    REJECT = "reject"  # a media_too_long reject
    CUT = "cut"  # kept as the processor cuts it (an audio_cut note)
