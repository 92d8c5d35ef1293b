"""What the inspection page of a build shows, read from a built OUT folder (`ftdata.load`).

Aggregates cover every row: the dataset is read in Arrow batches (memory-mapped, never whole in
memory), keeping three small numbers per row. Rows shown token by token are a reproducible
sample: the first N, N more drawn with a seed, and the longest; a row is shown once, with why it
was chosen. Rejects are counted from the whole rejects file and shown up to a bound per reason.

    OUT/build.json ─┐
    OUT/dataset ────┼─▶ Page(summary, splits: lengths + histograms, sample rows: tokens, rejects)
    OUT/rejects ────┘
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ftdata.build.export import MANIFEST, REJECTS
from ftdata.build.load import load
from ftdata.errors import ConfigError
from ftdata.media.images import DIGEST, load_image, stored
from ftdata.run.columns import row_columns, task_of_columns
from ftdata.run.stage import task_module
from ftdata.tokens.layouts import WEIGHTS, layout_columns, layout_of
from ftdata.types import IGNORE_INDEX

__all__ = ["Sample", "Page", "collect"]

BATCH = 8192
SHOWN_TOKENS = 2048  # a row's tokens on the page (all its sections together); the rest is counted, not shown
REJECTS_PER_REASON = 50
THUMBNAIL = 160  # pixels, the longer side
AUDIO_BYTES = 2 << 20  # a clip embedded in the page at most
BINS = 30
# Characters that reorder or hide text (bidi overrides and isolates, zero-width marks): shown as their code.
_INVISIBLE = {c: f"⟨U+{c:04X}⟩" for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C)}
_CONTROLS = {c: f"⟨U+{c:04X}⟩" for c in (*range(0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F)}
_VISIBLE = {**_INVISIBLE, **_CONTROLS}


def shown(text: str) -> str:
    """`text` safe to show as text: bidi controls and control characters as their code point, a lone
    surrogate (not UTF-8) as its escape. Markup is escaped by the page's template, not here."""
    text = text.translate(_VISIBLE)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@dataclass(frozen=True, slots=True)
