"""What build.json says of the template and tokenizer a build rendered and tokenized with (`serving`), and the one
check every build makes of them: the loaded tokenizer against its folder's own `tokenizer.json` (a build kept in
memory: its first rows decoded, a warning only, `check_in_memory`).

    build.json  serving.tokenizer    the chat template (digest and text), the tokenizer's files, class, probe ids
                serving.raw_check    the first records' renderings encoded by the loaded class and by `tokenizers`
                serving.parity       what `ftdata check-serving` found against a server (written by it, later)

The raw check reads the build's own texts: its first `RAW_SAMPLE` rows decoded (no second render: the check costs a
decode and two encodes of 32 texts), encoded by the class ftdata loaded and by `tokenizers`.
"""

from __future__ import annotations

import warnings
from typing import Any

from ftdata.errors import FtdataWarning
from ftdata.options import BuildOptions
from ftdata.tokens.identity import RAW_SAMPLE, print_of, raw_check

__all__ = ["SERVING", "check_in_memory", "serving_record"]

SERVING = "serving"  # build.json's key


def _decoded(tok: Any, dataset: Any, sample: int) -> list[str]:
    """The first `sample` rows of a built dataset decoded (SFT rows' `input_ids`; other tasks' rows: none)."""
    split = dataset["train"] if hasattr(dataset, "keys") else dataset
    if split is None or "input_ids" not in split.column_names:
        return []
    ids = split.select(range(min(sample, split.num_rows)))["input_ids"]
    return [str(tok.decode(row, skip_special_tokens=False)) for row in ids]


def check_in_memory(tok: Any, opts: BuildOptions, dataset: Any) -> None:
    """The raw tokenizer check of a build kept in memory (no build.json to hold it): the first rows decoded, encoded
    by the loaded class and by `tokenizers`; one warning line (`FtdataWarning`) when they differ."""
    tok = _as_built(tok, opts)
    check = raw_check(tok, _decoded(tok, dataset, RAW_SAMPLE))
    if check.line:
        warnings.warn(f"ftdata: {check.line}", FtdataWarning, stacklevel=3)


def serving_record(source: Any, tok: Any, opts: BuildOptions, dataset: Any) -> dict[str, Any]:
    """build.json's `serving` entry; warns (one line, `FtdataWarning`) when the raw check finds a difference."""
    tok = _as_built(tok, opts)
    texts = _decoded(tok, dataset, RAW_SAMPLE)
    sampled = f"the first {len(texts)} rows decoded" if texts else "probe texts only"
    check = raw_check(tok, texts)
    if check.line:
        warnings.warn(f"ftdata: {check.line}", FtdataWarning, stacklevel=3)
    return {SERVING: {"tokenizer": print_of(tok).to_dict(), "raw_check": {**check.to_dict(), "sample": sampled}}}


def _as_built(tok: Any, opts: BuildOptions) -> Any:
    """The tokenizer with the chat template the rows were rendered with, as the stage applies it."""
    if opts.data.chat_template is None:
        return tok
    from ftdata.chat.chat_template import load_chat_template

    return load_chat_template(opts.data.chat_template).applied(tok)
