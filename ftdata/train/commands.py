"""`ftdata train` and `ftdata eval`: Typer commands added to the main app by `register(app)`.

The `train` flags are generated from `TrainConfig`'s fields, so a flag, a YAML key and a
keyword argument always share one name (`--lora-r` / `lora_r:` / `lora_r=`) and one help
text. Every flag defaults to "not given": the value comes from, in order of precedence, the
flag, the `--config` YAML file (or the run's saved config with `--resume`), the default.
Errors are `FtdataError`s; the main CLI prints them as one line with their exit code.
"""

from __future__ import annotations

import inspect
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from ftdata.errors import ConfigError
from ftdata.train.config import TrainConfig, read_yaml

PANELS = {
    "model": "Model",
    "data": "Data (as in build_sft_dataset)",
    "lora": "LoRA and quantization",
    "train": "Optimisation",
    "schedule": "Evaluation, logging, checkpoints",
    "output": "Outputs",
}
_POSITIONAL = {"data", "data_options"}  # DATA is an argument; data_options comes from --data-option


def register(app: typer.Typer) -> None:
    """Add the `train` and `eval` commands to `app`."""
    app.command("train", help=TRAIN_HELP, no_args_is_help=False)(_train_command())
    app.command("eval", help=EVAL_HELP)(eval_command)


TRAIN_HELP = (
    "Fine-tune a model (QLoRA by default) on DATA with TRL's SFTTrainer; writes a run folder with "
    "checkpoints, the adapter, run.json and loss.png. Options come from flags, --config YAML (same "
    "names, underscores) or, with --resume RUN, the run's saved config."
)
EVAL_HELP = (
    "Answer the held-out prompts of RUN with the base and the fine-tuned model, score both with "
    "sacreBLEU, print them side by side and save RUN/eval/comparison.csv and .json."
)


# --- train -------------------------------------------------------------------------------------


def train_from_flags(
    data: str | None, *, config: Path | None, resume: Path | None, data_option: list[str] | None,
    flags: dict[str, Any],
) -> TrainConfig:
    """Resolve the options of a `train` invocation into a `TrainConfig` (flags win).

    Raises:
        ConfigError: --config together with --resume, a malformed --data-option, or a bad value.
    """
    overrides = {k: v for k, v in flags.items() if v is not None}
    if data is not None:
        overrides["data"] = data
    if resume is not None and config is not None:
        raise ConfigError("--resume uses the run's saved config.yaml; drop --config (flags still override it)")
    base: dict[str, Any] = {}
    if config is not None:
        base = read_yaml(config)
    elif resume is not None:
        saved = Path(resume) / "config.yaml"
        base = read_yaml(saved) if saved.is_file() else {}
    if data_option:
        overrides["data_options"] = {**(base.get("data_options") or {}), **parse_data_options(data_option)}
    if resume is not None:
        from ftdata.train.run import resume_config

        return resume_config(resume, overrides)
    origin = str(config) if config is not None else "command line"
    return TrainConfig.from_mapping({**base, **overrides}, origin=origin)


def parse_data_options(items: list[str]) -> dict[str, Any]:
    """['mask=last_assistant', 'limit=100'] -> {'mask': 'last_assistant', 'limit': 100} (values as YAML).

    Raises:
        ConfigError: an item without '='.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--data-option must look like KEY=VALUE, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = value
    return out


def _run_train(data: str | None, config: Path | None, resume: Path | None, data_option: list[str] | None,
               verbose: bool, **flags: Any) -> None:
    cfg = train_from_flags(data, config=config, resume=resume, data_option=data_option, flags=flags)
    from ftdata.train.dist import process_state
    from ftdata.train.run import train

    result = train(cfg, resume=resume, verbose=verbose)
    if process_state().is_main_process:  # once, not per rank, under accelerate launch / torchrun
        _print_train_summary(result)


def _train_command() -> Any:
    """`_run_train` with one typed, documented Typer option per `TrainConfig` field."""
    params = [
        inspect.Parameter(
            "data", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=str | None,
            default=typer.Argument(
                None, help="Training data file or folder (or `data:` in --config).", show_default=False
            ),
        ),
        _param("config", Path | None, typer.Option(None, "--config", "-c", help="YAML file of options (same names).")),
        _param("resume", Path | None, typer.Option(None, "--resume", help="Continue RUN from its last checkpoint.")),
        _param("data_option", list[str] | None, typer.Option(
            None, "--data-option", "-o", help="Other build_sft_dataset option as KEY=VALUE (repeatable).",
            rich_help_panel=PANELS["data"])),
        _param("verbose", bool, typer.Option(
            False, "--verbose", help="Also print the raw log dicts and the libraries' own progress bars.")),
    ]
    params += [_field_param(f) for f in fields(TrainConfig) if f.name not in _POSITIONAL]

    def train_command(**kwargs: Any) -> None:
        _run_train(kwargs.pop("data"), kwargs.pop("config"), kwargs.pop("resume"), kwargs.pop("data_option"),
                   kwargs.pop("verbose"), **kwargs)

    train_command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    train_command.__annotations__ = {p.name: p.annotation for p in params}
    train_command.__doc__ = TRAIN_HELP
    return train_command


def _param(name: str, annotation: Any, default: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default)


def _field_param(f: Any) -> inspect.Parameter:
    """A `--field-name` option for one `TrainConfig` field, default shown in the help."""
    flag = "--" + f.name.replace("_", "-")
    default = f.default_factory() if f.default is MISSING else f.default
    shown = getattr(default, "value", default)
    help_text = f.metadata["help"] + ("" if shown is None else f" (default: {_show(shown)})")
    if isinstance(default, bool):
        annotation: Any = bool | None
        decl = [f"{flag}/--no-{flag[2:]}"]
    else:
        annotation = _cli_type(f.type) | None
        decl = [flag]
    option = typer.Option(None, *decl, help=help_text, show_default=False, rich_help_panel=PANELS[f.metadata["group"]])
    return _param(f.name, annotation, option)


def _cli_type(declared: str) -> type:
    """CLI type from the field's annotation text: ints and floats parse, the rest stays text."""
    head = declared.split("|")[0].strip()
    return {"int": int, "float": float}.get(head, str)


