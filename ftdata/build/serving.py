"""What build.json says of the template and tokenizer a build rendered and tokenized with (`serving`), and the one
check every build makes of them: the loaded tokenizer against its folder's own `tokenizer.json` (a build kept in
memory: its first rows decoded, a warning only, `check_in_memory`).

    build.json  serving.tokenizer    the chat template (digest and text), the tokenizer's files, class, probe ids
                serving.raw_check    the first records' renderings encoded by the loaded class and by `tokenizers`
                serving.parity       what `ftdata check-serving` found against a server (written by it, later)

The raw check reads the build's own texts: its first `RAW_SAMPLE` rows decoded, `RAW_TOKENS` tokens of them at most (no
second render: the check costs a decode and two encodes of 32 texts, or of two agent trajectories), encoded by the
class ftdata loaded and by `tokenizers`.
"""

from __future__ import annotations

import warnings
from typing import Any

from ftdata.errors import FtdataWarning
from ftdata.options import BuildOptions
from ftdata.tokens.identity import RAW_SAMPLE, RAW_TOKENS, print_of, raw_check

__all__ = ["SERVING", "check_in_memory", "serving_record"]

SERVING = "serving"  # build.json's key


def _decoded(tok: Any, dataset: Any, sample: int, budget: int = RAW_TOKENS) -> tuple[list[str], bool]:
    """The first `sample` rows of a built dataset decoded, `budget` tokens of them in all, and whether the row that
    reached it was cut there (SFT rows' `input_ids`; other tasks' rows: none)."""
    split = dataset["train"] if hasattr(dataset, "keys") else dataset
    if split is None or "input_ids" not in split.column_names:
        return [], False
    ids, rows, cut = split.select_columns(["input_ids"]), [], False
    for k in range(min(sample, split.num_rows)):  # row by row: 32 agent rows as lists would cost more than the check
        row = ids[k]["input_ids"]
        rows.append(row[:budget])
        cut, budget = len(row) > budget, budget - len(rows[-1])
        if budget <= 0:
            break
    return [str(tok.decode(row, skip_special_tokens=False)) for row in rows], cut


def check_in_memory(tok: Any, opts: BuildOptions, dataset: Any) -> None:
    """The raw tokenizer check of a build kept in memory (no build.json to hold it): the first rows decoded, encoded
    by the loaded class and by `tokenizers`; one warning line (`FtdataWarning`) when they differ."""
    tok = _as_built(tok, opts)
    check = raw_check(tok, _decoded(tok, dataset, RAW_SAMPLE)[0])
    if check.line:
        warnings.warn(f"ftdata: {check.line}", FtdataWarning, stacklevel=3)


def serving_record(source: Any, tok: Any, opts: BuildOptions, dataset: Any) -> dict[str, Any]:
    """build.json's `serving` entry; warns (one line, `FtdataWarning`) when the raw check finds a difference."""
    tok = _as_built(tok, opts)
    texts, cut = _decoded(tok, dataset, RAW_SAMPLE)
    sampled = f"the first {len(texts)} rows decoded" if texts else "probe texts only"
    sampled += f", cut at {RAW_TOKENS:,} tokens" if cut else ""
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
