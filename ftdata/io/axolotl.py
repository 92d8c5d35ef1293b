"""An axolotl config's `datasets:` entries as ftdata sources (read as axolotl's `SFTDataset` schema and its
`chat_template` strategy read them: axolotl-ai-cloud/axolotl `src/axolotl/utils/schemas/datasets.py`,
`src/axolotl/prompt_strategies/chat_template.py`).

    axolotl key                        ftdata option
    path (+ data_files)                the source's data (a local file or folder; relative to the working
                                       folder, else to the config's)
    type: chat_template | alpaca       format: detected (messages / sharegpt) | alpaca
    field_messages                     columns messages=
    message_property_mappings          columns role=, content= (legacy message_field_role/_content)
    roles {role: [names]}              roles {name: role}
    field_tools                        columns tools=
    chat_template (+ _jinja file)      chat_template (a TRL name or a .jinja file); tokenizer_default: none
    roles_to_train [assistant],        the default (every assistant turn and its end-of-turn token)
      train_on_eos turn
    train_on_inputs: true              mask train_on_prompt
    sequence_len, sample_packing,      max_length, packing, test_size, seed
      val_set_size, seed
    base_model / tokenizer_config      the build's tokenizer (unless --tokenizer gives one)

What ftdata does differently (it trains what the model generates at inference) is refused in one line naming
the key and the nearest ftdata option; a hub dataset is refused as such.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.io.config_files import YamlFile, read_yaml_file
from ftdata.io.declared import AXOLOTL, Declaration, DeclaredSource, refuse, split_pick
from ftdata.io.store import is_uri

__all__ = ["declaration"]

TARGET_ROLES = ("user", "assistant", "system", "tool")
TYPES = {"chat_template": None, "alpaca": "alpaca"}
BUILDERS = ("json", "csv", "parquet", "text", "arrow")  # `path: json` + data_files: the files are the data
# Keys that read as ftdata's defaults (or that only load a hub dataset, with no effect on a local file).
HARMLESS = {
    "split": ("train", None),
    "message_field_training": ("train", None),
    "message_field_training_detail": ("train_detail", None),
    "field_thinking": ("reasoning_content", "thinking", "reasoning", None),
    "trust_remote_code": (False, True, None),
    "ds_type": ("json", "jsonl", "csv", "parquet", None),
    "drop_system_message": (False, None),
    "split_thinking": (False, None),
}
NEAREST = {  # keys refused whatever their value: (why, nearest ftdata option)
    "shards": "ftdata reads the whole file; the nearest is limit=N",
    "shards_idx": "ftdata reads the whole file; the nearest is limit=N",
    "preprocess_shards": "ftdata reads the whole file; the nearest is limit=N",
    "revision": "a hub dataset's revision; ftdata reads local files only",
    "name": "a hub dataset's configuration; ftdata reads local files only",
    "input_transform": "ftdata reads the rows as they are; the nearest is columns=",
    "conversation": "a deprecated sharegpt setting; use type: chat_template",
    "field": "a completion dataset's text field; ftdata builds prompt -> response data",
}
WHOLE = {"sequence_len": "max_length", "sample_packing": "packing", "val_set_size": "test_size", "seed": "seed"}
ENTRY_KEYS = (
    "path",
    "data_files",
    "type",
    "field_messages",
    "message_property_mappings",
    "message_field_role",
    "message_field_content",
    "roles",
    "roles_to_train",
    "train_on_eos",
    "field_tools",
    "chat_template",
    "chat_template_jinja",
    *HARMLESS,
    *NEAREST,
)


def declaration(source: str | Path, *, yaml: YamlFile | None = None) -> Declaration:
    """The `datasets:` entries of the axolotl config `source` (`#N,M` picks entries by 1-based number); `yaml`: the
    file as read already (`ftdata.io.declarations.yaml_file`), so it is read once.

    Raises:
        ConfigError: see `ftdata.io.declarations.read_declaration`.
    """
    path, names = split_pick(source)
    file = yaml or read_yaml_file(path)
    top = file.values
    entries = top["datasets"]
    chosen = range(len(entries)) if not names else [_index(n, len(entries), origin=str(path)) for n in names]
    whole = _whole(top, where=str(path))
    sources = []
    for i in chosen:
        where = f"{path}: datasets[{i}]"
        options = _entry(entries[i], top, where=where)
        for n, data in enumerate(_data(entries[i], path.parent, where=where)):
            name = _name(entries[i], i) + (f"-{n + 1}" if n else "")
            sources.append(DeclaredSource(name, data, options))
    tokenizer = top.get("tokenizer_config") or top.get("base_model")
    chosen_tokenizer = tokenizer if isinstance(tokenizer, str) else None
    return Declaration(str(source), AXOLOTL, tuple(sources), whole, chosen_tokenizer, digest=file.digest)


def _index(name: str, count: int, *, origin: str) -> int:
    if not name.isdigit() or not 1 <= int(name) <= count:
        raise ConfigError(f"{origin}#{name}: pick datasets entries by number, 1 to {count}")
    return int(name) - 1


def _name(entry: Mapping[str, Any], i: int) -> str:
    return f"{i + 1}-{Path(str(entry['path'])).stem}"


def _whole(top: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """The config's own data settings, as the whole build's options."""
    out: dict[str, Any] = {"task": "sft"}
    if top.get("rl"):
        raise refuse(where, "rl", top["rl"], "ftdata reads axolotl's SFT datasets; build pairs with task=preference")
    for key, option in WHOLE.items():
        value = top.get(key)
        if value is None or (key == "val_set_size" and value == 0):
            continue
        out[option] = value
    if top.get("train_on_inputs"):
        out["mask"] = "train_on_prompt"
    return out


def _data(entry: Mapping[str, Any], base: Path, *, where: str) -> list[str]:
    """The local files or folder an entry reads: `path`, or its `data_files`."""
    raw = entry.get("path")
    files = entry.get("data_files")
    files = [files] if isinstance(files, str) else files
    if files is not None and (not isinstance(files, list) or not all(isinstance(f, str) for f in files)):
        raise refuse(where, "data_files", files, "must be a file or a list of files")
    if not isinstance(raw, str) or not raw:
        raise refuse(where, "path", raw, "must be a local file or folder")
    if is_uri(raw):
        return [raw]
    if raw in BUILDERS and files:  # load_dataset("json", data_files=[...])
        return [_local(f, base, where=where, key="data_files") for f in files]
    folder = _local(raw, base, where=where, key="path")
    if files:
        if not os.path.isdir(folder):
            raise refuse(where, "data_files", files, f"path {raw!r} is a file; give data_files with a folder path")
        return [_local(os.path.join(folder, f), base, where=where, key="data_files") for f in files]
    return [folder]


def _local(raw: str, base: Path, *, where: str, key: str) -> str:
    """`raw` as axolotl finds it (the working folder), else beside the config; a path that is neither is a hub id."""
    for candidate in (Path(raw).expanduser(), base / raw):
        if candidate.exists():
            return os.path.abspath(candidate)
    raise ConfigError(
        f"{where}: {key} {raw!r} is not a local file or folder (a hub dataset?); ftdata loads nothing from the hub: "
        "download it and give its local path"
    )


def _entry(entry: Mapping[str, Any], top: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """An entry's ftdata source options."""
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: must be a mapping like {{path: data.jsonl, type: chat_template}}")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise ConfigError(f"{where}: {unknown[0]} is not a chat_template dataset key ftdata reads")
    kind = entry.get("type")
    if not isinstance(kind, str) or kind not in TYPES:
        raise refuse(where, "type", kind, "ftdata reads chat_template (and alpaca) datasets; the nearest is format=")
    for key, values in HARMLESS.items():
        if entry.get(key) not in values:
            ours = ", ".join(repr(v) for v in values if v is not None)
            raise refuse(where, key, entry[key], f"ftdata reads {key} as {ours} only")
    for key, why in NEAREST.items():
        if entry.get(key) is not None:
            raise refuse(where, key, entry[key], why)
    _supervision(entry, where=where)
    options: dict[str, Any] = {}
    if TYPES[kind]:
        options["format"] = TYPES[kind]
        if any(k in entry for k in ("field_messages", "message_property_mappings", "roles")):
            raise ConfigError(f"{where}: type alpaca reads instruction/input/output; the message keys do not apply")
    columns = _columns(entry, where=where)
    if columns:
        options["columns"] = columns
    roles = _roles(entry.get("roles"), where=where)
    if roles:
        options["roles"] = roles
    template = _template(entry, top, where=where)
    if template:
        options["chat_template"] = template
    return options


