"""Training rows streamed from a Parquet build instead of loaded whole.

`ftdata train OUT --streaming` reads the train split of a build folder written with
`--output-format parquet` (one file per split) or by engine=ray (`OUT/data/*.parquet`, one
file per shard) through `datasets`' iterable Parquet reader, 256 rows at a time, shuffled
in a buffer of `shuffle_buffer` rows with the run's seed. Nothing is converted to an Arrow
cache or memory-mapped, so the process's memory does not grow with the corpus.

    shards in a seeded order, one at a time ─▶ buffer of N rows ─▶ a random one out ─▶ batches
    (256 rows decoded per read)                 (refilled as it empties)

The held-out split (small) is loaded as usual. The row count comes from the Parquet footers
(the number of steps of an epoch needs it); token counts and the content hash are computed in
one pass over the files, a record batch at a time. Resuming replays the same seeded order and
skips the batches already trained.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftdata.build.load import parquet_files
from ftdata.errors import ConfigError
from ftdata.types import IGNORE_INDEX

# Rows decoded per read (datasets' default: a whole row group). The buffer is fed from one
# shard at a time (`max_buffer_input_shards=1`; datasets' default reads 10 shards at once, in
# 10 threads each holding a decoded row group: peak RSS grew by ~320 MB from 1 to 10 shards).
READ_ROWS = 256

if TYPE_CHECKING:
    from datasets import Dataset, IterableDataset

    from ftdata.train.config import TrainConfig


def stream_build(path: Path, cfg: TrainConfig) -> tuple[IterableDataset, Dataset | None, list[Path]]:
    """The shuffled stream of the train split of build folder `path`, its test split (loaded),
    and the train split's files.

    Raises:
        ConfigError: `path` is not a Parquet build, or `test_size` asks to split a stream.
    """
    import datasets

    splits = parquet_files(path)
    if "train" not in splits or not splits["train"]:
        raise ConfigError(f"{path} has no train split to stream (its Parquet files: {sorted(splits)})")
    if cfg.data_options.data.test_size is not None and "test" not in splits:
        raise ConfigError(
            "streaming cannot split off test_size from a stream: build with --test-size, or drop --test-size"
        )
    import pyarrow.parquet as pq

    # Given, not inferred, so the stream knows its columns before it is read.
    features = datasets.Features.from_arrow_schema(pq.read_schema(splits["train"][0]))
    train = datasets.load_dataset(
        "parquet",
        data_files={"train": [str(p) for p in splits["train"]]},
        split="train",
        streaming=True,
        features=features,
        batch_size=READ_ROWS,
    ).shuffle(seed=cfg.seed, buffer_size=cfg.shuffle_buffer, max_buffer_input_shards=1)
    test = datasets.Dataset.from_parquet([str(p) for p in splits["test"]]) if "test" in splits else None
    return train, test, splits["train"]


def file_stats(files: list[Path]) -> dict[str, Any]:
    """Rows, tokens, trained tokens and a SHA-256 of the files' bytes, read a batch at a time."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows = tokens = trained = 0
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        parquet = pq.ParquetFile(path)
        rows += parquet.metadata.num_rows
        for batch in parquet.iter_batches(batch_size=8192, columns=["labels"]):
            values = batch.column(0).flatten()
            tokens += len(values)
            trained += int(pc.sum(pc.not_equal(values, IGNORE_INDEX)).as_py() or 0)
    return {"rows": rows, "tokens": tokens, "trained_tokens": trained, "content_sha256": digest.hexdigest()}


def epoch_steps(cfg: TrainConfig, *, rows: int, processes: int) -> int:
    """Optimizer steps for `num_train_epochs` over `rows` streamed rows (a stream has no length
    for the Trainer to count): `ceil(epochs x rows / global batch)`."""
    global_batch = processes * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
    return max(1, math.ceil(cfg.num_train_epochs * rows / global_batch))
