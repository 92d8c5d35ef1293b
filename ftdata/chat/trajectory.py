"""The rows of one record: every trained turn trained as inference sees it, in the fewest rows.

A turn's inference target is what the template writes for it when it is the last turn, after its
inference prompt (`turns.ChatSpans._unheld`). Most templates write every history turn that way, and a
record stays one row. Templates that rewrite history do not: Qwen3 keeps reasoning only after the last
user turn and writes an empty think block into the last turn alone, Mistral moves the system prompt
into the last user turn. Trained as the full render writes it, such a history turn teaches the model to
answer without thinking. So the record becomes rows, each the conversation through one of its turns,
chosen greedily from the last: a row trains every remaining turn that it writes as inference sees it.

    record     u1 a1 u2 a2 u3 a3          (Qwen3, each turn with reasoning)
    row 1      u1 a1 u2 a2 u3 [a3]        a1, a2 lose their reasoning here: unheld
    row 2      u1 a1 u2 [a2]
    row 3      u1 [a1]

    agent loop u1 a1 t1 a2 t2 a3          (one user query: Qwen3 keeps every turn's reasoning)
    row 1      u1 [a1] t1 [a2] t2 [a3]    one row

A turn j is always held by the row that ends with it, so the loop ends, and every trained turn is
trained in exactly one row; but one kind of turn: where the template writes its inference prompt otherwise
than any render writes the turn's context (Mistral-Nemo writes the system prompt into the last user turn only,
so no render with a reply after it holds it; a generation prompt closes the think block before a turn that
carries reasoning), the turn is trained in a row of its own, that prompt and the turn (`SplitReason.PROMPT`,
`turns._prompt_row`). Greedy from the last is the fewest rows (a turn trained after its own prompt counting one)
wherever the turns a row holds are the later ones of its conversation (a template's rewrite reaches back from
the last turn: every served template we know); tests/chat/test_trajectory.py compares it with an exhaustive
search.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ftdata.types import Example, Rendered, SplitReason

__all__ = ["SplitRow", "split"]


@dataclass(frozen=True, slots=True)
class SplitRow:
    """One row of a record that is split: its place among the record's rows, the turns (message indices)
    it trains, and why each of them was not trained in a longer row of the record (the first row: none)."""

    index: int
    count: int
    turns: tuple[int, ...]
    reasons: tuple[tuple[int, SplitReason], ...] = ()

    @property
    def reason(self) -> SplitReason | None:
        """Why this row exists: its last turn's reason (None for the record's first row)."""
        return self.reasons[-1][1] if self.reasons else None

    def describe(self) -> str:
        """'row 2 of 2: trains messages[1] (messages[1]: the template drops its reasoning from history)'."""
        turns = ", ".join(map(str, self.turns))
        head = f"row {self.index + 1} of {self.count}: trains messages[{turns}]"
        if not self.reasons:
            return head
        why = "; ".join(f"messages[{i}]: {WHY[reason]}" for i, reason in self.reasons)
        return f"{head} ({why})"


WHY = {
    SplitReason.CONTEXT: "the template writes the turns before it differently in the full record than in its "
    "inference prompt",
    SplitReason.REASONING: "the template drops its reasoning from history",
    SplitReason.TARGET: "the template writes it differently in history than as the last turn",
    SplitReason.PROMPT: "no render of the conversation writes its inference prompt before it: trained after that "
    "prompt",
}


def _through(example: Example, end: int, turns: set[int]) -> Example:
    """The record's conversation through message `end`, training exactly `turns`."""
    messages = tuple(
        replace(m, train=i in turns) if m.role == "assistant" else m for i, m in enumerate(example.messages[: end + 1])
    )
    return replace(example, messages=messages)


def split(
    render: Callable[..., Rendered], example: Example, trained: list[int], first: Rendered
) -> list[tuple[Example, Rendered, SplitRow]]:
    """The rows of `example`, whose full rendering `first` leaves some trained turns unheld.

    `render`: the build's renderer (a row that trains only its last turn is rendered with `history=False`:
    the turns before it are its inference prompt, not located one by one); `trained`: the message indices
    the record trains.

    Raises:
        RecordError: a row's render fails (the record is rejected whole, naming the turn).
    """
    reasons: dict[int, SplitReason] = {}
    remaining = set(trained)
    rows: list[tuple[Example, Rendered, tuple[int, ...]]] = []
    while remaining:
        end = max(remaining)
        turns = set(remaining)
        row = _through(example, end, turns)
        # The first row through the record's last message is the record as `first` rendered it (its flags
        # name the turns the record trains): not rendered again.
        rendered = first if not rows and end == len(example.messages) - 1 else render(row, history=len(turns) > 1)
        while rendered.unheld:  # train only what this row holds; the row's own last turn holds but for PROMPT
            for i, why in rendered.unheld:
                reasons.setdefault(i, why)
                turns.discard(i)
            if end not in turns:  # its inference prompt and it, a row of its own (`ChatSpans`: a prompt row)
                turns = {end}
            row = _through(example, end, turns)
            rendered = render(row, history=len(turns) > 1)
        rows.append((row, rendered, tuple(sorted(turns))))
        remaining -= turns
    # Every turn of a row after the first was unheld in an earlier one (it has a reason), or held by a row through
    # a turn trained in a prompt row of its own (PROMPT), which trains that turn alone.
    count = len(rows)
    return [
        (row, rendered, SplitRow(k, count, turns, tuple((i, reasons[i]) for i in turns if i in reasons) if k else ()))
        for k, (row, rendered, turns) in enumerate(rows)
    ]
