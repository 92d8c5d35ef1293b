"""Readers: turn a source (file, folder, hub id, Dataset, list) into `(Location, row)` pairs.

Rows are whatever the source holds (usually dicts; a list for a bare message list). Readers
never interpret rows; `formats.py` does. JSONL, CSV and Parquet are streamed; JSON, JSONL and
CSV may be gzip, zstd, bzip2 or xz compressed (`compressed.py`: by their first bytes).

Add a reader by registering a function `(path: Path) -> Iterator[tuple[Location, Any]]` in
`READERS`, or pass `reader="package.module:function"` (that imports and runs Python code: the
CLI allows it only with `--allow-code`).

A row that cannot be read faithfully (duplicate JSON keys with different values, nesting too
deep to parse, a lone UTF-16 surrogate, a CSV row with more or fewer fields than its header)
or that passes a read bound (`bounds.py`: a JSONL line over `max_line_bytes`, a string over
`max_string_chars`) is yielded as a `RecordError` in place of the row: `formats.to_examples` raises it, so it is
rejected with `on_error="skip"` and stops the build otherwise, like any malformed record.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ftdata.guard.bounds import ReadBounds, bad_string, bounded_lines, copy_pipe, line_too_long, string_checked
from ftdata.io.config_files import code_function
from ftdata.io.compressed import DECOMPRESS, REENCODE, codec_of, data_suffix, open_bytes, open_raw
from ftdata.io import sessions
from ftdata.io.delimited import read_csv
from ftdata.errors import ConfigError, FtdataError, Location, ReaderError, RecordError

Row = Any
Reader = Callable[..., Iterator[tuple[Location, Row]]]  # (path, *, bounds, and the reader's own options)

_SNIFF_BYTES = 4096
DEFAULT_BOUNDS = ReadBounds()


def _decode_error(path: Path, exc: UnicodeDecodeError, data: bytes, start: int = 0) -> ReaderError:
    offset = start + exc.start
    line = data[: exc.start].count(b"\n") + 1 if start == 0 else None
    where = f"{path}:{line}" if line else f"{path} (byte {offset})"
    return ReaderError(f"{where}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {offset}); {REENCODE}")


def _read_text(path: Path, bounds: ReadBounds) -> str:
    with open_bytes(path, whole=True, max_bytes=bounds.decompressed_bytes) as fh:
        data = fh.read()
    try:
        text = data.decode("utf-8-sig")  # -sig: a UTF-8 BOM is dropped, not read as text
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc, data) from None
    if not text.strip():
        raise ReaderError(f"{path}: file is empty; expected JSON records")
    return text


def _json_error(path: Path, exc: json.JSONDecodeError, line_offset: int = 0) -> ReaderError:
    return ReaderError(
        f"{path}:{exc.lineno + line_offset}:{exc.colno}: invalid JSON: {exc.msg}; "
        "fix the file or validate it with `python -m json.tool`"
    )


class _DuplicateKey(Exception):
    def __init__(self, key: str, first: Any, second: Any):
        self.key, self.first, self.second = key, first, second


def _no_conflicting_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook`: a key given twice with different values is an error, not "last wins"."""
    out = dict(pairs)
    if len(out) == len(pairs):  # no key twice: the usual case, checked at C speed
        return out
    out = {}
    for key, value in pairs:
        if key in out and out[key] != value:
            raise _DuplicateKey(key, out[key], value)
        out[key] = value
    return out


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_conflicting_keys
)  # one for every record: json.loads builds one per call


