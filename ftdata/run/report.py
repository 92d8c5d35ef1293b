"""What a build did: counts, rejects (with reasons), token totals, warnings."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from ftdata.errors import FtdataError, Location, RecordError, TooManyRejects, UnusableRecord
from ftdata.outcomes import Note, NoteCode, RejectCode, RejectStage
from ftdata.tokens.packing import PackingStats


SAMPLES = 20  # rejects a report keeps as examples (the rejects file has all of them)
REPORT_FORMAT = 7  # part of the cache key: 2 = rejects counted by code, 3 = notes counted by code, 4 = split records,
# 5 = think blocks moved into reasoning, recorded token ids compared, 6 = records counted once, a missing stop token
# is not drift, 7 = unused columns and placeholders noted, media with no processor and video rejected, text records
NOTE_TEXTS = 3  # distinct texts a report keeps per note code (their count is the code's)
# Notes on data a record holds that its rows do not carry (`ftdata.records.unread`): in the summary line.
UNREAD = (NoteCode.UNUSED_COLUMN, NoteCode.PLACEHOLDER)
COUNTERS = ("rejected", "cut", "methods", "notes", "formats", "added_rows", "prompt_opens")


@dataclass(frozen=True, slots=True)
class TaskChoice:
    """The task a build makes rows for and why it was chosen (`ftdata.run.task.task_reason`): given, or what the
    data's first record is. The build summary, `ftdata preview` and `ftdata stats` print its `line`."""

    task: str
    reason: str = ""

    @property
    def line(self) -> str:
        """`sft: the first record is SFT data (...)`; the task alone where no reason is known (an older build)."""
        return f"{self.task}: {self.reason}" if self.reason else self.task

    def to_dict(self) -> dict[str, str]:
        return {"task": self.task, "task_reason": self.reason}


@dataclass(frozen=True, slots=True)
class Reject:
    """One record that was rejected (not in the output) or cut (in it, shortened).

    `stage` and `code` are what is counted; `reason` says it to a person.
    """

    location: str
    stage: RejectStage
    code: RejectCode
    reason: str
    kept: bool = False  # True for cut records: kept, but shortened
    tokens: int | None = None

    @classmethod
    def from_error(cls, exc: RecordError, location: Location, stage: RejectStage, *, on_error: str) -> Reject:
        """The reject for a record error, or the error re-raised.

        Unusable records are always rejected; malformed ones only with `on_error="skip"`.
        """
        if not isinstance(exc, UnusableRecord) and on_error == "raise":
            raise exc
        if exc.location is None:
            return cls(str(location), stage, exc.code, str(exc))
        reason = exc.reason if isinstance(exc, UnusableRecord) else str(exc).removeprefix(f"{exc.location}: ")
        return cls(str(exc.location), stage, exc.code, reason)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "stage": self.stage.value, "code": self.code.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Reject:
        if "code" not in data:
            raise FtdataError("this build was written by an older ftdata (its rejects have no code); build it again")
        return cls(**{**data, "stage": RejectStage(data["stage"]), "code": RejectCode(data["code"])})

    def to_json(self) -> str:
        """One line of the rejects file."""
        return json.dumps(self.to_dict(), ensure_ascii=False)


