"""The CLI and YAML spelling of options: flags generated from dataclass fields, parsed once.

Every `BuildOptions` field is a flag (`max_length` -> `--max-length`) and a YAML key
(`max_length:`), with the help text of the field's metadata, so the three spellings (Python
keyword, flag, YAML key) never drift apart. A `--config` YAML file gives values; flags given
on the command line win over it; `BuildOptions` validates the result once. `ftdata train`
makes its flags with the same `Flag` generator and reads its YAML with the same
`ftdata.io.config_files.load_config_file`, so a flag parses, and a relative path in a config file
resolves, the same way in every command.

    ftdata build data.json -o out --config build.yaml --max-length 512
    # build.yaml: {template: alpaca, max_length: 1024, packing: true}
    # -> BuildOptions(template="alpaca", max_length=512, packing=True)
"""

from __future__ import annotations

import ast
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from ftdata.build.export import OUTPUT_FORMATS
from ftdata.guard.inputs import Input, config_input
from ftdata.io.config_files import YamlFile, check_code_reader, check_names, read_config_file
from ftdata.options import check_type, option_kind
from ftdata.errors import ConfigError
from ftdata.options import FIELDS, BuildOptions, DataOptions, OutputOptions, RunOptions

F = TypeVar("F", bound=Callable[..., Any])

# The type of every option by its flat name (the flags' choices and parsers come from these).
_HINTS: dict[str, Any] = {
    name: hint
    for group in (DataOptions, RunOptions, OutputOptions)
    for name, hint in typing.get_type_hints(group).items()
}
PANEL = "Data options (same names as BuildOptions and YAML keys)"

# Options that change how records are read, rendered and masked: what preview shows.
PREVIEW_FIELDS = (
    "template",
    "chat_template",
    "format",
    "task",
    "columns",
    "roles",
    "reader",
    "delimiter",
    "field",
    "filter",
    "mask",
    "history",
    "recorded_ids",
    "system_prompt",
    "system_mode",
    "mask_reasoning",
    "chat_template_kwargs",
    "stop_tokens",
    "special_tokens_in_data",
    "add_chat_tokens",
    "max_length",
    "truncation",
    "prompt_cut",
    "max_prompt_length",
    "cut_prompts",
    "reward_columns",
    "on_error",
    "processor",
    "max_images",
    "max_image_pixels",
    "max_line_bytes",
    "max_string_chars",
    "max_decompressed_bytes",
    "max_messages",
)
STATS_FIELDS = (
    *PREVIEW_FIELDS,
    "tree_across_records",
    "limit",
    "seed",
    "test_size",
    "batch_size",
    "engine",
    "num_workers",
    "ray_address",
)
BUILD_FIELDS = tuple(FIELDS)

# YAML keys besides the BuildOptions fields.
EXTRA_KEYS = {
    "data": "the input: a file, a dataset folder or a cached hub id (the DATA argument)",
    "tokenizer": "tokenizer folder or cached hub id; omit for the bundled SmolLM2",
    "output": "build only: output folder (-o)",
    "output_format": "build only: arrow, parquet or jsonl (--output-format)",
}


def flag_name(name: str) -> str:
    """`max_length` -> `--max-length`."""
    return "--" + name.replace("_", "-")


def _help(name: str) -> str:
    text = FIELDS[name].metadata["help"]
    if option_kind(name) == "pairs":
        text += f"; on the command line {flag_name(name)} KEY=VALUE, repeatable"
    elif name == "stop_tokens":
        text += f"; on the command line comma-separated, {flag_name(name)} '<|eom_id|>,<|eot_id|>'"
    elif option_kind(name) == "json":
        text += f"; on the command line a JSON object, {flag_name(name)} '{{\"enable_thinking\": false}}'"
    return text


_METAVARS = {
    "tokens": "TEXT",
    "int": "INTEGER",
    "float": "NUMBER",
    "number": "N|FRACTION",
    "json": "JSON",
    "pairs": "KEY=VALUE",
    "text": "TEXT",
}