# A JSON escape of a UTF-16 surrogate: the only way a lone surrogate gets into parsed JSON.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _lone_surrogate(text: str) -> bool:
    """Whether `text` holds a lone surrogate (UTF-8 cannot encode it; ASCII text cannot hold one)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _checked(row: Any, escaped: bool, location: Location) -> Row:
    """`row`, or a RecordError when it holds a lone surrogate (`escaped`: its text has a `\\udXXX` escape,
    the only way one gets in)."""
    if escaped and (found := bad_string(row, _lone_surrogate)):
        return RecordError(
            "holds a lone UTF-16 surrogate (a \\ud800-\\udfff escape without its pair), which no tokenizer "
            "can encode; fix the escape or remove the character",
            location=location,
            field=found[0],
        )
    return row


def _parse_json(text: str, location: Location) -> Any:
    """`json.loads` that refuses conflicting duplicate keys and over-deep nesting (as a RecordError).

    Raises:
        json.JSONDecodeError: the text is not JSON (the caller knows how to report it).
    """
    try:
        if text.startswith("\ufeff"):  # json.loads's own message for a BOM mid-file
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        return _DECODER.decode(text)
    except _DuplicateKey as dup:
        return RecordError(
            f"key {dup.key!r} appears twice with different values ({dup.first!r:.40} and {dup.second!r:.40}); "
            "JSON would silently keep the last: remove one",
            location=location,
            field=dup.key,
        )
    except RecursionError:
        return RecordError("is nested too deeply to parse (thousands of levels); flatten the record", location=location)


def _column_dict_rows(obj: dict[str, Any]) -> list[dict[str, Any]] | None:
    """Rows of a pandas `to_json()` export: `{"col": {"0": v, ...}}` or `{"col": [v, ...]}`."""
    values = list(obj.values())
    if values and all(isinstance(v, dict) for v in values):
        keys = list(values[0])
        if keys and all(list(v) == keys for v in values) and all(k.lstrip("-").isdigit() for k in keys):
            return [{col: obj[col][k] for col in obj} for k in keys]
    if values and all(isinstance(v, list) for v in values):
        n = len(values[0])
        if n > 1 and all(len(v) == n for v in values) and not {"messages", "conversations"} & obj.keys():
            return [{col: obj[col][i] for col in obj} for i in range(n)]
    return None


_MESSAGE_KEYS = frozenset({"messages", "conversations", "conversation"})


def _wrapped_list(obj: dict[str, Any]) -> str | None:
    """The key of `{"data": [{...}, ...]}`: an object whose one value is a list of records (not a
    single chat record's `messages`), or None."""
    if len(obj) != 1:
        return None
    ((key, value),) = obj.items()
    records = isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
    chat = key in _MESSAGE_KEYS or (records and {"role", "from"} & value[0].keys())
    return key if records and not chat else None


def _field_rows(path: Path, obj: Any, field: str) -> list[Any]:
    """The records under `field` of a JSON object (datasets' JSON loader's `field`)."""
    if not isinstance(obj, dict) or field not in obj:
        keys = ", ".join(map(repr, obj)) if isinstance(obj, dict) else f"a {type(obj).__name__}, not an object"
        raise ReaderError(f"{path}: field={field!r} names no key of the top-level JSON object (it has {keys})")
    rows = obj[field]
    if not isinstance(rows, list):
        raise ReaderError(f"{path}: field={field!r} holds a {type(rows).__name__}; expected a list of records")
    return rows


def read_json(
    path: Path, *, field: str | None = None, bounds: ReadBounds = DEFAULT_BOUNDS
) -> Iterator[tuple[Location, Row]]:
    """A JSON array of records, a pandas column dict, or a single record; with `field`, the
    array under that key of the top-level object (`{"data": [...]}` with `field="data"`).

    A `.json` file that actually holds JSON Lines (one object per line) is read as JSONL.
    """
    text = _read_text(path, bounds)
    try:
        obj = _parse_json(text, Location(str(path)))
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            yield from read_jsonl(path, bounds=bounds)
            return
        raise _json_error(path, exc) from None
    if isinstance(obj, RecordError):  # one faulty value spoils the whole file: there are no rows to skip to
        raise ReaderError(str(obj))
    source = str(path)
    escaped = bool(_SURROGATE_ESCAPE.search(text))
    long = len(text) > bounds.string_chars  # no string is longer than the text that holds it
    if field is not None:
        rows: list[Any] = _field_rows(path, obj, field)
    elif isinstance(obj, list):
        rows = obj
    elif isinstance(obj, dict):
        if (key := _wrapped_list(obj)) is not None:
            raise ReaderError(
                f"{path}: the records are wrapped in an object under {key!r} ({{{key!r}: [...]}}); "
                f"read them with field={key!r}"
            )
        rows = _column_dict_rows(obj) or [obj]
    else:
        raise ReaderError(f"{path}: top-level JSON is a {type(obj).__name__}; expected an array of records")
    if not rows:
        raise ReaderError(f"{path}: the JSON array is empty; expected records")
    del text
    for i, row in enumerate(rows):
        location = Location(source, index=i)
        row = _checked(row, escaped, location)
        yield location, string_checked(row, location, bounds.string_chars) if long else row


def read_jsonl(path: Path, *, bounds: ReadBounds = DEFAULT_BOUNDS) -> Iterator[tuple[Location, Row]]:
    """JSON Lines, streamed one line at a time; blank lines are skipped.

    A line is read only up to `bounds.line_bytes`: a longer one is skipped unread and comes
    back as a located RecordError, so one 6 GiB line costs a buffer, not 6 GiB.

    A file whose first line is an agent session event (Claude Code, Codex, Pi: `sessions.harness`) is one
    session, not one record per line: it comes back as a single row (`sessions.gather`).
    """
    rows = _jsonl_rows(path, bounds)
    first = next(rows, None)
    if first is None:
        raise ReaderError(f"{path}: file is empty; expected one JSON object per line")
    if not isinstance(first[1], _BadJson) and (name := sessions.harness(first[1])) is not None:
        pairs = (
            (loc, sessions.session_error(str(path), r.line, r.msg) if isinstance(r, _BadJson) else r) for loc, r in rows
        )
        yield Location(str(path)), sessions.gather(str(path), name, first, pairs)
        return
    for location, row in _chain(first, rows):
        if isinstance(row, _BadJson):
            raise ReaderError(
                f"{path}:{row.line}:{row.col}: invalid JSON: {row.msg}; each line must be one JSON object"
            ) from None
        yield location, row


def _chain(first: tuple[Location, Any], rest: Iterator[tuple[Location, Any]]) -> Iterator[tuple[Location, Any]]:
    yield first
    yield from rest


@dataclass(frozen=True, slots=True)
class _BadJson:
    """A JSONL line that is not JSON: an error for a file of records, a rejected session for a session file."""

    line: int
    col: int
    msg: str


def _text_lines(path: Path, bounds: ReadBounds) -> Iterator[tuple[Location, str | RecordError]]:
    """Each line of `path` decoded (a UTF-8 BOM on the first dropped), or the located RecordError of a line past
    `bounds.line_bytes` (skipped unread). The JSONL and text readers' one loop.

    Raises:
        ReaderError: a line that is not UTF-8, naming the line, the byte and the column.
    """
    source = str(path)
    for lineno, raw in jsonl_lines(path, bounds):
        location = Location(source, line=lineno)
        if raw is None:
            yield location, line_too_long(location, bounds.line_bytes)
            continue
        try:
            yield location, raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise ReaderError(
                f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); {REENCODE}"
            ) from None


