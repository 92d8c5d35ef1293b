"""Preference pairs through the record engine: one prompt, each side's completion, verified per pair.

    row ──records.preference──▶ Pair(prompt, chosen, rejected) | Unpaired(prompt, completion, label)
        ──render prompt + reply per side, as SFT renders it (mask=last_assistant; the history as prompt,
          located only for a pair that must be cut)──▶ the reply's span
        ──the inference prompt: the side's text before that span (prefix-stable templates), else
          the generation-prompt render (Mistral writes history differently)──▶
        ──mask (one tokenizer call: prompts and sides)──▶ prompt_ids + completion ids ──▶ verify ──▶ fit

A completion is exactly what the SFT rule trains for the final assistant turn (docs/masking.md): the
reply with its reasoning and tool calls as the template writes them for the last turn, and its stop
token. The prompt is tokenized alone, as inference tokenizes it (the tokenizer's BOS included), and
the masker splits a token that would span the border, so each completion starts with a fresh token.
Verified per pair: both sides follow the same prompt text, each completion is one non-empty run of
tokens that starts at the border, and the two completions differ.

`PairStage` is a `Stage`: `Stage.measure` and `Stage.run` (the one loop: rejects, counts, the
whole-record rule) drive it with its reading, rendering and truncation put in; the reducers in
`ftdata.run.rows_pairs` (build), `ftdata.run.pair_stats` and the CLI's pair preview read its outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ftdata.chat.renderer import shared_renders
from ftdata.errors import RecordError, UnusableRecord
from ftdata.guard import limits
from ftdata.guard.limits import RecordOverLimit
from ftdata.options import DataOptions, RunOptions
from ftdata.outcomes import Note, NoteCode, RejectCode, RejectStage
from ftdata.records.formats import Columns
from ftdata.records.preference import preference_columns, to_pairs, to_unpaired
from ftdata.run.seam import OneRow
from ftdata.run.stage import Ran, Stage, TaskModule
from ftdata.run.option_rules import Refused, TaskRules
from ftdata.run.rows_pairs import (
    MASKS,
    PairPart,
    PairRow,
    PairRows,
    jsonl_pair_rows,
    pair_part,
    pair_schema,
    pair_units,
    row_sums,
)
from ftdata.run.trajectory_pairs import divergence, multi_message, trained_sides, trajectory_prompt
from ftdata.run.rows import finish_rows
from ftdata.run.report import BuildReport, Reject
from ftdata.run.pair_stats import PairDataStats, collect_pairs
from ftdata.tokens.masking import Tokenized
from ftdata.tokens.truncation import Truncator
from ftdata.types import IGNORE_INDEX, Example, MaskPolicy, Pair, Rendered, Task, TruncationPolicy, Unpaired

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from transformers import PreTrainedTokenizerBase

__all__ = ["TASK", "Fitted", "MeasuredPair", "PairModule", "PairState", "PairTask", "Side", "sides_of"]

ROUNDS = 3  # prompt cuts a pair may take: the SFT budget is re-aimed after each by what the pair still has over
CUT_WORDS = {RejectCode.TURNS_DROPPED: "oldest turns dropped", RejectCode.PROMPT_SHORTENED: "prompt shortened"}


@dataclass(frozen=True, slots=True)
class Side:
    """One reply after the prompt: prompt + reply rendered (the SFT rule's span of the final turn), and the
    text from that span on tokenized as a continuation (`continuation`), its completion tokens [start, end)."""

    rendered: Rendered
    tokenized: Tokenized
    start: int
    end: int

    @property
    def ids(self) -> list[int]:
        return self.tokenized.input_ids[self.start : self.end]

    @property
    def mask(self) -> list[int]:
        """1 on the tokens the model writes (every assistant turn of the completion), 0 on what it reads between
        them (tool results, the next turn's header): all 1 for a completion of one turn."""
        return [int(label != IGNORE_INDEX) for label in self.tokenized.labels[self.start : self.end]]


@dataclass(frozen=True, slots=True)
class MeasuredPair(OneRow):
    """A pair (or a KTO record) rendered, masked and verified, not yet fitted to max_length.

    `Stage.run` reads it as it reads a `Measured`: `example` is the prompt, `rendered` the inference
    prompt (its method: prefix when both sides continue it as written, else fallback), `tokenized` that
    prompt tokenized alone with both sides' notes, `total` the longer sequence.
    """

    record: Pair | Unpaired
    rendered: Rendered
    tokenized: Tokenized
    sides: tuple[Side, ...]
    row: PairRow

    @property
    def example(self) -> Example:
        return self.record.prompt

    @property
    def location(self) -> str:
        return str(self.record.prompt.source)

    @property
    def total(self) -> int:
        return self.row.length


@dataclass(frozen=True, slots=True)
class PairState:
    """What the pair task reads records with, compiled once per stage: the column map over preference fields."""

    columns: Columns


@dataclass(frozen=True, slots=True)
class Fitted:
    """A measured pair fitted to max_length, read by `Stage.run` as a `Truncated`: its row (none when
    rejected) and why it was cut or dropped; `measured`: the pair measured again after a prompt cut."""

    rows: list[PairRow]
    reason: str = ""
    code: RejectCode | None = None
    measured: MeasuredPair | None = None


def sides_of(record: Pair | Unpaired) -> tuple[Example, ...]:
    """The conversations a record's completions end: (prompt + chosen, prompt + rejected), or (prompt + completion,).
    A completion of several messages (an agent trajectory after the divergence) trains each of its assistant turns
    (`train=True`; the pair task's mask trains the last one alone otherwise), never a tool result."""
    sides = (record.chosen_example(), record.rejected_example()) if isinstance(record, Pair) else (record.example(),)
    return trained_sides(record, sides)


class PairTask:
    """Preference pairs (`task=preference`) or KTO rows (`task=kto`), a `TaskModule`: the stage's renderer and
    masker, with the last assistant turn as the one trained (a completion is the final turn)."""

    # What pair and KTO rows refuse, never ignore (a value listed: only that value).
    rules = TaskRules(
        refuses=(
            Refused("packing", "the trainer puts each prompt before each of its completions"),
            Refused("padding", "the preference collator pads every batch"),
            Refused("truncation", "a pair has one prompt; keep_response cuts it", (TruncationPolicy.SPLIT,)),
            Refused(
                "mask",
                "a completion is the final assistant turn; a prompt carries no loss",
                (MaskPolicy.TRAIN_ON_PROMPT,),
            ),
            Refused("mask_reasoning", "a completion is the whole final turn, its reasoning included"),
            Refused("format", "preference shapes are detected per record (map columns with columns=)"),
            Refused("processor", "preference rows with images are not built yet"),
        )
    )

    def __init__(self, task: Task):
        self.task = task
        self.columns = tuple(pair_schema(task).names)  # prompt_ids, each completion's ids (, label)
        self.unit = "pairs" if task is Task.PREFERENCE else "completions"

    def options(self, options: DataOptions) -> DataOptions:
        return replace(options, mask=MaskPolicy.LAST_ASSISTANT)

    def compiled(self, stage: Stage) -> PairState:
        return PairState(preference_columns(stage.options.columns))

    def examples(self, stage: Stage, location: Any, row: Any) -> tuple[Pair | Unpaired, ...]:
        read = to_unpaired if self.task is Task.KTO else to_pairs
        records = read(row, location, columns=stage.state_as(PairState).columns, roles=stage.options.roles)
        if (join := stage.options.input_join) is None:
            return records
        return tuple(replace(r, prompt=r.prompt.with_input_joined(join)) for r in records)

    def measure(
        self, stage: Stage, formatted: list[tuple[int, Pair | Unpaired | Reject]], responses: bool
    ) -> list[tuple[int, MeasuredPair | Reject]]:
        """Render every side and prompt, tokenize them in one call, and verify each pair."""
        out: list[Any] = []  # (record, None) until its pair is measured
        todo: list[tuple[int, Pair | Unpaired, Rendered, tuple[Rendered, ...]]] = []
        for record, item in formatted:
            if isinstance(item, Reject):
                out.append((record, item))
                continue
            try:
                with shared_renders():  # the sides render the same prompt and history: once for the pair
                    # a side trains its final turn alone: the history is prompt, as the template writes it at inference
                    # (a completion of several messages: each of its turns located, as SFT locates them)
                    history = multi_message(item)
                    sides = tuple(stage.renderer(example, history=history) for example in sides_of(item))
                    prompt = _prompt(stage, item, sides)
            except RecordError as exc:
                out.append((record, stage.reject(exc, item.prompt.source, RejectStage.RENDER)))
                continue
            todo.append((len(out), item, prompt, sides))
            out.append((record, None))
        texts = [
            r
            for _, _, prompt, sides in todo
            for r in (
                prompt,
                *(continuation(side, stage.masker.anchor_before(side.text[: side.spans[0][0]])) for side in sides),
            )
        ]
        masked = iter(zip(texts, stage.masker(texts)) if todo else ())
        for i, item, prompt, sides in todo:
            prompt_tokens = next(masked)[1]
            try:
                measured: MeasuredPair | Reject = _measured(
                    item, prompt, prompt_tokens, [(side, *next(masked)) for side in sides]
                )
            except UnusableRecord as exc:
                measured = Reject(str(item.prompt.source), RejectStage.VERIFY, exc.code, exc.reason)
            out[i] = (out[i][0], measured)
        return out

    def fit(self, stage: Stage, item: MeasuredPair, policy: TruncationPolicy | None) -> Fitted:
        """`item` fitted to max_length: the shared prompt cut once for both sides, never a completion
        (keep_response); keep_start/keep_end cut tokens as TRL's collator does, once for both sides.

        Raises:
            RecordError: truncation=error and the pair is too long.
        """
        row, limit = item.row, stage.options.max_length
        if row.length <= limit:
            return Fitted([row])
        policy = policy or stage.options.truncation
        over = (
            f"{row.length} tokens (prompt {len(row.prompt)} + longer completion {row.length - len(row.prompt)}) "
            f"> max_length {limit}"
        )
        if policy is TruncationPolicy.ERROR:
            raise RecordError(
                f"{over}; raise max_length or choose another truncation policy",
                location=item.example.source,
                field="max_length",
            )
        if policy is TruncationPolicy.DROP:
            return Fitted([], f"too long: {over} (truncation=drop)", RejectCode.TOO_LONG)
        if policy is TruncationPolicy.KEEP_START:
            return _keep_start(row, limit, over)
        if policy is TruncationPolicy.KEEP_END:
            return _keep_end(row, limit, over)
        if row.masks is not None:
            why = "the shared prompt of a completion of several messages is not cut yet (keep_start, keep_end cut it)"
            return Fitted([], f"too long: {over}; {why}", RejectCode.TOO_LONG)
        try:
            return _shorten(stage, item, over)
        except UnusableRecord as exc:
            return Fitted([], exc.reason, exc.code)
        except RecordOverLimit as exc:  # a re-render past a limit: rejected like the first render's (on_error)
            reject = stage.reject(exc, item.example.source, RejectStage.TRUNCATE)
            return Fitted([], reject.reason, reject.code)

    def reduce(self, stage: Stage, ran: Ran[MeasuredPair, Fitted]) -> PairPart:
        return pair_part(ran)

    def open_rows(self, path: Path, options: DataOptions) -> PairRows:
        return PairRows(path, task=self.task)

    def finish(
        self,
        path: Path,
        options: DataOptions,
        report: BuildReport,
        *,
        splits: dict[str, np.ndarray] | None,
        pad_id: int,
    ) -> Dataset | DatasetDict:
        return finish_rows(path, options, report, splits=splits)

    def stats(
        self, source: Any, stage: Stage, run: RunOptions | None = None, *, progress: Callable[[int], None] | None = None
    ) -> PairDataStats:
        return collect_pairs(source, stage, run, progress=progress)

    def jsonl(self, split: Dataset, tokenizer: PreTrainedTokenizerBase) -> Iterator[dict[str, object]]:
        return jsonl_pair_rows(split, tokenizer)

    def schema(self, options: DataOptions) -> pa.Schema:
        return pair_schema(self.task)

    def row_units(self, rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        lengths = [
            pc.list_value_length(rows.column(name)).to_numpy(zero_copy_only=False).astype(np.int64)
            for name in self.columns
            if name.endswith("_ids")
        ]
        if MASKS[self.task][0] not in rows.column_names:
            return pair_units(lengths[0], lengths[1:])
        trained = []
        for name in MASKS[self.task]:  # completions of several messages: the tokens their masks train
            column = rows.column(name).combine_chunks()
            values = pc.list_flatten(column).to_numpy(zero_copy_only=False)
            trained.append(row_sums(values, pc.list_value_length(column).to_numpy(zero_copy_only=False)))
        return pair_units(lengths[0], lengths[1:], trained)


PairModule = TaskModule[Pair | Unpaired, MeasuredPair, Fitted, PairPart, PairState]
TASK: PairModule = PairTask(Task.PREFERENCE)  # the preference task; `ftdata.run.kto` is its unpaired twin


def _prompt(stage: Stage, record: Pair | Unpaired, sides: tuple[Rendered, ...]) -> Rendered:
    """The inference prompt of `record`: where every side's final turn continues its prompt as rendered
    (method prefix), the sides' common text before their spans; else the generation-prompt render.

    Raises:
        UnusableRecord: the sides write the prompt differently (prompt_mismatch), or a render fails.
    """
    if multi_message(record):
        return trajectory_prompt(stage, record, sides)
    for rendered in sides:
        if len(rendered.spans) != 1:  # mask=last_assistant: the final turn's span, alone
            raise UnusableRecord(
                "the final assistant turn cannot be located in the rendering",
                location=record.prompt.source,
                field="messages",
                code=RejectCode.UNMASKABLE,
            )
    written = {r.text[: r.spans[0][0]] for r in sides if r.method == "prefix"}
    if len(written) == 1 and all(r.method == "prefix" for r in sides):
        first = sides[0]
        start = first.spans[0][0]
        return Rendered(first.text[:start], (), "prefix", literal=tuple(x for x in first.literal if x[1] <= start))
    prompt = replace(stage.renderer.generation_prompt(record.prompt), method="fallback")
    if written - {prompt.text}:
        raise UnusableRecord(
            "the chat template writes the shared prompt differently before the two replies, so the completions "
            "would not follow the same prompt; check the replies for markup the template reacts to",
            location=record.prompt.source,
            field="prompt",
            code=RejectCode.PROMPT_MISMATCH,
        )
    return prompt


def _shorten(stage: Stage, item: MeasuredPair, over: str) -> Fitted:
    """keep_response: the prompt cut by SFT's record-level truncation of prompt + the longer reply (oldest
    exchanges first, then the longest prompt message by prompt_cut), once, for both sides.

    The SFT row of that conversation holds what the pair row holds, give or take how the template writes
    it as history (a trailing newline, a moved system prompt): that difference is the budget's slack,
    re-aimed after each cut by what the measured pair still has over.
    """
    limit = stage.options.max_length
    longer = max(range(len(item.sides)), key=lambda i: len(item.sides[i].ids))
    side, conversation = item.sides[longer], sides_of(item.record)[longer]
    whole = stage.masker([stage.renderer(conversation)])[
        0
    ]  # the SFT row of prompt + reply (its exchanges located), cut
    if isinstance(whole, UnusableRecord):
        raise whole
    slack = len(whole.input_ids) - len(item.row.prompt) - len(side.ids)
    for _ in range(ROUNDS):
        truncator = Truncator(
            stage.renderer, stage.masker, max_length=limit + slack, prompt_cut=stage.options.prompt_cut
        )
        with limits.pinned():
            cut = truncator(conversation, whole, policy=TruncationPolicy.KEEP_RESPONSE)
        if not cut.rows or not cut.conversations or cut.code not in CUT_WORDS:
            break
        shorter = cut.conversations[0]
        record = replace(item.record, prompt=replace(shorter, messages=shorter.messages[:-1]))
        with limits.pinned():
            ((_, again),) = TASK.measure(stage, [(0, record)], False)
        if isinstance(again, Reject):
            return Fitted([], f"the pair with its prompt shortened cannot be used: {again.reason}", again.code)
        if again.row.length <= limit:
            words = (
                f"{CUT_WORDS[cut.code]}: the shared prompt cut from {len(item.row.prompt)} to "
                f"{len(again.row.prompt)} tokens"
            )
            return Fitted([again.row], f"{words} to fit {over}", cut.code, again)
        slack -= again.row.length - limit
    why = "the longer completion with the template alone does not fit"
    return Fitted([], f"too long: {why} ({over}); completions are never cut", RejectCode.TOO_LONG)


def continuation(rendered: Rendered, anchor: str | None) -> Rendered:
    """`rendered` (prompt + reply) from its trained span on, behind `anchor`, a special token that tokenizes
    alone (or the prompt's own last token where it takes the whitespace after it: `Border.anchor_before`):
    the masker then tokenizes the completion as it tokenizes in the whole text, starting with a fresh token
    at the border, and the prompt is not tokenized again for every side. Without an anchor, `rendered`
    itself (the masker splits a token across the border)."""
    if anchor is None:
        return rendered
    start = rendered.spans[0][0]
    shift = len(anchor) - start
    literal = tuple((a + shift, b + shift) for a, b in rendered.literal if a >= start)
    return Rendered(
        anchor + rendered.text[start:],
        tuple((a + shift, b + shift) for a, b in rendered.spans),
        rendered.method,
        notes=rendered.notes,
        literal=literal,
    )


def _measured(
    record: Pair | Unpaired, prompt: Rendered, prompt_tokens: Any, sides: list[tuple[Rendered, Rendered, Any]]
) -> MeasuredPair:
    """The pair from its prompt (rendered, masked) and its sides (each: prompt + reply rendered, the text the
    masker tokenized for it, that masked), verified.

    Raises:
        UnusableRecord: a side that fails the masker's check, a completion that is not one run of tokens
            starting at the border, or two sides with the same completion.
    """
    for masked in (prompt_tokens, *(m for _, _, m in sides)):
        if isinstance(masked, UnusableRecord):
            raise UnusableRecord(masked.reason, location=record.prompt.source, field=masked.field, code=masked.code)
    built = tuple(_side(rendered, text, masked, record) for rendered, text, masked in sides)
    if isinstance(record, Pair) and built[0].ids == built[1].ids:
        raise UnusableRecord(
            "chosen and rejected are the same tokens once rendered; nothing to prefer",
            location=record.prompt.source,
            field="rejected",
            code=RejectCode.CHOSEN_IS_REJECTED,
        )
    notes = tuple(
        dict.fromkeys(note for side in built for note in side.tokenized.notes if not _moot(note, record, prompt))
    )
    label = record.label if isinstance(record, Unpaired) else None
    masks = tuple(side.mask for side in built) if multi_message(record) else None
    row = PairRow(prompt_tokens.input_ids, tuple(side.ids for side in built), label, masks)
    if masks is not None:
        notes += (divergence(record, row),)
    return MeasuredPair(record, prompt, replace(prompt_tokens, notes=notes), built, row)


def _moot(note: Note, record: Pair | Unpaired, prompt: Rendered) -> bool:
    """Whether a side's note says the template dropped a system prompt that the pair's prompt holds (a
    template that writes it only into the inference prompt, as Mistral does)."""
    messages = record.prompt.messages
    system = messages[0].content.strip() if messages and messages[0].role == "system" else ""
    return note.code is NoteCode.SYSTEM_DROPPED and bool(system) and system in prompt.text


def _side(rendered: Rendered, text: Rendered, masked: Tokenized, record: Pair | Unpaired) -> Side:
    """The completion of one side (`text`: what was tokenized for it, `masked`): its trained tokens, one run
    whose first token starts at the border and whose token before starts before it.

    Raises:
        UnusableRecord: no trained token (no_response_left), or trained tokens that are not one run
            starting with a fresh token at the border (unverifiable).
    """
    labels = masked.labels
    trained = len(labels) - labels.count(IGNORE_INDEX)
    if not trained:
        raise UnusableRecord(
            "the reply leaves no completion token",
            location=record.prompt.source,
            field="messages",
            code=RejectCode.NO_RESPONSE_LEFT,
        )
    start = next(i for i, label in enumerate(labels) if label != IGNORE_INDEX)
    end = len(labels) - next(i for i, label in enumerate(reversed(labels)) if label != IGNORE_INDEX)
    border = text.spans[0][0]
    offsets = masked.offsets
    first = offsets[start - masked.prefix][0]
    before = offsets[start - masked.prefix - 1][0] if start > masked.prefix else -1
    runs = multi_message(record)  # a trajectory's completion: its turns trained, what it reads between them not
    if (end - start != trained and not runs) or first < border or before >= border:
        raise UnusableRecord(
            "verification failed: the completion's tokens are not one run that starts at the end of the prompt",
            location=record.prompt.source,
            field="labels",
            code=RejectCode.UNVERIFIABLE,
        )
    return Side(rendered, masked, start, end)


def _keep_start(row: PairRow, limit: int, over: str) -> Fitted:
    """TRL's keep_start, once for both sides: the prompt whole, each completion's end cut."""
    room = limit - len(row.prompt)
    if room < 1:
        why = (
            f"too long: the prompt alone is {len(row.prompt)} tokens, no completion token fits max_length {limit} "
            "(truncation=keep_start)"
        )
        return Fitted([], why, RejectCode.TOO_LONG)
    masks = None if row.masks is None else tuple(m[:room] for m in row.masks)
    kept = PairRow(row.prompt, tuple(c[:room] for c in row.completions), row.label, masks)
    if row.label is None and kept.completions[0] == kept.completions[1]:
        return Fitted(
            [],
            f"the cut left chosen and rejected the same ({over}, truncation=keep_start)",
            RejectCode.CHOSEN_IS_REJECTED,
        )
    lost = row.trained - kept.trained
    why = (
        f"end cut: kept the first {room} tokens of each completion ({lost} completion tokens lost; a cut one has "
        "no stop token)"
    )
    return Fitted([kept], f"{why} to fit {over}", RejectCode.END_CUT)


def _keep_end(row: PairRow, limit: int, over: str) -> Fitted:
    """TRL's keep_end, once for both sides: the prompt's first tokens cut (its BOS and system prompt with
    them), never a completion's."""
    longest = max(map(len, row.completions))
    if longest >= limit:
        why = (
            f"too long: the longer completion alone is {longest} tokens, max_length {limit} leaves no prompt "
            "token (truncation=keep_end)"
        )
        return Fitted([], why, RejectCode.TOO_LONG)
    drop = row.length - limit
    kept = PairRow(row.prompt[drop:], row.completions, row.label, row.masks)
    return Fitted(
        [kept],
        f"start cut: the shared prompt lost its first {drop} of {len(row.prompt)} tokens to fit {over}",
        RejectCode.START_CUT,
    )
