"""The training data: build it with `ftdata.build_sft_dataset` (or load a built one), split it,
check the columns the trainer will read, and fingerprint it.

The rows' task decides the method (`TrainConfig.method` may only confirm it): a build records its
task in build.json (`options.task`: `sft`, or absent in builds older than preference data;
`preference`; `kto`; `prompts`), a plain saved dataset shows it by its columns (`task_of_columns`).

Under `accelerate launch` the main process builds first and the others then read the
pipeline's cache, so the dataset is tokenized once. With `streaming`, the train rows of a
Parquet build are read as a stream (`stream.py`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftdata.build.export import MANIFEST
from ftdata.build.load import is_build_output
from ftdata.build.load import load as load_build
from ftdata.errors import ConfigError
from ftdata.options import FIELDS, BuildOptions
from ftdata.run.columns import task_of_columns
from ftdata.run.stage import task_module
from ftdata.run.report import BuildReport
from ftdata.io.resources import cache_root
from ftdata.tokens.layouts import PACKED, SEQ_LENGTHS, WEIGHTS, Layout, layout_of
from ftdata.train.config import Method, TrainConfig, check_method
from ftdata.types import Task

if TYPE_CHECKING:
    from collections.abc import Sequence

    from datasets import Dataset, DatasetDict, IterableDataset
    from transformers import PreTrainedTokenizerBase

# The columns each task's trainer reads; other columns are ignored.
ROWS = {
    Task.SFT: "sft rows (input_ids, labels)",
    Task.PREFERENCE: "preference pairs (prompt_ids, chosen_ids, rejected_ids)",
    Task.KTO: "unpaired rows (prompt_ids, completion_ids, label)",
    Task.PROMPTS: "a prompt set (prompt, prompt_ids and reward columns)",
}


@dataclass
class Splits:
    """Train rows and optional eval rows; their layout (`ftdata.tokens.layouts`) is the train rows'.

    `streamed`: for train rows streamed from Parquet files, their rows, token counts and
    hash (`stream.file_stats`); None when the rows are loaded. `report`: the `BuildReport` of
    the rows (None for a plain saved dataset): the run keeps it beside its metrics. `manifest`: the
    build's build.json, when the rows come from a build folder (a prompt set's `counts.prompt_opens` is in it).
    """

    train: Dataset | IterableDataset
    eval: Dataset | None
    streamed: dict[str, Any] | None = None
    report: BuildReport | None = None  # the build's report, when ftdata built the rows (here or into a build folder)
    task: Task = Task.SFT  # what the rows are (`data_task`): it decides the method
    manifest: dict[str, Any] | None = None

    @property
    def layout(self) -> Layout:
        """How the train rows hold their sequences: plain, packed or tree."""
        return layout_of(self.train)

    @property
    def packed(self) -> bool:
        return self.layout is PACKED

    @property
    def method(self) -> Method:
        """The method that trains these rows (`load_splits` checked it against the one asked for)."""
        return Method.of(self.task)

    def fingerprint(self) -> dict[str, Any]:
        """Per split: datasets' fingerprint, columns, rows, and a SHA-256 of the token content
        (of the files' bytes for a streamed split)."""
        out: dict[str, Any] = {}
        if self.streamed is not None:
            out["train"] = {
                "fingerprint": None,
                "columns": list(self.train.column_names),
                "streamed": True,
                **self.streamed,
            }
        for name, ds in (("train", self.train), ("test", self.eval)):
            if ds is not None and name not in out:
                out[name] = {
                    "fingerprint": getattr(ds, "_fingerprint", None),
                    "columns": list(ds.column_names),
                    "rows": ds.num_rows,
                    "content_sha256": content_hash(ds, self.task),
                    **token_counts(ds, self.task),
                }
        return out


def is_saved_dataset(path: Path) -> bool:
    """True for a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`."""
    return path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json", "state.json"))


def load_splits(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, *, rejects_path: Path | None = None) -> Splits:
    """Build (or load) the dataset of `cfg` and return its train/eval splits.

    A `cfg.data` folder written by `save_to_disk` is loaded as is (a `test` split in it is the
    eval split; `test_size` splits a single dataset). Anything else goes through
    `build_sft_dataset` with the data options of `cfg`; rejected records are listed in
    `rejects_path` unless the options name their own file. With several processes
    (`accelerate launch`) the build is cached in `cache_root()/builds` (as `ftdata build` does) unless the options
    name a `cache_dir`: the main process builds, the others load its result.

    The rows' task (`data_task`) must be the one `cfg.method` trains, when it is given.

    Raises:
        ConfigError: no data given, a split is empty, a required column is missing, or the rows
            are not what `cfg.method` trains.
    """
    if cfg.data is None:
        raise ConfigError("no training data: give DATA (a file ftdata can read) or `data:` in the YAML config")
    from ftdata.train.dist import process_state

    state = process_state()
    path = Path(cfg.data).expanduser()
    options = cfg.data_options
    if options.output.rejects_path is None and rejects_path is not None and state.is_main_process:
        options = options.updated(rejects_path=str(rejects_path))
    if cfg.processor is not None and "processor" in FIELDS and options.to_mapping().get("processor") is None:
        options = options.updated(processor=cfg.processor)  # a build with media expands them with the run's processor
    if options.output.cache and options.output.cache_dir is None and state.num_processes > 1:
        options = options.updated(cache_dir=str(cache_root() / "builds"))
    if cfg.method is not None and "task" in FIELDS and options.to_mapping().get("task") is None:
        options = options.updated(task=cfg.method.task.value)  # raw data is built into the rows the method trains
    if cfg.streaming:
        return _streamed(path, cfg)
    with state.main_process_first():
        saved = is_saved_dataset(path) or is_build_output(path)
        built, report, manifest = _load_saved(path, cfg) if saved else _build(cfg, tokenizer, options)
    if is_build_output(path) and tokenizer is not None:
        _check_chat_template(path, tokenizer, given=options.data.chat_template)
    train, test = _split(built)
    task = data_task(((manifest or {}).get("options") or {}).get("task"), train.column_names)
    for name, ds in (("train", train), ("test", test)):
        if ds is not None:
            _check_columns(ds, name, task)
            if saved and tokenizer is not None:
                _check_vocabulary(ds, name, task, tokenizer)
    _check_method(cfg, task)
    return Splits(train=train, eval=test, report=report, task=task, manifest=manifest)


def data_task(declared: str | None, columns: Sequence[str]) -> Task:
    """What rows are: the task their build declared (build.json's `options.task`), else the one their
    columns show (`ftdata.run.columns.task_of_columns`: each task states its row columns).

    >>> data_task(None, ["prompt_ids", "chosen_ids", "rejected_ids"]).value
    'preference'
    >>> data_task(None, ["prompt", "prompt_ids", "answer"]).value
    'prompts'
    """
    if declared is not None:
        return Task.parse(declared, name="task")
    return task_of_columns(columns)


def built_task(path: Path) -> str | None:
    """The task build folder `path` records in build.json (None for builds older than preference data)."""
    options = json.loads((path / MANIFEST).read_text(encoding="utf-8")).get("options") or {}
    return options.get("task")


def _check_method(cfg: TrainConfig, task: Task) -> None:
    """The rows must be what `cfg.method` trains; the method the rows imply must allow `cfg`'s options.

    Raises:
        ConfigError: e.g. `--method kto` on preference pairs: one line naming the data and the fix.
    """
    implied = Method.of(task)
    if cfg.method is not None and cfg.method is not implied:
        wanted = cfg.method.task
        raise ConfigError(
            f"--method {cfg.method.value} trains {ROWS[wanted]}, but {cfg.data} holds {ROWS[task]}: train it with "
            f"--method {implied.value} (or no --method), or build the data with --task {wanted.value}"
        )
    check_method(cfg, implied)


def _streamed(path: Path, cfg: TrainConfig) -> Splits:
    from ftdata.train.stream import file_stats, stream_build

    if not is_build_output(path):
        raise ConfigError(
            f"streaming reads the Parquet files of a build folder; {path} is not one: run "
            "`ftdata build DATA -o OUT --output-format parquet` and train on OUT"
        )
    train, test, files = stream_build(path, cfg)
    _check_method(cfg, data_task(built_task(path), train.column_names))  # streaming is for sft rows
    stats = file_stats(files)
    _check_columns(train, "train", Task.SFT, rows=stats["rows"])
    if test is not None:
        _check_columns(test, "test", Task.SFT)
    return Splits(train=train, eval=test, streamed=stats)


Built = tuple["Dataset | DatasetDict", "BuildReport | None", "dict[str, Any] | None"]


def _build(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, options: BuildOptions) -> Built:
    """The build of `cfg.data` in memory, with its report (warned about rejects, checked against
    max_reject_ratio) and a manifest holding the task it built (its options' `task`, where the build has
    one) over the build's own manifest, where it has one."""
    from ftdata.build.api import build, checked

    result = build(cfg.data, tokenizer=tokenizer, options=options)
    report = checked(result.report, max_reject_ratio=options.run.max_reject_ratio, stacklevel=4)
    task = result.options.to_mapping().get("task") if result.options is not None else None
    manifest = dict(result.manifest or {})
    manifest["options"] = {**(manifest.get("options") or {}), "task": getattr(task, "value", task)}
    manifest.setdefault("counts", report.to_dict())  # as build.json counts them (a prompt set's `prompt_opens`)
    return result.dataset, report, manifest


def _load_saved(path: Path, cfg: TrainConfig) -> Built:
    from datasets import DatasetDict

    (loaded, report, manifest), test_size = _read_saved(path), cfg.data_options.data.test_size
    if isinstance(loaded, DatasetDict):
        if "train" not in loaded:
            raise ConfigError(f"{path} holds splits {sorted(loaded)} but no 'train' split")
        if "test" in loaded or test_size is None:
            return loaded, report, manifest
        loaded = loaded["train"]
    if test_size is None:
        return loaded, report, manifest
    if test_size >= loaded.num_rows:
        raise ConfigError(f"test_size={test_size} leaves no training rows in {path} ({loaded.num_rows} rows)")
    return loaded.train_test_split(test_size=test_size, seed=cfg.seed), report, manifest


def _read_saved(path: Path) -> Built:
    """A folder `ftdata build` wrote (any output format; build.json says which) with its report and
    build.json, else a `save_to_disk` folder. A build folder is trained as built: its own options made the rows."""
    if is_build_output(path):
        result = load_build(path)
        return result.dataset, result.report, result.manifest
    from datasets import load_from_disk

    return load_from_disk(str(path)), None, None


def _split(built: Dataset | DatasetDict) -> tuple[Dataset, Dataset | None]:
    from datasets import DatasetDict

    if isinstance(built, DatasetDict):
        return built["train"], built.get("test")
    return built, None


def _check_columns(ds: Dataset | IterableDataset, split: str, task: Task, *, rows: int | None = None) -> None:
    missing = [c for c in task_module(task).columns if c not in ds.column_names]
    if missing:
        raise ConfigError(
            f"the {split} split lacks column(s) {', '.join(missing)} (has {', '.join(ds.column_names)}); "
            f"train on data built by ftdata ({ROWS[task]})"
        )
    if (ds.num_rows if rows is None else rows) == 0:
        raise ConfigError(f"the {split} split is empty: every record was rejected or test_size took them all")


def _check_chat_template(folder: Path, tokenizer: PreTrainedTokenizerBase, *, given: str | None) -> None:
    """A build made with `chat_template` trains with that template, one made without it without one (`given`:
    the run's): the trainer saves the template with the tokenizer, and inference must render what the rows hold.

    Raises:
        ConfigError: build.json names a chat template other than the one the run's tokenizer renders with, or
            none while the run gives one.
    """
    from ftdata.build.export import MANIFEST
    from ftdata.guard.inputs import InputKind, text_digest

    inputs = json.loads((folder / MANIFEST).read_text(encoding="utf-8")).get("inputs")
    built = (
        next((i for i in inputs if i.get("kind") == InputKind.CHAT_TEMPLATE.value), None)
        if isinstance(inputs, list)
        else None
    )
    template = getattr(tokenizer, "chat_template", None)
    if built is not None and (not isinstance(template, str) or text_digest(template) != built.get("sha256")):
        raise ConfigError(
            f"{folder} was built with chat template {built.get('name')!r}; train with the same one (--chat-template, "
            "chat_template: in the config), so the adapter is saved with the template its rows were rendered with"
        )
    if built is None and given is not None:
        raise ConfigError(
            f"{folder} was built with the tokenizer's own chat template, the run gives chat_template={given!r}: "
            "drop it, "
            "or build again with it"
        )
    from ftdata.train.carried import built_print
    from ftdata.tokens.identity import template_mismatch, tokenizer_mismatch

    printed = built_print(folder)  # after the named template's check: a build with --chat-template names its file
    if printed is not None:  # a build that recorded its template and tokenizer: say where they part, in one line
        for line in (
            template_mismatch(printed, tokenizer, what="the run's tokenizer"),
            tokenizer_mismatch(printed, tokenizer, what="the run's tokenizer"),
        ):
            if line:
                raise ConfigError(f"{folder}: {line}; train with the template and tokenizer that built the data")


def _check_vocabulary(ds: Dataset, split: str, task: Task, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse rows holding a token id the tokenizer lacks (one columnar max per id column, no loop per row).

    A build made with `add_chat_tokens` holds ids past the base tokenizer: training it without
    the option would index past the embeddings.
    """
    import pyarrow.compute as pc

    tops = [
        pc.max(pc.list_flatten(ds.data.column(name))).as_py()
        for name in task_module(task).columns
        if name.endswith("_ids")
    ]
    top = max((t for t in tops if t is not None), default=None)
    if top is not None and top >= len(tokenizer):
        raise ConfigError(
            f"the {split} split holds token id {top} but the tokenizer has {len(tokenizer)} tokens: the data was built "
            "with a larger tokenizer (add_chat_tokens?); train with the same tokenizer or --add-chat-tokens"
        )


def token_counts(ds: Dataset, task: Task = Task.SFT) -> dict[str, int]:
    """The rows' tokens and trained tokens, per split, as the build's report and a recipe's plan count them (the
    task's `row_units`): SFT every token and those with a label != -100; a pair the tokens it holds, the prompt
    once and both completions, the completions trained (a trainer runs prompt + chosen and prompt + rejected: it
    reads the prompt twice); KTO prompt + completion, the completion trained, and the rows labelled desirable
    (the balance the KTO weights answer). A prompt set: the prompts' tokens only; what trains is sampled during
    the run (TRL counts it: `num_tokens` in the log).
    """
    import pyarrow.compute as pc

    module = task_module(task)
    tokens = trained = desirable = 0
    # through the split's indices (a test split is a selection of the file), in Arrow batches
    for batch in ds.select_columns(list(module.columns)).with_format("arrow").iter(batch_size=4096):
        row_tokens, row_trained = module.row_units(batch)
        tokens, trained = tokens + int(row_tokens.sum()), trained + int(row_trained.sum())
        if task is Task.KTO:
            desirable += int(pc.sum(batch.column("label")).as_py() or 0)
    if task is Task.PROMPTS:
        return {"tokens": tokens}
    counts = {"tokens": tokens, "trained_tokens": trained}
    return {**counts, "desirable": desirable} if task is Task.KTO else counts


def content_hash(ds: Dataset, task: Task = Task.SFT) -> str:
    """SHA-256 of the rows' token ids and labels (and media:
    references, sizes, spans), in order: equal data, equal hash.
    A prompt set: every column (its reward columns decide the rewards as much as its prompts)."""
    digest = hashlib.sha256()
    pairs = (*task_module(Task.PREFERENCE).columns, *task_module(Task.KTO).columns)
    names = (*task_module(Task.SFT).columns, SEQ_LENGTHS, WEIGHTS, "media", *pairs)
    if task is Task.PROMPTS:
        names = tuple(ds.column_names)
    columns = [c for c in dict.fromkeys(names) if c in ds.column_names]
    for batch in ds.select_columns(columns).iter(batch_size=4096):
        digest.update(
            json.dumps([batch[c] for c in columns], separators=(",", ":"), default=str).encode()
        )  # typed reward columns: dates as text
    return digest.hexdigest()


def save_eval_split(splits: Splits, run_dir: Path) -> Path | None:
    """Keep the eval rows in the run folder so `ftdata eval RUN` needs nothing else."""
    if splits.eval is None:
        return None
    target = run_dir / "eval_data"
    splits.eval.save_to_disk(str(target))
    return target
