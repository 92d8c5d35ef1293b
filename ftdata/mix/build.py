"""A recipe built: every source through the run loop, then deduplicated, decontaminated, split and mixed.

    source 1 ─┐   loop.run (its own options)         one rows file        per record: units, split
    source 2 ─┼─▶ rows + rendered text per record ─▶ + dedup / eval  ──▶ plan_mix ──▶ rows of each split
    source 3 ─┘   (every engine: the same records)     overlap checks      (seeded)     ──▶ finish

Every decision is taken here, in record order, from what the records are: the same seed gives
the same mixture under every engine. Each source's records are split (test_size) before
mixing, so no copy of a test record is drawn into train; the test split keeps each held-out
record once. A record removed as a duplicate or an evaluation overlap, or left out by the
mixture, is written to the rejects file with its source and what it repeats or overlaps.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ftdata.run import loop

from ftdata.run.rows import check_split
from ftdata.run.task import sources_task

from ftdata.guard import safeio
from ftdata.guard.inputs import Stat, add_read
from ftdata.run.stage import Ran, Stage, task_module
from ftdata.errors import ConfigError, FtdataError, Location
from ftdata.guard.bounds import ReadBounds
from ftdata.io.counter import count_records
from ftdata.mix.contamination import EvalIndex
from ftdata.mix.dedup import Deduplicator, digest, exact_repeats
from ftdata.mix.recipe import Dedup, MixBy, Recipe
from ftdata.mix.shares import Plan, SourceSizes, plan_mix
from ftdata.run.executors import hand_back_freed_memory, ray_cluster
from ftdata.options import BuildOptions, RunOptions
from ftdata.outcomes import RejectCode, RejectStage
from ftdata.run.report import BuildReport, Reject, RejectsWriter
from ftdata.types import Engine

__all__ = ["build_recipe", "check_shares", "recipe_stages"]

UNITS = ("records", "tokens", "trained_tokens")


@dataclass
class _Part:
    """A batch of one source: the task's part, and each kept record's location (and text, when asked)."""

    task_part: Any
    located: list[tuple[int, Location, str]]  # (record in the batch, its location, its rendered text or "")


def _records(stage: Stage, ran: Ran, *, texts: bool) -> _Part:
    """The batch's part, and each kept record's location and text: its rendering (a pair's: its prompt's,
    so dedup and decontamination read the prompt)."""
    seen: dict[int, tuple[Location, list[str]]] = {}
    for record, item, _ in ran.kept():
        where, parts = seen.setdefault(record, (item.example.source, []))
        if texts:
            parts.append(item.rendered.text)
    return _Part(stage.reduce(ran), [(record, where, "\n".join(parts)) for record, (where, parts) in seen.items()])


def _with_texts(stage: Stage, ran: Ran) -> _Part:
    """The recipe reducer when dedup or decontamination reads the texts (module level: it travels by name)."""
    return _records(stage, ran, texts=True)


def _without_texts(stage: Stage, ran: Ran) -> _Part:
    return _records(stage, ran, texts=False)


@dataclass
class _Source:
    """What the build learned of one source: its records' ids in the rows file and its counts."""

    name: str
    report: BuildReport
    first: int = 0  # record ids first .. last (ArrowRows numbering)
    last: int = 0
    removed: dict[str, int] = field(default_factory=lambda: {"deduplicated": 0, "decontaminated": 0})


class _Spill:
    """Rows of int64 columns written to a scratch file as they come and read back mapped from it: their pages
    are the page cache's, not the build's own memory (a million records' locations, digests and row lengths held
    77 MiB)."""

    def __init__(self, path: Path, width: int) -> None:
        self.path, self.width, self.rows = path, width, 0
        self._file = path.open("wb")

    def add(self, block: np.ndarray) -> None:
        self._file.write(np.ascontiguousarray(block, dtype=np.int64).tobytes())
        self.rows += len(block)

    def read(self) -> np.ndarray:
        """Every row written, as one `(rows, width)` array mapped read-only from the file."""
        if not self._file.closed:
            self._file.flush()
        if not self.rows:
            return np.zeros((0, self.width), dtype=np.int64)
        return np.memmap(self.path, dtype=np.int64, mode="r", shape=(self.rows, self.width))

    def close(self) -> None:
        self._file.close()


