"""The inspection page: one self-contained HTML file (no server, no network: styles, script, plots and
media inline), rendered by Jinja2 with autoescape from `page.html.j2`. Record text is data: the template
escapes it, `collect.shown` makes control and bidi characters visible, and the page's Content Security
Policy forbids every request (`default-src 'none'`; images and audio only as `data:` URIs)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jinja2

from ftdata.errors import ConfigError
from ftdata.guard.atomic import write_text
from ftdata.inspect.collect import Histogram, Page, shown
from ftdata.types import IGNORE_INDEX

__all__ = ["GENERATOR", "render", "write"]

GENERATOR = "ftdata inspect"  # the page's <meta name="generator">: a file holding it is one ftdata may replace
PLOT = (320, 120)
_MARKERS = (
    "bos",
    "system_header",
    "user_header",
    "assistant_header",
    "eot",
    "final_eot",
    "after_prompt",
    "stops",
    "eos_appended",
    "renders_tools",
    "renders_reasoning",
    "thinking_kwarg",
)
_COUNTS = (
    ("records", "records in"),
    ("examples", "examples"),
    ("rows", "rows"),
    ("sequences", "sequences out"),
    ("tokens", "tokens"),
    ("trained_tokens", "trained tokens"),
    ("split_records", "split records"),
    ("added_tokens", "tokens added by split records"),
    ("filtered", "filtered out"),
    ("reasoning_moved", "reasoning moved"),
    ("drift_turns", "turns with recorded token ids"),
    ("drift_differ", "turns whose recorded ids differ"),
)


def _environment() -> jinja2.Environment:
    loader = jinja2.FileSystemLoader(str(Path(__file__).parent))
    return jinja2.Environment(
        loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )


def _value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return shown(json.dumps(value, ensure_ascii=False, default=str))
    return shown(str(value))


def _plot(histogram: Histogram) -> dict[str, Any]:
    width, height = PLOT
    peak = max((n for *_, n in histogram.bins), default=0) or 1
    step = width / max(len(histogram.bins), 1)
    bars = [
        {
            "x": round(k * step, 2),
            "w": round(max(step - 1, 1), 2),
            "h": round(n / peak * (height - 4), 2),
            "y": round(height - n / peak * (height - 4), 2),
            "label": f"{low:,.0f}-{high:,.0f}: {n:,} rows",
        }
        for k, (low, high, n) in enumerate(histogram.bins)
    ]
    percentiles = [
        (key, f"{value:,.1f}" if key == "mean" else f"{value:,.0f}") for key, value in histogram.percentiles.items()
    ]
    return {"name": histogram.name, "width": width, "height": height, "bars": bars, "percentiles": percentiles}


def _summary(page: Page) -> list[tuple[str, str]]:
    manifest, counts = page.manifest, page.manifest["counts"]
    out = [
        ("source", _value(counts.get("source", ""))),
        ("tokenizer", _value(page.tokenizer)),
        ("template", _value(manifest.get("template", ""))),
        ("task", page.task),
    ]
    out += [
        (label, f"{counts[key]:,}")
        for key, label in _COUNTS
        if isinstance(counts.get(key), int) and (counts[key] or key in ("records", "rows"))
    ]
    rejected = counts.get("rejected") or {}
    out.append(
        (
            "rejected",
            f"{sum(rejected.values()):,}"
            + (f" ({', '.join(f'{n:,} {c}' for c, n in rejected.items())})" if rejected else ""),
        )
    )
    cut = counts.get("cut") or {}
    if cut:
        out.append(("cut (kept)", f"{sum(cut.values()):,} ({', '.join(f'{n:,} {c}' for c, n in cut.items())})"))
    out.append(("splits", ", ".join(f"{name} {n:,} rows" for name, n in page.split_rows.items())))
    out.append(("fingerprint", _value(manifest.get("fingerprint", ""))))
    out.append(("built", _value(manifest.get("created", ""))))
    return out


def headline(page: Page) -> str:
    """One line: records in, rows out, rejects, trained share."""
    counts = page.manifest["counts"]
    rejected = sum((counts.get("rejected") or {}).values())
    rows = sum(page.split_rows.values())
    return (
        f"{counts.get('records', 0):,} records -> {rows:,} rows, {rejected:,} rejected; "
        f"{page.trained_share:.1%} of tokens trained"
    )


def render(page: Page) -> str:
    """The page as one HTML document."""
    manifest = page.manifest
    counts = manifest["counts"]
    markers = counts.get("markers") or {}
    shown_per_code = Counter(r.code for r in page.rejects)
    sample = page.sample
    total_rows = sum(page.split_rows.values())
    sample_text = (
        f"{len(page.rows):,} of {total_rows:,} rows, token by token: the first {sample.first}, {sample.random} more "
        "drawn "
        f"with seed {sample.seed}, and the {sample.longest} longest (`ftdata inspect "
        "--first/--random/--longest/--seed`)."
    )
    mix_keys = list(page.mix[0]) if page.mix else []
    packing = [
        (
            split,
            f"{facts.get('fill_ratio', 0):.1%} fill, {facts.get('rows', 0):,} rows holding "
            f"{facts.get('sequences', 0):,} sequences "
            f"({facts.get('sequences_per_row', 0):.2f} a row, at most {facts.get('max_sequences_per_row', 0)})",
        )
        for split, facts in (counts.get("packing") or {}).items()
        if isinstance(facts, dict)
    ]
    return (
        _environment()
        .get_template("page.html.j2")
        .render(
            generator=GENERATOR,
            page=page,
            headline=headline(page),
            summary=_summary(page),
            markers=[(key, _value(markers[key])) for key in _MARKERS if markers.get(key) not in (None, "", [], False)],
            inputs=[
                {k: _value(item.get(k, "")) for k in ("kind", "name", "sha256")} for item in manifest.get("inputs", [])
            ],
            options=[
                (key, _value(value)) for key, value in (manifest.get("options") or {}).items() if value is not None
            ],
            whys=sorted({row.chosen_as for row in page.rows}),
            sample_text=sample_text,
            shown_per_code=shown_per_code,
            plots=[_plot(h) for h in page.histograms],
            total_rows=f"{total_rows:,}",
            mix_keys=mix_keys,
            packing=packing,
            ignore=IGNORE_INDEX,
            tip="Hover or focus a token to see its id, text and label.",
        )
    )


def written_by_ftdata(path: Path) -> bool:
    """Whether `path` is a page `ftdata inspect` wrote (its generator tag in the first bytes)."""
    try:
        with path.open("rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return f'<meta name="generator" content="{GENERATOR}">'.encode() in head


def write(page: Page, path: str | Path) -> Path:
    """Write `page` to `path` atomically; an existing file there is replaced only if ftdata wrote it.

    Raises:
        ConfigError: `path` is a folder, or a file ftdata did not write.
    """
    target = Path(path).expanduser()
    if target.is_dir():
        raise ConfigError(f"output {str(target)!r} is a folder; give the page's file name (-o page.html)")
    if target.exists() and not written_by_ftdata(target):
        raise ConfigError(
            f"{str(target)!r} exists and is not a page ftdata wrote; ftdata never replaces it: choose another name"
        )
    write_text(target, render(page))
    return target
