"""Config files: one YAML reader for every command, relative paths taken against the file,
and the checks every command makes of a config's keys.

`ftdata preview/stats/build --config` and `ftdata train --config` read their file with
`load_config_file`, so a path in a config means the same in every command, from any
directory: `data: train.jsonl` in `configs/run.yaml` is `configs/train.jsonl`.
"""

from __future__ import annotations

import difflib
import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.guard.inputs import text_digest
from ftdata.guard.limits import env_name, limits
from ftdata.io.store import is_uri

# Keys whose relative paths are taken relative to the YAML file, in any command's config (when
# the file exists there, for the first group: "smollm2" or a hub id is not a path).
_PATH_IF_EXISTS = ("data", "tokenizer", "template", "chat_template", "model", "processor")
_PATH_ALWAYS = ("output", "output_dir", "rejects_path", "cache_dir")
NESTED_KEY = "data_options"  # a train config's mapping of BuildOptions fields


@dataclass(frozen=True, slots=True)
class YamlFile:
    """A YAML file read once: its mapping, and the sha256 of the very bytes that were parsed (what a build's key
    takes of a recipe: `ftdata.mix.recipe.recipe_inputs`; the file is never read again to digest it)."""

    values: dict[str, Any]
    digest: str


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that holds a mapping of option: value (an empty file is {}); see `read_yaml_file`."""
    return read_yaml_file(path).values


def read_yaml_file(path: str | Path) -> YamlFile:
    """Read a YAML file that holds a mapping of option: value (an empty file is {}), and digest what it read.

    At most `FTDATA_YAML_MAX_BYTES` of it is read: a larger file (or an endless pipe) is refused
    before it is held whole.

    Raises:
        ConfigError: unreadable file, larger than the limit, not UTF-8, invalid YAML, or not a mapping.
    """
    path = Path(path)
    limit = limits().yaml_bytes
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read config {str(path)!r}: {exc.strerror}") from None
    if len(data) > limit:
        raise ConfigError(
            f"{path}: config is larger than {limit:,} bytes; raise {env_name('yaml_bytes')} if it must be"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not valid UTF-8 (byte {exc.start}); save the config as UTF-8") from None
    values = load_yaml(text, source=str(path))
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a config must be a mapping of option: value, got {type(values).__name__}")
    return YamlFile(values, text_digest(data))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML config file of any command; relative paths resolve against its folder (`read_config_file`)."""
    return read_config_file(path).values


def read_config_file(path: str | Path) -> YamlFile:
    """Read a YAML config file of any command once: its values, relative paths resolved against its folder, and
    the digest of the bytes parsed (what a build's key takes of it: the file is not read again).

    The one reader of `--config` for `preview`, `stats`, `build` and `train`, so a config
    works from any directory. `data`, `tokenizer`, `model` and `template` are taken relative
    to the file when they exist there ("smollm2", a hub id or a built-in template name is not
    a path); `output`, `output_dir`, `rejects_path` and `cache_dir` always are. The same keys
    inside a `data_options:` mapping (a train config) resolve the same way.

    Raises:
        ConfigError: see `read_yaml`.
    """
    read = read_yaml_file(path)
    return YamlFile(resolve_paths(read.values, Path(path).parent), read.digest)


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


def code_function(name: str, *, what: str) -> Callable[..., Any]:
    """The function `package.module:function` names, imported (once the user has opted in to code: see
    `check_code_reader`). `what` names it in the messages (`reader 'm:f'`, `rewards: 'm:f'`).

    Raises:
        ConfigError: the module or the name cannot be imported, or is not a function.
    """
    module, _, attr = name.partition(":")
    try:
        func = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{what} cannot be imported: {exc}") from None
    if not callable(func):
        raise ConfigError(f"{what} is not a function")
    return func


def check_code_reader(
    reader: Any, *, origin: str, allow_code: bool, instead: str = "a built-in reader (json, jsonl, csv, parquet, hf)"
) -> None:
    """A `module:function` reader (or training reward, `instead` naming the built-in ones) runs Python
    code: only with `--allow-code`, so that a config file alone can never run code.

    Raises:
        ConfigError: a code reader without `allow_code`.
    """
    if isinstance(reader, str) and ":" in reader and not allow_code:
        raise ConfigError(
            f"{origin} names Python code ({reader!r}), which ftdata runs only with --allow-code; "
            f"add --allow-code if you trust that code, or use {instead}"
        )


def _yaml_error(source: str, exc: Exception) -> ConfigError:
    """`config.yaml:3:10: invalid YAML: mapping values are not allowed here` (line and column of the problem)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark is not None else source
    what = (
        " ".join(filter(None, (getattr(exc, "context", None), getattr(exc, "problem", None))))
        or str(exc).splitlines()[0]
    )
    return ConfigError(f"{where}: invalid YAML: {what}")


def load_yaml(text: str, *, source: str) -> Any:
    """`yaml.safe_load` with a limit on values after alias expansion (`read_yaml` bounds the size).

    Aliases let a 1 kB file stand for billions of values ("billion laughs"); the node graph
    is composed first (aliases stay references), its expanded size counted, and only then
    constructed.

    Raises:
        ConfigError: invalid YAML, or more values than the limit.
    """
    import yaml

    lim = limits()
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    if node is None:
        return None
    sizes: dict[int, int] = {}

    def expanded(n: Any, depth: int = 0) -> int:
        if id(n) in sizes:
            return sizes[id(n)]
        if depth > 100:
            raise ConfigError(f"{source}: config nests deeper than 100 levels")
        sizes[id(n)] = 1  # a recursive alias counts once instead of looping
        if isinstance(n, yaml.MappingNode):
            total = 1 + sum(expanded(k, depth + 1) + expanded(v, depth + 1) for k, v in n.value)
        elif isinstance(n, yaml.SequenceNode):
            total = 1 + sum(expanded(v, depth + 1) for v in n.value)
        else:
            total = 1
        sizes[id(n)] = total
        if total > lim.yaml_nodes:
            raise ConfigError(
                f"{source}: config expands to more than {lim.yaml_nodes:,} values (YAML aliases); "
                f"write the values out, or raise {env_name('yaml_nodes')}"
            )
        return total

    expanded(node)
    try:
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise _yaml_error(source, exc) from None
    finally:
        loader.dispose()