class _Records:
    """Each kept record's location (file number, line, index) by record id, spilled to `path`."""

    def __init__(self, path: Path) -> None:
        self._file_ids: dict[str, int] = {}  # file -> its number, in the order first seen
        self._spill = _Spill(path, 4)  # record id, file number, line, index (-1: none)

    def add(self, ids: list[int], locations: list[Location]) -> None:
        rows = [
            (
                record,
                self._file_ids.setdefault(loc.source, len(self._file_ids)),
                -1 if loc.line is None else loc.line,
                -1 if loc.index is None else loc.index,
            )
            for record, loc in zip(ids, locations, strict=True)
        ]
        self._spill.add(np.asarray(rows, dtype=np.int64).reshape(-1, 4))

    def locations(self, records: np.ndarray) -> list[str]:
        """The locations of `records` (ids), in that order."""
        if not len(records):
            return []
        table, files = self._spill.read(), list(self._file_ids)
        order = np.argsort(table[:, 0], kind="stable")
        at = order[np.searchsorted(table[:, 0], records, sorter=order)]
        return [
            str(Location(files[f], None if line < 0 else int(line), None if index < 0 else int(index)))
            for f, line, index in table[at, 1:]
        ]

    def close(self) -> None:
        self._spill.close()


def recipe_stages(recipe: Recipe, tokenizer: Any) -> list[Stage]:
    """Each source's compiled stage: its own options over the recipe's, the recipe's task (`recipe_task`)
    and a prompt set's reward columns (`recipe_rewards`) for all; what declares the files it reads. A recipe draws,
    dedups and holds out records one by one, so history=tree grows a tree per record (no tree across records)."""
    extra = {**recipe_task(recipe), "tree_across_records": False}
    stages = [Stage(tokenizer, recipe.source_options(spec).updated(**extra).data) for spec in recipe.sources]
    for stage in stages:  # one memo of repeated texts per tokenizer, not per source (`Masker.share_memos`)
        stage.masker.share_memos(next(s for s in stages if s.masker.backend is stage.masker.backend).masker)
    return stages


def recipe_task(recipe: Recipe) -> dict[str, Any]:
    """The options every source of `recipe` takes from its data when the recipe sets none: the task its sources'
    first records name, and a prompt set's reward columns (`ftdata.run.task.sources_task`).

    Raises:
        ConfigError: sources of different tasks, or a reward column two sources type differently.
    """
    try:
        return sources_task(
            {spec.name: (spec.files()[0], recipe.source_options(spec)) for spec in recipe.sources},
            recipe.build_options(),
        )
    except ConfigError as exc:
        raise ConfigError(f"{recipe.origin}: {exc}") from None


def build_recipe(
    recipe: Recipe,
    *,
    tokenizer: Any,
    options: BuildOptions,
    progress: Callable[[int], None] | None = None,
    stages: list[Stage] | None = None,
    media: dict[str, Stat | None] | None = None,
) -> tuple[Any, BuildReport]:
    """Build `recipe` in memory: the mixed dataset and its report (`report.mix`: one row per source).

    `options`: the recipe's whole-build options as the caller resolved them (run options,
    rejects path). Sources are read in order; so are their records. `stages`: each source's
    (`recipe_stages`, made here when None); `media`: filled with the media files records named.

    Raises:
        ConfigError: a target no source can meet (before anything is written), a bad recipe.
        FtdataError: what a source's records raise; nothing kept.
    """
    started = time.perf_counter()
    data = options.updated(**recipe_task(recipe)).data
    report = BuildReport(
        source=recipe.origin,
        tokenizer=str(getattr(tokenizer, "name_or_path", "")),
        template="per source",
        task=task_module(data.task).task.value,
    )
    reading = _Reading(recipe, RejectsWriter(report, options.output.rejects_path), data, media=media)
    try:
        with _one_cluster(options.run):
            for spec, stage in zip(recipe.sources, stages or recipe_stages(recipe, tokenizer)):
                reading.source(spec, stage, options.run, progress)
        reading.close()
        reading.dedupe()
        splits, mix = _mixture(recipe, data, reading)
    except BaseException:
        reading.sink.abort()
        reading.close()
        raise
    reading.sink.close()
    sources, rows = reading.sources, reading.rows.path
    del reading  # what it holds per record (removed ids, duplicates, mapped files) goes before the rows are written
    hand_back_freed_memory()  # and what the mixture freed: packing's own arrays come on top of what is kept
    for source in sources:
        report.merge(source.report)
    report.mix = mix
    report.rejects_path = options.output.rejects_path
    if not len(splits["train"]):
        raise FtdataError(f"{recipe.origin}: the mixture has no records (every record was rejected or removed)")
    dataset = task_module(data.task).finish(rows, data, report, splits=splits, pad_id=0)
    report.sequences = int(sum(m["sequences"] for m in mix))
    report.tokens = int(sum(m["tokens"]["used"] for m in mix))
    report.trained_tokens = int(sum(m["trained_tokens"]["used"] for m in mix))
    report.seconds = round(time.perf_counter() - started, 3)
    return dataset, report