@dataclass(frozen=True)
class Flag:
    """One generated command-line option: the field it sets (`max_length` -> `--max-length`),
    how its text parses (`kind`: bool, int, float, number, pairs, json or text) and its help.

    Every kind but bool and pairs reaches the command as text and is parsed by `parse_value`,
    so a bad value is a one-line `ConfigError` that names the flag, never a usage box.
    """

    name: str
    kind: str
    help: str
    panel: str = PANEL
    short: str | None = None
    metavar: str | None = None
    default: str = ""  # shown in --help as `[default: ...]` (the option itself defaults to "not given")


def choices(name: str) -> tuple[str, ...]:
    """The closed choices of BuildOptions field `name` (its Enum or Literal type), else ()."""
    from enum import Enum

    if name == "format":
        from ftdata.records.formats import FORMAT_ALIASES, FORMATS

        return (*FORMATS, *FORMAT_ALIASES)
    hint = _HINTS[name]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # `Task | None`: the enum's choices
        hint = next((arg for arg in typing.get_args(hint) if arg is not type(None)), hint)
    if isinstance(hint, type) and issubclass(hint, Enum):
        return tuple(str(m.value) for m in hint)
    if typing.get_origin(hint) is typing.Literal:
        return tuple(map(str, typing.get_args(hint)))
    return ()


def shown_default(name: str) -> str:
    """A field's default as --help shows it ('' for "not set")."""
    default = FIELDS[name].default
    if default is None or default is MISSING:
        return ""
    if isinstance(default, bool):
        return "on" if default else "off"
    return str(getattr(default, "value", default))


def build_flag(name: str, *, panel: str = PANEL) -> Flag:
    """The flag of `BuildOptions` field `name`: its help, its default, its choices as metavar."""
    options = choices(name)
    metavar = "[" + "|".join(options) + "]" if options else None
    return Flag(name, option_kind(name), _help(name), panel, metavar=metavar, default=shown_default(name))


def _parameter(flag: Flag) -> inspect.Parameter:
    """A keyword-only Typer option for `flag`, defaulting to None ("not given")."""
    decls = [flag_name(flag.name), *([flag.short] if flag.short else [])]
    help_text = flag.help + (f"  [default: {flag.default}]" if flag.default else "")
    common: dict[str, Any] = {"help": help_text, "rich_help_panel": flag.panel, "show_default": False}
    annotation: Any
    if flag.kind == "bool":
        option = typer.Option(f"{decls[0]}/--no-{decls[0][2:]}", *decls[1:], **common)
        annotation = Annotated[bool | None, option]
    elif flag.kind == "pairs":
        option = typer.Option(*decls, metavar="KEY=VALUE", **common)
        annotation = Annotated[list[str] | None, option]
    else:
        option = typer.Option(*decls, metavar=flag.metavar or _METAVARS[flag.kind], **common)
        annotation = Annotated[str | None, option]
    return inspect.Parameter(flag.name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def with_flags(flags: Sequence[Flag], *, into: str = "options") -> Callable[[F], F]:
    """Decorate a Typer command so it also takes the generated `flags`.

    The command declares a parameter named `into` (a `dict[str, Any]`); it receives the flags
    that were given, parsed (`--columns output=answer` -> {"columns": {"output": "answer"}}).
    """

    def decorate(func: F) -> F:
        signature = inspect.signature(func)
        hints = typing.get_type_hints(func, include_extras=True)
        own = [
            p.replace(annotation=hints.get(p.name, p.annotation))
            for p in signature.parameters.values()
            if p.name != into
        ]
        params = own + [_parameter(flag) for flag in flags]
        kinds = {flag.name: flag.kind for flag in flags}

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            given = {name: kwargs.pop(name) for name in kinds}
            return func(**kwargs, **{into: convert_flags(given, kinds=kinds)})

        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]  # typer reads a function's __signature__
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command  # type: ignore[return-value]  # the same function, with the options' parameters

    return decorate


