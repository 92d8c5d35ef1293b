"""Config files: one YAML reader for every command, relative paths taken against the file,
and the checks every command makes of a config's keys.

`ftdata preview/stats/build --config` and `ftdata train --config` read their file with
`load_config_file`, so a path in a config means the same in every command, from any
directory: `data: train.jsonl` in `configs/run.yaml` is `configs/train.jsonl`.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.options import FIELDS
from ftdata.io.store import is_uri

# Keys whose relative paths are taken relative to the YAML file, in any command's config (when
# the file exists there, for the first group: "smollm2" or a hub id is not a path).
_PATH_IF_EXISTS = ("data", "tokenizer", "template", "model", "processor")
_PATH_ALWAYS = ("output", "output_dir", "rejects_path", "cache_dir")
NESTED_KEY = "data_options"  # a train config's mapping of BuildOptions fields


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that holds a mapping of option: value (an empty file is {}).

    Raises:
        ConfigError: unreadable file, not UTF-8, invalid YAML, or not a mapping.
    """
    from ftdata.tokens.limits import load_yaml  # size and alias limits: no "billion laughs"

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start}); save the config as UTF-8") from None
    values = load_yaml(text, source=str(path))
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config must be a mapping of option: value, got {type(values).__name__}")
    return values


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file of any command; relative paths resolve against its folder.

    The one reader of `--config` for `preview`, `stats`, `build` and `train`, so a config
    works from any directory. `data`, `tokenizer`, `model` and `template` are taken relative
    to the file when they exist there ("smollm2", a hub id or a built-in template name is not
    a path); `output`, `output_dir`, `rejects_path` and `cache_dir` always are. The same keys
    inside a `data_options:` mapping (a train config) resolve the same way.

    Raises:
        ConfigError: see `read_yaml`.
    """
    return resolve_paths(read_yaml(path), Path(path).parent)


def resolve_paths(values: Mapping[str, Any], base: Path) -> dict[str, Any]:
    """`values` with the relative paths of the keys `load_config_file` names (also inside a
    `data_options:` mapping) taken against `base`; with `base=Path.cwd()`, made absolute."""
    out = {key: _resolve_path(key, value, base) for key, value in values.items()}
    nested = out.get(NESTED_KEY)
    if isinstance(nested, Mapping):
        out[NESTED_KEY] = {key: _resolve_path(key, value, base) for key, value in nested.items()}
    return out


def _resolve_path(key: str, value: Any, base: Path) -> Any:
    if not isinstance(value, str) or key not in (*_PATH_IF_EXISTS, *_PATH_ALWAYS) or is_uri(value):
        return value
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    if key in _PATH_ALWAYS or (base / path).exists():
        return os.path.normpath(base / path)  # examples/../runs -> runs
    return value


def check_names(keys: Iterable[Any], valid: Iterable[str], *, origin: str, what: str = "option") -> None:
    """Every key must be a valid name; an unknown one is named with its closest match.

    Raises:
        ConfigError: `"{origin}: unknown option 'max_lenght' (did you mean max_length?)"`.
    """
    names = list(valid)
    for key in keys:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]}?)" if close else f"; valid {what}s: {', '.join(names)}"
            raise ConfigError(f"{origin}: unknown {what} {key!r}{hint}")


def check_code_reader(reader: Any, *, origin: str, allow_code: bool) -> None:
    """A `module:function` reader runs Python code: only with `--allow-code`, so that a
    config file alone can never run code.

    Raises:
        ConfigError: a code reader without `allow_code`.
    """
    if isinstance(reader, str) and ":" in reader and not allow_code:
        raise ConfigError(
            f"{origin} names Python code ({reader!r}), which ftdata runs only with --allow-code; "
            "add --allow-code if you trust that code, or use a built-in reader (json, jsonl, csv, parquet, hf)"
        )


def option_kind(name: str) -> str:
    """How a field is spelled on the command line: bool, int, number, pairs, json or text."""
    special = {
        "columns": "pairs", "roles": "pairs", "test_size": "number", "limit": "int", "num_workers": "int",
        "pad_to_multiple_of": "int", "chat_template_kwargs": "json", "stop_tokens": "tokens", "max_reject_ratio": "float",
        "max_images": "int", "max_image_pixels": "int",
    }  # fmt: skip
    if name in special:
        return special[name]
    default = FIELDS[name].default
    if isinstance(default, bool):
        return "bool"
    return "int" if isinstance(default, int) else "text"


_YAML_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "bool": ((bool,), "true or false (unquoted)"),
    "int": ((int,), "a whole number"),
    "number": ((int, float), "a count (200) or a fraction (0.1)"),
    "float": ((int, float), "a number"),
    "pairs": ((dict,), "a mapping, e.g. {output: answer}"),
    "json": ((dict, str), "a mapping, e.g. {enable_thinking: false}"),
    "text": ((str,), "a string"),
    "tokens": ((list, str), "a list of token strings, e.g. ['<|eom_id|>']"),
}


def check_type(origin: str | Path, key: str, value: Any) -> None:
    """A YAML value must have its option's type: `packing: 'false'` is a string, not false.

    Raises:
        ConfigError: naming the file, the key, the value and the type expected.
    """
    if value is None:
        return
    kind = option_kind(key) if key in FIELDS else "text"
    types, wanted = _YAML_TYPES[kind]
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if ok and kind == "pairs":
        ok = all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    if not ok:
        raise ConfigError(f"{origin}: {key} must be {wanted}, got {type(value).__name__} {value!r:.60}")
