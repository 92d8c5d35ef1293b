"""What a dataset declaration becomes (`ftdata.io.declarations`): its sources and options, and the helpers the
LLaMA-Factory and axolotl readers share (picking entries by name, one-line refusals)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.guard.inputs import text_digest

__all__ = ["Declaration", "DeclaredSource", "picked", "read_json_mapping", "refuse", "split_pick"]

LLAMAFACTORY, AXOLOTL = "LLaMA-Factory", "axolotl"
_MAX_INFO_BYTES = 16 * 2**20


@dataclass(frozen=True, slots=True)
class DeclaredSource:
    """One declared dataset: its name, the file or folder it reads (absolute, or a URI) and its ftdata options."""

    name: str
    data: str
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Declaration:
    """A declaration's picked datasets and the options of the whole build they make (`task`, `max_length`, ...)."""

    origin: str  # the file as given, with its `#names`
    tool: str  # LLAMAFACTORY or AXOLOTL
    sources: tuple[DeclaredSource, ...]
    options: Mapping[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None  # axolotl's tokenizer_config / base_model
    digest: str = ""  # sha256 of the declaring file's bytes, the ones parsed (the build's key takes it)

    def recipe(self) -> dict[str, Any]:
        """The recipe mapping that builds these datasets: each one source, every record once."""
        sources = [{"name": s.name, "data": s.data, **s.options} for s in self.sources]
        tokenizer = {"tokenizer": self.tokenizer} if self.tokenizer else {}
        return {"mix_by": "all", **tokenizer, **self.options, "sources": sources}


def split_pick(source: str | Path) -> tuple[Path, tuple[str, ...] | None]:
    """`data/dataset_info.json#a,b` -> (the path, ("a", "b")); a path with no `#NAMES` (or that exists as
    written) -> (the path, None)."""
    text = str(source)
    path, sep, names = text.rpartition("#")
    if sep and path and not os.path.exists(text):
        return Path(path), tuple(n.strip() for n in names.split(",") if n.strip())
    return Path(text), None


def picked(entries: Mapping[str, Any], names: tuple[str, ...] | None, *, origin: str, what: str) -> list[str]:
    """The entries `names` picks (all of a file that declares one).

    Raises:
        ConfigError: no name picked where there are several, or a name that is not declared (the names listed).
    """
    known = list(entries)
    if not known:
        raise ConfigError(f"{origin}: declares no {what}")
    if not names:
        if len(known) == 1:
            return known
        raise ConfigError(
            f"{origin} declares {len(known)} {what}s; pick them by name, e.g. {origin}#{known[0]}: {', '.join(known)}"
        )
    for name in names:
        if name not in entries:
            raise ConfigError(f"{origin}: no {what} named {name!r}; the names are {', '.join(known)}")
    return list(dict.fromkeys(names))


def read_json_mapping(path: Path) -> tuple[dict[str, Any], str]:
    """A JSON file holding an object (at most 16 MiB), and the sha256 of the bytes parsed.

    Raises:
        ConfigError: unreadable, too large, not JSON, or not an object.
    """
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_INFO_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {str(path)!r}: {exc.strerror}") from None
    if len(data) > _MAX_INFO_BYTES:
        raise ConfigError(f"{path}: larger than {_MAX_INFO_BYTES:,} bytes; a dataset declaration is smaller")
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: must hold an object of dataset entries, got {type(value).__name__}")
    return value, text_digest(data)


def refuse(where: str, key: str, value: Any, why: str) -> ConfigError:
    """The one-line refusal of a declared key ftdata does not read the same way."""
    return ConfigError(f"{where}: {key}={value!r}: {why}")