def _one_cluster(run: RunOptions) -> Any:
    """engine=ray: one cluster for every source (started here unless this process joined one)."""
    if run.engine is not Engine.RAY:
        return contextlib.nullcontext()
    return ray_cluster(run.ray_address, run.num_workers)


class _Reading:
    """The sources read in order into one rows file and one rejects file; evaluation overlaps
    removed as their records arrive, duplicates found once every source is read."""

    def __init__(
        self, recipe: Recipe, sink: RejectsWriter, data: Any, *, media: dict[str, Stat | None] | None = None
    ) -> None:
        self.recipe = recipe
        self.sink = sink
        self.media = media
        scratch = safeio.scratch_dir()
        self.rows = task_module(data.task).open_rows(scratch / "rows.arrow", replace(data, processor=None))
        self.texts = recipe.dedup is not Dedup.NONE or bool(recipe.decontaminate)
        # near: MinHash LSH, record by record; exact: a 16-byte digest per record, compared at the end
        self.near: Deduplicator[int] | None = None
        if recipe.dedup is Dedup.NEAR:
            self.near = Deduplicator(recipe.dedup, threshold=recipe.near_threshold)
        self.index = None
        if recipe.decontaminate:  # evaluation files are user bytes too: read within the build's bounds
            self.index = EvalIndex.from_files(
                recipe.eval_files(), n=recipe.ngram, bounds=ReadBounds.of(recipe.build_options().data)
            )
        self.digests = _Spill(scratch / "digests", 3)  # record id and its 16-byte digest
        self.records = _Records(scratch / "records")
        # each row's record, tokens and trained tokens, counted from its batch as it is written
        self.units = tuple(_Spill(scratch / f"rows-{name}", 1) for name in ("record", "tokens", "trained"))
        self.removed: set[int] = set()
        self.duplicates: list[tuple[int, int, str]] = []  # (record, the record it repeats, how)
        self.sources: list[_Source] = []

    def source(self, spec: Any, stage: Stage, run: RunOptions, progress: Callable[[int], None] | None) -> None:
        """Every record of one source, through the run loop with its own stage."""
        source = _Source(spec.name, BuildReport(source=spec.name), first=self.rows.records)
        reduce = _with_texts if self.texts else _without_texts
        for path in spec.files():
            for part in loop.run(path, stage, run, reduce, report=source.report, progress=progress, empty_ok=True):
                base = self.rows.records
                c = part.task_part
                self.sink.write(c.rejects)
                if self.media is not None:
                    add_read(self.media, c.read)
                self.rows.add(c)
                for spill, column in zip(self.units, (base + c.groups, *c.units()), strict=True):
                    spill.add(column)
                self.records.add([base + r for r, _, _ in part.located], [where for _, where, _ in part.located])
                self._check(base, part.located, source)
        source.last = self.rows.records
        if source.report.records == 0:
            raise FtdataError(f"{self.recipe.origin}: source {spec.name!r} ({spec.data}) has no records")
        self.sources.append(source)

    def _check(self, base: int, located: list[tuple[int, Location, str]], source: _Source) -> None:
        """Remove a batch's records that overlap an evaluation record (rejects written now); note
        the rest for dedup (near: checked now; exact: digests kept for `dedupe`)."""
        exact: list[tuple[int, bytes]] = []
        for r, where, text in located:
            if self.index is not None and (hit := self.index.check(text)) is not None:
                source.removed["decontaminated"] += 1
                reason = (
                    f"source {source.name!r}: overlaps evaluation record {hit.eval_location} in "
                    f"{len(hit.ngram.split())} words: {hit.ngram!r}"
                )
                reject = Reject(str(where), RejectStage.MIX, RejectCode.CONTAMINATED, reason)
                source.report.add(reject)
                self.sink.write([reject])
                self.removed.add(base + r)
            elif self.near is not None and (dup := self.near.check(base + r, text)) is not None:
                self.duplicates.append(
                    (base + r, dup.original, "exact" if dup.jaccard == 1.0 else f"near, Jaccard {dup.jaccard:.2f}")
                )
            elif self.recipe.dedup is Dedup.EXACT:
                exact.append((base + r, digest(text)))
        if exact:
            digests = np.frombuffer(b"".join(d for _, d in exact), dtype="<i8").reshape(-1, 2)
            self.digests.add(np.column_stack([np.asarray([r for r, _ in exact], dtype=np.int64), digests]))

    def close(self) -> None:
        """Every file written while reading, closed (each is read back from its file)."""
        self.rows.close()
        self.records.close()
        self.digests.close()
        for spill in self.units:
            spill.close()

    def take_units(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(record, tokens, trained tokens) of every row of the rows file, in file order, mapped from their files."""
        groups, tokens, trained = (spill.read()[:, 0] for spill in self.units)
        return groups, tokens, trained

    def dedupe(self) -> None:
        """Remove every record that repeats an earlier one; write each reject naming the one it repeats."""
        if self.digests.rows:
            table = self.digests.read()
            later, first = exact_repeats(table[:, 0], table[:, 1:])
            self.duplicates += [(int(r), int(o), "exact") for r, o in zip(later, first)]
            self.duplicates.sort()
        if not self.duplicates:
            return
        firsts = np.asarray([s.first for s in self.sources])
        dups = np.asarray([d[0] for d in self.duplicates], dtype=np.int64)
        where = self.records.locations(dups)
        originals = self.records.locations(np.asarray([d[1] for d in self.duplicates], dtype=np.int64))
        rejects = []
        for (record, _, how), at, original, s in zip(
            self.duplicates, where, originals, np.searchsorted(firsts, dups, side="right") - 1
        ):
            source = self.sources[s]
            source.removed["deduplicated"] += 1
            self.removed.add(record)
            rejects.append(
                Reject(
                    at, RejectStage.MIX, RejectCode.DUPLICATE, f"source {source.name!r}: duplicates {original} ({how})"
                )
            )
            source.report.add(rejects[-1])
        self.sink.write(rejects)


def _mixture(recipe: Recipe, data: Any, reading: _Reading) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """The rows of train (mixed, with repeats) and test (held out before mixing), and the per-source table.

    Raises:
        ConfigError: a source cannot meet its share (plan_mix names it).
    """
    sources, removed, records, sink = reading.sources, reading.removed, reading.records, reading.sink
    groups, lengths, trained = reading.take_units()
    n_records = int(groups.max()) + 1 if len(groups) else 0
    per = {
        "records": np.zeros(n_records, dtype=np.int64),
        "tokens": np.bincount(groups, weights=lengths, minlength=n_records).astype(np.int64),
        "trained_tokens": np.bincount(groups, weights=trained, minlength=n_records).astype(np.int64),
    }
    del lengths, trained  # only their sums per record are read from here on
    per["records"][groups] = 1  # a record of many rows is one record
    held = _held_out(groups, sources, data, removed)
    kept = []  # per source: its train records (ids, ascending)
    for source in sources:
        ids = np.arange(source.first, source.last)
        ids = ids[(per["records"][ids] == 1) & ~np.isin(ids, list(removed)) & ~np.isin(ids, held)]
        kept.append(ids)
    unit = recipe.mix_by.unit
    plan = plan_mix(
        [
            SourceSizes(s.name, per[unit][ids], w, spec.epochs_max)
            for s, ids, w, spec in zip(sources, kept, recipe.shares, recipe.sources)
        ],
        total=recipe.total,
        seed=recipe.seed,
        unit=unit,
        every=recipe.mix_by is MixBy.ALL,
    )
    drawn = (
        np.concatenate([np.repeat(ids, sp.counts) for ids, sp in zip(kept, plan.sources)])
        if kept
        else np.zeros(0, dtype=np.int64)
    )
    for ids, sp, source in zip(kept, plan.sources, sources):
        left = ids[sp.counts == 0]
        sink.write(
            [
                Reject(
                    where, RejectStage.MIX, RejectCode.NOT_DRAWN, f"source {source.name!r}: its share is met without it"
                )
                for where in records.locations(left)
            ]
        )
        source.report.not_drawn += len(left)
    train = _rows_of(groups, drawn)
    if data.shuffle:
        train = train[np.random.default_rng(recipe.seed).permutation(len(train))]
    splits = {"train": train}
    if data.test_size is not None:
        splits["test"] = np.flatnonzero(np.isin(groups, held))
    return splits, _table(plan, sources, kept, per, recipe, groups)


def _held_out(groups: np.ndarray, sources: list[_Source], data: Any, removed: set[int]) -> np.ndarray:
    """Each source's test records (test_size of its records, seeded), chosen before any mixing."""
    if data.test_size is None:
        return np.zeros(0, dtype=np.int64)
    out = []
    for i, source in enumerate(sources):
        ids = np.unique(groups[(groups >= source.first) & (groups < source.last)])
        ids = ids[~np.isin(ids, list(removed))]
        n_test = check_split(len(ids), data.test_size)
        out.append(np.sort(np.random.default_rng([data.seed, i]).choice(ids, size=n_test, replace=False)))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


_CHUNK = 1 << 16  # records a step of `_rows_of`


def _rows_of(groups: np.ndarray, records: np.ndarray) -> np.ndarray:
    """The rows of `records` (a record may repeat), in that order: a record's rows are consecutive in the
    rows file (records are written in order), so each is a range found by binary search. Counted, then filled, a
    chunk of records at a time: whole-length temporaries were the peak of a million-record recipe build."""

    def ranges(i: int) -> tuple[np.ndarray, np.ndarray]:  # first row and row count of each record of chunk i
        chunk = records[i : i + _CHUNK]
        first = np.searchsorted(groups, chunk, side="left")
        return first, np.searchsorted(groups, chunk, side="right") - first

    steps = range(0, len(records), _CHUNK)
    out = np.empty(sum(int(ranges(i)[1].sum()) for i in steps), dtype=np.int64)
    at = 0
    for i in steps:
        first, many = ranges(i)
        n = int(many.sum())
        out[at : at + n] = np.repeat(first - (np.cumsum(many) - many), many) + np.arange(n)
        at += n
    return out


def _table(
    plan: Plan,
    sources: list[_Source],
    kept: list[np.ndarray],
    per: dict[str, np.ndarray],
    recipe: Recipe,
    groups: np.ndarray,
) -> list[dict[str, Any]]:
    """One row per source: what was read, rejected, removed, used and repeated, and the shares in every unit."""
    used = {unit: plan.units_in([per[unit][ids] for ids in kept]) for unit in UNITS}
    whole = {unit: sum(used[unit]) or 1 for unit in UNITS}
    rows_per_record = np.bincount(groups, minlength=len(per["records"]))
    out = []
    for i, (source, sp, ids) in enumerate(zip(sources, plan.sources, kept)):
        r = source.report
        out.append(
            {
                "source": source.name,
                "read": r.records,
                "rejected": {
                    str(k.value): n
                    for k, n in r.rejected.items()
                    if k not in (RejectCode.DUPLICATE, RejectCode.CONTAMINATED)
                },
                "filtered": r.filtered,
                **source.removed,
                "available": len(ids),
                "used": sp.records,
                "repeats": sp.repeats,
                "not_drawn": r.not_drawn,
                "sequences": int(np.dot(rows_per_record[ids], sp.counts)),
                "mix_by": recipe.mix_by.unit,
                "target_share": round(sp.target_share, 6),
                **{unit: {"used": used[unit][i], "share": round(used[unit][i] / whole[unit], 6)} for unit in UNITS},
            }
        )
    return out


def check_shares(recipe: Recipe) -> None:
    """Before any tokenizing: a recipe mixed by records whose target a source cannot meet even
    if every record of it were usable (counted by the progress counter, within the build's read
    bounds, where the format allows).

    Raises:
        ConfigError: the planner's message, naming the source, what it has and what it needs.
    """
    if recipe.mix_by is not MixBy.RECORDS:
        return  # tokens are known once the records are tokenized: the planner checks then
    counts = []
    for spec in recipe.sources:
        data = recipe.source_options(spec).data  # each file read as the build reads it: its bounds, its limit
        counts.append(
            sum(count_records(path, limit=data.limit, bounds=ReadBounds.of(data)) or 0 for path in spec.files())
        )
    if all(counts):
        plan_mix(
            [
                SourceSizes(s.name, np.ones(n, dtype=np.int64), s.weight, s.epochs_max)
                for s, n in zip(recipe.sources, counts)
            ],
            total=recipe.total,
            seed=recipe.seed,
            unit="records",
        )
