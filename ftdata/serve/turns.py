"""The turns a build trains, each with what a server is sent to generate it: its inference prompt.

    build folder ──build.json: data, tokenizer, options──▶ the run loop again (`loop.run`, reducer `_turns`)
        ──per kept row, per trained turn i──▶ ServedTurn(messages[:i], tools, kwargs, the row's ids before the turn,
                                                         the turn's trained ids)

A build is a function of its inputs and options (its fingerprint), so the rows made again are the rows it wrote;
`collect` says so by checking the fingerprint's inputs first (`ftdata.serve.parity`). A turn is paired with its run
of trained tokens as `ftdata.run.drift` pairs them: one run per trained turn, in order. A row that was cut to
max_length, or whose runs are not one per turn (mask_reasoning trains the answer alone, train_on_prompt all), is
counted as not checked, with why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ftdata.chat.render import apply_system, trained_turns
from ftdata.chat.supervision import flagged
from ftdata.options import BuildOptions, RunOptions
from ftdata.run import loop
from ftdata.run.drift import label_runs
from ftdata.run.report import BuildReport
from ftdata.run.stage import Ran, Stage

__all__ = ["ServedTurn", "Turns", "collect"]


@dataclass(frozen=True)
class ServedTurn:
    """One trained turn: the record and row it is in, its message index, the conversation through it as the chat
    template got it (`messages`, the turn last), the tools and template kwargs of the render, and the row's ids:
    `context` (every token before the turn's trained run), `trained` (the run) and `after` (what the template writes
    after a conversation's last turn: the row's tokens after its last run, where the record ends with that turn;
    else none)."""

    record: str
    row: int
    turn: int
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None
    kwargs: dict[str, Any]
    context: list[int]
    trained: list[int]
    after: list[int] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.record}#{self.row}/{self.turn}"


@dataclass
class Turns:
    """Every trained turn of a build, and the rows not checked, by why."""

    turns: list[ServedTurn] = field(default_factory=list)
    skipped: Counter[str] = field(default_factory=Counter)


CUT = "cut to max_length (its context is not what the server is sent)"
RUNS = "its trained tokens are not one run per trained turn (mask_reasoning, train_on_prompt or train_detail)"
PROMPT_TEMPLATE = "rendered with a prompt template, not a chat template (no server renders it)"


def _turns(stage: Stage, ran: Ran[Any, Any]) -> tuple[list[ServedTurn], Counter[str]]:
    """A batch's trained turns (the run loop's reducer: module level, it may run in a worker)."""
    out: list[ServedTurn] = []
    skipped: Counter[str] = Counter()
    renderer = stage.renderer
    chat = renderer.chat
    for _, item, fit in ran.kept():
        if chat is None:
            skipped[PROMPT_TEMPLATE] += len(fit.rows)
            continue
        if fit.reason or len(fit.rows) != 1:
            skipped[CUT] += len(fit.rows)
            continue
        ids, labels = (list(x) for x in fit.rows[0][:2])
        example = item.example
        if renderer.system_prompt is not None or renderer.system_mode.value == "fold":
            example = apply_system(example, renderer.system_prompt, renderer.system_mode)
        turns = [i for i, t in enumerate(trained_turns(flagged(example.messages), stage.options.mask)) if t]
        runs = label_runs(labels)
        if len(runs) != len(turns):
            skipped[RUNS] += 1
            continue
        messages = renderer.chat_messages(example)
        tools = [dict(t) for t in example.tools] or None
        kwargs = {**chat.kwargs, **(example.template_kwargs or {})}
        row = item.split_row.index if getattr(item, "split_row", None) is not None else 0
        after = ids[runs[-1][1] :] if turns and turns[-1] == len(messages) - 1 else []  # a last turn's trailer
        for i, (a, b) in zip(turns, runs):
            out.append(ServedTurn(item.location, row, i, messages[: i + 1], tools, kwargs, ids[:a], ids[a:b], after))
    return out, skipped


def collect(
    source: Any,
    tok: Any,
    options: BuildOptions,
    *,
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Turns:
    """The trained turns of `source` built with `tok` and `options` (the first `limit` records when given)."""
    stage = Stage(tok, options.data)
    found = Turns()
    window = (0, limit) if limit is not None else None
    parts: Iterator[tuple[list[ServedTurn], Counter[str]]] = loop.run(
        source,
        stage,
        RunOptions(batch_size=options.run.batch_size),
        _turns,
        report=BuildReport(),
        window=window,
        progress=progress,
    )
    for turns, skipped in parts:
        found.turns.extend(turns)
        found.skipped.update(skipped)
    return found