def with_build_options(names: Sequence[str]) -> Callable[[F], F]:
    """Decorate a Typer command so it also takes `--flag`s for the BuildOptions `names`.

    The command declares an `options: dict[str, Any]` parameter; it receives the flags that
    were given, converted to Python values (`--columns output=answer` -> {"columns": {"output": "answer"}}).
    """
    return with_flags([build_flag(name) for name in names])


_PAIR_EXAMPLES = {"roles": "narrator=assistant", "columns": "output=answer"}


def parse_pairs(values: Sequence[str], *, name: str) -> dict[str, str]:
    """`["output=answer", "instruction=q,input=ctx"]` -> {"output": "answer", ...}.

    Raises:
        ConfigError: an item without `=`.
    """
    out: dict[str, str] = {}
    for value in values:
        for item in _top_level_items(value):
            key, sep, column = item.partition("=")
            if not sep or not key.strip() or not column.strip():
                flag = flag_name(name)
                example = _PAIR_EXAMPLES.get(name, "output=answer")
                raise ConfigError(f"{flag} takes KEY=VALUE pairs, e.g. {flag} {example}; got {item!r}")
            out[key.strip()] = column.strip()
    return out


def _top_level_items(value: str) -> list[str]:
    """`"a=string,b=struct{x: int, y: string}"` -> the two items: commas inside brackets are a type's own."""
    items, depth, start = [], 0, 0
    for i, char in enumerate(value):
        depth += (char in "[{") - (char in "]}")
        if char == "," and depth == 0:
            items.append(value[start:i])
            start = i + 1
    return [*items, value[start:]]


def parse_number(text: str, *, name: str) -> int | float:
    """`"200"` -> 200 (a count), `"0.1"` -> 0.1 (a fraction)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{flag_name(name)} takes a count (200) or a fraction (0.1); got {text!r}") from None


def parse_json_object(text: str, *, name: str) -> dict[str, Any]:
    """`'{"enable_thinking": false}'` -> {"enable_thinking": False}.

    Raises:
        ConfigError: not JSON, or JSON that is not an object.
    """
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{flag_name(name)} takes a JSON object, e.g. {flag_name(name)} '{{\"enable_thinking\": false}}'; "
            f"got {text!r} ({exc.msg} at char {exc.pos})"
        ) from None
    if not isinstance(value, dict):
        raise ConfigError(f"{flag_name(name)} takes a JSON object ({{...}}), got {text!r}")
    return value


def parse_bool(text: str, *, name: str) -> bool:
    """`"true"` -> True, `"no"` -> False (YAML's spellings)."""
    value = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False, "0": False}
    key = text.strip().lower()
    if key not in value:
        raise ConfigError(f"{name} must be true or false, got {name}={text!r}")
    return value[key]


def _parse_scalar(text: str, kind: type, *, name: str, what: str) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise ConfigError(f"{flag_name(name)} takes {what}; got {text!r}") from None


def parse_value(name: str, value: str | Sequence[str], *, kind: str | None = None) -> Any:
    """Command-line text -> the option's value (`kind` defaults to the BuildOptions field's).

    One parser per kind, shared by `ftdata build --max-length 512`, `ftdata train
    --max-length 512` and `ftdata train --data-option max_length=512`, so a bad value gives
    the same one-line message in all three.

    Raises:
        ConfigError: the text does not parse, naming the flag and echoing the text.
    """
    kind = kind or option_kind(name)
    if kind == "pairs":
        return parse_pairs([value] if isinstance(value, str) else value, name=name)
    text = value if isinstance(value, str) else ",".join(value)
    if kind == "bool":
        return parse_bool(text, name=name)
    if kind == "int":
        return _parse_scalar(text, int, name=name, what="a whole number")
    if kind == "float":
        return _parse_scalar(text, float, name=name, what="a number")
    if kind == "number":
        return parse_number(text, name=name)
    if kind == "json":
        return parse_json_object(text, name=name)
    return text


