"""The conversation a session reader builds: OpenAI message dicts, each with the file line it came from.

Every harness reader (`claude_code`, `codex`, `pi`) feeds a `Turns` in file order; `Turns` owns the two rules
they share: the pieces of one model response become one assistant turn (Claude Code writes a response's
text, thinking and each tool_use as events of their own, Codex its reasoning, message and calls as items of
their own), and what is left out is counted by kind, never dropped in silence.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Turns:
    """Messages under construction (`messages`, with `lines`: the file line of each) and what was left out
    (`skipped`: a count per kind, as `left_out` reports it)."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    ids: list[str | None] = field(default_factory=list)  # the response id of each assistant turn (Claude Code)
    skipped: Counter[str] = field(default_factory=Counter)

    def add(self, message: dict[str, Any], line: int) -> None:
        self.messages.append(message)
        self.lines.append(line)
        self.ids.append(None)

    def text(self, role: str, text: str, line: int) -> None:
        """A system or user turn."""
        self.add({"role": role, "content": text}, line)

    def tool(self, call_id: str | None, content: str, line: int) -> None:
        """A tool result answering the call `call_id`."""
        self.add({"role": "tool", "content": content, **({"tool_call_id": call_id} if call_id else {})}, line)

    def assistant(
        self,
        line: int,
        *,
        text: Sequence[str] = (),
        reasoning: Sequence[str] = (),
        calls: Sequence[dict[str, Any]] = (),
        response: str | None = None,
        train: bool | None = None,
    ) -> None:
        """A piece of a model response: joined to the assistant turn it belongs to (the last message, or the
        turn with the same `response` id that only tool results follow: a response whose calls ran while it
        was still being written), else a new assistant turn. Text and reasoning pieces are joined with a
        blank line; whitespace-only pieces are none. A piece with `train=False` (the harness wrote it) joins
        only a turn of the same kind: two assistant turns in a row are then refused, named by their line."""
        text = [t for t in text if t.strip()]
        reasoning = [r for r in reasoning if r.strip()]
        at = self._turn(response)
        if at is not None and self.messages[at].get("train", True) is not (train is not False):
            at = None  # the harness's own message (not trained) never joins the model's, nor the model's it
        if at is None:
            msg: dict[str, Any] = {"role": "assistant", "content": ""}
            self.add(msg, line)
            self.ids[-1] = response
        else:
            msg = self.messages[at]
        if text:
            msg["content"] = "\n\n".join([msg["content"], *text] if msg["content"] else text)
        if reasoning:
            old = msg.get("reasoning_content")
            msg["reasoning_content"] = "\n\n".join([old, *reasoning] if old else reasoning)
        if calls:
            msg["tool_calls"] = [*msg.get("tool_calls", ()), *calls]
        if train is False:
            msg["train"] = False

    def _turn(self, response: str | None) -> int | None:
        last = len(self.messages) - 1
        if last < 0:
            return None
        if self.messages[last]["role"] == "assistant":
            return last
        if response is None:
            return None
        for at in range(last, -1, -1):
            role = self.messages[at]["role"]
            if role == "assistant":
                return at if self.ids[at] == response else None
            if role != "tool":
                return None
        return None

    def cut_assistant_turns(self) -> Counter[str]:
        """Drop the assistant turns with no answer and no call (a response cut before its first token, or after
        its reasoning: the person interrupted it); their count by kind. Such a turn is no response to learn: its
        reasoning leads to nothing the model wrote."""
        cut: Counter[str] = Counter()
        keep = []
        for i, m in enumerate(self.messages):
            if m["role"] == "assistant" and not m["content"].strip() and not m.get("tool_calls"):
                cut[
                    "assistant response cut after its reasoning"
                    if m.get("reasoning_content")
                    else "empty assistant response"
                ] += 1
            else:
                keep.append(i)
        self.messages = [self.messages[i] for i in keep]
        self.lines = [self.lines[i] for i in keep]
        self.ids = [self.ids[i] for i in keep]
        return cut


def joined_text(blocks: Any, skipped: Counter[str], what: str) -> str:
    """The text of a content value: a string, or a list of blocks whose `text` pieces are joined with a blank
    line; any other block (an image, a document) is counted in `skipped` as `what:<type>`."""
    if isinstance(blocks, str):
        return blocks
    if blocks is None:
        return ""
    if not isinstance(blocks, list):
        skipped[f"{what}:{type(blocks).__name__}"] += 1
        return ""
    parts = []
    for block in blocks:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") in ("text", "input_text", "output_text"):
            parts.append(str(block.get("text", "")))
        else:
            skipped[f"{what}:{block.get('type') if isinstance(block, dict) else type(block).__name__}"] += 1
    return "\n\n".join(p for p in parts if p.strip()) if len(parts) > 1 else "".join(parts)


@dataclass(frozen=True, slots=True)
class Conversation:
    """One conversation of a session: what one model context held. `lines`: each message's file line."""

    messages: list[dict[str, Any]]
    lines: list[int]
    label: str = ""  # "" for the session's own; "sidechain <agent>", "after compaction at line N", ...


def finish(turns: Turns, label: str = "") -> Conversation:
    """The conversation `turns` built; an assistant turn with no answer and no call (a cut response) is counted
    in `skipped`, not kept as an empty turn to train."""
    turns.skipped.update(turns.cut_assistant_turns())
    return Conversation(turns.messages, turns.lines, label)