def _supervision(entry: Mapping[str, Any], *, where: str) -> None:
    """roles_to_train and train_on_eos: ftdata trains every assistant turn and its end-of-turn token."""
    roles = entry.get("roles_to_train")
    if roles is not None and sorted(set(roles) if isinstance(roles, list) else [roles]) != ["assistant"]:
        raise refuse(
            where,
            "roles_to_train",
            roles,
            "ftdata trains what the model generates at inference: every assistant turn ([assistant], the default); "
            "the nearest are mask=last_assistant, mask=train_on_prompt and per-message train flags",
        )
    eos = entry.get("train_on_eos")
    if eos not in (None, "turn"):
        raise refuse(
            where,
            "train_on_eos",
            eos,
            "ftdata trains each trained turn's end-of-turn token (turn), what stops generation at inference; "
            "the nearest is stop_tokens=",
        )


def _columns(entry: Mapping[str, Any], *, where: str) -> dict[str, str]:
    """field_messages, message_property_mappings (or the legacy message_field_*) and field_tools as a column map."""
    out: dict[str, str] = {}
    if entry.get("field_messages") is not None:
        out["messages"] = str(entry["field_messages"])
    mappings = dict(entry.get("message_property_mappings") or {})
    for legacy, prop in (("message_field_role", "role"), ("message_field_content", "content")):
        if entry.get(legacy) is not None:
            if prop in mappings and mappings[prop] != entry[legacy]:
                raise refuse(where, legacy, entry[legacy], f"differs from message_property_mappings.{prop}")
            mappings[prop] = entry[legacy]
    for prop, key in mappings.items():
        if prop not in ("role", "content"):
            raise refuse(
                where,
                f"message_property_mappings.{prop}",
                key,
                "ftdata maps a message's role and content keys (columns role=, content=); it reads tool_calls, "
                "reasoning_content, name and tool_call_id by those names",
            )
        if not isinstance(key, str) or not key:
            raise refuse(where, f"message_property_mappings.{prop}", key, "must name a key of each message")
        if key != prop:
            out[prop] = key
    if entry.get("field_tools") is not None:
        out["tools"] = str(entry["field_tools"])
    return out