def _jsonl_rows(path: Path, bounds: ReadBounds) -> Iterator[tuple[Location, Any]]:
    for location, line in _text_lines(path, bounds):
        if isinstance(line, RecordError):
            yield location, line
            continue
        if not line or line.isspace():
            continue
        try:
            row = _checked(_parse_json(line, location), bool(_SURROGATE_ESCAPE.search(line)), location)
            if len(line) > bounds.string_chars:
                row = string_checked(row, location, bounds.string_chars)
        except json.JSONDecodeError as exc:
            row = _BadJson(location.line or 0, exc.colno, exc.msg)
        yield location, row


def read_text(path: Path, *, bounds: ReadBounds = DEFAULT_BOUNDS) -> Iterator[tuple[Location, Row]]:
    """Plain text, one document per non-empty line, as `{"text": line}` (what `datasets`' text loader makes of a
    `.txt` file, and LLaMA-Factory's pre-training data such as `wiki_demo.txt`); blank lines separate, they are
    no records. A line past `bounds.line_bytes` is a located RecordError, as in JSONL."""
    seen = False
    for location, line in _text_lines(path, bounds):
        if isinstance(line, RecordError):
            yield location, line
            continue
        line = line.rstrip("\r\n")
        if line.strip():
            seen = True
            yield location, {"text": line}
    if not seen:
        raise ReaderError(f"{path}: file is empty; expected one document per line")


