"""LLaMA-Factory's `dataset_info.json` entries as ftdata sources (read as LLaMA-Factory's `DatasetAttr` and
its converters read them: hiyouga/LLaMA-Factory `src/llamafactory/data/parser.py`, `converter.py`).

    entry key               ftdata option
    file_name               the source's data: a file or a folder beside the json
    formatting              format: alpaca -> instruction, sharegpt -> sharegpt, openai -> messages (SFT;
                            pairs and KTO records are read by their shape through the column map)
    columns.prompt/query/   columns instruction/input/output/history (alpaca; input_join "\\n": the
      response/history      converter's "\\n".join([prompt, query])); columns.messages (sharegpt, openai);
                            system, tools, chosen, rejected as named; kto_tag -> label
    columns.images/audios   read from the row (the column must be named as ftdata reads media: images/image,
                            audios/audio); videos are refused
    tags.role_tag/          columns role=/content= (the keys inside each message)
      content_tag
    tags.user_tag, ...      roles {tag: user|assistant|tool|system}; function_tag must be function_call
    ranking: true           task preference (pairs);   columns.kto_tag: task kto;   else task sft

Refused in one line: hub entries (hf_hub_url, ms_hub_url, om_hub_url, script_url, cloud_file_name), and
`num_samples`, `subset`, `folder`, `revision`, a `split` other than train.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.io.declared import LLAMAFACTORY, Declaration, DeclaredSource, picked, read_json_mapping, refuse, split_pick

__all__ = ["INFO", "declaration"]

INFO = "dataset_info.json"
HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
ENTRY_KEYS = ("file_name", "formatting", "ranking", "columns", "tags", "subset", "split", "folder", "num_samples")
FORMATTING = {"alpaca": "alpaca", "sharegpt": "sharegpt", "openai": "openai"}
COMMON_COLUMNS = {"system": "system", "tools": "tools", "chosen": "chosen", "rejected": "rejected", "kto_tag": "label"}
FORMAT_COLUMNS = {
    "alpaca": {"prompt": "instruction", "query": "input", "response": "output", "history": "history"},
    "sharegpt": {"messages": "messages"},
    "openai": {"messages": "messages"},
}
MEDIA_COLUMNS = {"images": ("images", "image"), "audios": ("audios", "audio"), "videos": ()}
ROLE_TAGS = {
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "system_tag": "system",
    "function_tag": "function_call",
}
KEY_TAGS = {"role_tag": "role", "content_tag": "content"}
# LLaMA-Factory's defaults where an entry names no column: sharegpt reads `conversations`.
DEFAULT_MESSAGES = {"sharegpt": "conversations", "openai": "conversations"}


def declaration(source: str | Path) -> Declaration:
    """The entries `source` (`dataset_info.json` or its folder, `#name,name` picks) declares, as ftdata sources.

    Raises:
        ConfigError: see `ftdata.io.declarations.read_declaration`.
    """
    path, names = split_pick(source)
    info = path / INFO if path.is_dir() else path
    origin = str(source)
    entries, digest = read_json_mapping(info)
    sources, tasks = [], {}
    for name in picked(entries, names, origin=str(info), what="dataset"):
        where = f"{info}: dataset {name!r}"
        entry = entries[name]
        if not isinstance(entry, dict):
            raise ConfigError(f'{where}: must be an object like {{"file_name": "data.json"}}, got {entry!r:.60}')
        options, tasks[name] = _entry(entry, where=where)
        sources.append(DeclaredSource(name, _data(entry, info.parent, where=where), options))
    if len(set(tasks.values())) > 1:
        made = ", ".join(f"{n} ({t})" for n, t in tasks.items())
        raise ConfigError(f"{origin}: the datasets make different rows: {made}; build them one task at a time")
    return Declaration(origin, LLAMAFACTORY, tuple(sources), {"task": next(iter(tasks.values()))}, digest=digest)


def _data(entry: dict[str, Any], folder: Path, *, where: str) -> str:
    """The file or folder `file_name` names beside the json (LLaMA-Factory reads every file of a folder)."""
    hub = [key for key in HUB_KEYS if entry.get(key)]
    if hub:
        raise ConfigError(
            f"{where} is a hub entry ({hub[0]}: {entry[hub[0]]!r}); ftdata loads nothing from the hub: download it "
            "and declare the local copy with file_name"
        )
    name = entry.get("file_name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: has no file_name (or a hub url); give the data file's name beside the json")
    path = Path(os.path.abspath(folder / name))  # symlinks kept: records are named by the path the json names
    if not path.exists():
        raise ConfigError(f"{where}: file_name {name!r} is not beside the json ({path} does not exist)")
    return f"{path}/*" if path.is_dir() else str(path)


def _entry(entry: dict[str, Any], *, where: str) -> tuple[dict[str, Any], str]:
    """An entry's source options and its task."""
    unknown = sorted(set(entry) - {*ENTRY_KEYS, *HUB_KEYS, "revision"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; LLaMA-Factory's keys are {', '.join((*ENTRY_KEYS, *HUB_KEYS))}"
        )
    _not_for_files(entry, where=where)
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTING:
        raise refuse(where, "formatting", formatting, f"LLaMA-Factory's formattings are {', '.join(FORMATTING)}")
    columns = _columns(entry.get("columns") or {}, formatting, where=where)
    roles, keys = _tags(entry.get("tags") or {}, formatting, where=where)
    columns.update(keys)
    if formatting != "alpaca" and "messages" not in columns:
        columns["messages"] = DEFAULT_MESSAGES[formatting]
    ranking = entry.get("ranking", False)
    if not isinstance(ranking, bool):
        raise refuse(where, "ranking", ranking, "must be true or false")
    if ranking and "label" in columns:
        raise ConfigError(f"{where}: ranking and columns.kto_tag both set; pairs (ranking) or KTO (kto_tag), not both")
    task = "preference" if ranking else "kto" if "label" in columns else "sft"
    if ranking:  # LLaMA-Factory's defaults for the two sides
        columns.setdefault("chosen", "chosen")
        columns.setdefault("rejected", "rejected")
    # pairs and KTO records are read by their shape, through the column map (ftdata detects it per record)
    options: dict[str, Any] = {"format": FORMATTING[formatting]} if task == "sft" else {}
    if formatting == "alpaca":
        options["input_join"] = "\n"  # the converter's "\n".join([prompt, query])
    if columns:
        options["columns"] = columns
    if roles:
        options["roles"] = roles
    return options, task


def _not_for_files(entry: dict[str, Any], *, where: str) -> None:
    """Refuse the keys that read a hub dataset's parts, or sample: ftdata reads the whole local file."""
    if entry.get("split", "train") != "train":
        raise refuse(where, "split", entry["split"], "a local file has one split (train); declare that file instead")
    for key, why in (
        ("subset", "a hub dataset's configuration; ftdata reads the local file file_name names"),
        ("folder", "a hub dataset's folder; ftdata reads the local file file_name names"),
        ("revision", "a hub dataset's revision; ftdata reads the local file file_name names"),
        ("num_samples", "LLaMA-Factory draws that many records at random; ftdata reads the first N with limit=N"),
    ):
        if entry.get(key) is not None:
            raise refuse(where, key, entry[key], why)


def _columns(given: Any, formatting: str, *, where: str) -> dict[str, str]:
    """The entry's `columns` as an ftdata column map (media columns checked, not mapped)."""
    if not isinstance(given, dict):
        raise refuse(where, "columns", given, "must be an object of {column kind: column name}")
    known = {**FORMAT_COLUMNS[formatting], **COMMON_COLUMNS}
    out: dict[str, str] = {}
    for key, column in given.items():
        if column is None:
            continue
        if not isinstance(column, str) or not column:
            raise refuse(where, f"columns.{key}", column, "must name a column")
        if key in MEDIA_COLUMNS:
            if column not in MEDIA_COLUMNS[key]:
                why = (
                    "ftdata reads images and audio, not video"
                    if key == "videos"
                    else f"ftdata reads {key} from a column named {' or '.join(MEDIA_COLUMNS[key])}"
                )
                raise refuse(where, f"columns.{key}", column, why)
            continue
        if key not in known:
            other = next((f for f, cols in FORMAT_COLUMNS.items() if key in cols), None)
            why = f"applies to {other} formatting, not {formatting}" if other else "is no LLaMA-Factory column kind"
            raise refuse(where, f"columns.{key}", column, f"{why}; the kinds are {', '.join((*known, *MEDIA_COLUMNS))}")
        out[known[key]] = column
    return out


def _tags(given: Any, formatting: str, *, where: str) -> tuple[dict[str, str], dict[str, str]]:
    """The entry's `tags` as (ftdata roles {tag: role}, the column map's message keys {role|content: key})."""
    if not isinstance(given, dict):
        raise refuse(where, "tags", given, "must be an object of {tag kind: tag}")
    if given and formatting == "alpaca":
        raise refuse(where, "tags", given, "tags apply to sharegpt and openai formatting, not alpaca")
    roles: dict[str, str] = {}
    keys: dict[str, str] = {}
    for key, tag in given.items():
        if tag is None:
            continue
        if key not in (*ROLE_TAGS, *KEY_TAGS):
            raise refuse(where, f"tags.{key}", tag, f"is no LLaMA-Factory tag; the tags are {', '.join(ROLE_TAGS)}")
        if not isinstance(tag, str) or not tag:
            raise refuse(where, f"tags.{key}", tag, "must be a string")
        if key in KEY_TAGS:
            keys[KEY_TAGS[key]] = tag
        elif key == "function_tag":
            if tag != "function_call":
                raise refuse(
                    where, "tags.function_tag", tag, "ftdata reads tool calls from function_call turns (the default)"
                )
        elif tag.lower() != ROLE_TAGS[key]:
            roles[tag] = ROLE_TAGS[key]
    return roles, keys
