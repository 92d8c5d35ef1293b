"""`ftdata check-serving OUT --url URL` (or `--serve MODEL_DIR`): every trained turn of a build against a vLLM
render server (`ftdata.serve.parity`); `ftdata build --serving-url URL` runs it after the build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ftdata.errors import FtdataError

HELP = (
    "Send each trained turn's inference prompt of build folder OUT (with the tools and template kwargs the build "
    "used) to a vLLM render server (POST /v1/chat/completions/render) and compare the ids it returns with the "
    "row's, token for token: the prompt with the row's context, prompt + target with the trained ids. Prints "
    "'N of N turns identical' and each differing turn's first differing token, both sides decoded; writes the "
    "summary into OUT/build.json; exits 1 when a turn differs. Start a server with `VLLM_TARGET_DEVICE=cpu vllm "
    "launch render MODEL_DIR --port PORT` (no GPU, no weights)."
)


def register(app: typer.Typer) -> None:
    """Add `check-serving` to `app`."""
    app.command("check-serving", help=HELP)(check_serving_command)


def check_serving_command(
    out: Annotated[Path, typer.Argument(help="A folder written by ftdata build.", show_default=False)],
    url: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--url", help="The render server, e.g. http://127.0.0.1:8000."),
    ] = None,
    serve: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option(
            "--serve",
            metavar="MODEL_DIR",
            help="Start `vllm launch render MODEL_DIR` for the check (the venv scripts/stacks/vllm.sh makes, "
            "$FTDATA_VLLM, or vllm on PATH) and stop it after; instead of --url.",
        ),
    ] = None,
    limit: Annotated[
        Optional[int],  # noqa: UP045 (typer reads the annotation)
        typer.Option("--limit", min=1, help="Check the first N records only."),
    ] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight at a time.")] = 4,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each answer.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="The result as JSON on stdout.")] = False,
) -> None:
    """Check a build against a vLLM render server."""
    from ftdata.errors import ConfigError

    if (url is None) == (serve is None):
        raise ConfigError("give the server: --url URL (a running render server) or --serve MODEL_DIR (one to start)")
    if url is not None:
        report(out, url, limit=limit, concurrency=concurrency, timeout=timeout, as_json=as_json)
        return
    from ftdata.serve.launch import render_server

    with render_server(serve) as started:  # type: ignore[arg-type]  # serve is set when url is not
        report(out, started, limit=limit, concurrency=concurrency, timeout=timeout, as_json=as_json)


def report(
    out: Path | str,
    url: str,
    *,
    limit: int | None = None,
    concurrency: int = 4,
    timeout: float = 30.0,
    as_json: bool = False,
) -> None:
    """Run the check and print it (the command's body, shared with `ftdata build --serving-url`).

    Raises:
        FtdataError: a turn differs (after the report is printed); ServerError, ConfigError: see `check_serving`.
    """
    from ftdata.serve.parity import SHOWN, check_serving

    parity = check_serving(out, url, limit=limit, concurrency=concurrency, timeout=timeout)
    if as_json:
        typer.echo(json.dumps(parity.to_dict(), indent=2, ensure_ascii=False))
    else:
        typer.echo(parity.summary)
        for difference in parity.differences[:SHOWN]:
            typer.echo(f"  {difference.line()}")
        if len(parity.differences) > SHOWN:
            typer.echo(f"  ... {len(parity.differences) - SHOWN} more (build.json serving.parity counts them)")
        for why, n in sorted(parity.skipped.items()):
            typer.echo(f"not checked: {n} rows {why}")
    if parity.differences:
        raise FtdataError(_failure(parity))


def _failure(parity: Any) -> str:
    first = parity.differences[0]
    return f"{parity.summary}; first: {first.line()}"