@dataclass
class BuildReport:
    """Counts of a build. `rejected`/`cut` map a `RejectCode` to a count; `notes` maps a
    `NoteCode` to the examples that carry such a note, and `note_texts` keeps the first few
    distinct texts of each code for people.

    Reports add up: `a.merge(b)` is the report of a's records followed by b's (counters add,
    the first `SAMPLES` rejects are kept in order), so workers can count their own part.
    """

    source: str = ""
    tokenizer: str = ""
    template: str = ""
    task: str = "sft"  # what the rows are: sft, preference (a sequence is a pair) or kto
    task_reason: str = ""  # why: given, or what the first record is (`ftdata.run.task.task_reason`)
    records: int = 0
    examples: int = 0
    sequences: int = 0
    rows: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    filtered: int = 0
    rejected: Counter[RejectCode] = field(default_factory=Counter)
    cut: Counter[RejectCode] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    notes: Counter[NoteCode] = field(default_factory=Counter)
    note_texts: dict[NoteCode, list[str]] = field(default_factory=dict)
    formats: Counter[str] = field(default_factory=Counter)
    # history=inference: records split into several rows, the rows added by the split by why (a SplitReason's
    # value: the reason of the row's last turn), and the tokens of those added rows.
    split_records: int = 0
    added_rows: Counter[str] = field(default_factory=Counter)
    added_tokens: int = 0
    prompt_opens: Counter[str] = field(
        default_factory=Counter
    )  # a prompt set: what its generation prompts open, per row (`run.prompts`)
    reasoning_moved: int = (
        0  # trained turns whose leading <think>…</think> content became their reasoning (`chat.think`)
    )
    # Trained turns with recorded completion token ids (ATIF), those whose trained tokens differ, and by how many
    # tokens in all (`ftdata.run.drift`).
    drift_turns: int = 0
    drift_differ: int = 0
    drift_tokens: int = 0
    drift_kept: int = 0  # recorded_ids: differing turns trained on their recorded ids
    drift_stop: int = 0  # turns whose recorded ids lack only the stop token (not drift)
    splits: dict[str, int] = field(default_factory=dict)
    markers: dict[str, Any] | None = None
    packing: dict[str, PackingStats] | None = None  # per split
    fingerprint: str = ""
    seconds: float = 0.0
    cached: bool = False
    rejects_path: str | None = None
    not_drawn: int = 0  # recipe records left out by mixing (written to the rejects file, not rejected)
    mix: list[dict[str, Any]] | None = None  # recipe: one row per source (see ftdata.mix.build)
    sample_rejects: list[Reject] = field(default_factory=list)

    @property
    def task_choice(self) -> TaskChoice:
        """The task and why it was chosen, as the build summary, preview and stats print it."""
        return TaskChoice(self.task, self.task_reason)

    def add(self, reject: Reject) -> None:
        if reject.stage is RejectStage.FILTER:
            self.filtered += 1
        elif reject.code is RejectCode.NOT_DRAWN:  # a choice of the mixture, not a rejection
            self.not_drawn += 1
        else:
            (self.cut if reject.kept else self.rejected)[reject.code] += 1
        self._sample([reject])

    def count_drift(self, drift: Sequence[Any]) -> None:
        """Count one row's compared turns (`ftdata.run.drift.Drift`s)."""
        self.drift_turns += len(drift)
        self.drift_differ += sum(d.differ > 0 for d in drift)
        self.drift_tokens += sum(d.differ for d in drift)
        self.drift_kept += sum(d.kept for d in drift)
        self.drift_stop += sum(d.stop_only for d in drift)

    def note(self, notes: tuple[Note, ...], *, counted: set[NoteCode] | frozenset[NoteCode] = frozenset()) -> None:
        """Count one example's notes: once per code, whatever the texts (`counted`: codes an earlier row of the
        same example counted already: their texts are kept, not counted again)."""
        self.notes.update(dict.fromkeys((note.code for note in notes if note.code not in counted), 1))
        for note in notes:
            self._note_text(note.code, note.text)

    def _note_text(self, code: NoteCode, text: str) -> None:
        texts = self.note_texts.setdefault(code, [])
        if len(texts) < NOTE_TEXTS and text not in texts:
            texts.append(text)

    def count_rejects(self, rejects: list[Reject], owners: list[int], failed: set[int]) -> None:
        """Count a batch's `rejects` (`owners`: the record of each; `failed`: the records not kept) by record: a
        rejected record once, by its first reject's code (`incomplete` only where it has no other), a kept record
        that was cut once, by its first cut. Every reject is kept as a sample (up to `SAMPLES`)."""
        firsts: dict[int, Reject] = {}
        for record, reject in zip(owners, rejects):
            if reject.kept == (record in failed):  # a cut of a record dropped after all, or a reject of a kept one
                continue
            held = firsts.get(record)
            if held is None or (held.code is RejectCode.INCOMPLETE and reject.code is not RejectCode.INCOMPLETE):
                firsts[record] = reject
        for reject in firsts.values():
            (self.cut if reject.kept else self.rejected)[reject.code] += 1
        self._sample(rejects)

    def _sample(self, rejects: list[Reject]) -> None:
        self.sample_rejects.extend(rejects[: max(0, SAMPLES - len(self.sample_rejects))])

    def merge(self, other: BuildReport) -> BuildReport:
        """Add `other`'s counts (the records after this report's) into this report; returns it.

        Only the counts merge: labels (source, tokenizer, ...) and the output's numbers
        (rows, splits, packing) stay this report's.
        """
        for name in (
            "records",
            "examples",
            "sequences",
            "tokens",
            "trained_tokens",
            "filtered",
            "not_drawn",
            "split_records",
            "added_tokens",
            "reasoning_moved",
            "drift_turns",
            "drift_differ",
            "drift_tokens",
            "drift_kept",
            "drift_stop",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name in COUNTERS:
            getattr(self, name).update(getattr(other, name))
        for code, texts in other.note_texts.items():
            for text in texts:
                self._note_text(code, text)
        self._sample(other.sample_rejects)
        return self

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def reject_ratio(self) -> float:
        """Rejected records per record read (filtered ones are not rejects)."""
        return min(1.0, self.n_rejected / self.records) if self.records else 0.0

    def check_reject_ratio(self, limit: float | None) -> None:
        """Raise when more than `limit` of the records were rejected (`max_reject_ratio`).

        Raises:
            TooManyRejects: the share, the counts, the limit and where the rejects are.
        """
        if limit is None or self.reject_ratio <= limit:
            return
        where = f"; see {self.rejects_path}" if self.rejects_path else ""
        raise TooManyRejects(
            f"{self.reject_ratio:.1%} of the records were rejected ({self.n_rejected:,} of {self.records:,}), "
            f"more than max_reject_ratio={limit}{where}"
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sample_rejects"] = [r.to_dict() for r in self.sample_rejects]
        for key in COUNTERS:
            out[key] = {str(getattr(k, "value", k)): n for k, n in getattr(self, key).items()}
        out["note_texts"] = {code.value: list(texts) for code, texts in self.note_texts.items()}
        if not self.prompt_opens:  # a prompt set's count: other tasks' reports stay as they were
            del out["prompt_opens"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildReport:
        data = dict(data)
        for key in COUNTERS:
            data[key] = Counter(data.get(key, {}))
        for key in ("rejected", "cut"):
            data[key] = Counter({_code(RejectCode, k, "reject category"): n for k, n in data[key].items()})
        data["notes"] = Counter({_code(NoteCode, k, "note"): n for k, n in data["notes"].items()})
        data["note_texts"] = {_code(NoteCode, k, "note"): list(t) for k, t in data.get("note_texts", {}).items()}
        data["sample_rejects"] = [Reject.from_dict(r) for r in data.get("sample_rejects", [])]
        if data.get("packing") is not None:
            data["packing"] = {split: PackingStats(**stats) for split, stats in data["packing"].items()}
        return cls(**data)

    def summary(self, *, unit: str = "sequences") -> str:
        """One line for logs and warnings. `unit`: what the task calls a row (its `TaskModule.unit`: pairs, ...)."""
        parts = [f"{self.records} records -> {self.sequences} {unit}"]
        if self.rows != self.sequences:
            parts.append(f"{self.rows} rows")
        if self.rejected:
            parts.append(f"{self.n_rejected} rejected ({_top(self.rejected)})")
        if self.cut:
            parts.append(f"{sum(self.cut.values())} cut ({_top(self.cut)})")
        if self.split_records:
            parts.append(
                f"{self.split_records} split into {self.split_records + sum(self.added_rows.values())} rows "
                "(each trained turn as inference sees it)"
            )
        if self.reasoning_moved:
            parts.append(f"{self.reasoning_moved} think blocks moved into reasoning")
        if self.drift_turns:
            kept = f", {self.drift_kept} trained on their recorded ids" if self.drift_kept else ""
            stop = f", {self.drift_stop} lack only the stop token" if self.drift_stop else ""
            drift = f"{self.drift_differ} of {self.drift_turns} recorded turns drift ({self.drift_tokens} tokens{kept})"
            parts.append(drift + stop)
        if unread := {code: self.notes[code] for code in UNREAD if self.notes[code]}:
            parts.append(f"{sum(unread.values())} noted ({_top(Counter(unread))})")  # data the rows do not carry
        if self.filtered:
            parts.append(f"{self.filtered} filtered out")
        if self.not_drawn:
            parts.append(f"{self.not_drawn} not drawn for the mixture")
        return ", ".join(parts)


_Code = TypeVar("_Code", RejectCode, NoteCode)


def _code(kind: type[_Code], key: str, what: str) -> _Code:
    try:
        return kind(key)
    except ValueError:
        raise FtdataError(f"this build was written by an older ftdata ({what} {key!r}); build it again") from None


def _top(counter: Counter[RejectCode] | Counter[NoteCode]) -> str:
    return ", ".join(f"{n} {code.value}" for code, n in counter.most_common(3))


class RejectsWriter:
    """Streams rejects to a JSONL file (when a path is given); they are counted in the report by merging.

    The file is written under a temporary name next to `path` and renamed to `path` by
    `close()`: a reader never sees half a file, and an input named as the rejects path is
    not touched before the build ends (the CLI refuses that path anyway). `abort()` drops it.
    """

    def __init__(self, report: BuildReport, path: str | Path | None):
        from ftdata.guard.safeio import AtomicFile

        self.report = report
        self._file: AtomicFile | None = None
        if path is not None:
            self._file = AtomicFile(Path(path))
            report.rejects_path = str(path)

    def write(self, rejects: list[Reject]) -> None:
        if self._file is not None:
            self._file.fh.writelines(reject.to_json() + "\n" for reject in rejects)

    def close(self) -> None:
        """Publish the file (no-op after `abort()`)."""
        if self._file is not None:
            self._file.commit()

    def abort(self) -> None:
        """Drop the temporary file: a failed build leaves no rejects file behind."""
        if self._file is not None:
            self._file.abort()
