"""Other tools' dataset declarations, read as ftdata sources: LLaMA-Factory's `dataset_info.json` and
axolotl's `datasets:` entries.

    data/dataset_info.json#alpaca_en_demo,glaive_toolcall_en_demo        axolotl.yml
      each picked entry: its file_name beside the json,                 each `datasets:` entry: its path
      formatting, columns, tags, ranking, kto_tag                        (+ data_files), field_messages,
                                                                         message_property_mappings, roles, ...
                      └──────────────── Declaration ───────────────────────┘
                        sources: (name, data, ftdata options) each; options: the whole build's (task, ...)

`Declaration.recipe()` is a recipe mapping (`ftdata.mix.recipe`) mixed by `all`: every record of every
entry once, in order, as both tools concatenate their datasets. What maps is mapped option for option
(docs/bring-your-data.md has the table); what ftdata does differently is refused in one line naming the
key and the nearest ftdata option. Nothing is loaded from a hub: a hub entry is refused as such.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError
from ftdata.io import axolotl, llamafactory
from ftdata.io.config_files import YamlFile, read_yaml_file
from ftdata.io.declared import AXOLOTL, LLAMAFACTORY, Declaration, split_pick
from ftdata.io.store import is_uri

__all__ = ["Declaration", "declaration_kind", "read_declaration", "yaml_file"]


def yaml_file(source: Any) -> YamlFile | None:
    """The YAML file `source` names (its `#NAMES` pick aside) read once, or None where it names none (no .yaml/.yml
    file, a URI). The one read of a recipe or an axolotl config: what is parsed is what the build's key digests.

    Raises:
        ConfigError: a YAML file that cannot be read or parsed.
    """
    if not isinstance(source, (str, Path)) or is_uri(str(source)):
        return None
    path, _ = split_pick(source)
    return read_yaml_file(path) if path.suffix.lower() in (".yaml", ".yml") and path.is_file() else None


def declaration_kind(source: Any, *, yaml: YamlFile | None = None) -> str | None:
    """LLAMAFACTORY for a `dataset_info.json` (or a folder holding one), AXOLOTL for an axolotl config (a YAML
    file whose `datasets:` is a list of entries with `path`, and no recipe `sources:`), else None. `yaml`: the
    file as `yaml_file` read it already (else it is read here).

    Raises:
        ConfigError: a YAML file that cannot be read or parsed.
    """
    if not isinstance(source, (str, Path)) or is_uri(str(source)):
        return None
    path, _ = split_pick(source)
    if (path.is_dir() and (path / llamafactory.INFO).is_file()) or (path.name == llamafactory.INFO and path.is_file()):
        return LLAMAFACTORY
    if (file := yaml or yaml_file(source)) is not None:
        top = file.values
        entries = top.get("datasets")
        if "sources" not in top and isinstance(entries, list) and entries:
            return AXOLOTL if all(isinstance(e, Mapping) and "path" in e for e in entries) else None
    return None


def read_declaration(source: str | Path, *, yaml: YamlFile | None = None) -> Declaration:
    """The datasets `source` declares (see the module docstring), mapped onto ftdata's options; `yaml`: an axolotl
    config as `yaml_file` read it already.

    Raises:
        ConfigError: one line naming the file, the entry and the key: an unreadable file, no entry picked where
            there are several (the names listed), an unknown name, a hub entry, a missing file, or a key whose
            meaning ftdata does not share (with the nearest ftdata option).
    """
    kind = declaration_kind(source, yaml=yaml)
    if kind is None:
        raise ConfigError(f"{source}: not a dataset_info.json, a folder holding one, or an axolotl config")
    return llamafactory.declaration(source) if kind == LLAMAFACTORY else axolotl.declaration(source, yaml=yaml)
