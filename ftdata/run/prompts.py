"""Prompt sets through the record engine (`task=prompts`, for GRPO/RLOO): the inference prompt, verified.

    row ──records.prompts──▶ PromptRecord(prompt conversation, typed reward columns)
        ──render with add_generation_prompt (the stage's renderer: its checks and limits)──▶ text
        ──tokenize (one call a batch)──▶ prompt_ids ──verify: the template rendered by transformers
          (`apply_chat_template`, as TRL's trainers and vLLM render the stored `prompt`) writes the same text──▶
        ──fit max_prompt_length: rejected (too_long), or cut with cut_prompts──▶ PromptRow

A row holds `prompt` (the conversation as TRL's trainers read it: a list of {role, content} messages;
with a prompt template, the rendered text), `prompt_ids` (what `apply_chat_template(prompt,
add_generation_prompt=True, tokenize=True)` gives; with a prompt template, the text tokenized with the
tokenizer's special tokens, as TRL tokenizes a text prompt) and every reward column. Nothing is trained:
the trainer makes the completions. What the generation prompt writes after the assistant header (`<think>\\n`
opened, an empty think block) is noted per row and reported once (`BuildReport.prompt_opens`); the
format reward of `ftdata train --method grpo` reads it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from os.path import commonprefix
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ftdata.chat.renderer import shared_renders
from ftdata.errors import RecordError, TemplateError, UnusableRecord
from ftdata.options import DataOptions, RunOptions
from ftdata.outcomes import Note, NoteCode, RejectCode, RejectStage
from ftdata.records.prompts import PromptRecord, RewardColumns, prompt_columns, to_prompt
from ftdata.guard import limits
from ftdata.records.formats import Columns
from ftdata.run.stage import Ran, Stage, TaskModule
from ftdata.run.option_rules import Refused, TaskRules
from ftdata.run.seam import Memo, OneRow
from ftdata.run.open_columns import json_text_notes
from ftdata.tokens.shorten import cut_text
from ftdata.run.report import BuildReport, Reject
from ftdata.run.rows import finish_rows
from ftdata.run.rows_prompts import PromptPart, PromptRow, PromptRows, prompt_part, prompt_schema
from ftdata.run.prompt_stats import PromptStats, collect
from ftdata.tokens.reuse import ReusingEncoder
from ftdata.types import Example, MaskPolicy, Message, PromptCut, Rendered, Task, TruncationPolicy

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict
    from transformers import PreTrainedTokenizerBase

__all__ = [
    "TASK",
    "MeasuredPrompt",
    "PromptState",
    "PromptTask",
    "PromptTokens",
    "opened",
]

PROBE = "Q7Z"  # an assistant content no template writes by itself: where a turn's text starts


@dataclass(frozen=True, slots=True)
class PromptTokens:
    """A prompt's tokens and the notes its render left (`seam.Noted`): nothing in it is trained, so it has no labels."""

    input_ids: list[int]
    notes: tuple[Note, ...] = ()


@dataclass(frozen=True, slots=True)
class MeasuredPrompt(OneRow):
    """A prompt rendered, tokenized and verified, not yet fitted: read by `Stage.run` as a `Measured`."""

    record: PromptRecord
    rendered: Rendered
    tokenized: PromptTokens
    row: PromptRow
    opens: str = ""

    @property
    def example(self) -> Example:
        return self.record.example

    @property
    def location(self) -> str:
        return str(self.record.source)

    @property
    def total(self) -> int:
        return len(self.row.prompt_ids)


@dataclass(frozen=True, slots=True)
class PromptState:
    """What the prompt task reads records with, compiled once per stage: the column map, the typed reward
    columns, the encoder of the prompts' ids, and what the generation prompt opens per template kwargs
    (probed on first use: `opened`)."""

    columns: Columns
    rewards: RewardColumns
    encoder: ReusingEncoder  # the template's constant stretches tokenized once per build (`ftdata.tokens.reuse`)
    opens: Memo[str] = field(default_factory=Memo)