def _show(value: Any) -> str:
    return ",".join(value) if isinstance(value, list) else str(value)


def _print_train_summary(result: Any) -> None:
    from rich.console import Console

    m = result.metrics
    console = Console()
    console.print(f"[bold green]done[/] {result.run_dir}  ({m.get('global_step')} steps, {m.get('wall_seconds')} s)")
    if m.get("first_loss") is not None:
        console.print(f"  train loss {m['first_loss']:.4f} -> {m['last_loss']:.4f}")
    if m.get("eval_loss") is not None:
        before = m.get("initial_eval_loss")
        start = f"{before:.4f} (perplexity {m['initial_perplexity']:.2f}) -> " if before is not None else ""
        console.print(f"  eval loss {start}{m['eval_loss']:.4f} (perplexity {m['perplexity']:.2f})")
    console.print(f"  saved {result.output_dir}" + (f" and {result.merged_dir}" if result.merged_dir else ""))


# --- eval --------------------------------------------------------------------------------------


def eval_command(
    run: Annotated[Path, typer.Argument(help="Run folder written by `ftdata train` (trained with --test-size).")],
    max_samples: Annotated[int, typer.Option("--max-samples", "-n", help="Evaluate at most N held-out prompts.")] = 32,
    max_new_tokens: Annotated[int, typer.Option(help="Longest generated answer, in tokens.")] = 128,
    num_beams: Annotated[int, typer.Option(help="1 = greedy decoding; > 1 = beam search.")] = 1,
    batch_size: Annotated[int, typer.Option(help="Prompts generated together.")] = 8,
    base: Annotated[bool, typer.Option("--base/--no-base", help="Also answer with the base model, to compare.")] = True,
    width: Annotated[int, typer.Option(help="Characters of each text shown in the table (files keep all).")] = 300,
) -> None:
    """Generate, score with sacreBLEU, and compare base vs fine-tuned answers."""
    from ftdata.train.evaluate import GenerationSettings, evaluate_run

    if max_samples < 1:
        raise ConfigError(f"max_samples must be >= 1, got max_samples={max_samples}")
    settings = GenerationSettings(max_new_tokens=max_new_tokens, num_beams=num_beams, batch_size=batch_size)
    from ftdata.train.progress import quiet_libraries

    with quiet_libraries():
        report = evaluate_run(run, max_samples=max_samples, compare_base=base, settings=settings)
    _print_eval(report, width=width)


def _print_eval(report: Any, *, width: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report.run_dir.name}: {len(report.rows)} held-out prompts", show_lines=True)
    table.add_column("#", justify="right", style="dim")
    columns = [c for c in ("prompt", "reference", "base", "tuned") if not report.rows or c in report.rows[0]]
    titles = {"prompt": "prompt (end)", "reference": "reference", "base": "base", "tuned": "fine-tuned"}
    for name in columns:
        table.add_column(titles[name], overflow="fold", ratio=1)
    for i, row in enumerate(report.rows, 1):
        table.add_row(str(i), *(_clip(row[c], width, tail=c == "prompt") for c in columns))
    console = Console()
    console.print(table)
    scores = "  ".join(f"{name} {score:.2f}" for name, score in report.bleu.items())
    console.print(f"sacreBLEU: {scores}")
    if report.skipped:
        console.print(f"[yellow]{report.skipped} sequence(s) skipped: trained from their first token, no prompt[/]")
    console.print(f"saved {report.files['csv']} and {report.files['json']}")


def _clip(text: str, width: int, *, tail: bool = False) -> str:
    """At most `width` characters; prompts keep their end (where the question is)."""
    if len(text) <= width:
        return text
    return "…" + text[-width:] if tail else text[:width] + "…"
