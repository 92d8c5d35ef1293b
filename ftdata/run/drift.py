"""Retokenization drift: what a build trains for an agent turn against the tokens the model generated.

An agent harness may record the token ids the model sampled for a turn (ATIF's
`metrics.completion_token_ids`, on `Message.token_ids`). ftdata trains the turn as the template renders
it, tokenized again: where the two differ (another tokenization of the same text, a template that writes
the turn otherwise than the model did, a stop token the harness left out), the model is trained on
tokens it did not produce. Each trained turn with recorded ids is compared with its run of trained
tokens; a turn that differs gets a `token_drift` note, and the build counts turns and tokens. Recorded ids that
are the trained ones less the last (the stop token, which harnesses often leave out of the stream) are not
drift: that turn gets a `stop_missing` note and is counted as such.

With `recorded_ids` a differing turn trains its recorded ids in place of its run (`recorded`), where they
decode to the same text as the run: the model is trained on what it sampled, in the context the row gives.

    recorded  1 2 3 4 5 6
    trained   1 2 9 9 9 5 6   -> 3 differ: the longer side's tokens between the common prefix and suffix
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from os.path import commonprefix

from ftdata.chat.render import trained_turns
from ftdata.chat.supervision import flagged
from ftdata.outcomes import Note, NoteCode
from ftdata.tokens.masking import Tokenized
from ftdata.options import DataOptions
from ftdata.types import IGNORE_INDEX, Example, MaskPolicy


@dataclass(frozen=True, slots=True)
class Drift:
    """One trained turn with recorded ids: how many it recorded, how many it trains, and how many differ (the longer
    side's tokens between the common start `head` and the common end `tail`; 0 where they are the same tokens, or
    where the recorded ids lack only the trained stop token: `stop_only`)."""

    turn: int
    recorded: int
    differ: int
    run: tuple[int, int] = (0, 0)  # [start, end) of the turn's trained tokens in the row
    kept: bool = False  # recorded_ids: the row trains the recorded ids in place of the run
    head: int = 0
    tail: int = 0
    stop_only: bool = False  # the recorded ids are the trained ones less the last: the stop token, not recorded

    @property
    def trained(self) -> int:
        return self.run[1] - self.run[0]

    def note(self) -> Note:
        turn = f"messages[{self.turn}]: its {self.recorded} recorded completion tokens"
        if self.stop_only:
            why = "the stop token, which the harness did not record (not drift: the turn trains its stop token)"
            return Note(NoteCode.STOP_MISSING, f"{turn} are the tokens trained but the last, {why}")
        if self.kept:
            return Note(
                NoteCode.TOKEN_DRIFT,
                f"messages[{self.turn}]: trains its {self.recorded} recorded completion tokens "
                f"({self.differ} differ from the re-tokenized turn, which decodes to the same text)",
            )
        shared = f"they share the first {self.head} and the last {self.tail}"
        shared = shared if self.head or self.tail else "from the start"
        text = f"{turn} and the {self.trained} tokens trained differ, {shared} (retokenization drift)"
        return Note(NoteCode.TOKEN_DRIFT, text)


def ends(recorded: list[int] | tuple[int, ...], trained: list[int]) -> tuple[int, int]:
    """How many tokens `recorded` and `trained` share at their start, and then at their end."""
    recorded, trained = list(recorded), list(trained)
    head = len(commonprefix([recorded, trained]))
    return head, len(commonprefix([recorded[head:][::-1], trained[head:][::-1]]))


def differing(recorded: list[int] | tuple[int, ...], trained: list[int]) -> int:
    """The longer side's tokens between the common prefix and the common suffix (0: the same tokens).

    >>> differing([1, 2, 3, 4, 5, 6], [1, 2, 9, 9, 9, 5, 6]), differing([1, 2], [1, 2])
    (3, 0)
    """
    head, tail = ends(recorded, trained)
    return max(len(recorded), len(trained)) - head - tail


def compare(turn: int, ids: tuple[int, ...], trained: list[int], run: tuple[int, int]) -> Drift:
    """The drift of one turn: `ids` recorded, `trained` its run of trained tokens at `run` in the row.

    >>> compare(1, (5, 6), [5, 6, 7], (0, 3)).stop_only, compare(1, (5, 8), [5, 6, 7], (0, 3)).differ
    (True, 2)
    """
    if len(trained) == len(ids) + 1 and list(ids) == trained[:-1]:  # the harness left out the stop token
        return Drift(turn, len(ids), 0, run, head=len(ids), stop_only=True)
    head, tail = ends(ids, trained)
    return Drift(turn, len(ids), max(len(ids), len(trained)) - head - tail, run, head=head, tail=tail)


def label_runs(labels: list[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of trained labels: [-100, 5, 6, -100, 7] -> [(1, 3), (4, 5)]."""
    out: list[tuple[int, int]] = []
    for k, label in enumerate(labels):
        if label == IGNORE_INDEX:
            continue
        if out and out[-1][1] == k:
            out[-1] = (out[-1][0], k + 1)
        else:
            out.append((k, k + 1))
    return out


