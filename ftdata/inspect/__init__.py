"""The inspection page of a build: one self-contained HTML file (`ftdata inspect`, `ftdata build --inspect`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftdata.guard.safeio import OutputDir
from ftdata.inspect.collect import Page, Sample, collect
from ftdata.inspect.page import render, write

__all__ = ["PAGE", "Page", "Sample", "collect", "inspect", "render", "write"]

PAGE = "inspect.html"  # the page's name inside a build folder


def inspect(
    out: str | Path,
    page: str | Path | None = None,
    *,
    tokenizer: Any = None,
    sample: Sample | None = None,
    title: str | None = None,
) -> Path:
    """Write the inspection page of the build in `out`: to `page`, or into OUT as `inspect.html`, which OUT then
    owns beside its build (a later build into OUT replaces or removes it). Returns the page's path.

    Raises:
        ConfigError: `out` is no build folder, its tokenizer is gone, or `page` is a file ftdata did not write.
    """
    collected = collect(out, tokenizer=tokenizer, sample=sample, title=title)
    if page is not None:
        return write(collected, page)
    folder = Path(out).expanduser()
    with OutputDir(folder) as target:
        with target.write(PAGE) as tmp:
            tmp.write_text(render(collected), encoding="utf-8")
        target.finish(adding=True)
    return folder / PAGE
