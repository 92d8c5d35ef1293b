"""Readers: turn a source (file, folder, hub id, Dataset, list) into `(Location, row)` pairs.

Rows are whatever the source holds (usually dicts; a list for a bare message list). Readers
never interpret rows; `formats.py` does. JSONL, CSV and Parquet are streamed.

Add a reader by registering a function `(path: Path) -> Iterator[tuple[Location, Any]]` in
`READERS`, or pass `reader="package.module:function"`.
"""

from __future__ import annotations

import csv
import importlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError, Location, ReaderError

Row = Any
Reader = Callable[[Path], Iterator[tuple[Location, Row]]]

_SNIFF_BYTES = 4096


def _decode_error(path: Path, exc: UnicodeDecodeError, data: bytes, start: int = 0) -> ReaderError:
    offset = start + exc.start
    line = data[: exc.start].count(b"\n") + 1 if start == 0 else None
    where = f"{path}:{line}" if line else f"{path} (byte {offset})"
    return ReaderError(
        f"{where}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at offset {offset}); "
        "re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`"
    )


def _read_text(path: Path) -> str:
    data = path.read_bytes()
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


def read_json(path: Path) -> Iterator[tuple[Location, Row]]:
    """A JSON array of records, a pandas column dict, or a single record.

    A `.json` file that actually holds JSON Lines (one object per line) is read as JSONL.
    """
    text = _read_text(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            yield from read_jsonl(path)
            return
        raise _json_error(path, exc) from None
    source = str(path)
    if isinstance(obj, list):
        rows: list[Any] = obj
    elif isinstance(obj, dict):
        rows = _column_dict_rows(obj) or [obj]
    else:
        raise ReaderError(f"{path}: top-level JSON is a {type(obj).__name__}; expected an array of records")
    if not rows:
        raise ReaderError(f"{path}: the JSON array is empty; expected records")
    for i, row in enumerate(rows):
        yield Location(source, index=i), row


def read_jsonl(path: Path) -> Iterator[tuple[Location, Row]]:
    """JSON Lines, streamed one line at a time; blank lines are skipped."""
    source = str(path)
    seen = False
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise ReaderError(
                    f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1}); "
                    "re-save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line.rstrip("\r\n"))
            except json.JSONDecodeError as exc:
                raise ReaderError(
                    f"{path}:{lineno}:{exc.colno}: invalid JSON: {exc.msg}; each line must be one JSON object"
                ) from None
            seen = True
            yield Location(source, line=lineno), row
    if not seen:
        raise ReaderError(f"{path}: file is empty; expected one JSON object per line")


def read_csv(path: Path) -> Iterator[tuple[Location, Row]]:
    """CSV with a header row, streamed; each row is a dict of strings."""
    source = str(path)
    with path.open("r", encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        try:
            for i, row in enumerate(reader):
                yield Location(source, line=reader.line_num), dict(row)
        except UnicodeDecodeError:
            raise ReaderError(f"{path}:{reader.line_num + 1}: not valid UTF-8; re-save the file as UTF-8") from None
        except csv.Error as exc:
            raise ReaderError(f"{path}:{reader.line_num}: invalid CSV: {exc}") from None
        if reader.line_num <= 1 and reader.fieldnames is None:
            raise ReaderError(f"{path}: file is empty; expected a header row and records")


def read_parquet(path: Path) -> Iterator[tuple[Location, Row]]:
    """Parquet, streamed in record batches."""
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types for a bad file
        raise ReaderError(f"{path}: not a readable Parquet file: {exc}") from None
    i = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            yield Location(str(path), index=i), row
            i += 1


def read_hf(path: Path | str) -> Iterator[tuple[Location, Row]]:
    """A `save_to_disk` folder, a local dataset folder, or a hub id already in the local cache."""
    import datasets

    source = str(path)
    try:
        if Path(source, "dataset_info.json").is_file() or Path(source, "dataset_dict.json").is_file():
            ds = datasets.load_from_disk(source)
        else:
            ds = datasets.load_dataset(source)
    except FileNotFoundError as exc:
        raise ReaderError(f"{source}: not a local dataset folder or cached hub dataset ({exc})") from None
    except Exception as exc:  # load_dataset wraps many failures; surface the first line only
        raise ReaderError(f"{source}: cannot load dataset: {str(exc).splitlines()[0]}") from None
    yield from iter_dataset(ds, source)


def iter_dataset(ds: Any, source: str) -> Iterator[tuple[Location, Row]]:
    """Rows of a `datasets.Dataset`, or the `train` split of a `DatasetDict`."""
    if isinstance(ds, Mapping):  # DatasetDict is a dict of splits
        if "train" not in ds:
            raise ReaderError(f"{source}: dataset has splits {list(ds)}; none is called 'train'")
        ds, source = ds["train"], f"{source}[train]"
    for i, row in enumerate(ds):
        yield Location(source, index=i), row


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
    "hf": read_hf,
}
_SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def _resolve(name: str) -> Reader:
    if name in READERS:
        return READERS[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"reader {name!r} cannot be imported: {exc}") from None
    raise ConfigError(f"reader must be one of {', '.join(READERS)} or 'package.module:function'; got reader={name!r}")


def sniff(path: Path) -> str:
    """Choose a reader for `path` by suffix, else by its first bytes."""
    if path.is_dir():
        return "hf"
    if name := _SUFFIXES.get(path.suffix.lower()):
        return name
    head = path.read_bytes()[:_SNIFF_BYTES].lstrip(b"\xef\xbb\xbf \t\r\n")
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        first = head.split(b"\n", 1)[0].strip()
        return "jsonl" if first.endswith(b"}") else "json"
    if head.startswith(b"PAR1"):
        return "parquet"
    raise ReaderError(
        f"{path}: unknown file type {path.suffix or '(no suffix)'!r}; "
        "use .json, .jsonl, .csv or .parquet, or pass reader=json|jsonl|csv|parquet"
    )


def read_records(source: Any, *, reader: str | None = None) -> Iterator[tuple[Location, Row]]:
    """Yield `(location, row)` for every record of `source`.

    `source` is a path (file or dataset folder), a hub id in the local cache, a
    `datasets.Dataset`/`DatasetDict`, or an iterable of rows. `reader` forces a reader.

    Raises:
        ReaderError: the source cannot be read; the message names the file and line.
    """
    if isinstance(source, (str, Path)):
        path = Path(source).expanduser()
        if reader is not None:
            yield from _resolve(reader)(path)
            return
        if not path.exists():
            if isinstance(source, str) and source.count("/") == 1 and not source.startswith((".", "/")):
                yield from read_hf(source)
                return
            raise ReaderError(f"{path}: no such file or folder")
        yield from _resolve(sniff(path))(path)
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


__all__ = ["READERS", "iter_dataset", "read_records", "sniff"]
