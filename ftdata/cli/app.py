"""The `ftdata` command line: preview, stats, build, markers, templates (+ train/eval when installed).

Errors: an `FtdataError` (and a missing or unreadable file) prints one line, `error: ...`, on
stderr and exits with the error's `exit_code` (2 config, 3 reader, 4 record, 5 template, 1
other); `--debug` shows the traceback instead. Heavy libraries (transformers, datasets,
matplotlib) are imported only by the commands that need them, so `ftdata preview` starts fast.
"""

from __future__ import annotations

import io
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from ftdata.io.resources import tokenizer_label
from ftdata.cli.options import (
    BUILD_FIELDS,
    PREVIEW_FIELDS,
    STATS_FIELDS,
    Settings,
    cli_spelling,
    resolve,
    with_build_options,
)
from ftdata.errors import ConfigError, DiskFullError, FtdataError, FtdataWarning
from ftdata.guard.space import is_disk_full
from ftdata.cli import serving
from ftdata.cli.terminal import dumps
from ftdata.options import DATA_FIELDS

try:  # typer vendors click from 0.2x on; its exceptions are not click's
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - an older typer on the real click
    from click.exceptions import ClickException, UsageError  # type: ignore[assignment]  # click's own classes there

_FILE_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)
_FILE_ERROR_EXIT = 3  # the same code as a ReaderError
_PYTHON_SHOWWARNING = warnings.showwarning


def exit_code(exc: BaseException) -> int | None:
    """The exit code of an error the CLI reports in one line, or None for a bug."""
    if isinstance(exc, FtdataError):
        return exc.exit_code
    if isinstance(exc, _FILE_ERRORS):
        return _FILE_ERROR_EXIT
    if is_disk_full(exc):  # a write no library step mapped to a DiskFullError: still one line
        return DiskFullError.exit_code
    return None


def error_message(exc: BaseException) -> str:
    """The error's one line: its text and its notes (where a failed build left its rejects)."""
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror}"
    return "; ".join([str(exc), *getattr(exc, "__notes__", ())])


