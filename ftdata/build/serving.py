"""What build.json says of the template and tokenizer a build rendered and tokenized with (`serving`), and the one
check every build makes of them: the loaded tokenizer against its folder's own `tokenizer.json` (a build kept in
memory: its first rows decoded, a warning only, `check_in_memory`).

    build.json  serving.tokenizer    the chat template (digest and text), the tokenizer's files, class, probe ids
                serving.raw_check    the first records' renderings encoded by the loaded class and by `tokenizers`
                serving.parity       what `ftdata check-serving` found against a server (written by it, later)

The raw check reads the build's own texts: the renderings of its first `RAW_SAMPLE` records, made by the same run
loop (`loop.run`) as the rows, so what is compared is what was tokenized. A recipe's texts are its first rows
decoded.
"""

from __future__ import annotations

import warnings
from typing import Any

from ftdata.errors import FtdataWarning
from ftdata.options import BuildOptions, RunOptions
from ftdata.run import loop
from ftdata.run.report import BuildReport
from ftdata.run.stage import Ran, Stage
from ftdata.tokens.identity import RAW_SAMPLE, print_of, raw_check

__all__ = ["SERVING", "build_texts", "check_in_memory", "serving_record"]

SERVING = "serving"  # build.json's key


def _texts(stage: Stage, ran: Ran[Any, Any]) -> list[str]:
    """A batch's renderings (the run loop's reducer: module level, it may run in a worker)."""
    return [item.rendered.text for _, item, _ in ran.kept()]


def build_texts(source: Any, tok: Any, opts: BuildOptions, dataset: Any, *, sample: int = RAW_SAMPLE) -> list[str]:
    """The renderings of the first `sample` records of `source` as the build made them (a recipe: its first rows
    decoded, `dataset` being the built rows)."""
    from ftdata.mix import Recipe

    if isinstance(source, Recipe):
        return _decoded(tok, dataset, sample)
    stage = Stage(tok, opts.data)
    texts: list[str] = []
    for part in loop.run(source, stage, RunOptions(), _texts, report=BuildReport(), window=(0, sample), empty_ok=True):
        texts.extend(part)
    return texts[:sample]


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
    if opts.data.chat_template is not None:
        from ftdata.chat.chat_template import load_chat_template

        tok = load_chat_template(opts.data.chat_template).applied(tok)
    check = raw_check(tok, _decoded(tok, dataset, RAW_SAMPLE))
    if check.line:
        warnings.warn(f"ftdata: {check.line}", FtdataWarning, stacklevel=3)


def serving_record(source: Any, tok: Any, opts: BuildOptions, dataset: Any) -> dict[str, Any]:
    """build.json's `serving` entry; warns (one line, `FtdataWarning`) when the raw check finds a difference."""
    try:
        texts = build_texts(source, tok, opts, dataset)
    except Exception as exc:  # noqa: BLE001  # the build itself succeeded: the sample is a check, not the build
        texts = []
        sampled = f"the build's texts could not be sampled again ({type(exc).__name__}): probe texts only"
    else:
        sampled = f"the renderings of the first {len(texts)} records" if texts else "probe texts only"
    if opts.data.chat_template is not None:  # the template the rows were rendered with, as the stage applies it
        from ftdata.chat.chat_template import load_chat_template

        tok = load_chat_template(opts.data.chat_template).applied(tok)
    check = raw_check(tok, texts)
    if check.line:
        warnings.warn(f"ftdata: {check.line}", FtdataWarning, stacklevel=3)
    return {SERVING: {"tokenizer": print_of(tok).to_dict(), "raw_check": {**check.to_dict(), "sample": sampled}}}