def jsonl_lines(path: Path, bounds: ReadBounds = DEFAULT_BOUNDS) -> Iterator[tuple[int, bytes | None]]:
    """(line number, bytes) of every line of `path`, decompressed and read within `bounds`: None for a
    line past `bounds.line_bytes`, which was skipped unread. The JSONL reader's and the progress counter's."""
    with open_bytes(path, max_bytes=bounds.decompressed_bytes) as fh:
        yield from enumerate(bounded_lines(fh, bounds.line_bytes), start=1)


def read_parquet(path: Path, *, bounds: ReadBounds = DEFAULT_BOUNDS) -> Iterator[tuple[Location, Row]]:
    """Parquet, streamed in record batches, read through one file object (`open_raw`: the build's descriptor of
    the file, when it holds one)."""
    import pyarrow.parquet as pq

    try:
        fh = open_raw(path)
    except OSError as exc:
        raise ReaderError(f"{path}: not a readable Parquet file: {exc}") from None
    with fh:
        if kind := codec_of(fh.peek(6)[:6]):
            raise ReaderError(
                f"{path}: a {kind}-compressed Parquet file; Parquet compresses its own columns, so ftdata reads it "
                f"as written: `{DECOMPRESS[kind]} {path.name}`"
            )
        try:
            pf = pq.ParquetFile(fh)
        except Exception as exc:  # pyarrow raises several unrelated types for a bad file
            raise ReaderError(f"{path}: not a readable Parquet file: {exc}") from None
        yield from _parquet_rows(path, pf, bounds)


def _parquet_rows(path: Path, pf: Any, bounds: ReadBounds) -> Iterator[tuple[Location, Row]]:
    i = 0
    batches = pf.iter_batches(batch_size=1024)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception as exc:  # a corrupt page surfaces here, as OSError or ArrowInvalid
            raise ReaderError(f"{path}[{i}]: corrupt Parquet data after {i} rows: {str(exc).splitlines()[0]}") from None
        long = batch.nbytes > bounds.string_chars  # no string is longer than its batch
        for row in batch.to_pylist():
            location = Location(str(path), index=i)
            yield location, string_checked(row, location, bounds.string_chars) if long else row
            i += 1


_SAVED = ("dataset_info.json", "dataset_dict.json", "state.json")
_IGNORED = re.compile(r"(?i)^(readme|license|licence|notice|citation)(\.\w+)?$|\.(md|txt|yaml|yml|gitattributes|lock)$")


def read_folder(
    path: Path, *, delimiter: str | None = None, field: str | None = None, bounds: ReadBounds = DEFAULT_BOUNDS
) -> Iterator[tuple[Location, Row]]:
    """A `save_to_disk` folder, or a folder of data files: each file read by its own reader.

    The split layout is the Hugging Face one (`train.jsonl` / `test.jsonl`, `train/...`):
    only the train files are read. Every data file is read (JSON, JSONL, CSV and Parquet may
    be mixed), locations are `file:line`; a file ftdata cannot read is an error, not skipped.
    """
    data = data_files(path)
    if data is None:
        yield from read_hf(path)
        return
    for file in data:
        name = _SUFFIXES[data_suffix(file)]
        shown = str(_under(path, file))
        for location, row in _reader(name, delimiter=delimiter, field=field if name == "json" else None, bounds=bounds)(
            file
        ):
            yield replace(location, source=shown), row


