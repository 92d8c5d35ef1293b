"""`ftdata export OUT --to STACK,...`: the files each training stack loads, written beside a build
(`ftdata.build.exports`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

HELP = (
    "Write what each training stack loads, from the build in OUT, into OUT/export-STACK/ with an export.json "
    "(files, build fingerprint, rows, trained tokens, the config lines that consume it): skyrl, llamafactory, "
    "axolotl, tinker and unsloth get the build's own token ids and masks; verl and prime-rl, which tokenize "
    "messages themselves, get the records (check what they train with scripts/stacks/agree.py). Preference pairs go "
    "to llamafactory and unsloth, a prompt set to verl."
)


def register(app: typer.Typer) -> None:
    """Add `export` to `app`."""
    app.command("export", help=HELP)(export_command)


def export_command(
    out: Annotated[Path, typer.Argument(metavar="OUT", help="A folder ftdata build wrote (an SFT build).")],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="STACK,...",
            help="skyrl, llamafactory, axolotl, tinker, unsloth, verl, prime-rl (comma-separated).",
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
) -> None:
    """Write the export of each stack named by --to."""
    import datasets

    from ftdata.build.exports import export

    datasets.disable_progress_bars()
    done = export(out, to)
    if as_json:
        typer.echo(json.dumps([e.manifest for e in done], indent=1))
        return
    for item in done:
        m = item.manifest
        counts = ", ".join(_counted(split, c) for split, c in m["counts"].items())
        written = m["layout"]["written"] if "layout" in m else "prompts"
        typer.echo(f"{item.stack}: {item.folder}/ ({', '.join(m['files'])}; {counts}; {written})")
        for line in m["config"]:
            typer.echo(f"    {line}")
        for note in m["notes"]:
            typer.echo(f"  note: {note}")


def _counted(split: str, counts: dict[str, int]) -> str:
    trained = counts.get("trained_tokens")
    return f"{split} {counts['rows']:,} rows" + (f", {trained:,} trained tokens" if trained is not None else "")