def convert_flags(given: Mapping[str, Any], *, kinds: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Flags that were given (not None), as option values; `kinds` defaults to BuildOptions'."""
    out: dict[str, Any] = {}
    for name, value in given.items():
        kind = kinds[name] if kinds is not None else option_kind(name)
        if value is None or (kind == "pairs" and not value):
            continue
        out[name] = value if kind in ("bool", "text") else parse_value(name, value, kind=kind)
    return out


def parse_data_options(items: Sequence[str], *, flag: str = "--data-option") -> dict[str, Any]:
    """`["max_length=512", "columns=output=answer"]` -> {"max_length": 512, "columns": {"output": "answer"}}.

    Each KEY must be a BuildOptions field and each VALUE parses as that field's own flag does.

    Raises:
        ConfigError: an item without `=`, an unknown KEY (with the closest name), or a VALUE
            that does not parse.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{flag} takes KEY=VALUE, e.g. {flag} max_length=512; got {item!r}")
        check_names([key], FIELDS, origin=flag)
        parsed = parse_value(key, value)
        out[key] = (
            {**out.get(key, {}), **parsed} if option_kind(key) == "pairs" else parsed
        )  # pairs repeat, as flags do
    return out


def read_config(path: Path) -> dict[str, Any]:
    """Read a data-command YAML config: BuildOptions fields plus `EXTRA_KEYS`; relative paths
    resolve against the config file's folder (see `load_config_file`).

    Raises:
        ConfigError: unreadable file, invalid YAML, not a mapping, an unknown key or a value
            of the wrong type.
    """
    return _read_config(path).values


def _read_config(path: Path) -> YamlFile:
    read = read_config_file(path)
    check_names(read.values, sorted({*FIELDS, *EXTRA_KEYS}), origin=str(path), what="key")
    for key, value in read.values.items():
        check_type(path, key, value)
    return read


@dataclass
class Settings:
    """What a command runs on: the data, the tokenizer spec, the options, and extra YAML keys."""

    data: str
    tokenizer: str | None
    options: BuildOptions
    extras: dict[str, Any]
    trust_remote_code: bool = False
    config: Input | None = None  # the --config file as it was read (its digest: part of a build's key)


def resolve(
    *,
    data: str | None,
    tokenizer: str | None,
    config: Path | None,
    flags: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    allow_code: bool = False,
    trust_remote_code: bool = False,
) -> Settings:
    """Merge defaults <- YAML config <- flags into `Settings`.

    `overrides` are command defaults that apply unless the YAML or a flag sets them
    (e.g. build's rejects file in the output folder). A `module:function` reader runs
    Python code, so it needs `allow_code` (the `--allow-code` flag): a config file alone
    can never run code.

    Raises:
        ConfigError: no data given, an unknown YAML key, an invalid option value, or a
            code reader without `allow_code`.
    """
    read = _read_config(config) if config is not None else None
    values = dict(read.values) if read is not None else {}
    extras = {key: values.pop(key) for key in list(values) if key in EXTRA_KEYS}
    yaml_data, yaml_tokenizer = extras.pop("data", None), extras.pop("tokenizer", None)
    data = data if data is not None else yaml_data
    tokenizer = tokenizer if tokenizer is not None else yaml_tokenizer
    if data is None:
        raise ConfigError("no input: give DATA (a file, a dataset folder or a cached hub id) or data: in --config")
    merged = {**(overrides or {}), **values, **flags}
    origin = f"reader: in {config}" if "reader" not in flags else "--reader"
    check_code_reader(merged.get("reader"), origin=origin, allow_code=allow_code)
    options = BuildOptions.from_mapping(merged)
    from ftdata.build.api import tokenizer_spec  # the library's choice (a processor build: its folder's tokenizer)

    tokenizer = tokenizer_spec(tokenizer, options)
    tok = None if tokenizer is None else str(tokenizer)
    given = None if read is None or config is None else config_input(config, read.digest)
    return Settings(str(data), tok, options, extras, trust_remote_code=trust_remote_code, config=given)


def _yaml_value(default: Any) -> str:
    """A default as written in YAML (blank for "not set")."""
    if default is None or default is MISSING:
        return ""
    if isinstance(default, bool):
        return f"`{str(default).lower()}`"
    return f"`{getattr(default, 'value', default)}`"


def options_markdown() -> str:
    """The options table of docs/cli.md, generated from BuildOptions (a test keeps them equal)."""
    lines = ["| flag | YAML key | default | what |", "|---|---|---|---|"]
    for name, f in FIELDS.items():
        flag = flag_name(name)
        if option_kind(name) == "bool":
            flag = f"{flag} / --no-{flag[2:]}"
        elif option_kind(name) == "pairs":
            flag = f"{flag} KEY=VALUE"
        elif option_kind(name) == "json":
            flag = f"{flag} JSON"
        help_text = _help(name).replace("|", "\\|")
        lines.append(f"| `{flag}` | `{name}` | {_yaml_value(f.default)} | {help_text} |")
    for key, help_text in EXTRA_KEYS.items():
        lines.append(f"| | `{key}` | | {help_text} |")
    return "\n".join(lines) + "\n"


def _spells_a_value(name: str, value: str) -> bool:
    """True when `value` is one the option takes (so `name=value` is a setting, not prose)."""
    if value == "None" or choices(name):
        return value == "None" or value in choices(name)
    try:
        parse_value(name, value)
    except ConfigError:
        return False
    return True


_ASSIGNMENT = re.compile(r"(?<![\w.'\"-])([a-z_]+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\{[^{}]*\}|[^\s,;)]+)")
# `ftdata.build` keywords that are flags of `ftdata build` but no BuildOptions field, with the values they take.
_BUILD_ARGUMENTS = {"output_format": OUTPUT_FORMATS}
_SUBJECT = re.compile(r"^([a-z_]+)(?= must )")


def _pairs_flags(name: str, value: str) -> str | None:
    """`reward_columns={'info': 'skip'}` -> `--reward-columns info=skip`; None where `value` is no literal mapping."""
    try:
        mapping = ast.literal_eval(value)
    except (ValueError, SyntaxError):
        return None
    if not isinstance(mapping, dict) or not mapping:
        return None
    return " ".join(f"{flag_name(name)} {key}={item}" for key, item in mapping.items())


def cli_spelling(text: str) -> str:
    """A library message in command-line spelling: `system_mode='fold'` -> `--system-mode fold`,
    `template=None` -> `no --template`, `max_length must be` -> `--max-length must be`.

    The library speaks Python (its options are keyword arguments); the CLI translates its
    messages once, where it prints them. Only `BuildOptions` names are translated.
    """

    def assignment(match: re.Match[str]) -> str:
        name, value = match.groups()
        quoted = value[0] in "'\"" and value[-1] == value[0] and len(value) > 1
        tail = "" if quoted else value[len(value.rstrip(":.")) :]
        value = value if quoted else value.rstrip(":.")
        if name in _BUILD_ARGUMENTS and quoted and value[1:-1] in _BUILD_ARGUMENTS[name]:
            return f"{flag_name(name)} {value[1:-1]}{tail}"
        if value.startswith("{") and name in FIELDS and option_kind(name) == "pairs":
            return _pairs_flags(name, value) or match.group(0)
        if name not in FIELDS or not value or not (quoted or _spells_a_value(name, value)):
            return match.group(0)  # `padding=4 rows` is prose, not the option's value
        if value == "None":
            return f"no {flag_name(name)}{tail}"
        if value in ("True", "False") and option_kind(name) == "bool":
            return (flag_name(name) if value == "True" else f"--no-{flag_name(name)[2:]}") + tail
        if quoted and re.fullmatch(r"[\w.:/@+-]+", value[1:-1]):
            value = value[1:-1]
        return f"{flag_name(name)} {value}{tail}"

    text = _ASSIGNMENT.sub(assignment, text)
    return _SUBJECT.sub(lambda m: flag_name(m.group(1)) if m.group(1) in FIELDS else m.group(1), text)