def _show_warning(message: Any, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    """ftdata's own warnings as `warning: <message>` lines on stderr; others as Python shows them."""
    if issubclass(category, FtdataWarning):
        typer.echo(f"warning: {cli_spelling(str(message))}", err=True)
    else:
        _PYTHON_SHOWWARNING(message, category, *args, **kwargs)


# Commands whose options are the BuildOptions flags: their messages say `--max-length 512`.
# `train` takes data options as `--data-option max_length=512`, the library's own spelling.
FLAG_SPELLED = frozenset({"preview", "stats", "build", "markers", "templates"})


def _fail(message: str, code: int, *, command: str | None = None) -> typer.Exit:
    """Print `error: <message>` (one line; option names as `command`'s flags) on stderr; the Exit to raise."""
    from ftdata.cli.options import cli_spelling
    from ftdata.cli.terminal import escape_controls

    text = cli_spelling(message) if command in FLAG_SPELLED else message
    typer.echo(f"error: {escape_controls(text)}", err=True)
    return typer.Exit(code)


def _quiet_stdout() -> None:
    """After a closed pipe (`ftdata preview | head`): send what is left to /dev/null, so that
    the flush at exit raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):  # not a real file (a test runner's buffer)
        pass


def _plain_help(command: Any) -> None:
    """Click's plain help (no boxes, no colour) for `command` and its subcommands."""
    command.rich_markup_mode = None
    for sub in getattr(command, "commands", {}).values():
        _plain_help(sub)


class FtdataGroup(TyperGroup):
    """Turns library errors into `error: <message>` and the error's exit code; usage errors
    too (exit 2); a closed stdout pipe ends the command quietly (exit 0); help is plain text
    unless stdout is a terminal."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not sys.stdout.isatty():
            _plain_help(self)
        if not standalone_mode:
            return super().main(*args, **{**kwargs, "standalone_mode": False})
        try:
            result = super().main(*args, **{**kwargs, "standalone_mode": False})
        except UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError":  # bare `ftdata`: the help, as click shows it
                typer.echo(exc.format_message(), err=True)
                raise SystemExit(exc.exit_code) from None
            where = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            raise SystemExit(_fail(exc.format_message() + where, exc.exit_code).exit_code) from None
        except ClickException as exc:
            raise SystemExit(_fail(exc.format_message(), exc.exit_code).exit_code) from None
        except typer.Abort:
            raise SystemExit(_fail("aborted", 1).exit_code) from None
        raise SystemExit(result if isinstance(result, int) else 0)

    def invoke(self, ctx: typer.Context) -> Any:  # type: ignore[override]  # typer hands it its own Context
        try:
            with warnings.catch_warnings():
                warnings.showwarning = _show_warning
                return super().invoke(ctx)
        except BrokenPipeError:
            _quiet_stdout()
            raise typer.Exit(0) from None
        except Exception as exc:  # usage errors, typer.Exit and bugs have no code here: re-raised
            code = exit_code(exc)
            if code is None or ctx.params.get("debug") or os.environ.get("FTDATA_DEBUG"):
                raise
            raise _fail(error_message(exc), code, command=ctx.invoked_subcommand) from None


app = typer.Typer(
    name="ftdata",
    cls=FtdataGroup,
    help="Supervised fine-tuning data for LLMs: preview, measure and build token datasets with exact loss masks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

DATA_HELP = (
    "Input file (.json, .jsonl, .csv, .parquet; also .gz/.zst/.bz2/.xz; - for standard input), dataset "
    "folder, cached hub id, or a recipe (.yaml with sources:)."
)
TOKENIZER_HELP = "Tokenizer folder or cached hub id; default: the bundled SmolLM2-135M-Instruct."
CONFIG_HELP = "YAML file of options (BuildOptions names, plus data and tokenizer); flags override it."


def _stdin(data: str | None) -> str | None:
    """`-` is standard input, as in most tools: `cat d.jsonl | ftdata build - -o OUT` (read as a pipe, bounded)."""
    return "/dev/stdin" if data == "-" else data


DataArg = Annotated[str | None, typer.Argument(metavar="DATA", help=DATA_HELP, show_default=False, callback=_stdin)]
TokenizerOpt = Annotated[str | None, typer.Option("--tokenizer", "-t", help=TOKENIZER_HELP, show_default=False)]
ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help=CONFIG_HELP, show_default=False)]
ALLOW_CODE_HELP = "Let a 'module:function' reader (--reader or reader: in --config) import and run that Python code."
TRUST_HELP = "Let a tokenizer folder run the Python code it ships (auto_map). Read that code first."
AllowCodeOpt = Annotated[bool, typer.Option("--allow-code", help=ALLOW_CODE_HELP)]
TrustCodeOpt = Annotated[bool, typer.Option("--trust-remote-code", help=TRUST_HELP)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]
NoColorOpt = Annotated[bool, typer.Option("--no-color", help="Plain text, no colours (also when not a terminal).")]


def _option(*decls: str, help: str, metavar: str) -> Any:
    """An option whose default (None: not given) is not worth showing in --help."""
    return typer.Option(*decls, help=help, metavar=metavar, show_default=False)


def _version(value: bool) -> None:
    if value:
        from ftdata import __version__

        typer.echo(f"ftdata {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of errors (also FTDATA_DEBUG=1).")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = (
        False
    ),
) -> None:
    """Supervised fine-tuning data for LLMs: preview, measure and build token datasets with exact loss masks."""
    from ftdata.io.resources import go_offline
    from ftdata.cli.terminal import fit_output_encoding

    go_offline()  # before any command reads data: a mistyped path must never become a hub download
    fit_output_encoding()  # cp1252 output (Windows, redirected): escapes and ASCII markers, never a traceback


def console(no_color: bool = False, *, stderr: bool = False) -> Console:
    """A console that never interprets data as markup; plain (no ANSI codes at all, bold
    included) when not a terminal, with --no-color, or with NO_COLOR set (no-color.org)."""
    from ftdata.cli.terminal import SafeConsole

    plain = no_color or bool(os.environ.get("NO_COLOR"))
    return SafeConsole(
        stderr=stderr, color_system=None if plain else "auto", highlight=False, markup=False, emoji=False
    )


def _stage(settings: Settings) -> tuple[Any, Any]:
    """The record engine for DATA, holding the task the data (or --task) names, and that task with why it was
    chosen (a `TaskChoice`, the build summary's `task` line)."""
    from ftdata.io.resources import load_tokenizer
    from ftdata.run.report import TaskChoice
    from ftdata.run.stage import Stage
    from ftdata.run.task import with_task

    options = with_task(settings.data, settings.options)
    tok = load_tokenizer(settings.tokenizer, trust_remote_code=settings.trust_remote_code, shared=True)  # read only
    stage = Stage(tok, options.data)
    return stage, TaskChoice(stage.task.task.value, options.task_reason)


@contextmanager
def progress_bar(label: str, count: Callable[[], int | None] = lambda: None) -> Iterator[Callable[[int], None]]:
    """A Rich progress bar on stderr (only on a terminal), its total from `count()`, called only for a bar on
    screen (counting reads the input once more); yields `advance(n)`."""
    err = console(stderr=True)
    if not err.is_terminal:
        yield lambda n: None
        return
    total = count()
    from rich import progress

    columns = (
        progress.TextColumn("{task.description}"),
        progress.BarColumn(),
        progress.MofNCompleteColumn(),
        progress.TimeElapsedColumn(),
        progress.TimeRemainingColumn(),
    )
    with progress.Progress(*columns, console=err) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


# --- preview -----------------------------------------------------------------------------------


@app.command()
@with_build_options(PREVIEW_FIELDS)
def preview(
    data: DataArg = None,
    tokenizer: TokenizerOpt = None,
    n: Annotated[int, typer.Option("-n", "--num", min=1, help="Number of records to show.")] = 3,
    offset: Annotated[int, typer.Option("--offset", min=0, help="Skip this many records first.")] = 0,
    tokens: Annotated[bool, typer.Option("--tokens", help="Also show a table of token id / text / label.")] = False,
    source: Annotated[
        str | None,
        typer.Option(
            "--source",
            metavar="N|NAME",
            help="DATA is a recipe: preview this source (1-based number or name; default 1).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    no_color: NoColorOpt = False,
    config: ConfigOpt = None,
    allow_code: AllowCodeOpt = False,
    trust_remote_code: TrustCodeOpt = False,
    *,
    options: dict[str, Any],
) -> None:
    """Show the first records rendered, with trained tokens highlighted and masked tokens dimmed."""
    from ftdata.cli import preview as view

    settings, recipe = _resolved(
        data, tokenizer, config, options, allow_code=allow_code, trust_remote_code=trust_remote_code
    )
    if recipe is not None:
        settings = _source_settings(recipe, settings, source)
    elif source is not None:
        raise ConfigError(
            f"--source picks a source of a recipe; {settings.data} is not a recipe (a YAML file with sources:)"
        )
    stage, task = _stage(settings)
    printer = view.Printer(console(no_color), as_json=as_json, show_tokens=tokens, spell=cli_spelling)
    label = tokenizer_label(settings.tokenizer, stage.tokenizer)
    from ftdata.cli.views import views_of

    window = views_of(stage.task.task).preview
    view.show_window(window, settings.data, stage, offset=offset, n=n, printer=printer, tokenizer=label, task=task)


# --- stats -------------------------------------------------------------------------------------

PLOT_HELP = "Write length histograms to this PNG file."
HTML_HELP = "Write a self-contained HTML report (plots embedded)."


@app.command()
@with_build_options(STATS_FIELDS)
def stats(
    data: DataArg = None,
    tokenizer: TokenizerOpt = None,
    plot: Annotated[Path | None, _option("--plot", help=PLOT_HELP, metavar="PNG")] = None,
    html: Annotated[Path | None, _option("--html", help=HTML_HELP, metavar="HTML")] = None,
    as_json: JsonOpt = False,
    no_color: NoColorOpt = False,
    config: ConfigOpt = None,
    allow_code: AllowCodeOpt = False,
    trust_remote_code: TrustCodeOpt = False,
    *,
    options: dict[str, Any],
) -> None:
    """Token length histograms and percentiles, trainable share, truncation and packing at --max-length."""
    from ftdata.guard.bounds import ReadBounds
    from ftdata.io.counter import count_records

    settings, recipe = _resolved(
        data, tokenizer, config, options, allow_code=allow_code, trust_remote_code=trust_remote_code
    )
    if recipe is not None:
        _recipe_stats(recipe, settings, as_json=as_json, no_color=no_color)
        return
    from ftdata.build.api import source_files
    from ftdata.cli.views import views_of
    from ftdata.guard.opened import opened_once

    data_options = settings.options.data
    held = source_files(settings.data, recipe=False)  # a folder's data files too
    with opened_once(held):  # the task's first record, the bar's count and the measure: one descriptor
        stage, task = _stage(settings)
        views = views_of(stage.task.task)  # the CLI's table of the task (its measure is the task's `stats`)
        if (plot and views.write_plot is None) or (html and views.write_html is None):
            raise ConfigError(
                f"--plot and --html draw SFT length histograms; for {stage.task.task.value} data use the table or "
                "--json"
            )
        with progress_bar(
            "measuring",
            lambda: count_records(settings.data, limit=data_options.limit, bounds=ReadBounds.of(data_options)),
        ) as advance:
            result = stage.task.stats(settings.data, stage, settings.options.run, progress=advance)
    result.tokenizer = tokenizer_label(settings.tokenizer, stage.tokenizer)
    result.counts.task_reason = task.reason  # why the task: the build summary's `task` line, printed here too
    out = console(no_color)
    if as_json:
        out.file.write(dumps(result.to_dict(), out, indent=2, default=str) + "\n")
    else:
        views.show(result, out, spell=cli_spelling)
    for path, write in ((plot, views.write_plot), (html, views.write_html)):
        if path is not None and write is not None:
            write(result, path)
            console(no_color, stderr=True).print(f"wrote {path}", soft_wrap=True)


def _recipe(settings: Settings, *, allow_code: bool) -> Any:
    """The recipe DATA names (None when DATA is data): a recipe file, or another tool's declaration
    (`ftdata.mix.declared`), with its tokenizer unless --tokenizer gave one.

    Raises:
        ConfigError: a data option given beside the recipe (it belongs in the recipe file).
    """
    from ftdata.build.api import tokenizer_spec
    from ftdata.mix.declared import recipe_of

    recipe = recipe_of(settings.data, settings.options.to_mapping(), allow_code=allow_code)
    if recipe is None:
        return None
    settings.tokenizer = tokenizer_spec(settings.tokenizer, settings.options, recipe=recipe)
    return recipe


def _resolved(
    data: str | None,
    tokenizer: str | None,
    config: Path | None,
    flags: dict[str, Any],
    *,
    allow_code: bool,
    trust_remote_code: bool,
    overrides: dict[str, Any] | None = None,
) -> tuple[Settings, Any]:
    """What a data command runs on: the settings from DATA, --tokenizer, --config and the flags (`resolve`), and
    the recipe DATA names (None for data, `_recipe`)."""
    settings = resolve(
        data=data,
        tokenizer=tokenizer,
        config=config,
        flags=flags,
        overrides=overrides,
        allow_code=allow_code,
        trust_remote_code=trust_remote_code,
    )
    return settings, _recipe(settings, allow_code=allow_code)


def _source_settings(recipe: Any, settings: Settings, pick: str | None) -> Settings:
    """The settings of one source of `recipe`: its first file, its options, the recipe's tokenizer.

    Raises:
        ConfigError: no such source (the message lists them).
    """
    from ftdata.options import BuildOptions

    names = [s.name for s in recipe.sources]
    index = (
        int(pick) - 1
        if pick is not None and pick.isdigit()
        else names.index(pick)
        if pick in names
        else 0
        if pick is None
        else -1
    )
    if not 0 <= index < len(names):
        choices = ", ".join(f"{i} ({n})" for i, n in enumerate(names, start=1))
        raise ConfigError(f"--source {pick}: {recipe.origin} has sources {choices}")
    spec = recipe.sources[index]
    run_output = {k: v for k, v in settings.options.to_mapping().items() if k not in DATA_FIELDS}
    opts = BuildOptions.from_mapping({**recipe.options, **spec.options, **run_output})
    return dataclasses.replace(settings, data=spec.files()[0], options=opts)


def _recipe_stats(recipe: Any, settings: Settings, *, as_json: bool, no_color: bool) -> None:
    """`ftdata stats recipe.yaml`: the per-source table before building."""
    from dataclasses import replace

    from ftdata.build.api import source_files
    from ftdata.guard.opened import opened_once
    from ftdata.mix.survey import survey, survey_table
    from ftdata.io.resources import load_tokenizer

    tok = load_tokenizer(settings.tokenizer, trust_remote_code=settings.trust_remote_code)
    held = source_files(replace(recipe, decontaminate=()), recipe=True)  # its sources (evaluation sets: in build)
    with opened_once(held), progress_bar("measuring") as advance:  # each source's count, task and measure
        rows = survey(recipe, tokenizer=tok, run=settings.options.run, progress=advance)
    out = console(no_color)
    if as_json:
        out.file.write(
            dumps({"recipe": recipe.origin, "mix_by": recipe.mix_by.value, "sources": rows}, out, indent=2) + "\n"
        )
        return
    out.print(
        f"recipe     {recipe.origin} (mix_by {recipe.mix_by.value}, tokenizer "
        f"{tokenizer_label(settings.tokenizer, tok)})",
        soft_wrap=True,
    )
    out.print(survey_table(rows, unit=recipe.mix_by.unit))
    out.print(
        "(deduplication and decontamination run in `ftdata build`; they can only lower these counts)", soft_wrap=True
    )


# --- build -------------------------------------------------------------------------------------

INSPECT_BUILD_HELP = "Also write OUT/inspect.html: the build's inspection page (as `ftdata inspect OUT` writes it)."
OUTPUT_HELP = "Output folder, or with --engine ray a URI (s3://bucket/prefix); or output: in YAML."
FORMAT_HELP = (
    "arrow (save_to_disk, the default), parquet, or jsonl (token rows + decoded text); with --engine ray the "
    "default is "
    "Parquet shards written by the workers (arrow or jsonl: the rows come back here and are written as usual)."
)


@app.command()
@with_build_options(BUILD_FIELDS)
def build(
    data: DataArg = None,
    output: Annotated[str | None, _option("--output", "-o", help=OUTPUT_HELP, metavar="OUT")] = None,
    output_format: Annotated[str | None, _option("--output-format", help=FORMAT_HELP, metavar="FORMAT")] = None,
    tokenizer: TokenizerOpt = None,
    page: Annotated[bool, typer.Option("--inspect", help=INSPECT_BUILD_HELP)] = False,
    as_json: JsonOpt = False,
    no_color: NoColorOpt = False,
    config: ConfigOpt = None,
    allow_code: AllowCodeOpt = False,
    trust_remote_code: TrustCodeOpt = False,
    *,
    options: dict[str, Any],
) -> None:
    """Run the full pipeline and write the dataset, rejects.jsonl and build.json to OUT."""
    from ftdata.build.api import build as run_build, source_files
    from ftdata.build.export import MANIFEST, summary_table
    from ftdata.build.load import load_hint
    from ftdata.guard.bounds import ReadBounds
    from ftdata.io.counter import count_records
    from ftdata.guard.opened import opened_once
    from ftdata.io.resources import load_tokenizer

    settings, recipe = _resolved(
        data, tokenizer, config, options, allow_code=allow_code, trust_remote_code=trust_remote_code
    )
    out = output or settings.extras.get("output")
    if out is None:
        raise ConfigError("no output folder: give -o OUT (or output: in --config)")
    if page and "://" in str(out):
        raise ConfigError(
            f"--inspect writes the page into a local OUT; {out} is a URI: run `ftdata inspect` on a local copy"
        )
    opts = settings.options
    # the library decides the rest (ftdata.build.api): the recipe's options, the cache, the tokenizer;
    # it is loaded here first only because `datasets`, imported before it, costs the build 17-40 MiB more; shared:
    # the build and the page only read it (a process that builds again from the same folder loads it once)
    spec = settings.tokenizer  # `tokenizer_spec`'s choice (`resolve`, `_recipe`)
    tok = load_tokenizer(spec, trust_remote_code=settings.trust_remote_code, shared=True)
    import datasets

    datasets.disable_progress_bars()  # ours is on screen; save_to_disk's would interleave with it
    started = time.perf_counter()

    def total() -> int | None:
        return (
            None
            if recipe is not None
            else count_records(settings.data, limit=opts.data.limit, bounds=ReadBounds.of(opts.data))
        )

    held = source_files(settings.data, recipe=False) if recipe is None else []
    with opened_once(held), progress_bar("building", total) as advance:
        result = run_build(  # the bar's count and the build read one descriptor of DATA (a recipe holds its own)
            recipe or settings.data,
            out,
            tokenizer=tok,
            options=opts,
            output_format=output_format or settings.extras.get("output_format"),
            progress=advance,
            tokenizer_name=tokenizer_label(spec, tok),
            protect=[config],
            config=settings.config,
            allow_code=allow_code,
        )
    report, record = result.report, result.manifest or {}
    assert result.out is not None and result.output_format is not None  # a build to a folder, in a format
    seconds = time.perf_counter() - started
    rejects = (
        opts.output.rejects_path or f"{result.out}/{record['output']['rejects'].rstrip('/')}"
    )  # the user's file, or OUT's
    written = [*(f"{result.out}/{name}" for name in result.files), rejects, f"{result.out}/{MANIFEST}"]
    if page:
        from ftdata.inspect import inspect as write_page

        written.append(str(write_page(result.out, tokenizer=tok)))
    show = console(no_color)
    if as_json:
        show.file.write(
            dumps(
                {**record, "seconds": round(seconds, 3), "written": [str(p) for p in written]},
                show,
                indent=2,
                default=str,
            )
            + "\n"
        )
    else:
        if report.cached:
            from ftdata.guard.inputs import describe

            where = _home_relative(result.cached_from)  # type: ignore[arg-type]  # a cached build has its source folder
            why = describe(result.inputs)
            show.print(
                f"cached: reused build {record['fingerprint']} ({why}) from {where} ({seconds:.1f} s)", soft_wrap=True
            )
        else:
            show.print(f"built {record['fingerprint']} in {seconds:.1f} s", soft_wrap=True)
        from ftdata.tokens.layouts import TREE, built_layout

        show.print(summary_table(report, spell=cli_spelling, tree=built_layout(opts.data) is TREE))
        show.print("wrote " + ", ".join(map(str, written)), soft_wrap=True)
        show.print(load_hint(result.out, fmt=result.output_format), soft_wrap=True)
    report.check_reject_ratio(opts.run.max_reject_ratio)  # after the summary: the rejects are written, to look at
    if opts.output.serving_url:  # the build is written; its turns against the server the model will be served by
        serving.report(result.out, opts.output.serving_url)


# --- inspect -------------------------------------------------------------------------------------

INSPECT_HELP = (
    "The page's file; default: OUT/inspect.html for a build folder (OUT then owns it), inspect.html here for DATA. "
    "An existing file is replaced only if ftdata wrote it."
)


@app.command()
@with_build_options(BUILD_FIELDS)
def inspect(
    data: Annotated[
        str | None,
        typer.Argument(
            metavar="OUT|DATA",
            help="A folder `ftdata build` wrote, or data to build a sample of for the page (its first "
            "--limit records, default 200) with the usual build options.",
            show_default=False,
        ),
    ] = None,
    output: Annotated[Path | None, _option("--output", "-o", help=INSPECT_HELP, metavar="PAGE")] = None,
    first: Annotated[int, typer.Option("--first", min=0, help="Show the first N rows token by token.")] = 10,
    random: Annotated[int, typer.Option("--random", min=0, help="Show N more rows drawn with --seed.")] = 10,
    longest: Annotated[int, typer.Option("--longest", min=0, help="Show the N longest rows.")] = 5,
    tokenizer: TokenizerOpt = None,
    config: ConfigOpt = None,
    allow_code: AllowCodeOpt = False,
    trust_remote_code: TrustCodeOpt = False,
    *,
    options: dict[str, Any],
) -> None:
    """Write one self-contained HTML page of a build: trained tokens coloured, rejects by reason, distributions."""
    from ftdata.build.load import is_build_output
    from ftdata.guard.scratch import drop_scratch, scratch_dir
    from ftdata.inspect import Sample
    from ftdata.inspect import inspect as write_page
    from ftdata.io.resources import load_tokenizer

    seed = options.get("seed", 0) or 0
    sample = Sample(first=first, random=random, longest=longest, seed=seed)
    show = console()
    if data is not None and config is None and is_build_output(data):
        if {key for key in options if key != "seed"}:
            raise ConfigError(
                f"{data} is a build folder: build options ({', '.join(sorted(options))}) apply to DATA only"
            )
        tok = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code) if tokenizer else None
        path = write_page(data, output, tokenizer=tok, sample=sample)
        show.print(f"wrote {path}", soft_wrap=True)
        return
    from ftdata.build.api import build as run_build

    settings, recipe = _resolved(
        data,
        tokenizer,
        config,
        {**options, "cache": False},
        overrides={"limit": 200, "on_error": "skip"},
        allow_code=allow_code,
        trust_remote_code=trust_remote_code,
    )
    if recipe is not None:
        raise ConfigError(
            f"{settings.data} is a recipe: build it (`ftdata build {settings.data} -o OUT --inspect`) and inspect OUT"
        )
    tok = load_tokenizer(settings.tokenizer, trust_remote_code=settings.trust_remote_code)
    import datasets

    datasets.disable_progress_bars()
    scratch = scratch_dir()  # removed at exit, on a signal, or by the next run if this one is killed
    try:
        out = scratch / "out"
        run_build(
            settings.data,
            out,
            tokenizer=tok,
            options=settings.options,
            tokenizer_name=tokenizer_label(settings.tokenizer, tok),
            protect=[config],
            config=settings.config,
            allow_code=allow_code,
        )
        title = f"{settings.data} (its first {settings.options.data.limit:,} records, built for this page)"
        path = write_page(out, output or Path("inspect.html"), tokenizer=tok, sample=sample, title=title)
    except (
        FtdataError
    ) as exc:  # a note pointing into the scratch (a failed build's rejects) would name a folder about to go
        exc.__notes__ = [note for note in getattr(exc, "__notes__", []) if str(scratch) not in note]
        raise
    finally:
        drop_scratch(scratch)
    show.print(f"wrote {path}", soft_wrap=True)


def _home_relative(path: Path) -> str:
    """`/home/me/.cache/x` -> `~/.cache/x` (shorter, and the same on every machine)."""
    try:
        return "~/" + str(path.expanduser().resolve().relative_to(Path.home().resolve()))
    except ValueError:
        return str(path)


# --- markers and templates ---------------------------------------------------------------------


@app.command()
def markers(
    tokenizer: TokenizerOpt = None,
    chat_template_kwargs: Annotated[
        str | None,
        typer.Option(
            "--chat-template-kwargs",
            metavar="JSON",
            help="chat-template variables for every probe render, e.g. "
            "'{\"enable_thinking\": false}' (as the build option)",
            show_default=False,
        ),
    ] = None,
    stop_tokens: Annotated[
        str | None,
        typer.Option(
            "--stop-tokens",
            metavar="TOKENS",
            help="comma-separated tokens inference also stops on (as the build option); "
            "generation_config.json's eos_token_id in the tokenizer folder is read by itself",
            show_default=False,
        ),
    ] = None,
    chat_template: Annotated[
        str | None,
        typer.Option(
            "--chat-template",
            metavar="FILE|NAME",
            help="probe this chat template instead of the tokenizer's: a .jinja "
            "file or a template TRL ships by name (as the build option)",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
    no_color: NoColorOpt = False,
    trust_remote_code: TrustCodeOpt = False,
) -> None:
    """Show what the chat template writes around each role, what a turn trains and what stops it."""
    from ftdata.cli.options import parse_json_object
    from ftdata.options import parse_stop_tokens
    from ftdata.cli.preview import describe_training
    from ftdata.chat.chat_template import load_chat_template
    from ftdata.chat.render import role_markers
    from ftdata.io.resources import load_tokenizer

    kwargs = parse_json_object(chat_template_kwargs, name="chat_template_kwargs") if chat_template_kwargs else None
    tok = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code, shared=True)  # read only: applied copies
    label = tokenizer_label(tokenizer, tok)
    if chat_template is not None:
        tok = load_chat_template(chat_template).applied(tok)
    found = role_markers(tok, kwargs, parse_stop_tokens(stop_tokens) if stop_tokens else ())
    out = console(no_color)
    if as_json:
        record = {"tokenizer": label, **({"chat_template": chat_template} if chat_template else {}), **found.to_dict()}
        out.file.write(dumps(record, out, indent=2) + "\n")
        return
    title = f"chat template {chat_template} on {label}" if chat_template else f"chat template of {label}"
    table = Table("property", "value", title=title, title_justify="left")
    for key, value in found.to_dict().items():
        if key != "warnings":
            table.add_row(key, repr(value) if isinstance(value, str) else str(value))
    out.print(table)
    out.print(
        f"a trained turn: generation prompt {found.assistant_header!r}, then {describe_training(found)}", soft_wrap=True
    )
    for warning in found.warnings:
        out.print(Text(f"warning: template {cli_spelling(warning)}", style="yellow"), soft_wrap=True)


EXAMPLE = {
    "instruction": "Summarize the text in one sentence.",
    "input": "ftdata turns instruction files into masked token datasets.",
}


@app.command()
def templates(no_color: NoColorOpt = False) -> None:
    """List the built-in prompt templates, each with a rendered example."""
    from ftdata.cli.preview import ASCII, UNICODE
    from ftdata.chat.prompt_templates import builtin_names, load_prompt_template
    from ftdata.cli.terminal import unicode_ok

    out = console(no_color)
    plain = out.color_system is None
    OPEN, CLOSE = (UNICODE if unicode_ok(out) else ASCII).trained
    for name in builtin_names():
        template = load_prompt_template(name)
        out.rule(Text(f"{name}" + ("  (uses system)" if template.uses_system else "")), align="left")
        text = Text(
            template.render(instruction=EXAMPLE["instruction"], input=EXAMPLE["input"]),
            style="" if plain else "cyan italic",
        )
        response = "<response><eos>"
        text.append(f"{OPEN}{response}{CLOSE}" if plain else response, style="" if plain else "black on green")
        out.print(text, soft_wrap=True)
    out.print()
    out.print(f"example: instruction={EXAMPLE['instruction']!r}, input={EXAMPLE['input']!r}", soft_wrap=True)
    usage = "use: --template NAME, or --template path/to/file.jinja (variables: instruction, input, system)"
    out.print(usage, soft_wrap=True)


def _register_export(target: typer.Typer) -> None:
    """Add `export` (`ftdata.cli.export`)."""
    from ftdata.cli.export import register

    register(target)


def _register_training(target: typer.Typer) -> None:
    """Add `train` and `eval` when the training layer is importable (it needs the train extras)."""
    try:
        from ftdata.cli.train import register
    except ImportError:
        return
    register(target)


_register_training(app)
_register_export(app)
serving.register(app)


def main() -> None:
    """Entry point of the `ftdata` script."""
    app(prog_name="ftdata")


if __name__ == "__main__":
    main()
