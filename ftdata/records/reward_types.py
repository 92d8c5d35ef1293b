"""The types of a prompt set's reward columns: what a column holds, checked per record, kept as the data nests it.

    string, int, float, bool               a scalar
    list[T]                                a list of T (`list[string]`, `list[struct{...}]`, `list[list[int]]`)
    struct                                 an object whose keys and their types Arrow unifies over the records
                                           (`pa.array` of the values, as `datasets` does): a key a record lacks is
                                           null there (verifiers' `info`: `{}` in one record, `{index, source}` in
                                           another); what the first record's objects are typed as
    struct{style: string, ground_truth: string}
                                           an object with these keys (verl's `reward_model`, named in
                                           reward_columns); a key a record lacks, or null, is null; a key the
                                           type lacks is refused
    json                                   any other JSON value (mixed lists, an empty list): stored as its
                                           JSON text; a `struct` column whose values Arrow cannot unify (an int
                                           in one record, a string in another, in one key) too, with a note
    skip                                   a column the rows leave out (`reward_columns` naming a subset)

A trailing `?` (`string?`) lets a record leave the column out or null. `type_of` names the type of a value
(the first record's types a set's columns); `typed` checks a value against a type and returns it as stored.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from typing import Any

from ftdata.errors import ConfigError, Location, RecordError
from ftdata.records.formats import _unwrap

__all__ = ["OPEN", "REWARD_TYPES", "SKIP", "Kind", "is_open", "parse_kind", "type_of", "typed"]

SCALARS = ("string", "int", "float", "bool")
SKIP = "skip"
OPEN = "struct"  # an object typed by Arrow over the records (`ftdata.run.open_columns`)
REWARD_TYPES = (*SCALARS, "list[T]", OPEN, "struct{KEY: T, ...}", "json", SKIP)
"""The type names `reward_columns` takes (T: any of them but skip)."""

# A parsed type: a scalar or "json" (str), ("list", inner), or ("struct", ((key, type), ...)).
Kind = str | tuple[str, Any]
_KEY = re.compile(r"[^\s:,{}\[\]]+")


@lru_cache(maxsize=512)
def parse_kind(text: str) -> Kind:
    """`"list[struct{a: int}]"` -> `("list", ("struct", (("a", "int"),)))`.

    Raises:
        ConfigError: text that is no type, naming the valid ones.
    """
    kind, rest = _parse(text.strip(), text)
    if rest.strip():
        raise _no_type(text)
    return kind


def _parse(text: str, whole: str) -> tuple[Kind, str]:
    for name in (*SCALARS, "json", SKIP, OPEN):
        after = text[len(name) : len(name) + 1]
        if text.startswith(name) and not after.isalnum() and not (name == OPEN and after == "{"):
            return name, text[len(name) :]
    if text.startswith("list["):
        inner, rest = _parse(text[5:].lstrip(), whole)
        rest = rest.lstrip()
        if inner == SKIP or not rest.startswith("]"):
            raise _no_type(whole)
        return ("list", inner), rest[1:]
    if text.startswith("struct{"):
        rest, keys = text[7:].lstrip(), []
        while not rest.startswith("}"):
            key = _KEY.match(rest)
            if key is None or not rest[key.end() :].lstrip().startswith(":"):
                raise _no_type(whole)
            inner, rest = _parse(rest[key.end() :].lstrip()[1:].lstrip(), whole)
            if inner == SKIP:
                raise _no_type(whole)
            keys.append((key.group(), inner))
            rest = rest.lstrip()
            if rest.startswith(","):
                rest = rest[1:].lstrip()
            elif not rest.startswith("}"):
                raise _no_type(whole)
        return ("struct", tuple(keys)), rest[1:]
    raise _no_type(whole)


def _no_type(text: str) -> ConfigError:
    return ConfigError(
        f"reward_columns: {text!r} is no type; choose one of {', '.join(REWARD_TYPES)} (a trailing ? lets it be null)"
    )


def name_of(kind: Kind) -> str:
    """A parsed type written back as its text (the inverse of `parse_kind`)."""
    if isinstance(kind, str):
        return kind
    if kind[0] == "list":
        return f"list[{name_of(kind[1])}]"
    return "struct{" + ", ".join(f"{key}: {name_of(inner)}" for key, inner in kind[1]) + "}"


def is_open(kind: str) -> bool:
    """Whether a column of type `kind` holds objects Arrow types over the records (`struct`, `list[struct]`)."""
    return _has_open(parse_kind(kind.removesuffix("?")))


def _has_open(kind: Kind) -> bool:
    if isinstance(kind, str):
        return kind == OPEN
    if kind[0] == "list":
        return _has_open(kind[1])
    return any(_has_open(inner) for _, inner in kind[1])


def type_of(value: Any) -> str:
    """The type that holds `value` as the data nests it: an object is `struct` (its keys and their types as Arrow
    unifies them over the records); `json` for what no other type names (an empty list, a list of mixed types)."""
    value = _unwrap(value)
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list) and value:
        inner = {type_of(v) for v in value}
        if len(inner) == 1 and "json" not in inner:
            return f"list[{next(iter(inner))}]"
        if inner == {"int", "float"}:
            return "list[float]"
    if isinstance(value, dict):
        return OPEN
    return "json"


def typed(value: Any, kind: str, *, name: str, location: Location) -> Any:
    """`value` as a `kind` column stores it.

    Raises:
        RecordError: missing or null (unless `kind` ends in `?`), or of another type, naming the column
            (and the key or index inside it).
    """
    value = _unwrap(value)
    if value is None and kind.endswith("?"):
        return None
    kind = kind.removesuffix("?")
    if value is None:
        raise RecordError(
            f"is missing or null; every record of the prompt set carries the reward column {name} ({kind})",
            location=location,
            field=name,
        )
    return _typed(value, parse_kind(kind), name=name, location=location, top=name)


def _typed(value: Any, kind: Kind, *, name: str, location: Location, top: str) -> Any:
    if kind == "json":
        try:
            return json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):
            raise RecordError(
                f"holds a value that is not JSON ({type(value).__name__})", location=location, field=name
            ) from None
    if kind == OPEN:
        if not isinstance(value, dict):
            raise RecordError(
                f"is {type_of(value)} ({_brief(value)}), the column holds objects (as the first record, or "
                f"reward_columns, says); write every record's {top} as an object",
                location=location,
                field=name,
            )
        return value
    if isinstance(kind, str):
        return _scalar(value, kind, name=name, location=location)
    if kind[0] == "list":
        if not isinstance(value, list):
            raise RecordError(
                f"is {type_of(value)}, the column holds {name_of(kind)}; make every record's {name} a list",
                location=location,
                field=name,
            )
        return [_typed(v, kind[1], name=f"{name}[{i}]", location=location, top=top) for i, v in enumerate(value)]
    return _struct(value, kind, name=name, location=location, top=top)


def _struct(value: Any, kind: tuple[str, Any], *, name: str, location: Location, top: str) -> dict[str, Any]:
    """An object checked key by key: a key the record lacks (or null) is null; a key the type lacks is refused."""
    keys = dict(kind[1])
    if not isinstance(value, dict):
        raise RecordError(
            f"is {type_of(value)}, the column holds {name_of(kind)}; write every record's {name} as that object",
            location=location,
            field=name,
        )
    extra = [key for key in value if key not in keys]
    if extra:
        raise RecordError(
            f"has key {extra[0]!r} that the column's type {name_of(kind)} does not (typed from the prompt set's first "
            f"record, or reward_columns); give every record the same keys, or type {top} as json in reward_columns",
            location=location,
            field=name,
        )
    return {
        key: None
        if _unwrap(value.get(key)) is None
        else _typed(_unwrap(value[key]), inner, name=f"{name}.{key}", location=location, top=top)
        for key, inner in keys.items()
    }


def _scalar(value: Any, kind: str, *, name: str, location: Location) -> Any:
    got = type_of(value)
    if got == kind or (kind == "float" and got == "int"):
        if kind == "float" and not math.isfinite(value):
            raise RecordError(f"is {value!r}, not a finite number", location=location, field=name)
        return float(value) if kind == "float" else value
    raise RecordError(
        f"is {got} ({_brief(value)}), the column holds {kind} (as the first record, or reward_columns, says); "
        f"write every record's {name.split('[')[0]} as {kind}",
        location=location,
        field=name,
    )


def _brief(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else text[:37] + "..."
