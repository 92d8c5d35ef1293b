"""The training data: build it with `ftdata.build_sft_dataset` (or load a built one), split it,
check the columns SFTTrainer will read, and fingerprint it.

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

from ftdata.build.load import is_build_output
from ftdata.build.load import load as load_build
from ftdata.errors import ConfigError
from ftdata.options import FIELDS, BuildOptions
from ftdata.run.report import BuildReport
from ftdata.io.resources import cache_root
from ftdata.train.config import TrainConfig
from ftdata.types import IGNORE_INDEX

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict, IterableDataset
    from transformers import PreTrainedTokenizerBase

REQUIRED_COLUMNS = ("input_ids", "labels")


@dataclass
class Splits:
    """Train rows, optional eval rows, and whether rows are packed (have `seq_lengths`).

    `streamed`: for train rows streamed from Parquet files, their rows, token counts and
    hash (`stream.file_stats`); None when the rows are loaded. `report`: the `BuildReport` of
    the rows (None for a plain saved dataset): the run keeps it beside its metrics.
    """

    train: Dataset | IterableDataset
    eval: Dataset | None
    packed: bool
    streamed: dict[str, Any] | None = None
    report: BuildReport | None = None  # the build's report, when ftdata built the rows (here or into a build folder)

    def fingerprint(self) -> dict[str, Any]:
        """Per split: datasets' fingerprint, columns, rows, and a SHA-256 of the token content
        (of the files' bytes for a streamed split)."""
        out: dict[str, Any] = {}
        if self.streamed is not None:
            out["train"] = {"fingerprint": None, "columns": list(self.train.column_names), "streamed": True, **self.streamed}
        for name, ds in (("train", self.train), ("test", self.eval)):
            if ds is not None and name not in out:
                out[name] = {
                    "fingerprint": getattr(ds, "_fingerprint", None),
                    "columns": list(ds.column_names),
                    "rows": ds.num_rows,
                    "content_sha256": content_hash(ds),
                    **token_counts(ds),
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

    Raises:
        ConfigError: no data given, a split is empty, or a required column is missing.
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
        options = options.updated(processor=cfg.processor)  # a build with images expands them with the run's processor
    if options.output.cache_dir is None and state.num_processes > 1:
        options = options.updated(cache_dir=str(cache_root() / "builds"))
    if cfg.streaming:
        return _streamed(path, cfg)
    with state.main_process_first():
        saved = is_saved_dataset(path) or is_build_output(path)
        built, report = _load_saved(path, cfg) if saved else _build(cfg, tokenizer, options)
    train, test = _split(built)
    for name, ds in (("train", train), ("test", test)):
        if ds is not None:
            _check_columns(ds, name)
            if saved and tokenizer is not None:
                _check_vocabulary(ds, name, tokenizer)
    return Splits(train=train, eval=test, packed="seq_lengths" in train.column_names, report=report)


def _streamed(path: Path, cfg: TrainConfig) -> Splits:
    from ftdata.train.stream import file_stats, stream_build

    if not is_build_output(path):
        raise ConfigError(
            f"streaming reads the Parquet files of a build folder; {path} is not one: run "
            "`ftdata build DATA -o OUT --output-format parquet` and train on OUT"
        )
    train, test, files = stream_build(path, cfg)
    stats = file_stats(files)
    _check_columns(train, "train", rows=stats["rows"])
    if test is not None:
        _check_columns(test, "test")
    return Splits(train=train, eval=test, packed="seq_lengths" in train.column_names, streamed=stats)


def _build(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, options: BuildOptions) -> tuple[Dataset | DatasetDict, BuildReport]:
    """The build of `cfg.data` in memory, with its report (warned about rejects, checked against max_reject_ratio)."""
    from ftdata.build.api import build, checked

    result = build(cfg.data, tokenizer=tokenizer, options=options)
    return result.dataset, checked(result.report, max_reject_ratio=options.run.max_reject_ratio, stacklevel=4)


def _load_saved(path: Path, cfg: TrainConfig) -> tuple[Dataset | DatasetDict, BuildReport | None]:
    from datasets import DatasetDict

    (loaded, report), test_size = _read_saved(path), cfg.data_options.data.test_size
    if isinstance(loaded, DatasetDict):
        if "train" not in loaded:
            raise ConfigError(f"{path} holds splits {sorted(loaded)} but no 'train' split")
        if "test" in loaded or test_size is None:
            return loaded, report
        loaded = loaded["train"]
    if test_size is None:
        return loaded, report
    if test_size >= loaded.num_rows:
        raise ConfigError(f"test_size={test_size} leaves no training rows in {path} ({loaded.num_rows} rows)")
    return loaded.train_test_split(test_size=test_size, seed=cfg.seed), report


def _read_saved(path: Path) -> tuple[Dataset | DatasetDict, BuildReport | None]:
    """A folder `ftdata build` wrote (any output format; build.json says which) with its report,
    else a `save_to_disk` folder. A build folder is trained as built: its own options made the rows."""
    if is_build_output(path):
        result = load_build(path)
        return result.dataset, result.report
    from datasets import load_from_disk

    return load_from_disk(str(path)), None


def _split(built: Dataset | DatasetDict) -> tuple[Dataset, Dataset | None]:
    from datasets import DatasetDict

    if isinstance(built, DatasetDict):
        return built["train"], built.get("test")
    return built, None


def _check_columns(ds: Dataset | IterableDataset, split: str, *, rows: int | None = None) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in ds.column_names]
    if missing:
        raise ConfigError(
            f"the {split} split lacks column(s) {', '.join(missing)} (has {', '.join(ds.column_names)}); "
            "train on data built by ftdata (input_ids, attention_mask, labels)"
        )
    if (ds.num_rows if rows is None else rows) == 0:
        raise ConfigError(f"the {split} split is empty: every record was rejected or test_size took them all")


def _check_vocabulary(ds: Dataset, split: str, tokenizer: PreTrainedTokenizerBase) -> None:
    """Refuse rows holding a token id the tokenizer lacks (one columnar max, no loop per row).

    A build made with `add_chat_tokens` holds ids past the base tokenizer: training it without
    the option would index past the embeddings.
    """
    import pyarrow.compute as pc

    top = pc.max(pc.list_flatten(ds.data.column("input_ids"))).as_py()
    if top is not None and top >= len(tokenizer):
        raise ConfigError(
            f"the {split} split holds token id {top} but the tokenizer has {len(tokenizer)} tokens: the data was built "
            "with a larger tokenizer (add_chat_tokens?); train with the same tokenizer or --add-chat-tokens"
        )


def token_counts(ds: Dataset) -> dict[str, int]:
    """Total tokens and trained tokens (labels != -100) of a split."""
    tokens = trained = 0
    for batch in ds.select_columns(["labels"]).iter(batch_size=4096):
        for labels in batch["labels"]:
            tokens += len(labels)
            trained += sum(1 for t in labels if t != IGNORE_INDEX)
    return {"tokens": tokens, "trained_tokens": trained}


def content_hash(ds: Dataset) -> str:
    """SHA-256 of the rows' token ids and labels (and images: references, sizes, spans), in order: equal data, equal hash."""
    digest = hashlib.sha256()
    columns = [c for c in ("input_ids", "labels", "seq_lengths", "loss_weights", "images") if c in ds.column_names]
    for batch in ds.select_columns(columns).iter(batch_size=4096):
        digest.update(json.dumps([batch[c] for c in columns], separators=(",", ":")).encode())
    return digest.hexdigest()


def save_eval_split(splits: Splits, run_dir: Path) -> Path | None:
    """Keep the eval rows in the run folder so `ftdata eval RUN` needs nothing else."""
    if splits.eval is None:
        return None
    target = run_dir / "eval_data"
    splits.eval.save_to_disk(str(target))
    return target