def token_drift(example: Example, tokenized: Tokenized, options: DataOptions) -> tuple[Drift, ...]:
    """The drift of each trained turn of this row that has recorded ids; () where a run of trained tokens is not
    a whole turn (mask_reasoning trains the answer alone, mask=train_on_prompt everything) or the runs are not
    one per trained turn (train_detail holes)."""
    if not any(m.token_ids is not None for m in example.messages) or options.mask_reasoning:
        return ()
    if options.mask is MaskPolicy.TRAIN_ON_PROMPT:
        return ()
    turns = [i for i, t in enumerate(trained_turns(flagged(example.messages), options.mask)) if t]
    runs = label_runs(tokenized.labels)
    if len(runs) != len(turns):
        return ()
    return tuple(
        compare(i, ids, tokenized.input_ids[a:b], (a, b))
        for i, (a, b) in zip(turns, runs)
        if (ids := example.messages[i].token_ids) is not None
    )


def recorded(
    tokenized: Tokenized, example: Example, drift: tuple[Drift, ...], tokenizer: Any
) -> tuple[Tokenized, tuple[Drift, ...]]:
    """`tokenized` with each differing turn's run replaced by its recorded ids where they decode to the run's text,
    and the drifts, those replaced marked `kept` (a turn whose ids decode otherwise keeps its run and its note).
    Exchange cuts after a replaced run move with it; its tokens keep the run's loss weight."""
    ids, labels = list(tokenized.input_ids), list(tokenized.labels)
    weights = list(tokenized.weights) if tokenized.weights is not None else None
    offsets, lead = list(tokenized.offsets), tokenized.prefix  # offsets are of the tokens after the BOS ftdata adds
    cuts = list(tokenized.cuts)
    out = list(drift)
    for k in sorted(range(len(out)), key=lambda k: -out[k].run[0]):  # from the last run: earlier positions stay put
        d = out[k]
        (a, b), new = d.run, list(example.messages[d.turn].token_ids or ())
        if not d.differ or _text(tokenizer, new) != _text(tokenizer, ids[a:b]):
            continue
        if len(offsets) == len(ids) - lead and a >= lead:  # each recorded token's characters: decoded prefixes' ends
            start = offsets[a - lead][0]
            ends = [start + len(_text(tokenizer, new[: k + 1])) for k in range(len(new))]
            offsets[a - lead : b - lead] = list(zip([start, *ends[:-1]], ends))
        ids[a:b], labels[a:b] = new, new
        if weights is not None:
            weights[a:b] = [weights[a]] * len(new)
        cuts = [c + len(new) - (b - a) if c > a else c for c in cuts]
        out[k] = replace(d, kept=True)
    if not any(d.kept for d in out):
        return tokenized, drift
    return replace(tokenized, input_ids=ids, labels=labels, weights=weights, cuts=tuple(cuts), offsets=offsets), tuple(
        out
    )


def _text(tokenizer: Any, ids: list[int]) -> str:
    return str(tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False))