class Sample:
    """Which rows of each split the page shows token by token: the first `first`, `random` more drawn with `seed`,
    and the `longest`; every rejected record is counted, and up to `REJECTS_PER_REASON` per reason shown."""

    first: int = 10
    random: int = 10
    longest: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("first", "random", "longest"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {name}={getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Token:
    id: int
    text: str
    label: int  # IGNORE_INDEX: no loss
    special: bool
    weight: float | None = None  # a per-token loss weight other than 1 (`loss_weights`)


@dataclass(frozen=True, slots=True)
class Section:
    """A run of a row shown together: the sequence, a pair's prompt / chosen / rejected, a packed row's k-th
    sequence."""

    title: str
    tokens: tuple[Token, ...]
    hidden: int = 0  # tokens of the section not shown (SHOWN_TOKENS)


@dataclass(frozen=True, slots=True)
class Media:
    kind: str
    ref: str
    tokens: int
    data_uri: str  # a thumbnail or the clip itself; "" where it cannot be read or is too large
    detail: str


@dataclass(frozen=True, slots=True)
class Row:
    split: str
    index: int
    chosen_as: str  # first, random, longest
    record: str  # the record's location ("" for packed rows and pairs without it)
    total: int
    prompt: int
    trained: int
    sections: tuple[Section, ...]
    side_by_side: bool = False  # a preference pair: its completions next to each other
    media: tuple[Media, ...] = ()
    label: str = ""  # KTO: desirable / undesirable
    columns: tuple[tuple[str, str], ...] = ()  # a prompt set's reward columns: (name, value as JSON, shortened)


@dataclass(frozen=True, slots=True)
class Histogram:
    name: str
    bins: tuple[tuple[float, float, int], ...]
    percentiles: dict[str, float]


@dataclass(frozen=True, slots=True)
class Reject:
    location: str
    stage: str
    code: str
    reason: str
    kept: bool  # a cut record (kept, shortened) rather than a reject
    source: str = ""  # a recipe's source
    excerpt: str = ""  # the start of the record's line, where its location is a line of a file that is still there


@dataclass
class Page:
    title: str
    manifest: dict[str, Any]
    tokenizer: str
    task: str
    rows: list[Row] = field(default_factory=list)
    split_rows: dict[str, int] = field(default_factory=dict)
    histograms: list[Histogram] = field(default_factory=list)
    trained_share: float = 0.0
    rejects: list[Reject] = field(default_factory=list)
    reject_counts: Counter[str] = field(default_factory=Counter)
    sample: Sample = field(default_factory=Sample)
    mix: list[dict[str, str]] = field(default_factory=list)  # a recipe's sources
    notes: list[tuple[str, int, str]] = field(default_factory=list)  # (code, records, text)
    coverage: list[tuple[str, str, int, str]] = field(
        default_factory=list
    )  # a prompt set: (reward column, type, rows with a value, share)


def collect(out: str | Path, *, tokenizer: Any = None, sample: Sample | None = None, title: str | None = None) -> Page:
    """The page of the build in `out`. `tokenizer`: loaded, or None for the one build.json names.

    Raises:
        ConfigError: `out` is no build folder, or its tokenizer is gone (then give one).
        OutputMismatch: OUT's files are not the ones build.json describes.
    """
    folder = Path(out).expanduser()
    built = load(folder)
    manifest = built.manifest or {}
    tok = tokenizer if tokenizer is not None else _tokenizer(manifest, folder)
    sample = sample or Sample()
    counts = manifest["counts"]
    page = Page(
        title or str(folder),
        manifest,
        str(manifest.get("tokenizer", "")),
        str(counts.get("task") or "sft"),
        sample=sample,
    )
    splits = dict(built.dataset) if isinstance(built.dataset, dict) else {"train": built.dataset}
    special = _special_ids(tok)
    lengths = _Lengths(sample.longest)
    for name, split in splits.items():
        page.split_rows[name] = len(split)
        longest = lengths.read(split)
        page.rows += _sample_rows(split, name, _chosen(len(split), longest, sample), tok, special, folder)
    page.histograms = [_histogram(name, counts) for name, counts in lengths.counts.items()]
    page.coverage = _coverage(splits)
    total, trained = counts.get("tokens"), counts.get("trained_tokens")  # as build.json counts them, for every task
    if not isinstance(total, int) or not isinstance(trained, int):
        total, trained = (_sum(lengths.counts.get(name)) for name in ("total tokens", "trained tokens"))
    page.trained_share = trained / total if total else 0.0
    page.rejects, page.reject_counts = _rejects(folder, manifest)
    page.mix = [_source(item) for item in counts.get("mix") or [] if isinstance(item, dict)]
    texts = counts.get("note_texts") or {}
    page.notes = [(code, n, (texts.get(code) or [""])[0]) for code, n in (counts.get("notes") or {}).items()]
    return page


# Every task's row columns (each task states its own), what the row layouts add (`ftdata.tokens.layouts`), and what
# loss weights, media, records and tools add to them.
ROW_COLUMNS = row_columns() | layout_columns() | {"attention_mask", WEIGHTS, "media", "record", "tools"}


def _prompt_columns(columns: list[str]) -> list[str]:
    """The token columns of rows that hold a prompt apart (pairs, KTO rows, prompt sets): the prompt's, then each
    completion's, as the task states them; [""] for rows of whole sequences (SFT)."""
    ids = [c for c in task_module(task_of_columns(columns)).columns if c.endswith("_ids")]
    return [""] if "input_ids" in ids else ids


def _coverage(splits: dict[str, Any]) -> list[tuple[str, str, int, str]]:
    """A prompt set's reward columns (every column that is not a row's tokens): the rows that hold a value, of all."""
    first = next(iter(splits.values()))
    names = [n for n in first.column_names if n not in ROW_COLUMNS]
    if not _prompt_columns(first.column_names)[0] or not names:
        return []
    rows = sum(len(split) for split in splits.values())
    held = dict.fromkeys(names, 0)
    for split in splits.values():
        for batch in _batches(split):
            for name in names:
                held[name] += len(batch) - batch.column(name).null_count
    types = {
        name: str(first.features[name].dtype if hasattr(first.features[name], "dtype") else first.features[name])
        for name in names
    }
    return [(name, types[name], n, f"{n / rows:.1%}" if rows else "") for name, n in held.items()]


def _share(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else ""


def _brief(value: Any, limit: int = 300) -> str:
    """A reward value as JSON, shortened for the page."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _source(item: dict[str, Any]) -> dict[str, str]:
    """A recipe source's row: the share it got in each unit against its target, and what it lost on the way."""
    unit = str(item.get("mix_by", "records"))
    return {
        "source": shown(str(item.get("source", ""))),
        "mix by": unit,
        "target": _share(item.get("target_share")),
        "achieved": _share((item.get(unit) or {}).get("share")),
        **{
            f"{u.replace('_', ' ')} share": _share((item.get(u) or {}).get("share"))
            for u in ("records", "tokens", "trained_tokens")
        },
        "read": f"{item.get('read', 0):,}",
        "rejected": f"{sum((item.get('rejected') or {}).values()):,}",
        "deduplicated": f"{item.get('deduplicated', 0):,}",
        "decontaminated": f"{item.get('decontaminated', 0):,}",
        "used": f"{item.get('used', 0):,}",
        "repeats": f"{item.get('repeats', 0):,}",
        "not drawn": f"{item.get('not_drawn', 0):,}",
    }


def _tokenizer(manifest: dict[str, Any], folder: Path) -> Any:
    """The tokenizer build.json names, shared: the page only reads it (a process that built from that folder loads it
    once)."""
    from ftdata.io.resources import shared_tokenizer

    path = next((i.get("path") for i in manifest.get("inputs", []) if i.get("kind") == "tokenizer"), None)
    if not path or not Path(path).is_dir():
        raise ConfigError(
            f"{folder / MANIFEST} names the tokenizer {path!r}, which is not there; give the build's tokenizer with "
            "--tokenizer DIR"
        )
    with shared_tokenizer(path) as tok:
        return tok


def _special_ids(tok: Any) -> frozenset[int]:
    ids = set(getattr(tok, "all_special_ids", []) or [])
    for i, added in getattr(tok, "added_tokens_decoder", {}).items():
        if getattr(added, "special", False):
            ids.add(int(i))
    return frozenset(ids)


# --- every row: three numbers each, read batch by batch ------------------------------------------


def _lengths(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    return pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int32)


def _trained(labels: pa.Array) -> np.ndarray:
    """Per row, how many labels carry loss."""
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    offsets = labels.offsets.to_numpy()
    flat = (labels.flatten().to_numpy(zero_copy_only=False) != IGNORE_INDEX).astype(np.int64)
    sums = np.concatenate([[0], np.cumsum(flat)])
    return (sums[offsets[1:] - offsets[0]] - sums[offsets[:-1] - offsets[0]]).astype(np.int32)


def _batches(split: Any) -> Any:
    """The record batches of `split`, in order. Its Arrow files are read as streams, batch by batch into memory
    that is freed after each: through the memory mapping `datasets` uses, every page read would stay in this
    process's RSS (a 1M-row build: 400 MiB more). A split with an indices mapping (or none on disk) is iterated
    by `datasets`."""
    files = [f["filename"] for f in split.cache_files]
    if not files or getattr(split, "_indices", None) is not None:
        yield from split.with_format("arrow").iter(batch_size=BATCH)
        return
    for name in files:
        with pa.OSFile(name) as source:
            yield from pa.ipc.open_stream(source)


class _Lengths:
    """The page's distributions of one or more splits as counts per length (memory: the longest length, never the
    rows), and each split's longest rows, kept as batches go by."""

    def __init__(self, longest: int):
        self.counts: dict[str, np.ndarray] = {}
        self.longest = longest
        self.top: list[tuple[int, int]] = []  # (size, row) of the split being read, at most `longest`

    def add(self, name: str, values: np.ndarray) -> None:
        counts = np.bincount(values)
        have = self.counts.get(name, np.zeros(0, np.int64))
        if len(have) < len(counts):
            have = np.concatenate([have, np.zeros(len(counts) - len(have), np.int64)])
        have[: len(counts)] += counts
        self.counts[name] = have

    def keep_longest(self, sizes: np.ndarray, first_row: int) -> None:
        if not self.longest or not len(sizes):
            return
        k = min(self.longest, len(sizes))
        best = np.argpartition(sizes, len(sizes) - k)[len(sizes) - k :]
        ranked = self.top + [(int(sizes[i]), first_row + int(i)) for i in best]
        self.top = sorted(ranked, key=lambda item: (-item[0], item[1]))[: self.longest]  # longest first, ties by row

    def read(self, split: Any) -> list[int]:
        """Count every row of `split`; its longest rows (by all its tokens), longest first."""
        self.top, row = [], 0
        for batch in _batches(split):
            prompt, *completions = _prompt_columns(batch.column_names)
            if prompt:  # pairs, KTO rows, prompts: the prompt and each completion (the task's row columns)
                for column in (prompt, *completions):
                    self.add(f"{column.removesuffix('_ids')} tokens", _lengths(batch[column]))
                sizes, _ = task_module(task_of_columns(batch.column_names)).row_units(batch)
            else:
                sizes, trained = _lengths(batch["input_ids"]), _trained(batch["labels"])
                self.add("total tokens", sizes)
                self.add("prompt tokens", sizes - trained)
                self.add("trained tokens", trained)
                layout = layout_of(batch.column_names)
                if layout.parts is not None and layout.lengths_column is not None:  # e.g. sequences per packed row
                    self.add(f"{layout.parts}s per {layout.name} row", _lengths(batch[layout.lengths_column]))
            self.keep_longest(sizes, row)
            row += batch.num_rows
        return [r for _, r in self.top]


def _histogram(name: str, counts: np.ndarray) -> Histogram:
    """Up to BINS equal bins between the shortest and the longest value, and nearest-rank percentiles, from the
    count of each value."""
    present = np.flatnonzero(counts)
    if not len(present):
        return Histogram(name, (), {})
    low, high = int(present[0]), int(present[-1])
    width = max(1, -(-(high - low + 1) // BINS))  # ceil: at most BINS bins of whole values
    edges = list(range(low, high + 1, width))
    bins = tuple((float(a), float(min(a + width, high + 1)), int(counts[a : a + width].sum())) for a in edges)
    total = int(counts.sum())
    cumulative = np.cumsum(counts)
    percentiles = {f"p{q}": float(np.searchsorted(cumulative, -(-q * total // 100))) for q in (50, 90, 99)}
    values = np.arange(len(counts))
    percentiles |= {"max": float(high), "mean": float((values * counts).sum() / total)}
    return Histogram(name, bins, percentiles)


# --- the sample -----------------------------------------------------------------------------------


def _chosen(rows: int, longest: list[int], sample: Sample) -> dict[int, str]:
    """Row index -> why it is shown: the first rows, a seeded draw of the rest, the longest."""
    first = min(sample.first, rows)
    out = dict.fromkeys(range(first), "first")
    if sample.random and rows > first:
        drawn = np.random.default_rng(sample.seed).choice(
            rows - first, size=min(sample.random, rows - first), replace=False
        )
        out |= {int(i) + first: "random" for i in drawn}
    for i in longest:
        out.setdefault(i, "longest")
    return dict(sorted(out.items()))


def _sum(counts: np.ndarray | None) -> int:
    """The sum of the values whose counts these are."""
    return 0 if counts is None else int((np.arange(len(counts)) * counts).sum())


def _sample_rows(
    split: Any,
    name: str,
    chosen: dict[int, str],
    tok: Any,
    special: frozenset[int],
    folder: Path,
) -> list[Row]:
    if not chosen:
        return []
    rows = split.select(list(chosen))
    return [_row(rows[k], name, index, why, tok, special, folder) for k, (index, why) in enumerate(chosen.items())]


def _tokens(
    tok: Any,
    ids: list[int],
    labels: list[int],
    special: frozenset[int],
    budget: int,
    weights: list[float] | None = None,
) -> tuple[tuple[Token, ...], int]:
    shown_ids = ids[: max(budget, 0)]
    texts = (
        tok.batch_decode([[i] for i in shown_ids], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if shown_ids
        else []
    )
    _join_split_characters(tok, shown_ids, texts)
    weights = weights or [1.0] * len(ids)  # a row without weights: 1 for every token
    tokens = tuple(
        Token(i, shown(t), lab, i in special, None if w == 1.0 or lab == IGNORE_INDEX else round(float(w), 4))
        for i, t, lab, w in zip(shown_ids, texts, labels, weights)
    )
    return tokens, len(ids) - len(shown_ids)


def _join_split_characters(tok: Any, ids: list[int], texts: list[str]) -> None:
    """A character whose bytes lie in several tokens (a CJK character, an emoji, U+202E under byte-level BPE)
    decodes to U+FFFD token by token: each run of such tokens is decoded together, its text given to the run's
    last token (the others show nothing), where that decodes more of it."""
    k = 0
    while k < len(texts):
        if "\ufffd" not in texts[k]:
            k += 1
            continue
        end = k
        while end < len(texts) and "\ufffd" in texts[end]:
            end += 1
        joined = tok.decode(ids[k:end], skip_special_tokens=False, clean_up_tokenization_spaces=False)
        if joined.count("\ufffd") < sum(t.count("\ufffd") for t in texts[k:end]):
            texts[k:end] = [""] * (end - k - 1) + [joined]
        k = end


class _Sections:
    """A row's sections, cut to SHOWN_TOKENS tokens in all."""

    def __init__(self, tok: Any, special: frozenset[int]):
        self.tok, self.special, self.budget = tok, special, SHOWN_TOKENS
        self.out: list[Section] = []

    def add(
        self,
        title: str,
        ids: list[int],
        labels: list[int] | None,
        weights: list[float] | None = None,
        media: Any = (),
    ) -> None:
        """A section; each media item's placeholder tokens (`media`: the row's items, `start` and `tokens`) shown as
        one marker, `⟨image: 99 tokens⟩`, that keeps the first placeholder's id and label."""
        items = {int(m["start"]): (int(m["tokens"]), str(m["kind"])) for m in media if m.get("tokens")}
        inside = {p for start, (n, _) in items.items() for p in range(start, start + n)} - set(items)
        at = [p for p in range(len(ids)) if p not in inside]
        labels = labels if labels is not None else [IGNORE_INDEX] * len(ids)
        tokens, hidden = _tokens(
            self.tok,
            [ids[p] for p in at],
            [labels[p] for p in at],
            self.special,
            self.budget,
            [weights[p] for p in at] if weights else None,
        )
        marked = tuple(
            replace(t, text=f"⟨{items[p][1]}: {items[p][0]} tokens⟩", special=True) if p in items else t
            for p, t in zip(at, tokens)
        )
        self.budget -= len(marked)
        self.out.append(Section(title, marked, hidden))


def _row(
    data: dict[str, Any],
    split: str,
    index: int,
    why: str,
    tok: Any,
    special: frozenset[int],
    folder: Path,
) -> Row:
    record = shown(str(data.get("record") or ""))
    sections = _Sections(tok, special)
    prompt_column, *completions = _prompt_columns(list(data))
    if prompt_column:  # a pair side by side, a KTO example, a prompt; the completions are what is trained
        prompt = list(data[prompt_column])
        sections.add("prompt", prompt, None)
        for column in completions:
            ids = list(data[column])
            sections.add(column.removesuffix("_ids"), ids, ids)
        trained = sum(len(data[c]) for c in completions)
        label = "" if "label" not in data else ("desirable" if data["label"] else "undesirable")
        columns = tuple((name, _brief(value)) for name, value in data.items() if name not in ROW_COLUMNS)
        return Row(
            split,
            index,
            why,
            record,
            len(prompt) + trained,
            len(prompt),
            trained,
            tuple(sections.out),
            side_by_side=len(completions) > 1,
            label=label,
            columns=columns,
        )
    ids, labels = list(data["input_ids"]), list(data["labels"])
    trained = sum(1 for label in labels if label != IGNORE_INDEX)
    layout = layout_of(data)
    if layout.parts is not None:  # e.g. a packed row: each sequence apart, where it begins and ends
        start = 0
        for k, length in enumerate(layout.lengths(data)):
            sections.add(
                f"{layout.parts} {k + 1} (tokens {start}-{start + length - 1})",
                ids[start : start + length],
                labels[start : start + length],
            )
            start += length
        if start < len(ids):
            sections.add("padding", ids[start:], labels[start:])
    else:
        sections.add("sequence", ids, labels, list(data.get("loss_weights") or ()), data.get("media") or ())
    media = tuple(_media(item, folder) for item in data.get("media") or ())
    return Row(split, index, why, record, len(ids), len(ids) - trained, trained, tuple(sections.out), media=media)


def _media(item: dict[str, Any], folder: Path) -> Media:
    """A media item of a row: an image's thumbnail or an audio clip, embedded where its file can be read. A ref is
    the file's absolute path, or `sha256:<hex>` for an inline item, which the build published in OUT/images."""
    ref, kind = str(item.get("ref") or ""), str(item.get("kind") or "")
    path = stored(ref, folder / "images") if ref.startswith(DIGEST) else Path(ref)
    detail = f"{item.get('width')}x{item.get('height')} px" if kind == "image" else f"{item.get('seconds') or 0:.2f} s"
    uri = ""
    if path is not None and path.is_file():
        try:
            uri = _thumbnail(path) if kind == "image" else _clip(path)
        except (OSError, ValueError):
            uri = ""
    return Media(kind, shown(ref), int(item.get("tokens") or 0), uri, detail)


def _thumbnail(path: Path) -> str:
    """The image as the processor sees it (`load_image`: RGB, its EXIF orientation applied), as a small PNG."""
    image = load_image(str(path))
    image.thumbnail((THUMBNAIL, THUMBNAIL))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _clip(path: Path) -> str:
    if path.stat().st_size > AUDIO_BYTES:
        return ""
    kinds = {".wav": "audio/wav", ".flac": "audio/flac", ".mp3": "audio/mpeg", ".ogg": "audio/ogg"}
    mime = kinds.get(path.suffix.lower())
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii") if mime else ""


# --- rejects --------------------------------------------------------------------------------------


def _rejects(folder: Path, manifest: dict[str, Any]) -> tuple[list[Reject], Counter[str]]:
    """Up to REJECTS_PER_REASON rejects (or cuts) per reason, and the count of every one, in file order."""
    name = str(manifest["output"].get("rejects") or REJECTS).rstrip("/")
    path = folder / name
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path] if path.is_file() else []
    shown_rejects: list[Reject] = []
    counts: Counter[str] = Counter()
    for file in files:
        with file.open(encoding="utf-8") as fh:
            for line in fh:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                code = str(item.get("code") or "unknown")
                counts[code] += 1
                if counts[code] <= REJECTS_PER_REASON:
                    shown_rejects.append(
                        Reject(
                            shown(str(item.get("location", ""))),
                            str(item.get("stage", "")),
                            code,
                            shown(str(item.get("reason", ""))),
                            bool(item.get("kept")),
                            shown(str(item.get("source") or "")),
                        )
                    )
    return _with_excerpts(shown_rejects), counts


EXCERPT_CHARS = 300
_LINE = re.compile(r"^(?P<path>.+):(?P<line>\d+)$")


def _with_excerpts(rejects: list[Reject]) -> list[Reject]:
    """`rejects` with the start of each one's line where its location is `file:line` (JSONL, CSV) and the file is
    still there: one pass per file, reading up to the last line wanted, each line at most EXCERPT_CHARS * 4 bytes."""
    wanted: dict[str, set[int]] = {}
    for r in rejects:
        if (m := _LINE.match(r.location)) and Path(m["path"]).is_file():
            wanted.setdefault(m["path"], set()).add(int(m["line"]))
    found: dict[tuple[str, int], str] = {}
    for path, lines in wanted.items():
        last = max(lines)
        with open(path, "rb") as fh:
            for number in range(1, last + 1):
                head = fh.readline(EXCERPT_CHARS * 4)
                if not head:
                    break
                if number in lines:
                    found[(path, number)] = shown(head.decode("utf-8", "replace")[:EXCERPT_CHARS].rstrip("\r\n"))
                while head and not head.endswith(b"\n"):  # the rest of a long line, unread into memory
                    head = fh.readline(1 << 16)
    out = []
    for r in rejects:
        m = _LINE.match(r.location)
        out.append(replace(r, excerpt=found.get((m["path"], int(m["line"])), "")) if m else r)
    return out
