"""What a build did: counts, rejects (with reasons), token totals, warnings."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ftdata.errors import Location, RecordError, UnusableRecord


@dataclass(frozen=True, slots=True)
class Reject:
    """One record that was rejected (not in the output) or cut (in it, shortened)."""

    location: str
    stage: str  # read, format, render, verify, truncate, filter
    reason: str
    kept: bool = False  # True for cut records: kept, but shortened
    tokens: int | None = None

    @classmethod
    def from_error(cls, exc: RecordError, location: Location, stage: str, *, on_error: str) -> Reject:
        """The reject for a record error, or the error re-raised.

        Unusable records are always rejected; malformed ones only with `on_error="skip"`.
        """
        if not isinstance(exc, UnusableRecord) and on_error == "raise":
            raise exc
        if exc.location is None:
            return cls(str(location), stage, str(exc))
        reason = exc.reason if isinstance(exc, UnusableRecord) else str(exc).removeprefix(f"{exc.location}: ")
        return cls(str(exc.location), stage, reason)

    def to_json(self) -> str:
        """One line of the rejects file."""
        return json.dumps(asdict(self), ensure_ascii=False)

    @property
    def kind(self) -> str:
        """A short, countable category: the reason up to its first ':' or ';'."""
        return self.reason.split(";")[0].split(":")[0].strip()


@dataclass
class BuildReport:
    """Counts of a build. `rejected`/`cut` map a reason kind to a count."""

    source: str = ""
    tokenizer: str = ""
    template: str = ""
    records: int = 0
    examples: int = 0
    sequences: int = 0
    rows: int = 0
    tokens: int = 0
    trained_tokens: int = 0
    filtered: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    cut: Counter[str] = field(default_factory=Counter)
    methods: Counter[str] = field(default_factory=Counter)
    notes: Counter[str] = field(default_factory=Counter)
    formats: Counter[str] = field(default_factory=Counter)
    splits: dict[str, int] = field(default_factory=dict)
    markers: dict[str, Any] | None = None
    packing: dict[str, Any] | None = None
    fingerprint: str = ""
    seconds: float = 0.0
    cached: bool = False
    rejects_path: str | None = None
    sample_rejects: list[Reject] = field(default_factory=list)

    def add(self, reject: Reject) -> None:
        if reject.stage == "filter":
            self.filtered += 1
        else:
            (self.cut if reject.kept else self.rejected)[reject.kind] += 1
        if len(self.sample_rejects) < 20:
            self.sample_rejects.append(reject)

    @property
    def n_rejected(self) -> int:
        return sum(self.rejected.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["sample_rejects"] = [asdict(r) for r in self.sample_rejects]
        for key in ("rejected", "cut", "methods", "notes", "formats"):
            out[key] = dict(getattr(self, key))
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuildReport:
        data = dict(data)
        for key in ("rejected", "cut", "methods", "notes", "formats"):
            data[key] = Counter(data.get(key, {}))
        data["sample_rejects"] = [Reject(**r) for r in data.get("sample_rejects", [])]
        return cls(**data)

    def summary(self) -> str:
        """One line for logs and warnings."""
        parts = [f"{self.records} records -> {self.sequences} sequences"]
        if self.rows != self.sequences:
            parts.append(f"{self.rows} rows")
        if self.rejected:
            parts.append(f"{self.n_rejected} rejected ({_top(self.rejected)})")
        if self.cut:
            parts.append(f"{sum(self.cut.values())} cut ({_top(self.cut)})")
        if self.filtered:
            parts.append(f"{self.filtered} filtered out")
        return ", ".join(parts)


def _top(counter: Counter[str]) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counter.most_common(3))


class RejectsWriter:
    """Streams rejects to a JSONL file (when a path is given) and counts them in a report.

    The file is written under a temporary name next to `path` and renamed to `path` by
    `close()`: a reader never sees half a file, and an input named as the rejects path is
    not touched before the build ends (the CLI refuses that path anyway). `abort()` drops it.
    """

    def __init__(self, report: BuildReport, path: str | Path | None):
        from ftdata.safeio import AtomicFile

        self.report = report
        self._file: AtomicFile | None = None
        if path is not None:
            self._file = AtomicFile(Path(path))
            report.rejects_path = str(path)

    def __call__(self, reject: Reject) -> None:
        self.report.add(reject)
        if self._file is not None:
            self._file.fh.write(reject.to_json() + "\n")

    def close(self) -> None:
        """Publish the file (no-op after `abort()`)."""
        if self._file is not None:
            self._file.commit()

    def abort(self) -> None:
        """Drop the temporary file: a failed build leaves no rejects file behind."""
        if self._file is not None:
            self._file.abort()