def _roles(given: Any, *, where: str) -> dict[str, str]:
    """axolotl's {role: [names]} as ftdata's {name: role}."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise refuse(where, "roles", given, "must map a role to its names, e.g. {user: [human], assistant: [gpt]}")
    out: dict[str, str] = {}
    for role, names in given.items():
        if role not in TARGET_ROLES:
            raise refuse(where, f"roles.{role}", names, f"ftdata's roles are {', '.join(TARGET_ROLES)}")
        for name in [names] if isinstance(names, str) else names or []:
            if str(name).lower() != role:
                out[str(name)] = role
    return out


def _template(entry: Mapping[str, Any], top: Mapping[str, Any], *, where: str) -> str | None:
    """The chat template an entry renders with (its own, else the config's): None = the tokenizer's."""
    name = entry.get("chat_template") or top.get("chat_template")
    jinja = entry.get("chat_template_jinja") or top.get("chat_template_jinja")
    if jinja:
        if name not in (None, "jinja"):
            raise refuse(where, "chat_template_jinja", "...", f"chat_template is {name!r}; keep one of them")
        if not (isinstance(jinja, str) and jinja.endswith(".jinja") and os.path.isfile(jinja)):
            raise refuse(
                where, "chat_template_jinja", str(jinja)[:40], "ftdata's chat_template takes a .jinja file: save it"
            )
        return str(Path(jinja).resolve())
    if name is None or str(name).startswith("tokenizer_default"):
        return None
    if name in ("jinja", "chatml"):
        raise refuse(
            where,
            "chat_template",
            name,
            "ftdata's chat_template takes a .jinja file or a template TRL ships (qwen3, llama3, ...); with a ChatML "
            "tokenizer, template=chatml",
        )
    return str(name)