def data_files(path: Path) -> list[Path] | None:
    """The train data files of a folder, in the order `read_folder` reads them; None for a `save_to_disk` folder.

    Raises:
        ReaderError: the folder holds no data files, no train split, or files ftdata cannot read.
    """
    if any((path / name).is_file() for name in _SAVED):
        return None
    if (path / "build.json").is_file() and (path / "rejects.jsonl").is_file():  # what every build writes (build.export)
        raise ReaderError(
            f"{path}: is the output of ftdata build (build.json, rejects.jsonl), not data to read; train on it with "
            f"`ftdata train {path}`, load it with ftdata.load({str(path)!r}), or give the data it was built from"
        )
    from datasets.data_files import DataFilesList, get_data_patterns

    from ftdata.io.resources import go_offline

    go_offline()
    try:
        patterns = get_data_patterns(str(path))
    except FileNotFoundError:
        raise ReaderError(f"{path}: the folder holds no data files; expected .json, .jsonl, .csv or .parquet") from None
    if "train" not in patterns:
        raise ReaderError(f"{path}: the folder has splits {', '.join(map(str, patterns))} but no train split")
    files = sorted(Path(f) for f in DataFilesList.from_patterns(patterns["train"], base_path=str(path)))
    # A folder's .txt files are its notes (README.txt), never its records: a text file is read when named itself.
    data = [f for f in files if data_suffix(f) in _SUFFIXES and data_suffix(f) != ".txt"]
    unknown = [f.relative_to(path) for f in files if f not in data and not _IGNORED.search(f.name)]
    if unknown:
        shown = ", ".join(map(str, unknown[:3])) + (", ..." if len(unknown) > 3 else "")
        raise ReaderError(
            f"{path}: the folder holds files ftdata cannot read ({shown}); use .json, .jsonl, .csv or .parquet, "
            "or move them out"
        )
    if not data:
        raise ReaderError(f"{path}: the folder holds no data files; expected .json, .jsonl, .csv or .parquet")
    return data


def _under(folder: Path, file: Path) -> Path:
    """`file` (absolute, as `datasets` lists it; read so, since a Ray worker has its own working folder) as a
    path under `folder` as the user gave it, for locations: `examples/atif/run.json`, as a file given alone."""
    for base in (folder.absolute(), folder.resolve()):
        try:
            return folder / file.relative_to(base)
        except ValueError:
            continue
    return file


def read_hf(path: Path | str) -> Iterator[tuple[Location, Row]]:
    """A `save_to_disk` folder, a local dataset folder, or a hub id already in the local cache."""
    import datasets

    from ftdata.io.resources import go_offline

    go_offline()
    source = str(path)
    try:
        if any(Path(source, name).is_file() for name in _SAVED[:2]):
            ds = datasets.load_from_disk(source)
        else:
            ds = datasets.load_dataset(source)
    except FileNotFoundError as exc:
        raise ReaderError(
            f"{source}: not a local file or folder, and not a dataset in the local Hugging Face cache "
            f"(ftdata never downloads; {str(exc).splitlines()[0] if str(exc) else 'not found'})"
        ) from None
    except Exception as exc:  # load_dataset wraps many failures; surface the first line only
        if _agent_traces(exc):
            raise ReaderError(
                f"{source}: holds raw agent session files, which datasets decodes only with the teich package; "
                "ftdata reads them itself: give it the folder or the files (each session file is one record)"
            ) from None
        raise ReaderError(f"{source}: cannot load dataset: {str(exc).splitlines()[0]}") from None
    yield from iter_dataset(ds, source)


def _agent_traces(exc: BaseException) -> bool:
    """Whether `load_dataset` failed on agent session files for want of `teich` (its DatasetGenerationError
    wraps the ImportError that says so)."""
    seen: set[int] = set()
    at: BaseException | None = exc
    while at is not None and id(at) not in seen:
        seen.add(id(at))
        if isinstance(at, ImportError) and "teich" in str(at):
            return True
        at = at.__cause__ or at.__context__
    return False


def iter_dataset(ds: Any, source: str) -> Iterator[tuple[Location, Row]]:
    """Rows of a `datasets.Dataset`, or the `train` split of a `DatasetDict`."""
    if isinstance(ds, Mapping):  # DatasetDict is a dict of splits
        if "train" not in ds:
            raise ReaderError(f"{source}: dataset has splits {list(ds)}; none is called 'train'")
        ds, source = ds["train"], f"{source}[train]"
    for i, row in enumerate(_audio_undecoded(ds)):
        yield Location(source, index=i), row


def _audio_undecoded(ds: Any) -> Any:
    """`ds` with each `Audio` column (or list of them) read as `{"bytes", "path"}`: decoding needs torchcodec, and
    the media stage reads a clip's header only."""
    import datasets

    for name, feature in (getattr(ds, "features", None) or {}).items():
        inner = getattr(feature, "feature", None)
        if isinstance(feature, datasets.Audio) and feature.decode:
            ds = ds.cast_column(name, datasets.Audio(decode=False))
        elif isinstance(inner, datasets.Audio) and inner.decode:
            ds = ds.cast_column(name, datasets.List(datasets.Audio(decode=False)))
    return ds


