"""`ftdata check-packing`: whether packed rows keep their documents apart on a model (`train/packing_check.py`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ftdata.errors import FtdataError

HELP = (
    "Probe packed rows on MODEL before training it with any trainer: a few documents of DATA (a packed build "
    "folder; default: three sample texts) forwarded packed and alone, the largest |delta logit| against a tolerance "
    "that fits the dtype. Prints the model's sequence layers, what a trainer must pass for packed rows and the "
    "route ftdata train takes; exits 1 when a packed row leaks between documents."
)


def register(app: typer.Typer) -> None:
    """Add `check-packing` to `app`."""
    app.command("check-packing", help=HELP)(check_packing_command)


def check_packing_command(
    data: Annotated[
        Optional[Path],  # noqa: UP045 (typer reads the annotation)
        typer.Argument(help="A folder written by ftdata build (or save_to_disk)."),
    ] = None,
    model: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Local model folder (default: the bundled SmolLM2)."),
    ] = None,
    tokenizer: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--tokenizer", "-t", help="Tokenizer folder (default: the model's)."),
    ] = None,
    precision: Annotated[
        str, typer.Option(help="auto, bf16, fp16 or fp32 (auto: bf16 on a GPU, fp32 on CPU).")
    ] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON on stdout.")] = False,
) -> None:
    """Probe packed rows on a model."""
    from ftdata.train.config import Precision
    from ftdata.train.packing_check import check_model_packing
    from ftdata.train.progress import quiet_libraries

    with quiet_libraries():
        chosen: Any = Precision.parse(precision, name="precision")
        report = check_model_packing(model, data, precision=chosen, tokenizer=tokenizer)
    if as_json:
        typer.echo(json.dumps(report.to_dict(), indent=2))
    else:
        _print(report)
    if not report.isolated:
        raise FtdataError(
            f"packed rows leak between documents on {report.model} as one row: {_packed(report)}; "
            f"train them per document (ftdata train does: route {report.route.route.value}), "
            f"install {', '.join(report.architecture.kernels) or 'kernels that honour seq_idx'} on a "
            "CUDA GPU, or build without --packing"
        )


def _packed(report: Any) -> str:
    return report.packed.describe() if not isinstance(report.packed, str) else report.packed.rstrip(".")


def _print(report: Any) -> None:
    arch = report.architecture
    typer.echo(f"model: {report.model} ({arch.model_type}), {arch.device}")
    for kind in arch.kinds:
        what = "carries state along the row" if kind.carries_state else "attention"
        kernels = f"; kernels: {', '.join(kind.kernels)}" if kind.kernels else ""
        typer.echo(f"  {kind.name} x{kind.layers}: {what}{kernels}")
    typer.echo(f"packed row (position_ids, seq_idx, cu_seq_lens): {_packed(report)}")
    leak = report.route.packed_leak
    typer.echo(
        f"packed row (position_ids only): max |delta logit| {leak:.2g}"
        if isinstance(leak, float)
        else f"packed row (position_ids only): {leak}"
    )
    typer.echo(f"ftdata train: route {arch.route.value} ({arch.why()}); {report.route.describe()}")
    typer.echo("isolated: yes" if report.isolated else "isolated: no")
