"""`ftdata train OUT` in two processes on CPU (gloo), against one process with the same global batch.

The session's tiny Llama (2 layers, hidden 64, the SmolLM2 tokenizer: `tiny_model_dir`), plain LoRA (no
quantization), rows of ~43 tokens built by the bundled tokenizer, 4 steps: one run of one process (4 rows a step; the
CLI app in the test's own process), one `torchrun --nproc_per_node 2` run (2 rows a step on each rank), and an `accelerate launch --multi_gpu
--num_processes 2` resume of the second from its checkpoint-2. About 35 s on 2 quiet cores (the bundled 135M model
took 80: most of a launch is importing torch and TRL, and the 135M steps); in the default suite so CI runs it.

A `sitecustomize` hook on each launched process's path marks that the process started and whether it
ever built a tokenizing stage (`ftdata.run.stage.Stage`): training on a build folder must not (the one-process run
counts its stages the same way, in this process).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ftdata
from ftdata.errors import ConfigError

pytest.importorskip("torch")
BIN = Path(sys.executable).parent

# The two runs see the same rows in the same order and normalise the loss by the tokens of the
# whole global batch, so they differ only in float32 summation order (the gradient all-reduce
# against one 4-row matmul). 1e-4 leaves a wide margin and is still far below the loss changes
# between steps (~0.1 each on the tiny model at this learning rate), where wrong sharding would show.
LOSS_TOLERANCE = 1e-4
TRAINED = 0.2  # the loss falls by more than this over the 4 steps (10.91 -> 10.56 measured): not two flat lines
# A guard against a hang, not a speed check: each launch takes ~30 s on 2 quiet cores, but on a
# loaded machine (the full suite beside other work, load 10) one took over 400 s.
TIMEOUT = 1200
# Dropout masks are drawn per process and cannot match; a constant LR lets max_steps stay as is.
TRAIN_FLAGS = (
    "--quantization", "none", "--lora-dropout", "0", "--max-steps", "4", "--learning-rate", "1e-2",
    "--lr-scheduler-type", "constant", "--warmup-steps", "0", "--logging-steps", "1", "--save-steps", "2",
    "--save-total-limit", "3",
)  # fmt: skip

HOOK = textwrap.dedent(
    """
    import os, pathlib
    marks = pathlib.Path(os.environ["FTDATA_TEST_MARKS"])
    rank = os.environ.get("RANK", "main")  # the launcher itself is "main" too; it builds nothing
    (marks / f"started-{rank}").touch()
    import ftdata.run.stage

    _init = ftdata.run.stage.Stage.__init__

    def _marked(self, *args, **kwargs):
        (marks / f"tokenized-{rank}").touch()
        _init(self, *args, **kwargs)

    ftdata.run.stage.Stage.__init__ = _marked
    """
)


def _script(name: str) -> str:
    path = shutil.which(name, path=str(BIN))
    if path is None:
        pytest.skip(f"needs the {name} script next to the interpreter")
    return path


class Launcher:
    """Runs `ftdata` commands in fresh processes with the marking hook; keeps their outputs."""

    def __init__(self, root: Path):
        self.root = root
        (root / "hook").mkdir()
        (root / "hook" / "sitecustomize.py").write_text(HOOK, encoding="utf-8")

    def run(self, name: str, launcher: list[str], args: list[str]) -> subprocess.CompletedProcess:
        marks = self.root / "marks" / name
        marks.mkdir(parents=True)
        path = os.pathsep.join(p for p in (str(self.root / "hook"), os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, "PYTHONPATH": path, "FTDATA_TEST_MARKS": str(marks)}
        proc = subprocess.run([*launcher, _script("ftdata"), *args], capture_output=True, text=True, timeout=TIMEOUT, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    def marks(self, name: str) -> set[str]:
        return {p.name for p in (self.root / "marks" / name).iterdir()}


def _launch_all(root: Path, model: Path):
    """Build, then the one-process run, the torchrun run, and the accelerate resume, all training `model`."""
    launch = Launcher(root)
    data = root / "qa.json"
    pairs = [("What colour is the sky?", "The sky is blue."), ("Name a fruit.", "An apple is a fruit."),
             ("What do bees make?", "Bees make honey."), ("Which animal barks?", "A dog barks.")]  # fmt: skip
    data.write_text(json.dumps([{"instruction": q, "input": "", "output": a} for q, a in pairs * 6]), encoding="utf-8")
    built = root / "built"
    ftdata.build(str(data), built, max_length=64)  # `ftdata build` in this process: one process start fewer
    common = ["train", str(built), "--model", str(model), *TRAIN_FLAGS, "--output-dir", str(root / "runs")]
    torchrun = [_script("torchrun"), "--nproc_per_node", "2"]
    one = _in_this_process([*common, "--per-device-train-batch-size", "4", "--run-name", "one"])
    procs = {"two": launch.run("two", torchrun, [*common, "--per-device-train-batch-size", "2", "--run-name", "two"])}
    # A copy of the two-process run as if it had been stopped after checkpoint-2, resumed under accelerate.
    shutil.copytree(root / "runs" / "two", root / "runs" / "resumed")
    for later in ("checkpoint-4", "adapter"):
        shutil.rmtree(root / "runs" / "resumed" / later)
    accelerate = [_script("accelerate"), "launch", "--multi_gpu", "--num_processes", "2"]
    procs["resumed"] = launch.run("resumed", accelerate, ["train", "--resume", str(root / "runs" / "resumed")])
    records = {name: json.loads((root / "runs" / name / "run.json").read_text()) for name in ("one", *procs)}
    return launch, procs, records, root / "runs", one


def _in_this_process(args: list[str]) -> list[str]:
    """`ftdata ARGS` run by the CLI app in this process (one start of torch and TRL fewer); what it built: the
    `Stage`s it made (training on a build folder makes none)."""
    from typer.testing import CliRunner

    import ftdata.run.stage
    from ftdata.cli.app import app

    built: list[str] = []
    init = ftdata.run.stage.Stage.__init__

    def marked(self, *a, **k):
        built.append("tokenized")
        init(self, *a, **k)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ftdata.run.stage.Stage, "__init__", marked)
        result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output[-3000:] + repr(result.exception)
    return built


def losses(record: dict) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in record["log_history"] if "loss" in e}


def _two_processes_match_one_with_the_same_global_batch(runs) -> None:
    _, _, records, _, _ = runs
    one, two = losses(records["one"]), losses(records["two"])
    assert sorted(one) == sorted(two) == [1, 2, 3, 4]
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=LOSS_TOLERANCE), step
    assert one[4] < one[1] - TRAINED  # it trained: the comparison is not between two flat lines


def _run_json_records_world_size_and_global_batch(runs) -> None:
    _, _, records, _, _ = runs
    assert records["one"]["processes"] == {
        "world_size": 1, "backend": None, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
        "global_batch_size": 4,
    }  # fmt: skip
    assert records["two"]["processes"] == {
        "world_size": 2, "backend": "gloo", "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
        "global_batch_size": 4,
    }  # fmt: skip
    rows = records["two"]["data"]["splits"]["train"]["rows"]
    for name in ("one", "two"):  # each rank took its half of every global batch: 4 rows a step in all
        assert records[name]["metrics"]["epoch"] == pytest.approx(4 * 4 / rows)


def _no_rank_tokenizes_the_built_rows(runs) -> None:
    launch, _, _, _, one = runs
    assert one == []
    assert launch.marks("two") == {"started-main", "started-0", "started-1"}
    assert launch.marks("resumed") == {"started-main", "started-0", "started-1"}


def _no_ddp_warning_and_one_summary(runs) -> None:
    _, procs, _, _, _ = runs
    for name in ("two", "resumed"):
        assert "find_unused_parameters" not in procs[name].stderr
        assert procs[name].stdout.count("done ") == 1


def _checkpoints_and_resume_under_two_processes(runs) -> None:
    _, _, records, folder, _ = runs
    checkpoint = folder / "two" / "checkpoint-2"
    assert {"adapter_model.safetensors", "optimizer.pt", "rng_state_0.pth", "rng_state_1.pth"} <= {
        p.name for p in checkpoint.iterdir()
    }
    resumed = records["resumed"]
    assert resumed["resumed_from"] == "checkpoint-2" and resumed["processes"]["world_size"] == 2
    straight, again = losses(records["two"]), losses(resumed)
    assert sorted(again) == [1, 2, 3, 4]
    for step in (3, 4):  # trained after resuming: same weights, optimizer, data position
        assert again[step] == pytest.approx(straight[step], abs=1e-5), step
    assert (folder / "resumed" / "adapter" / "adapter_model.safetensors").is_file()


def test_two_processes_on_cpu(tmp_path: Path, tiny_model_dir: Path) -> None:
    """One test, so that the ~35 s of launches run once whatever the xdist distribution."""
    runs = _launch_all(tmp_path, tiny_model_dir)
    _two_processes_match_one_with_the_same_global_batch(runs)
    _run_json_records_world_size_and_global_batch(runs)
    _no_rank_tokenizes_the_built_rows(runs)
    _no_ddp_warning_and_one_summary(runs)
    _checkpoints_and_resume_under_two_processes(runs)


def test_resume_with_another_world_size_is_refused(tmp_path: Path) -> None:
    from ftdata.train.run import _check_same_processes

    (tmp_path / "run.json").write_text(json.dumps({"processes": {"world_size": 2}}), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"trained by 2 process\(es\), this resume runs 1"):
        _check_same_processes(tmp_path, {"world_size": 1})
    _check_same_processes(tmp_path, {"world_size": 2})


def test_the_fsdp_example_is_an_accelerate_config_for_the_bundled_model() -> None:
    """Not run here (no GPU): the file parses as accelerate's own config, and it wraps the
    decoder layer class of the bundled model (what FSDP must shard unit by unit)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType
    from transformers import LlamaForCausalLM

    config = load_config_from_file(str(Path(__file__).resolve().parents[2] / "examples" / "accelerate_fsdp_gpu.yaml"))
    assert config.distributed_type is DistributedType.FSDP and config.fsdp_config["fsdp_version"] == 2
    assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] in LlamaForCausalLM._no_split_modules