def read_dataframe(frame: Any, *, batch: int = 1024) -> Iterator[tuple[Location, Row]]:
    """Rows of a `pandas.DataFrame` as dicts, located by their index label: `DataFrame[17]`.

    Cells pass through as they are (the nested `{"0": text}` dicts that
    `pd.read_json(..., lines=True)` leaves in a pandas-exported file included; `formats.py`
    unwraps them); missing cells (NaN, None, NA, NaT) become None. Rows are converted a batch
    at a time, so a large frame is never copied whole into Python objects.
    """
    import math

    import pandas as pd  # only reached with a DataFrame, so pandas is already imported

    def cell(value: Any) -> Any:
        if value is pd.NA or value is pd.NaT or (isinstance(value, float) and math.isnan(value)):
            return None
        return value

    for start in range(0, len(frame), batch):
        part = frame.iloc[start : start + batch]
        for label, row in zip(part.index, part.to_dict("records"), strict=True):
            label = label.item() if hasattr(label, "item") else label  # numpy int64 -> int
            yield Location("DataFrame", index=label), {str(k): cell(v) for k, v in row.items()}


def is_dataframe(source: Any) -> bool:
    """True for a `pandas.DataFrame`, checked without importing pandas (a frame implies it is loaded)."""
    import sys

    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(source, pandas.DataFrame)


READERS: dict[str, Reader] = {
    "json": read_json,
    "jsonl": read_jsonl,
    "csv": read_csv,
    "parquet": read_parquet,
    "text": read_text,
    "hf": read_hf,
    "folder": read_folder,
}
_SUFFIXES = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
}


def _user_reader(name: str, func: Callable[[Path], Any]) -> Reader:
    """A `module:function` reader whose failures (and wrong output) are one located line."""

    def read(path: Path) -> Iterator[tuple[Location, Row]]:
        try:
            for item in func(path):
                if not (isinstance(item, tuple) and len(item) == 2):
                    raise ReaderError(f"reader {name!r} must yield (location, row) pairs; it yielded {item!r:.60}")
                location, row = item
                yield (location if isinstance(location, Location) else Location(str(location))), row
        except FtdataError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's code: any failure is reported in one line
            raise ReaderError(f"{path}: reader {name!r} failed: {type(exc).__name__}: {exc}") from None

    return read


def _resolve(name: str) -> Reader:
    if name in READERS:
        return READERS[name]
    if ":" in name:
        return _user_reader(name, code_function(name, what=f"reader {name!r}"))
    raise ConfigError(f"reader must be one of {', '.join(READERS)} or 'package.module:function'; got reader={name!r}")


def _reader(name: str, *, delimiter: str | None, field: str | None, bounds: ReadBounds) -> Reader:
    """Reader `name`, given the options that apply to it (`delimiter`: csv; `field`: json, folder;
    `bounds`: every file reader).

    Raises:
        ConfigError: `field` for a reader that is not JSON (JSON Lines, CSV and Parquet rows
            are never wrapped).
    """
    if field is not None and name not in ("json", "folder"):
        raise ConfigError(f"field={field!r} picks the records out of a JSON object; reader {name!r} has no such object")
    if name == "csv":
        return functools.partial(read_csv, delimiter=delimiter, bounds=bounds)
    if name in ("json", "folder"):
        kwargs: dict[str, Any] = {"field": field} if name == "json" else {"field": field, "delimiter": delimiter}
        return functools.partial(READERS[name], **kwargs, bounds=bounds)
    if name in ("jsonl", "parquet", "text"):
        return functools.partial(READERS[name], bounds=bounds)
    return _resolve(name)


