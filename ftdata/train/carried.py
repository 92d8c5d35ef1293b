"""The chat template a build was rendered with, carried into what training saves (the adapter, the merged model).

A saved model is served with the template its folder holds: `chat_template.jinja` (transformers v5) or
`tokenizer_config.json`'s `chat_template`. OpenRLHF #1069: a checkpoint saved with another template than the one its
data was rendered with trains one format and serves another. So after each save, the folder's template is compared
with the one build.json records (`serving.tokenizer`): written there when the folder holds none, refused in one line
(both digests, the first differing rendered token) when it holds another.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ftdata.build.export import MANIFEST
from ftdata.chat.chat_template import with_template
from ftdata.errors import ConfigError
from ftdata.tokens.identity import TokenizerPrint, template_mismatch

__all__ = ["built_print", "carry_template", "saved_template"]

JINJA = "chat_template.jinja"


def built_print(data: str | Path | None) -> TokenizerPrint | None:
    """The template and tokenizer print a build folder's build.json records (None: not a build folder, or one
    made before prints were recorded)."""
    if data is None or not (path := Path(data).expanduser() / MANIFEST).is_file():
        return None
    saved = (json.loads(path.read_text(encoding="utf-8")).get("serving") or {}).get("tokenizer")
    return TokenizerPrint.from_dict(saved) if saved else None


def saved_template(folder: Path) -> str | None:
    """The chat template a saved model folder serves with (None: it holds none)."""
    if (folder / JINJA).is_file():
        return (folder / JINJA).read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def carry_template(folder: Path, data: str | Path | None, tokenizer: Any) -> None:
    """Make `folder` (a saved adapter or model) serve with the chat template build folder `data` was rendered with.

    Raises:
        ConfigError: the folder holds another template (one line: both digests, the first differing token).
    """
    built = built_print(data)
    if built is None or built.chat_template is None or not folder.is_dir():
        return
    held = saved_template(folder)
    if held is None:
        (folder / JINJA).write_text(built.chat_template, encoding="utf-8")
        return
    holder = with_template(tokenizer, held)  # renders the probes with the folder's template
    line = template_mismatch(built, holder, what=f"the saved {folder}")
    if line:
        raise ConfigError(f"{line}; it would be served with another template than its data was rendered with")
