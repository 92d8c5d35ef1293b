"""engine=ray gives what engine=local gives, on a local Ray cluster started (and stopped) here.

One cluster of 2 CPUs for the module: starting one takes seconds. The build joins it, as a
build on a real cluster joins the one at `ray_address`. `prepare(..., engine="ray")` runs
batches as Ray tasks; `ftdata build SHARDS --engine ray -o OUT` runs a Ray Data job over
the shard files and writes sharded Parquet.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from support import DATASETS, TOKENIZERS
import ftdata
from ftdata import prepare
from ftdata.cli.app import app
from ftdata.errors import ConfigError, RecordError

ray = pytest.importorskip("ray")

ALPACA = DATASETS / "alpaca" / "llamafactory_alpaca_en_demo.json"
SHAREGPT = DATASETS / "sharegpt" / "fastchat_dummy_conversation.json"
GLAIVE = DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json"


@pytest.fixture(scope="module", autouse=True)
def cluster():
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def run(source: Any, tmp_path: Path, engine: str, **options: Any) -> tuple[dict, str, dict]:
    """(rows, rejects file text, report) of one build."""
    rejects = tmp_path / f"{engine}.jsonl"
    result = prepare(source, engine=engine, num_workers=2, rejects_path=str(rejects), **options)
    report = result.report.to_dict()
    for volatile in ("seconds", "rejects_path"):
        report.pop(volatile)
    dataset = result.dataset
    rows = {name: split.to_dict() for name, split in dataset.items()} if hasattr(dataset, "items") else dataset.to_dict()
    return rows, rejects.read_text(encoding="utf-8"), report


@pytest.mark.parametrize(
    ("source", "options"),
    [
        (ALPACA, dict(template="alpaca", max_length=192, limit=300, batch_size=32)),
        (ALPACA, dict(template="alpaca", max_length=192, limit=300, batch_size=32, packing=True, test_size=0.1)),
        (SHAREGPT, dict(max_length=256, batch_size=8, packing=True)),
    ],
    ids=["alpaca", "alpaca-packed-split", "sharegpt-packed"],
)
def test_ray_equals_local_on_real_files(tmp_path: Path, smol, source: Path, options: dict) -> None:
    local = run(source, tmp_path, "local", tokenizer=smol, **options)
    assert run(source, tmp_path, "ray", tokenizer=smol, **options) == local
    rows, rejects, report = local
    assert report["sequences"] > 0 and len(rejects.splitlines()) == sum(report["cut"].values()) + sum(report["rejected"].values())


def test_ray_splits_the_records_local_splits(tmp_path: Path) -> None:
    """history=inference on the real glaive tool-call chats with TRL's qwen3 template: the same rows (a record's
    rows on one side of the held-out split) and the same split counts on Ray as in process."""
    options = dict(tokenizer=str(TOKENIZERS / "qwen2.5-instruct"), chat_template="qwen3", max_length=1024, limit=40,
                   batch_size=8, on_error="skip", test_size=0.2)  # fmt: skip
    local = run(GLAIVE, tmp_path, "local", **options)
    assert run(GLAIVE, tmp_path, "ray", **options) == local
    report = local[2]
    assert report["split_records"] > 0 and report["sequences"] == report["records"] + sum(report["added_rows"].values()) - sum(report["rejected"].values())


def test_a_bad_record_raises_the_same_error_under_ray(tmp_path: Path, char_tok) -> None:
    records = [{"instruction": "Say hi.", "output": "Hi."}] * 3 + [{"question": "2+2?"}]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    errors = {}
    for engine in ("local", "ray"):
        with pytest.raises(RecordError) as caught:
            prepare(data, tokenizer=char_tok, template="alpaca", batch_size=2, engine=engine)
        errors[engine] = (str(caught.value), caught.value.location, caught.value.field)
    assert errors["ray"] == errors["local"]
    assert errors["local"][0].startswith(f"{data}:4: ")


def test_cli_stats_under_ray_counts_what_local_counts() -> None:
    runner = CliRunner()
    counts = {}
    for engine in ("local", "ray"):
        args = [str(ALPACA), "--template", "alpaca", "--limit", "200", "--batch-size", "50", "--engine", engine]
        stats = runner.invoke(app, ["stats", *args, "--json"])
        assert stats.exit_code == 0, stats.output
        counts[engine] = json.loads(stats.stdout)
    assert counts["ray"] == counts["local"]


def write_shards(folder: Path, records: list[dict], formats: list[str]) -> Path:
    """`records` dealt round-robin into one shard file per format: part-0.json, part-1.jsonl, ..."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir()
    for i, fmt in enumerate(formats):
        part, path = records[i :: len(formats)], folder / f"part-{i}.{fmt}"
        if fmt == "json":
            path.write_text(json.dumps(part), encoding="utf-8")
        elif fmt == "jsonl":
            path.write_text("".join(json.dumps(r) + "\n" for r in part), encoding="utf-8")
        elif fmt == "parquet":
            pq.write_table(pa.Table.from_pylist(part), path)
        else:
            with path.open("w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=list(part[0]))
                writer.writeheader()
                writer.writerows(part)
    return folder


def build_cli(data: Path, out: Path, engine: str, *args: str) -> Any:
    return CliRunner().invoke(app, ["build", str(data), "-o", str(out), "--engine", engine, "--no-cache", "--no-color", *args])


def sequences(dataset: Any) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every sequence as (input_ids, labels), packed rows cut at their seq_lengths; sorted."""
    out = []
    for row in dataset:
        start = 0
        for n in row.get("seq_lengths") or [len(row["input_ids"])]:
            out.append((tuple(row["input_ids"][start : start + n]), tuple(row["labels"][start : start + n])))
            start += n
    return sorted(out)


def _records(path: Path, n: int) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))[:n]


@pytest.mark.parametrize(
    ("shards", "args"),
    [
        ((_records(ALPACA, 240), ["json", "jsonl", "parquet", "csv"]), ["--template", "alpaca", "--max-length", "192"]),
        ((_records(ALPACA, 150) + _records(SHAREGPT, 60), ["jsonl", "jsonl", "json"]), ["--max-length", "256", "--packing"]),
    ],
    ids=["alpaca-json-jsonl-parquet-csv", "alpaca-sharegpt-packed"],
)
def test_sharded_ray_build_equals_local(tmp_path: Path, shards: tuple, args: list[str]) -> None:
    data = write_shards(tmp_path / "shards", *shards)
    built = {}
    for engine in ("local", "ray"):
        result = build_cli(data, tmp_path / engine, engine, *args)
        assert result.exit_code == 0, result.output
        built[engine] = ftdata.load(tmp_path / engine)
    local, ray_ = built["local"], built["ray"]
    # the same sequences (labels included) and the same counts; packing differs only in how rows are filled
    assert sequences(ray_.dataset) == sequences(local.dataset)
    volatile = {"seconds", "rejects_path", "rows", "splits", "packing"}
    assert {k: v for k, v in ray_.report.to_dict().items() if k not in volatile} == {
        k: v for k, v in local.report.to_dict().items() if k not in volatile
    }
    assert ray_.report.sequences == len(sequences(local.dataset)) and ray_.report.rejected
    if "--packing" in args:
        assert ray_.report.packing["train"].trained_tokens == local.report.packing["train"].trained_tokens
        assert ray_.report.rows == len(ray_.dataset) and ray_.report.packing["train"].fill_ratio > 0.8
    else:
        assert ray_.report.rows == local.report.rows
    # the rejects shards, in shard order, are the local rejects file line for line
    shards_text = "".join(p.read_text(encoding="utf-8") for p in sorted((tmp_path / "ray" / "rejects").glob("*.jsonl")))
    assert shards_text == (tmp_path / "local" / "rejects.jsonl").read_text(encoding="utf-8")
    # plain Parquet shards: datasets reads them without ftdata
    import datasets

    parquet = datasets.load_dataset("parquet", data_files=str(tmp_path / "ray" / "data" / "*.parquet"), split="train")
    assert sequences(parquet) == sequences(local.dataset)


def test_a_ray_build_leaves_no_scratch_in_its_workers_tmpdir(tmp_path: Path) -> None:
    """Ray ends its workers without their exit handlers, and a joined cluster's workers outlive the
    build: each shard's scratch is dropped when the shard is done, so no worker holds an
    `$TMPDIR/ftdata-<pid>-*` folder after it. Before: each worker kept one for its life and left it there."""
    import re
    import tempfile

    from ftdata.guard.reaper import descendants

    data = write_shards(tmp_path / "shards", _records(ALPACA, 60), ["jsonl", "json", "csv"])
    result = build_cli(data, tmp_path / "out", "ray", "--template", "alpaca", "--max-length", "192")
    assert result.exit_code == 0, result.output
    cluster = {pid for pid, _ in descendants(os.getpid())}  # the workers among them
    named = (re.fullmatch(r"ftdata-(\d+)-\w{8}", p.name) for p in Path(tempfile.gettempdir()).iterdir())
    assert cluster and [m.group(0) for m in named if m and int(m.group(1)) in cluster] == []


def test_a_bad_record_in_a_shard_stops_the_ray_build_with_the_local_error(tmp_path: Path) -> None:
    records = [{"instruction": f"Say {i}.", "output": f"{i}."} for i in range(6)]
    data = write_shards(tmp_path / "shards", records, ["jsonl", "jsonl"])
    with (data / "part-1.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"question": "2+2?"}) + "\n")
    results = {engine: build_cli(data, tmp_path / engine, engine, "--template", "alpaca") for engine in ("local", "ray")}
    assert results["ray"].exit_code == results["local"].exit_code == 4
    assert results["ray"].output == results["local"].output
    assert results["ray"].output.startswith(f"error: {data / 'part-1.jsonl'}:4: field 'output': no response field")
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == [".ftdata-output.json", ".ftdata.lock"]  # nothing published


def test_ray_build_refuses_what_needs_the_whole_corpus(tmp_path: Path) -> None:
    result = build_cli(ALPACA, tmp_path / "out", "ray", "--template", "alpaca", "--test-size", "0.1")
    assert result.exit_code == 2
    assert result.output == (
        "error: --test-size 0.1 needs the whole corpus at once, which --engine ray does not do; "
        "split at training time (datasets' train_test_split), or use --engine local or processes\n"
    )


def test_a_local_cluster_under_a_long_tmpdir_is_one_line_that_names_ray_tmpdir(tmp_path: Path) -> None:
    """Ray puts a local cluster's sockets ~70 bytes under RAY_TMPDIR, else TMPDIR: under an 80-byte TMPDIR its start
    fails (a Unix socket's path takes 107 bytes), and the build says so in one line with the fix."""
    import subprocess

    temp = tmp_path / ("t" * 80)
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_TMPDIR"} | {"TMPDIR": str(temp), "RAY_ADDRESS": ""}
    done = subprocess.run(
        [sys.executable, "-m", "ftdata", "build", str(ALPACA), "-o", str(tmp_path / "out"), "--engine", "ray", "--no-cache"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and last.startswith("error: --engine ray could not start or reach a Ray cluster at this machine: ")
    assert "AF_UNIX path length cannot exceed 107 bytes" in last and last.endswith("; set RAY_TMPDIR to a short folder (such as /tmp)")
    assert not (tmp_path / "out" / "build.json").exists()


def test_engine_ray_without_ray_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch, char_tok) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(ConfigError, match=r"^engine=ray needs Ray: pip install 'ftdata\[ray\]'"):
        prepare([{"instruction": "a", "output": "b"}], tokenizer=char_tok, engine="ray")


def _pid(spec: int, batch: list[int]) -> tuple[int, int]:
    import os

    return os.getpid(), sum(batch) + spec


def test_batches_run_in_ray_workers_and_come_back_in_order() -> None:
    import os

    from ftdata.run.executors import RayExecutor

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module
    results = list(RayExecutor(2).map(_pid, 100, [[i, i] for i in range(8)]))
    assert [s for _, s in results] == [100 + 2 * i for i in range(8)]
    assert os.getpid() not in {pid for pid, _ in results}


def test_a_worker_builds_each_build_with_its_own_stage_even_at_the_last_jobs_address(smol) -> None:
    """A Ray worker keeps one build's job (`ray_spec`) and its compiled stage. The next build's job
    may be unpickled at the address of the last one, which `ray_spec` just dropped: the stage must
    follow the build, not the address (CI once built a shard of a chat-template build with the
    alpaca template of the build before it). Simulated here with one object whose options change."""
    from ftdata.options import BuildOptions
    from ftdata.build import shards

    job = shards._ShardJob(BuildOptions.from_mapping({"template": "alpaca"}), smol, sidecar="unused")
    first = shards._stage("first-build", job)
    assert shards._stage("first-build", job) is first  # compiled once per build
    object.__setattr__(job, "options", BuildOptions.from_mapping({"max_length": 256}))  # the same id, the next build
    second = shards._stage("second-build", job)
    assert (first.renderer.name, second.renderer.name) == ("alpaca", "chat template")


def test_a_shard_report_that_never_reached_out_is_one_line(tmp_path: Path) -> None:
    """A worker on a node that does not mount OUT writes its counts elsewhere: say so, no traceback."""
    from ftdata.errors import FtdataError
    from ftdata.build.shards import _read_report

    from ftdata.io.store import filesystem

    (tmp_path / "reports").mkdir()
    with pytest.raises(FtdataError) as raised:
        _read_report(filesystem(str(tmp_path)), 3, shared=str(tmp_path))
    message = str(raised.value)
    assert message.startswith(f"shard 3's counts never reached {tmp_path / 'reports'}: ")
    assert message.endswith(
        "-o OUT must be a folder every node mounts at the same path (NFS, a shared volume) "
        "or a URI every node reaches (s3://bucket/prefix)"
    )
    assert "\n" not in message


def test_a_ray_build_writes_to_a_uri_what_it_writes_to_a_folder(tmp_path: Path) -> None:
    """-o s3://... works the same way; file:// is the store a test can reach (same pyarrow code path)."""
    data = write_shards(tmp_path / "shards", _records(ALPACA, 60) + [{"instruction": "x", "output": " "}], ["jsonl", "json"])
    args = ["--template", "alpaca", "--max-length", "192", "--packing"]
    folder = build_cli(data, tmp_path / "folder", "ray", *args)
    uri = f"file://{tmp_path}/bucket/run-1"
    result = CliRunner().invoke(app, ["build", str(data), "-o", uri, "--engine", "ray", "--no-color", *args])
    assert folder.exit_code == result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "bucket" / "run-1").iterdir())
    assert written == ["build.json", "data", "rejects"]  # no lock, no owner file, no sidecar left behind
    assert f"wrote {uri}/data, {uri}/rejects, {uri}/build.json" in result.output
    assert f'datasets.load_dataset("parquet", data_files="{uri}/data/*.parquet")' in result.output
    in_store, in_folder = (ftdata.load(tmp_path / where) for where in ("bucket/run-1", "folder"))
    assert sequences(in_store.dataset) == sequences(in_folder.dataset)
    volatile = {"seconds", "rejects_path"}
    assert {k: v for k, v in in_store.report.to_dict().items() if k not in volatile} == {
        k: v for k, v in in_folder.report.to_dict().items() if k not in volatile
    }
    assert in_store.report.rejected["empty_response"] == 1 and in_store.report.rows == len(in_store.dataset)
    for name in ("part-00000.jsonl", "part-00001.jsonl"):
        stored = tmp_path / "bucket" / "run-1" / "rejects" / name
        assert stored.read_bytes() == (tmp_path / "folder" / "rejects" / name).read_bytes()


def test_a_uri_out_must_be_a_new_or_empty_prefix(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "notes.txt").write_text("mine", encoding="utf-8")
    result = build_cli(ALPACA, f"file://{tmp_path}/run", "ray", "--template", "alpaca")  # type: ignore[arg-type]
    assert result.exit_code == 2
    assert result.output == (
        f"error: output 'file://{tmp_path}/run' already holds notes.txt; ftdata writes a URI OUT only into a new "
        "or empty prefix (it can neither lock nor rename there): give a new one\n"
    )
    assert (tmp_path / "run" / "notes.txt").read_text(encoding="utf-8") == "mine"


def test_a_failed_ray_build_leaves_the_uri_prefix_as_it_found_it(tmp_path: Path) -> None:
    records = [{"instruction": f"Say {i}.", "output": f"{i}."} for i in range(6)]
    data = write_shards(tmp_path / "shards", records, ["jsonl", "jsonl"])
    with (data / "part-1.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps({"question": "2+2?"}) + "\n")
    result = build_cli(data, f"file://{tmp_path}/run", "ray", "--template", "alpaca")  # type: ignore[arg-type]
    assert result.exit_code == 4
    assert result.output.startswith(f"error: {data / 'part-1.jsonl'}:4: field 'output': no response field")
    assert not (tmp_path / "run").exists()  # a new prefix: gone again, not left empty


def test_only_engine_ray_writes_to_a_uri(tmp_path: Path) -> None:
    result = build_cli(ALPACA, f"file://{tmp_path}/run", "local", "--template", "alpaca")  # type: ignore[arg-type]
    assert result.exit_code == 2
    assert result.output == (
        f"error: -o file://{tmp_path}/run: only --engine ray writes to a URI (every node writes its shards there); "
        "add --engine ray, or give a local folder\n"
    )
    assert not (tmp_path / "run").exists()


def test_a_uri_pyarrow_cannot_open_is_one_line(tmp_path: Path) -> None:
    result = build_cli(ALPACA, "nosuchfs://bucket/run", "ray", "--template", "alpaca")  # type: ignore[arg-type]
    assert result.exit_code == 2
    assert result.output.startswith("error: cannot open 'nosuchfs://bucket/run': ")
    assert result.output.endswith(
        "; give a URI pyarrow's filesystems reach (s3://bucket/prefix, gs://bucket/prefix, file:///absolute/path), "
        "with the store's credentials in the environment\n"
    )
    assert result.output.count("\n") == 1


def test_a_relative_out_folder_works_under_ray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers resolve paths against their own working folder: OUT and the sidecar reach them absolute."""
    data = write_shards(tmp_path / "shards", [{"instruction": f"Say {i}.", "output": f"{i}."} for i in range(6)], ["jsonl", "json"])
    monkeypatch.chdir(tmp_path)
    result = build_cli(Path("shards"), Path("out"), "ray", "--template", "alpaca", "--rejects-path", "all-rejects.jsonl")
    assert result.exit_code == 0, result.output
    assert "wrote out/data, all-rejects.jsonl, out/build.json" in result.output
    assert ftdata.load(tmp_path / "out").report.records == 6
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [".ftdata-output.json", ".ftdata.lock", "build.json", "data", "rejects"]
    assert (tmp_path / "all-rejects.jsonl").read_text(encoding="utf-8") == ""


def test_a_recipe_is_the_same_mixture_under_ray(tmp_path: Path) -> None:
    """The issue's three shared sources (Alpaca, glaive tool calls, Lamini), deduplicated and mixed by
    trained tokens: Ray tasks give the mixture local gives."""
    import yaml

    from support import TOKENIZERS

    glaive = DATASETS / "sharegpt" / "llamafactory_glaive_toolcall_en_demo.json"
    lamini = DATASETS / "lamini" / "lamini_docs_nested.jsonl"
    sources = [{"data": str(ALPACA), "weight": 0.5}, {"data": str(glaive), "weight": 0.3, "epochs_max": 3},
               {"data": str(lamini), "weight": 0.2, "template": "question-answer"}]  # fmt: skip
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"tokenizer": str(TOKENIZERS / "qwen2.5-instruct"), "max_length": 1024, "on_error": "skip",
                                      "dedup": "exact", "mix_by": "trained_tokens", "sources": sources}))  # fmt: skip
    local = ftdata.build(recipe, rejects_path=str(tmp_path / "l.jsonl"))
    on_ray = ftdata.build(recipe, engine="ray", num_workers=2, batch_size=64, rejects_path=str(tmp_path / "r.jsonl"))
    assert local.dataset["input_ids"] == on_ray.dataset["input_ids"]
    assert local.report.mix == on_ray.report.mix
    assert (tmp_path / "l.jsonl").read_text() == (tmp_path / "r.jsonl").read_text()


def test_engine_ray_means_one_thing_from_python_and_the_cli(tmp_path: Path) -> None:
    """`ftdata.build(..., out, engine="ray")` writes the shards the CLI writes; with output_format="arrow"
    the rows come back from the Ray tasks and are written here, the same rows as engine=local."""
    data = write_shards(tmp_path / "shards", _records(ALPACA, 90), ["jsonl", "json"])
    sharded = ftdata.build(data, tmp_path / "sharded", template="alpaca", max_length=192, engine="ray", num_workers=2)
    assert (sharded.dataset, sharded.files, sharded.output_format) == (None, ["data"], "parquet")
    assert sorted(p.name for p in (tmp_path / "sharded" / "data").glob("*.parquet"))
    gathered = ftdata.build(data, tmp_path / "gathered", template="alpaca", max_length=192, engine="ray", num_workers=2,
                            output_format="arrow", test_size=0.1)  # fmt: skip
    local = ftdata.build(data, tmp_path / "local", template="alpaca", max_length=192, output_format="arrow", test_size=0.1)
    assert gathered.files == ["dataset"] and gathered.dataset["train"]["input_ids"] == local.dataset["train"]["input_ids"]
    assert sequences(ftdata.load(tmp_path / "sharded").dataset) == sequences(_all(local.dataset))


def _all(dataset: Any) -> Any:
    import datasets

    return datasets.concatenate_datasets([dataset["train"], dataset["test"]])


def test_a_recipe_on_ray_writes_the_shards_layout_to_a_folder_or_a_uri(tmp_path: Path) -> None:
    """engine=ray to OUT means Parquet shards for a recipe too (written by the driver, which mixes);
    ftdata.load reads them back as the mixture built in memory."""
    import yaml

    sources = [{"data": str(ALPACA), "weight": 1}, {"data": str(SHAREGPT), "weight": 1, "epochs_max": 4}]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"max_length": 512, "on_error": "skip", "mix_by": "records", "total": 300, "sources": sources}))
    in_memory = ftdata.build(recipe)
    for out in (tmp_path / "folder", f"file://{tmp_path / 'bucket' / 'run'}"):
        result = ftdata.build(recipe, out, engine="ray", num_workers=2)
        assert (result.files, result.output_format) == (["data"], "parquet")
        local = Path(str(out).removeprefix("file://"))
        assert {"build.json", "data", "rejects.jsonl"} <= {p.name for p in local.iterdir()}
        assert ftdata.load(local).dataset["input_ids"] == in_memory.dataset["input_ids"]
    split = tmp_path / "split.yaml"
    split.write_text(yaml.safe_dump({"max_length": 512, "test_size": 0.1, "sources": sources}))
    with pytest.raises(ConfigError, match=r"a recipe's Parquet shards \(engine=ray\) hold one split"):
        ftdata.build(split, tmp_path / "split", engine="ray")


def _columns(built: Any) -> dict[str, tuple[Any, list]]:
    """Each column of a built prompt set: (its Arrow type, its values)."""
    table = built.dataset.data
    return {name: (table.column(name).type, table.column(name).to_pylist()) for name in table.column_names}


STRUCT = "struct<index: int64, source: string>"


@pytest.mark.parametrize(
    ("infos", "args", "kind"),
    [
        ([{}, {"index": 1, "source": "gsm8k"}, {}, {"index": 3, "source": "math"}, {}, {}], [], STRUCT),
        ([{}, None, {"index": 2, "source": "gsm8k"}, {}, None, {"index": 5}], ["--reward-columns", "answer=string,info=struct?"], STRUCT),
        ([{"index": 0}, {"source": "gsm8k"}, {"index": 2}, {"source": "math"}, {"index": 4}, {}], [], STRUCT),
        ([{"index": 0}, {"index": "one"}, {"index": 2}, {"index": "three"}, {"index": 4}, {"index": "five"}], [], "string"),
    ],
    ids=["empty-shard-and-keyed-shard", "empty-null-and-keyed-shards", "a-key-per-shard", "json-text-across-shards"],
)
def test_a_prompt_set_keeps_its_object_column_the_struct_local_builds(tmp_path: Path, infos: list, args: list[str], kind: str) -> None:
    """verifiers' `info` ({} in one record, {index, source} in another) dealt into shards: one shard sees only {}
    (struct<>, which Parquet cannot write alone), one only null (a null column), one the keys, or each shard a
    key of its own. The shards' types unify as the local build's batches do: the same struct, the same values,
    column by column; where Arrow cannot unify two shards' types (an int and a string in one key), JSON text, noted
    once, as local. Before: the ray build failed ("Cannot write struct type 'info' with no child field to Parquet"),
    or wrote Parquet files of two schemas that neither ftdata.load nor datasets could read as one."""
    records = [{"question": f"What is {i} + {i}?", "answer": str(2 * i), "info": info} for i, info in enumerate(infos)]
    n = 3 if None in infos else 2
    data = write_shards(tmp_path / "shards", records, ["jsonl"] * n)
    built = {}
    for engine in ("local", "ray"):
        result = build_cli(data, tmp_path / engine, engine, "--task", "prompts", "--batch-size", "2", *args)
        assert result.exit_code == 0, result.output
        built[engine] = ftdata.load(tmp_path / engine)
    local, on_ray = _columns(built["local"]), _columns(built["ray"])
    assert str(local["info"][0]) == kind
    if kind == STRUCT:  # Arrow's own unification of the records' values, in the order the shards deal them
        import pyarrow as pa

        dealt = [info for shard in range(n) for info in infos[shard::n]]
        assert local["info"][1] == pa.array(dealt).to_pylist()
    assert list(on_ray) == list(local)
    for name in local:
        assert on_ray[name] == local[name], name
    assert built["ray"].dataset.features == built["local"].dataset.features
    assert built["ray"].report.notes == built["local"].report.notes


def test_an_object_column_that_is_empty_in_every_record_is_refused_in_one_line(tmp_path: Path) -> None:
    """{} in every record is struct<> (the local build's Arrow dataset keeps it); Parquet cannot store it. Before:
    a Ray traceback line ("a Ray worker failed: ArrowNotImplementedError: Cannot write struct type 'info' ...")."""
    records = [{"question": f"What is {i} + {i}?", "answer": str(2 * i), "info": {}} for i in range(4)]
    data = write_shards(tmp_path / "shards", records, ["jsonl", "jsonl"])
    result = build_cli(data, tmp_path / "ray", "ray", "--task", "prompts")
    assert result.exit_code == 2
    assert result.output == (
        "error: column info is {} in every record (struct<>): Parquet cannot store a struct with no field; write "
        "Arrow (--output-format arrow, --engine local or processes), or leave the column out (--reward-columns info=skip)\n"
    )
