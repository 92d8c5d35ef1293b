"""`ftdata train OUT --streaming` over a sharded Parquet build: memory flat across 10x the rows,
the seeded shuffle, and resume from the right place in the stream.

The sharded builds have engine=ray's layout (`OUT/data/part-NNNNN.parquet` + build.json): one
real `ftdata build --output-format parquet` (the CLI app, in the test's process) of ~13k rows of 256 tokens
(~30 MB of tokens), its train file as the one shard of the 1x build and as each of the ten shards of the 10x one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ftdata.build import export

from ftdata.errors import ConfigError
from ftdata.train import TrainConfig, train

pytest.importorskip("torch")
BIN = Path(sys.executable).parent
RSS_RATIO = 1.2  # peak RSS at 10x the rows over the peak at 1x
WORDS = "alpha beta gamma delta river stone cloud maple ember quartz violet harbor lantern meadow".split()


def _ftdata() -> str:
    path = shutil.which("ftdata", path=str(BIN))
    if path is None:
        pytest.skip("needs the ftdata script next to the interpreter")
    return path


def _records(n: int, *, words: int, seed: int = 0) -> list[dict[str, str]]:
    """`n` records of `words` words of instruction and twice that of answer."""
    rng = random.Random(seed)
    text = lambda k: " ".join(rng.choice(WORDS) for _ in range(k))  # noqa: E731
    return [{"instruction": text(words), "input": "", "output": text(2 * words)} for _ in range(n)]


def _build(folder: Path, records: list[dict[str, str]], *extra: str) -> Path:
    source = folder / "records.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    out = folder / "built"
    from typer.testing import CliRunner

    from ftdata.cli.app import app

    # `ftdata build` run by the CLI app in this process: one start of torch and ftdata fewer than a subprocess
    result = CliRunner().invoke(app, ["build", str(source), "-o", str(out), "--output-format", "parquet", *extra])
    assert result.exit_code == 0, result.output[-3000:] + repr(result.exception)
    return out


def _sharded(built: Path, target: Path, *, shards: int) -> Path:
    """engine=ray's layout: `target/data/part-NNNNN.parquet`, each a copy of the build's train file."""
    (target / "data").mkdir(parents=True)
    for n in range(shards):
        shutil.copyfile(built / "train.parquet", target / "data" / f"part-{n:05d}.parquet")
    manifest = json.loads((built / "build.json").read_text(encoding="utf-8"))
    manifest["output"]["files"] = ["data"]
    rejects = manifest["output"]["rejects"]
    shutil.copyfile(built / rejects, target / rejects)
    manifest["output"].update(export.disk_facts(target, ["data", rejects]))  # what build.json records of them
    (target / "build.json").write_text(json.dumps(manifest), encoding="utf-8")
    return target


@pytest.fixture(scope="module")
def sharded(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    root = tmp_path_factory.mktemp("sharded")
    built = _build(root, _records(13_000, words=60), "--max-length", "256", "--template", "alpaca")
    return {n: _sharded(built, root / f"x{n}", shards=n) for n in (1, 10)}


def test_streaming_memory_stays_flat_across_10x_the_rows(sharded, tiny_model_dir: Path, tmp_path: Path) -> None:
    peaks, records = {}, {}
    for n, folder in sharded.items():
        command = [
            _ftdata(), "train", str(folder), "--streaming", "--shuffle-buffer", "256", "--model", str(tiny_model_dir),
            "--quantization", "none", "--max-steps", "3", "--per-device-train-batch-size", "1", "--save-strategy", "no",
            "--output-dir", str(tmp_path), "--run-name", f"x{n}",
        ]  # fmt: skip
        proc = subprocess.run(command, capture_output=True, text=True, timeout=600, env=dict(os.environ))
        assert proc.returncode == 0, proc.stderr[-3000:]
        records[n] = json.loads((tmp_path / f"x{n}" / "run.json").read_text())
        peaks[n] = records[n]["metrics"]["peak_memory_bytes"]  # the process's peak RSS (ru_maxrss)
    one, ten = (records[n]["data"]["splits"]["train"] for n in (1, 10))
    assert one["streamed"] and ten["rows"] == 10 * one["rows"] > 10_000 and ten["tokens"] == 10 * one["tokens"]
    assert ten["tokens"] * 9 > 200e6  # int32 ids and labels + int8 mask: the 10x tokens alone are > 200 MB
    assert peaks[10] <= RSS_RATIO * peaks[1], {n: round(p / 2**20) for n, p in peaks.items()}


@pytest.fixture(scope="module")
def small_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory.mktemp("small"), _records(40, words=8, seed=1), "--max-length", "96", "--test-size", "4")


def _cfg(model: Path, data: Path, out: Path, name: str, **extra) -> TrainConfig:
    return TrainConfig(
        model=str(model), data=str(data), streaming=True, shuffle_buffer=16, quantization="none", lora_dropout=0.0,
        max_steps=4, learning_rate=5e-3, lr_scheduler_type="constant", warmup_steps=0, per_device_train_batch_size=4,
        logging_steps=1, save_steps=2, save_total_limit=None, eval_strategy="no", output_dir=str(out), run_name=name,
        **extra,
    )  # fmt: skip


def _losses(run_dir: Path) -> dict[int, float]:
    history = json.loads((run_dir / "run.json").read_text())["log_history"]
    return {e["step"]: e["loss"] for e in history if "loss" in e}


def test_streaming_resumes_where_it_stopped(small_build, tiny_model_dir, tmp_path):
    straight = train(_cfg(tiny_model_dir, small_build, tmp_path, "straight"))
    record = json.loads((straight.run_dir / "run.json").read_text())
    assert record["data"]["splits"]["train"]["streamed"] and record["data"]["splits"]["test"]["rows"] == 4
    split = record["data"]["splits"]["train"]
    assert straight.metrics["tokens_seen"] == round(split["tokens"] * 16 / split["rows"])  # 4 steps x 4 rows

    # The same run stopped after checkpoint-2, then resumed: steps 3-4 see the same rows.
    stopped = tmp_path / "stopped"
    shutil.copytree(straight.run_dir, stopped)
    for later in ("checkpoint-4", "adapter"):
        shutil.rmtree(stopped / later)
    from ftdata.train import resume_config

    train(resume_config(stopped), resume=stopped)
    expected, resumed = _losses(straight.run_dir), _losses(stopped)
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert resumed[step] == pytest.approx(expected[step], abs=1e-5), step



def test_the_stream_is_shuffled_by_the_seed_through_a_buffer(small_build: Path) -> None:
    from ftdata.train.stream import stream_build

    def first(seed: int, buffer: int) -> list[list[int]]:
        cfg = TrainConfig(data=str(small_build), streaming=True, shuffle_buffer=buffer, data_options={"seed": seed})
        rows, _, _ = stream_build(small_build, cfg)
        return [row["input_ids"] for row in rows]

    stored = datasets_rows(small_build)
    assert first(42, 16) == first(42, 16)  # the same seed, the same order
    assert first(7, 16) != first(42, 16)
    assert sorted(first(42, 16)) == sorted(stored)  # every row once per epoch, reordered
    assert first(42, 16) != stored and first(42, 1) == stored  # a buffer of one row keeps the file order


def datasets_rows(build: Path) -> list[list[int]]:
    import pyarrow.parquet as pq

    return pq.read_table(build / "train.parquet", columns=["input_ids"]).column(0).to_pylist()


def test_streaming_needs_a_parquet_build(tmp_path: Path, small_build: Path, smol_tok) -> None:
    from ftdata.train.data import load_splits

    with pytest.raises(ConfigError, match=r"is not one: run `ftdata build DATA -o OUT --output-format parquet`"):
        load_splits(TrainConfig(data=str(tmp_path), streaming=True), smol_tok)
    manifest = json.loads((small_build / "build.json").read_text())
    arrow = tmp_path / "arrow"
    (arrow / "dataset").mkdir(parents=True)  # what build.json lists is there (load checks it)
    (arrow / "build.json").write_text(json.dumps({**manifest, "output": {"format": "arrow", "files": ["dataset"]}}))
    with pytest.raises(ConfigError, match=r"was built with --output-format arrow; streaming reads Parquet"):
        load_splits(TrainConfig(data=str(arrow), streaming=True), smol_tok)
    with pytest.raises(ConfigError, match="group_by_length and streaming exclude each other"):
        TrainConfig(data="x", streaming=True, group_by_length=True)
