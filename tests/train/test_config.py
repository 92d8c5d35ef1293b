"""TrainConfig: defaults, validation messages, nested data options, YAML round trip, the example configs."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from ftdata.cli.options import parse_data_options, read_config
from ftdata.errors import ConfigError
from ftdata.run.executors import Engine
from ftdata.options import FIELDS, BuildOptions
from ftdata.train.config import (
    Interval, Precision, Quantization, TrainConfig, changed_options, field_defaults, field_help,
)  # fmt: skip
from ftdata.types import HistoryMode, MaskPolicy, PromptCut, SystemMode, Task, TruncationPolicy

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_defaults_are_qlora_with_auto_precision() -> None:
    cfg = TrainConfig()
    assert cfg.quantization is Quantization.NF4
    assert cfg.precision is Precision.AUTO
    assert cfg.target_modules == "all-linear"
    assert (cfg.lora_r, cfg.lora_alpha, cfg.data_options.data.max_length, cfg.seed) == (16, 32, 2048, 42)
    assert cfg.data_options == BuildOptions()
    assert cfg.save_strategy is Interval.STEPS and cfg.eval_strategy is Interval.EPOCH


def test_strings_convert_once_at_the_boundary() -> None:
    cfg = TrainConfig(quantization="NF4", precision="BF16", eval_strategy="steps", learning_rate="2e-4",
                      lora_r="8", target_modules="q_proj, v_proj", warmup_steps="10", data_options={"mask": "LAST_ASSISTANT"})
    assert cfg.quantization is Quantization.NF4 and cfg.precision is Precision.BF16
    assert cfg.eval_strategy is Interval.STEPS
    assert cfg.learning_rate == 2e-4 and cfg.lora_r == 8 and cfg.warmup_steps == 10.0
    assert cfg.target_modules == ["q_proj", "v_proj"]
    assert cfg.data_options.data.mask is MaskPolicy.LAST_ASSISTANT
    assert TrainConfig(target_modules="ALL_LINEAR").target_modules == "all-linear"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lora_r": 0}, r"lora_r must be >= 1, got lora_r=0"),
        ({"lora_r": 2.5}, r"lora_r must be an integer, got lora_r=2.5"),
        ({"learning_rate": 0}, r"learning_rate must be > 0, got learning_rate=0"),
        ({"lora_dropout": 1.0}, r"lora_dropout must be in \[0, 1\)"),
        ({"quantization": "3bit"}, r"quantization must be one of 4bit, 8bit, none; got quantization='3bit'"),
        ({"precision": "fp8"}, r"precision must be one of auto, bf16, fp16, fp32"),
        ({"eval_strategy": "best"}, r"eval_strategy must be one of no, steps, epoch"),
        ({"data_options": {"test_size": 1.5}}, r"test_size must be a fraction in \(0, 1\) or a positive count, got test_size=1.5"),
        ({"data_options": {"max_length": 0}}, r"max_length must be a positive integer, got max_length=0"),
        ({"data_options": {"max_lenght": 5}}, r"unknown option\(s\) max_lenght; valid options: "),
        ({"data_options": {"filter": len}}, r"data_options.filter must be a Jinja expression such as 'not input'"),
        ({"target_modules": []}, r"target_modules must be 'all-linear' or a non-empty list"),
        ({"lora": False}, r"--no-lora needs --quantization none, got quantization='4bit'"),
        ({"data_options": {"packing": True}, "group_by_length": True}, r"group_by_length and packing exclude each other"),
        ({"load_best_model_at_end": True, "eval_strategy": "no"}, r"load_best_model_at_end needs eval_strategy"),
        ({"warmup_steps": 2.5}, r"warmup_steps must be a fraction < 1 or a whole number"),
        ({"data_options": ["mask"]}, r"data_options must be a mapping of build options or a BuildOptions"),
    ],
)
def test_bad_values_name_the_option_and_echo_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


def test_full_fine_tune_is_allowed_unquantized() -> None:
    assert TrainConfig(lora=False, quantization="none").lora is False


def test_unknown_key_suggests_the_closest_option() -> None:
    with pytest.raises(ConfigError, match=r"^config: unknown option 'lora_rank' \(did you mean lora_r\?\)$"):
        TrainConfig.from_mapping({"lora_rank": 8})
    with pytest.raises(ConfigError, match=r"^c.yaml: data_options: unknown option 'max_lenght' \(did you mean max_length\?\)$"):
        TrainConfig.from_mapping({"data_options": {"max_lenght": 512}}, origin="c.yaml")
    with pytest.raises(ConfigError, match=r"^c.yaml: mask is a data option: put it under data_options: "
                                          r"\(on the command line, --data-option mask=...\)$"):
        TrainConfig.from_mapping({"mask": "last_assistant"}, origin="c.yaml")


def test_flat_data_keys_are_spellings_of_data_options() -> None:
    flat = TrainConfig.from_mapping({"template": "alpaca", "max_length": 512, "packing": True, "test_size": 20, "seed": 7})
    nested = TrainConfig.from_mapping(
        {"data_options": {"template": "alpaca", "max_length": 512, "packing": True, "test_size": 20, "seed": 7}}
    )
    assert flat == nested
    assert flat.data_options == BuildOptions(template="alpaca", max_length=512, packing=True, test_size=20, seed=7)
    assert flat.seed == 7  # one seed: the data's, also the run's
    same = TrainConfig.from_mapping({"max_length": 512, "data_options": {"max_length": 512}})
    assert same.data_options.data.max_length == 512
    with pytest.raises(ConfigError, match=r"^c.yaml: max_length is set twice \(max_length=512 and "
                                          r"data_options.max_length=1024\); keep one$"):
        TrainConfig.from_mapping({"max_length": 512, "data_options": {"max_length": 1024}}, origin="c.yaml")


def test_layers_merge_data_options_key_by_key() -> None:
    cfg = TrainConfig.from_layers(
        ("c.yaml", {"lora_r": 8, "max_length": 1024, "data_options": {"mask": "last_assistant", "limit": 5}}),
        ("command line", {"lora_r": 4, "data_options": {"limit": 7}}),
    )
    assert cfg.lora_r == 4
    assert (cfg.data_options.data.max_length, cfg.data_options.data.mask, cfg.data_options.data.limit) == (
        1024, MaskPolicy.LAST_ASSISTANT, 7,
    )  # fmt: skip


# Every BuildOptions field, as command-line text and as the value it becomes.
SAMPLES = {
    "template": ("alpaca", "alpaca"),
    "chat_template": ("qwen3", "qwen3"),
    "max_length": ("512", 512),
    "packing": ("true", True),
    "pad_to_multiple_of": ("8", 8),
    "test_size": ("0.1", 0.1),
    "seed": ("7", 7),
    "format": ("instruction", "instruction"),
    "task": ("dpo", Task.PREFERENCE),
    "columns": ("output=answer", {"output": "answer"}),
    "roles": ("narrator=assistant", {"narrator": "assistant"}),
    "reader": ("jsonl", "jsonl"),
    "input_join": ("\\n", "\n"),
    "delimiter": ("tab", "\t"),
    "field": ("data", "data"),
    "filter": ("not input", "not input"),
    "shuffle": ("yes", True),
    "limit": ("100", 100),
    "mask": ("last_assistant", MaskPolicy.LAST_ASSISTANT),
    "system_prompt": ("Be brief.", "Be brief."),
    "system_mode": ("fold", SystemMode.FOLD),
    "history": ("inference", HistoryMode.INFERENCE),
    "recorded_ids": ("true", True),
    "mask_reasoning": ("true", True),
    "chat_template_kwargs": ('{"enable_thinking": false}', {"enable_thinking": False}),
    "truncation": ("keep_end", TruncationPolicy.KEEP_END),
    "prompt_cut": ("middle", PromptCut.MIDDLE),
    "max_prompt_length": ("256", 256),
    "cut_prompts": ("true", True),
    "reward_columns": ("answer=string", {"answer": "string"}),
    "stop_tokens": ("<|eom_id|>", ["<|eom_id|>"]),
    "special_tokens_in_data": ("text", "text"),
    "add_chat_tokens": ("true", True),
    "padding": ("max_length", "max_length"),
    "padding_side": ("left", "left"),
    "on_error": ("skip", "skip"),
    "processor": ("models/qwen2-vl", "models/qwen2-vl"),
    "max_images": ("4", 4),
    "max_image_pixels": ("1000000", 1000000),
    "max_line_bytes": ("1000000", 1000000),
    "max_string_chars": ("100000", 100000),
    "max_decompressed_bytes": ("1000000000", 1000000000),
    "max_messages": ("64", 64),
    "image_dir": ("/tmp/images", "/tmp/images"),
    "engine": ("processes", Engine.PROCESSES),
    "num_workers": ("2", 2),
    "ray_address": ("auto", "auto"),
    "batch_size": ("64", 64),
    "rejects_path": ("/tmp/rejects.jsonl", "/tmp/rejects.jsonl"),
    "cache_dir": ("/tmp/cache", "/tmp/cache"),
    "serving_url": ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
    "cache": ("false", False),
    "audio_window": ("cut", "cut"),
    "max_reject_ratio": ("0.05", 0.05),
    "tree_across_records": ("false", False),
}


# Options that only mean something next to another one.
NEEDS = {"pad_to_multiple_of": ("packing", "true", True)}


def test_the_samples_cover_every_build_option() -> None:
    assert set(SAMPLES) == set(FIELDS)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_build_option_is_settable_from_the_command_line_and_yaml(name: str, tmp_path: Path) -> None:
    text, expected = SAMPLES[name]
    needs = NEEDS.get(name)
    pairs = [f"{name}={text}", *([f"{needs[0]}={needs[1]}"] if needs else [])]
    from_cli = TrainConfig.from_mapping({"data_options": parse_data_options(pairs)})
    assert from_cli.data_options.to_mapping()[name] == expected
    value = expected.value if hasattr(expected, "value") else expected
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"data_options": {name: value, **({needs[0]: needs[2]} if needs else {})}}))
    assert TrainConfig.from_yaml(config).data_options.to_mapping()[name] == expected


@pytest.mark.parametrize(("key", "value"), [("packing", "'false'"), ("max_length", "'512'"), ("columns", "[a]")])
def test_a_yaml_data_option_of_the_wrong_type_fails_as_in_build(tmp_path: Path, key: str, value: str) -> None:
    """The same check and the same message as an `ftdata build` config file."""
    build, train = tmp_path / "build.yaml", tmp_path / "train.yaml"
    build.write_text(f"{key}: {value}\n")
    train.write_text(f"data_options:\n  {key}: {value}\n")
    with pytest.raises(ConfigError) as built:
        read_config(build)
    with pytest.raises(ConfigError) as trained:
        TrainConfig.from_yaml(train)
    assert str(trained.value) == str(built.value).replace("build.yaml", "train.yaml")
    assert str(trained.value).startswith(f"{train}: {key} must be ")


def test_relative_paths_in_a_yaml_file_are_relative_to_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "configs"
    folder.mkdir()
    (folder / "d.json").write_text("[]")
    (folder / "my.jinja").write_text("{{ instruction }}")
    (folder / "c.yaml").write_text(
        "data: d.json\noutput_dir: runs\nmodel: smollm2\ntemplate: my.jinja\n"
        "data_options: {rejects_path: rejects.jsonl, cache_dir: cache}\n"
    )
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig.from_yaml("configs/c.yaml")
    assert (cfg.data, cfg.output_dir, cfg.model) == ("configs/d.json", "configs/runs", "smollm2")  # smollm2: no such file
    opts = cfg.data_options
    assert (opts.data.template, opts.output.rejects_path, opts.output.cache_dir) == ("configs/my.jinja", "configs/rejects.jsonl", "configs/cache")
    (folder / "up.yaml").write_text("output_dir: ../runs\n")
    assert TrainConfig.from_yaml("configs/up.yaml").output_dir == "runs"  # normalised, not configs/../runs
    # The reader of `ftdata build --config` resolves the same keys the same way.
    (folder / "b.yaml").write_text("data: d.json\ntemplate: my.jinja\nrejects_path: rejects.jsonl\n")
    assert read_config(Path("configs/b.yaml")) == {"data": "configs/d.json", "template": "configs/my.jinja",
                                                   "rejects_path": "configs/rejects.jsonl"}  # fmt: skip


def test_a_saved_config_holds_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run's config.yaml means the same read from anywhere (--resume, ftdata eval)."""
    (tmp_path / "d.json").write_text("[]")
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(data="d.json", model="smollm2", data_options={"template": "alpaca", "rejects_path": "r.jsonl"})
    (tmp_path / "run").mkdir()
    cfg.to_yaml(tmp_path / "run" / "config.yaml")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert (saved["data"], saved["output_dir"], saved["model"]) == (str(tmp_path / "d.json"), str(tmp_path / "runs"), "smollm2")
    assert (saved["data_options"]["template"], saved["data_options"]["rejects_path"]) == ("alpaca", str(tmp_path / "r.jsonl"))
    monkeypatch.chdir(tmp_path / "run")
    again = TrainConfig.from_yaml("config.yaml")
    assert (again.data, again.output_dir, again.data_options.output.rejects_path) == (
        str(tmp_path / "d.json"), str(tmp_path / "runs"), str(tmp_path / "r.jsonl"),
    )  # fmt: skip


