"""The ftdata error family.

The library raises these; only the CLI turns them into one-line messages and exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftdata.outcomes import RejectCode


@dataclass(frozen=True, slots=True)
class Location:
    """Where a record came from: `file:line` (JSONL, CSV) or `file[index]` (0-based, JSON arrays)."""

    source: str
    line: int | None = None
    index: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.source}:{self.line}"
        if self.index is not None:
            return f"{self.source}[{self.index}]"
        return self.source


class FtdataError(Exception):
    """Base class of every error ftdata raises on purpose."""

    exit_code = 1


class ReaderError(FtdataError):
    """A source cannot be read: missing file, bad JSON, unknown suffix, bad encoding."""

    exit_code = 3


class RecordError(FtdataError):
    """One record is malformed. Carries its location and the offending field."""

    exit_code = 4

    def __init__(
        self,
        message: str,
        *,
        location: Location | None = None,
        field: str | None = None,
        code: RejectCode = RejectCode.MALFORMED,
    ):
        self.reason = message
        self.code = code  # counted when the record is rejected
        self.location = location
        self.field = field
        where = f"{location}: " if location is not None else ""
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}{what}{message}")


class UnusableRecord(RecordError):
    """A well-formed record that cannot be trained on (empty response, no assistant turn).

    The pipeline rejects these (counted, written to the rejects file) instead of raising.
    """


class TemplateError(FtdataError):
    """A prompt or chat template cannot be loaded or rendered."""

    exit_code = 5


class ConfigError(FtdataError):
    """An option has a bad value or conflicts with another option."""

    exit_code = 2


class TooManyRejects(FtdataError):
    """A build rejected a larger share of its records than `max_reject_ratio` allows."""

    exit_code = 4


class OutputMismatch(ConfigError):
    """An output folder's files do not match its `build.json` (changed after the build, or cut short)."""


class DiskFullError(FtdataError):
    """A write found no space (`ENOSPC`): the folder, roughly what the build needed there, what was free."""

    def __init__(self, message: str, *, folder: object = None, needed: int = 0, free: int = 0):
        self.folder = folder
        self.needed = needed
        self.free = free
        super().__init__(message)


class FtdataWarning(UserWarning):
    """Something the user should know that did not stop the work (a full cache: built without it)."""
