"""Preference pairs of agent trajectories: chosen and rejected share a prompt conversation, then diverge mid-way at
an assistant turn and go on for several messages each (tool calls, their results, further turns, the answer).

    prompt   [system, user, assistant call, tool result]               shared, token for token
    chosen   [assistant call A, tool result, assistant answer]         the trajectory's own continuation
    rejected [assistant call B, tool result, assistant answer]         another continuation

Each side is rendered whole by the chat template and located as SFT locates every turn (docs/masking.md): the
completion is the tokens from the first turn's start to the last turn's stop token, and its mask trains every
assistant turn in it (calls with their arguments, answers, stop tokens) and nothing the model reads between them
(tool results, the next turn's header), as SFT trains a trajectory. TRL's `DataCollatorForPreference` would train
every completion token, tool results included (its completion mask is 1 from the prompt's end on); the rows carry
the masks (`chosen_mask`, `rejected_mask`; KTO's `completion_mask`) and ftdata's trainers apply them
(`train.preference`).

Verified per pair: the inference prompt (the template rendered with `add_generation_prompt`) is the text both
sides' renders start with, character for character, so its tokens are the prompt of both; every trained turn is
written in the side's render as the template writes it when that turn is the last (a template that rewrites
history turns, `Rendered.unheld`, is refused: the pair would train a turn inference never writes). Each pair's
note says where the sides diverge: the message, and the token (the prompt's length plus the tokens the two
completions share from their start).
"""

from __future__ import annotations

from dataclasses import replace
from os.path import commonprefix
from typing import TYPE_CHECKING

from ftdata.errors import UnusableRecord
from ftdata.outcomes import Note, NoteCode, RejectCode
from ftdata.types import Example, Pair, Rendered, Unpaired

if TYPE_CHECKING:
    from ftdata.run.rows_pairs import PairRow
    from ftdata.run.stage import Stage

__all__ = ["divergence", "multi_message", "trained_sides", "trajectory_prompt"]


def multi_message(record: Pair | Unpaired) -> bool:
    """Whether a completion of `record` is several messages (a trajectory that goes on after the divergence)."""
    return bool(record.chosen_rest or record.rejected_rest) if isinstance(record, Pair) else bool(record.rest)


def trained_sides(record: Pair | Unpaired, sides: tuple[Example, ...]) -> tuple[Example, ...]:
    """`sides` (the conversations `record`'s completions end) with every assistant turn of a completion of several
    messages trained (`train=True`; the pair task's mask trains the last one alone otherwise), never a tool result."""
    if not multi_message(record):
        return sides
    start = len(record.prompt.messages)
    return tuple(
        replace(
            side,
            messages=tuple(
                replace(m, train=True) if i >= start and m.role == "assistant" else m
                for i, m in enumerate(side.messages)
            ),
        )
        for side in sides
    )


def trajectory_prompt(stage: Stage, record: Pair | Unpaired, sides: tuple[Rendered, ...]) -> Rendered:
    """The inference prompt of a trajectory pair: the generation-prompt render of the shared conversation, verified
    to be the text each side's render starts with, up to its first trained turn.

    Raises:
        UnusableRecord: a side whose completion cannot be located (unmaskable), a trained turn the side's render
            writes otherwise than inference does (unmaskable), or a side that does not start with the inference
            prompt (prompt_mismatch).
    """
    where = record.prompt.source
    for rendered in sides:
        if not rendered.spans:
            raise UnusableRecord(
                "the completion's assistant turns cannot be located in the rendering",
                location=where,
                field="messages",
                code=RejectCode.UNMASKABLE,
            )
        if rendered.unheld:
            i, why = rendered.unheld[0]
            raise UnusableRecord(
                f"the chat template writes message {i} of the completion otherwise as history than as the last turn "
                f"({why.value}); a completion of several messages is one sequence, so it would train a turn inference "
                "never writes: end each side at that turn, or build the trajectory as SFT rows",
                location=where,
                field=f"messages[{i}]",
                code=RejectCode.UNMASKABLE,
            )
    prompt = stage.renderer.generation_prompt(record.prompt)
    for rendered in sides:
        if rendered.text[: rendered.spans[0][0]] != prompt.text:
            raise UnusableRecord(
                "the chat template writes the shared conversation differently before a completion than as the "
                "inference prompt, so the completions would not follow the prompt the model is given",
                location=where,
                field="prompt",
                code=RejectCode.PROMPT_MISMATCH,
            )
    return Rendered(prompt.text, (), "prefix", notes=prompt.notes, literal=prompt.literal)


def divergence(record: Pair | Unpaired, row: PairRow) -> Note:
    """Where a trajectory pair's sides diverge (the message, the token) and what each completion trains."""
    start = len(record.prompt.messages)
    if isinstance(record, Pair):
        shared = len(commonprefix([row.completions[0], row.completions[1]]))
        where = f"chosen and rejected diverge at message {start}, token {len(row.prompt) + shared}"
        counts = zip(("chosen", "rejected"), (1 + len(record.chosen_rest), 1 + len(record.rejected_rest)))
    else:
        where = f"the completion starts at message {start}, token {len(row.prompt)}"
        counts = zip(("completion",), (1 + len(record.rest),))
    masks = row.masks or ()
    sides = "; ".join(
        f"{name}: {n} messages, {sum(mask)} of {len(mask)} tokens trained" for (name, n), mask in zip(counts, masks)
    )
    return Note(
        NoteCode.TRAJECTORY_PAIR,
        f"{where} (after a shared prompt of {start} messages, {len(row.prompt)} tokens); {sides} (tool results and "
        "the headers between turns read, not trained)",
    )