@dataclass(frozen=True, slots=True)
class FittedPrompt:
    """A measured prompt fitted to max_prompt_length: its row (none when rejected), why it was cut or dropped."""

    rows: list[PromptRow]
    reason: str = ""
    code: RejectCode | None = None


class PromptTask:
    """Prompt sets (`TaskModule`): the inference prompt of each record and its reward columns, nothing trained."""

    task = Task.PROMPTS
    columns: tuple[str, ...] = ("prompt", "prompt_ids")  # and the reward columns the build typed
    unit = "prompts"
    # The options only a prompt set reads, and what it refuses, never ignores (a value listed: only that value).
    rules = TaskRules(
        own=("max_prompt_length", "cut_prompts", "reward_columns"),
        noun="prompt sets",
        refuses=(
            Refused("packing", "the trainer generates from each prompt alone"),
            Refused("padding", "the trainer pads its own batches"),
            Refused(
                "truncation",
                "a prompt is fitted to max_prompt_length: rejected, or cut with cut_prompts",
                (TruncationPolicy.SPLIT, TruncationPolicy.KEEP_START, TruncationPolicy.KEEP_END),
            ),
            Refused(
                "mask", "a prompt set trains nothing; the trainer makes the completions", (MaskPolicy.TRAIN_ON_PROMPT,)
            ),
            Refused("mask_reasoning", "a prompt set holds no reasoning to train"),
            Refused(
                "format", "prompt shapes are detected per record (map the prompt with columns={'instruction': COLUMN})"
            ),
            Refused("processor", "prompt sets with images are not built yet"),
            Refused("history", "a prompt set trains no turn"),
        ),
    )

    def options(self, options: DataOptions) -> DataOptions:
        return options

    def compiled(self, stage: Stage) -> PromptState:
        columns, rewards = prompt_columns(stage.options.columns), RewardColumns(stage.options.reward_columns)
        return PromptState(columns, rewards, ReusingEncoder(stage.tokenizer))

    def examples(self, stage: Stage, location: Any, row: Any) -> tuple[PromptRecord, ...]:
        state = stage.state_as(PromptState)
        return (to_prompt(row, location, columns=state.columns, rewards=state.rewards, roles=stage.options.roles),)

    def measure(
        self, stage: Stage, formatted: list[tuple[int, PromptRecord | Reject]], responses: bool
    ) -> list[tuple[int, MeasuredPrompt | Reject]]:
        """Render every prompt, tokenize them in one call, verify each against transformers' own render."""
        out: list[Any] = []
        todo: list[tuple[int, PromptRecord, Rendered, Any]] = []
        plain: list[tuple[int, PromptRecord, list[dict[str, str]]]] = []
        for record, item in formatted:
            if isinstance(item, Reject):
                out.append((record, item))
                continue
            try:
                if (messages := _plain(stage, item.example)) is not None:
                    plain.append((len(out), item, messages))
                    out.append((record, None))
                    continue
                with (
                    shared_renders()
                ):  # the stored prompt, rendered again, is the same render when ftdata changed nothing
                    rendered, stored = _render(stage, item.example)
            except RecordError as exc:
                out.append((record, stage.reject(exc, item.source, RejectStage.RENDER)))
                continue
            todo.append((len(out), item, rendered, stored))
            out.append((record, None))
        todo += _render_plain(stage, plain, out)
        chat = stage.renderer.chat is not None
        texts = [rendered.text for _, _, rendered, _ in todo]
        ids = stage.state_as(PromptState).encoder.encode(texts, stage.tokenizer, special=not chat) if todo else []
        for (i, item, rendered, stored), prompt_ids in zip(todo, ids):
            opens = opened(stage, item.example) if chat else ""
            notes = (*item.example.notes, *rendered.notes)
            if opens:
                notes += (
                    Note(NoteCode.PROMPT_OPENS, f"the generation prompt opens {opens!r}; a completion continues it"),
                )
            tools = json.dumps(list(item.example.tools), ensure_ascii=False) if item.example.tools else None
            row = PromptRow(stored, list(prompt_ids), item.columns, tools)
            out[i] = (out[i][0], MeasuredPrompt(item, rendered, PromptTokens(row.prompt_ids, notes), row, opens))
        return out

    def fit(self, stage: Stage, item: MeasuredPrompt, policy: TruncationPolicy | None) -> FittedPrompt:
        """`item` within max_prompt_length (default max_length): kept; else rejected (too_long), raised
        (truncation=error), or with cut_prompts its longest message shortened by prompt_cut until it fits."""
        limit = stage.options.max_prompt_length or stage.options.max_length
        if item.total <= limit:
            return FittedPrompt([item.row])
        over = f"the prompt is {item.total} tokens > max_prompt_length {limit}"
        if (policy or stage.options.truncation) is TruncationPolicy.ERROR:
            raise RecordError(
                f"{over}; raise max_prompt_length, set cut_prompts, or choose truncation=drop",
                location=item.record.source,
                field="prompt",
            )
        if not stage.options.cut_prompts or policy is TruncationPolicy.DROP:
            return FittedPrompt([], f"too long: {over} (set cut_prompts to cut it)", RejectCode.TOO_LONG)
        try:
            return _cut(stage, item, limit, over)
        except RecordError as exc:
            return FittedPrompt([], f"too long: {over}; cut, it cannot be rendered: {exc.reason}", RejectCode.TOO_LONG)

    def reduce(self, stage: Stage, ran: Ran[MeasuredPrompt, FittedPrompt]) -> PromptPart:
        return prompt_part(ran)

    def open_rows(self, path: Path, options: DataOptions) -> PromptRows:
        return PromptRows(path, options)

    def finish(
        self,
        path: Path,
        options: DataOptions,
        report: BuildReport,
        *,
        splits: dict[str, np.ndarray] | None,
        pad_id: int,
    ) -> Dataset | DatasetDict:
        if notes := json_text_notes(path):
            report.note(notes)
        return finish_rows(path, options, report, splits=splits)

    def stats(
        self, source: Any, stage: Stage, run: RunOptions | None = None, *, progress: Callable[[int], None] | None = None
    ) -> PromptStats:
        return collect(source, stage, run, progress=progress)

    def jsonl(self, split: Dataset, tokenizer: PreTrainedTokenizerBase) -> Iterator[dict[str, object]]:
        """Rows with every column plus `text`: the prompt_ids decoded (what the model is given)."""
        for batch in split.iter(batch_size=256):
            texts = tokenizer.batch_decode(batch["prompt_ids"], skip_special_tokens=False)
            for i, text in enumerate(texts):
                yield {"text": text, **{column: values[i] for column, values in batch.items()}}

    def schema(self, options: DataOptions) -> pa.Schema:
        return prompt_schema(options)

    def row_units(self, rows: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """Each prompt's tokens; nothing is trained (the trainer samples the completions)."""
        lengths = pc.list_value_length(rows.column("prompt_ids")).to_numpy(zero_copy_only=False).astype(np.int64)
        return lengths, np.zeros(len(lengths), dtype=np.int64)


TASK: TaskModule[PromptRecord, MeasuredPrompt, FittedPrompt, PromptPart, PromptState] = PromptTask()


def _render(stage: Stage, example: Example) -> tuple[Rendered, list[dict[str, str]] | str]:
    """The inference prompt of `example` (the stage's renderer) and the prompt as the row stores it, verified:
    transformers renders the stored messages to the same text.

    Raises:
        UnusableRecord: the template cannot render the prompt (control tokens, tool data it does not write, an
            error), or transformers renders the stored messages to other text (unverifiable).
    """
    rendered = stage.renderer.generation_prompt(example)
    if (
        stage.renderer.chat is None
    ):  # a prompt template: the text is the prompt (TRL's standard, not conversational, form)
        return rendered, rendered.text
    stored = _stored(stage.renderer.prompt_example(example))
    expected = _hf_render(stage, example, stored, generation=True)
    if expected != rendered.text:
        at = len(commonprefix([expected, rendered.text]))
        raise UnusableRecord(
            "verification failed: transformers' apply_chat_template writes the stored prompt differently from "
            "ftdata's "
            f"render at character {at} ({expected[at : at + 30]!r} vs {rendered.text[at : at + 30]!r}); "
            "a trainer would see "
            "another prompt",
            location=example.source,
            field="prompt",
            code=RejectCode.UNVERIFIABLE,
        )
    return rendered, stored


def _plain(stage: Stage, example: Example) -> list[dict[str, str]] | None:
    """The prompt as the row stores it when the chat template alone renders it (`Renderer.plain_prompt`) and
    ftdata gives the template exactly those messages: then the template's render of the stored messages, the
    one a trainer makes, is ftdata's render too (the same function of the same arguments). None otherwise."""
    prompt = stage.renderer.plain_prompt(example)
    if prompt is None:
        return None
    try:
        stored = _stored(prompt)
    except UnusableRecord:  # rendered on its own, which says why in its order of checks
        return None
    return stored if stage.renderer.chat_messages(prompt) == stored else None


def _render_plain(
    stage: Stage, plain: list[tuple[int, PromptRecord, list[dict[str, str]]]], out: list[Any]
) -> list[Any]:
    """The prompts `_plain` kept, rendered by one template call for all (`ChatRenderer.render_all`: transformers'
    render of the stored messages, as TRL's trainers render a batch), or one by one where that call fails, a
    failing prompt rejected as `measure` rejects it. Fills rejects into `out`; returns what `measure` tokenizes."""
    chat = stage.renderer.chat
    texts = chat.render_all([stored for _, _, stored in plain], generation=True) if plain and chat is not None else []
    if texts is not None:
        return [
            (i, item, Rendered(text, (), "generation prompt"), stored) for (i, item, stored), text in zip(plain, texts)
        ]
    todo = []
    for i, item, _ in plain:
        try:
            with shared_renders():
                rendered, stored = _render(stage, item.example)
        except RecordError as exc:
            out[i] = (out[i][0], stage.reject(exc, item.source, RejectStage.RENDER))
            continue
        todo.append((i, item, rendered, stored))
    return todo


def _stored(example: Example) -> list[dict[str, str]]:
    """The prompt as a row stores it: the messages as chat templates read them; {role, content} only, so every
    row of a prompt set has one Arrow type (a message with tool calls, reasoning or a tool's name is refused)."""
    out = []
    for i, message in enumerate(example.chat_messages()):
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise UnusableRecord(
                f"message {i} carries {', '.join(extra)}; a prompt set stores {{role, content}} messages: give the "
                "prompt "
                "as the conversation before the model's turn without tool calls or reasoning",
                location=example.source,
                field=f"messages[{i}]",
                code=RejectCode.NOT_RENDERED,
            )
        out.append({"role": message["role"], "content": message["content"]})
    return out


def _hf_render(stage: Stage, example: Example, messages: list[dict[str, Any]], *, generation: bool) -> str:
    """`messages` rendered by transformers' `apply_chat_template` (through the stage's bounded chat renderer) with
    the build's and the record's kwargs: as a trainer renders the stored prompt. Inside `shared_renders`, a render
    of the very arguments ftdata's own render had is that render (the same function of the same input)."""
    try:
        chat = stage.renderer.chat
        assert chat is not None  # transformers' render of a chat template: called for chat templates only
        return chat(
            messages,
            generation=generation,
            tools=list(example.tools) or None,
            kwargs=example.template_kwargs,
            location=example.source,
        )
    except TemplateError as exc:  # the template's own error: the record is unusable, not the build
        raise UnusableRecord(
            f"the chat template raised on the stored prompt: {exc}",
            location=example.source,
            field="prompt",
            code=RejectCode.TEMPLATE_ERROR,
        ) from None


def opened(stage: Stage, example: Example) -> str:
    """What the generation prompt writes after the assistant header: the text it adds that a reply written
    as a turn does not start with (`<think>\\n` opened, an empty think block closed). Once per stage and kwargs."""
    # the build's kwargs are the stage's: a record's own kwargs make the key (none: one key, no JSON text per record)
    key = json.dumps(example.template_kwargs, sort_keys=True, default=str) if example.template_kwargs else ""
    return stage.state_as(PromptState).opens.get(key, lambda: _probed_opens(stage, example))


def _probed_opens(stage: Stage, example: Example) -> str:
    """`opened`, probed: the generation prompt and a reply written as history, rendered with `example`'s kwargs."""
    probe = replace(example, messages=(Message("user", "P"),), tools=())  # once per kwargs, not per tool set
    user = {"role": "user", "content": "P"}
    try:
        base = _hf_render(stage, probe, [user], generation=False)
        prompt = _hf_render(stage, probe, [user], generation=True)
        # a reply written as history (a user turn after it): its header without what a template adds to a last turn
        turn = _hf_render(stage, probe, [user, {"role": "assistant", "content": PROBE}, user], generation=False)
    except UnusableRecord:  # a template that refuses the probe: what it opens is not known, and nothing is claimed
        base = prompt = turn = ""
    added = prompt[len(base) :] if prompt.startswith(base) else ""
    start = turn[len(base) :].split(PROBE)[0] if turn.startswith(base) and PROBE in turn else ""
    return added[len(commonprefix([added, start])) :] if added else ""


def _cut(stage: Stage, item: MeasuredPrompt, limit: int, over: str) -> FittedPrompt:
    """The prompt with its longest message shortened by prompt_cut (by characters, halving the step) to fit."""
    messages = item.example.messages
    longest = max(range(len(messages)), key=lambda i: len(messages[i].content) if messages[i].role != "system" else -1)
    text = messages[longest].content
    keep_lo, keep_hi, best = 0, len(text), None
    while keep_lo < keep_hi:
        keep = (keep_lo + keep_hi + 1) // 2
        shorter = replace(
            item.example,
            messages=(
                *messages[:longest],
                replace(messages[longest], content=_shortened(text, keep, stage.options.prompt_cut)),
                *messages[longest + 1 :],
            ),
        )
        with limits.pinned():
            ((_, again),) = TASK.measure(stage, [(0, replace(item.record, example=shorter))], False)
        if isinstance(again, Reject):
            raise RecordError(again.reason)
        if again.total <= limit:
            best, keep_lo = again, keep
        else:
            keep_hi = keep - 1
    if best is None:
        return FittedPrompt([], f"too long: {over}; the rest of the prompt alone does not fit", RejectCode.TOO_LONG)
    code = RejectCode.START_CUT if stage.options.prompt_cut is PromptCut.START else RejectCode.END_CUT
    why = (
        f"prompt shortened: message {longest} cut from {len(text)} to {keep_lo} characters "
        f"({stage.options.prompt_cut.value}), {item.total} -> {best.total} tokens"
    )
    return FittedPrompt([best.row], f"{why} to fit: {over}", code)


def _shortened(text: str, keep: int, cut: PromptCut) -> str:
    """`text` with `keep` characters kept as prompt_cut says: the cut every task makes (`tokens.shorten.cut_text`,
    the same marker where middle takes text out), on character edges."""
    return cut_text(text, [(i, i + 1) for i in range(len(text))], drop=len(text) - keep, side=cut)