def test_changed_options_compares_the_data_options_that_shape_the_rows() -> None:
    before = TrainConfig(lora_r=8, data_options={"max_length": 64})
    after = TrainConfig(lora_r=4, data_options={"max_length": 512, "engine": "processes", "num_workers": 2})
    assert changed_options(before, after, ["lora_r", "data_options", "lora_alpha"]) == [
        ("lora_r", 8, 4), ("max_length", 64, 512),
    ]  # fmt: skip


def test_yaml_round_trip_and_overrides(tmp_path: Path) -> None:
    cfg = TrainConfig(data="/data/x.json", data_options={"template": "alpaca", "mask": "last_assistant"},
                      quantization="8bit", output_dir=str(tmp_path / "runs"))  # fmt: skip
    path = tmp_path / "run.yaml"
    cfg.to_yaml(path)
    saved = yaml.safe_load(path.read_text())
    assert saved["data_options"]["mask"] == "last_assistant" and saved["data_options"]["max_length"] == 2048
    again = TrainConfig.from_yaml(path)
    assert again == cfg
    assert TrainConfig.from_yaml(path, lora_r=4).lora_r == 4
    assert TrainConfig.from_yaml(path, max_length=512).data_options.data.mask is MaskPolicy.LAST_ASSISTANT


def test_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read config '.*missing.yaml': No such file or directory"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="a config must be a mapping of option: value, got list"):
        TrainConfig.from_yaml(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("lora_r: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        TrainConfig.from_yaml(broken)


def test_every_option_has_help_and_a_default() -> None:
    helps, defaults = field_help(), field_defaults()
    assert set(helps) == set(defaults)
    assert all(len(text) > 10 for text in helps.values())
    assert defaults["quantization"] == "4bit" and defaults["data_options"]["max_length"] == 2048


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("train_*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path: Path) -> None:
    cfg = TrainConfig.from_yaml(path)
    assert cfg.data is not None


def test_there_are_example_configs() -> None:
    assert len(list(EXAMPLES.glob("train_*.yaml"))) >= 2