def sniff(path: Path) -> str:
    """Choose a reader for `path` by suffix, else by its first bytes."""
    if path.is_dir():
        return "folder"
    if name := _SUFFIXES.get(data_suffix(path)):
        return name
    with open_bytes(path) as fh:
        head = fh.read(_SNIFF_BYTES).lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        first = head.split(b"\n", 1)[0].strip()
        return "jsonl" if first.endswith(b"}") else "json"
    if head.startswith(b"PAR1"):
        return "parquet"
    raise ReaderError(
        f"{path}: unknown file type {path.suffix or '(no suffix)'!r}; use .json, .jsonl, .csv, .parquet or .txt "
        "(JSON and CSV also as .gz, .zst, .bz2 or .xz), or pass reader=json|jsonl|csv|parquet"
    )


def read_records(
    source: Any,
    *,
    reader: str | None = None,
    delimiter: str | None = None,
    field: str | None = None,
    bounds: ReadBounds = DEFAULT_BOUNDS,
) -> Iterator[tuple[Location, Row]]:
    """Yield `(location, row)` for every record of `source`.

    `source` is a path (file or dataset folder), a hub id in the local cache, a
    `datasets.Dataset`/`DatasetDict`, or an iterable of rows. `reader` forces a reader;
    `delimiter` is a CSV file's (sniffed from its header when None); `field` picks the records
    of a JSON file out of its top-level object (`{"data": [...]}`); `bounds`: the longest line
    and string and the decompressed bytes of a file (`ftdata.guard.bounds`).

    Raises:
        ReaderError: the source cannot be read; the message names the file and line.
    """
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if path.exists() and not (path.is_file() or path.is_dir()):
            yield from _read_stream(path, reader, delimiter=delimiter, field=field, bounds=bounds)
            return
        if reader is not None:
            yield from _reader(reader, delimiter=delimiter, field=field, bounds=bounds)(path)
            return
        if not path.exists():
            if isinstance(source, str) and _looks_like_hub_id(source):
                yield from read_hf(source)
                return
            raise ReaderError(f"{path}: no such file or folder")
        yield from _reader(sniff(path), delimiter=delimiter, field=field, bounds=bounds)(path)
        return
    if is_dataframe(source):
        yield from read_dataframe(source)
        return
    if hasattr(source, "column_names"):  # datasets.Dataset or DatasetDict
        yield from iter_dataset(source, "<dataset>")
        return
    if isinstance(source, Mapping):
        raise ConfigError("source is a single dict; pass a list of records, a path, or a datasets.Dataset")
    if isinstance(source, Iterable):
        for i, row in enumerate(source):
            yield Location("<records>", index=i), row
        return
    raise ConfigError(f"source must be a path, a datasets.Dataset or a list of records; got {type(source).__name__}")


_FILE_LIKE = (*_SUFFIXES, ".txt", ".gz", ".zst", ".bz2", ".xz", ".zip", ".xlsx", ".arrow", ".yaml", ".yml", ".jinja")


def _looks_like_hub_id(source: str) -> bool:
    """`org/name`: one slash, no leading `.`/`/`/`~`, and no file suffix (`sub/file.jsonl` is a path)."""
    return (
        source.count("/") == 1
        and not source.startswith((".", "/", "~"))
        and Path(source).suffix.lower() not in _FILE_LIKE
    )


def _read_stream(
    path: Path, reader: str | None, *, delimiter: str | None, field: str | None, bounds: ReadBounds
) -> Iterator[tuple[Location, Row]]:
    """A pipe, FIFO or `<(process substitution)`: it can be read once, so it is copied to scratch first
    (at most `bounds.decompressed_bytes` of it), and the copy is removed when it has been read.

    Locations and messages keep the name the user gave.
    """
    from ftdata.guard.safeio import drop_scratch, scratch_dir

    folder = scratch_dir()
    copy = folder / "stream"
    try:
        copy_pipe(path, copy, limit=bounds.decompressed_bytes)
        try:
            for location, row in _reader(reader or sniff(copy), delimiter=delimiter, field=field, bounds=bounds)(copy):
                yield Location(str(path), location.line, location.index), row
        except FtdataError as exc:
            raise type(exc)(str(exc).replace(str(copy), str(path))) from None
    finally:
        drop_scratch(folder)


__all__ = ["READERS", "data_files", "iter_dataset", "jsonl_lines", "read_records", "sniff"]
