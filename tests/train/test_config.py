"""TrainConfig: defaults, validation messages, YAML round trip, the example configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ftdata.errors import ConfigError
from ftdata.train.config import Interval, Precision, Quantization, TrainConfig, field_defaults, field_help

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_defaults_are_qlora_with_auto_precision() -> None:
    cfg = TrainConfig()
    assert cfg.quantization is Quantization.NF4
    assert cfg.precision is Precision.AUTO
    assert cfg.target_modules == "all-linear"
    assert (cfg.lora_r, cfg.lora_alpha, cfg.max_length, cfg.seed) == (16, 32, 2048, 42)
    assert cfg.save_strategy is Interval.STEPS and cfg.eval_strategy is Interval.EPOCH


def test_strings_convert_once_at_the_boundary() -> None:
    cfg = TrainConfig(quantization="NF4", precision="BF16", eval_strategy="steps", learning_rate="2e-4",
                      lora_r="8", target_modules="q_proj, v_proj", test_size="0.1", warmup_steps="10")
    assert cfg.quantization is Quantization.NF4 and cfg.precision is Precision.BF16
    assert cfg.eval_strategy is Interval.STEPS
    assert cfg.learning_rate == 2e-4 and cfg.lora_r == 8 and cfg.warmup_steps == 10.0
    assert cfg.target_modules == ["q_proj", "v_proj"]
    assert cfg.test_size == 0.1
    assert TrainConfig(test_size=20).test_size == 20
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
        ({"test_size": 1.5}, r"test_size must be a fraction in \(0, 1\) or a record count >= 1, got test_size=1.5"),
        ({"test_size": "some"}, r"test_size must be a fraction"),
        ({"target_modules": []}, r"target_modules must be 'all-linear' or a non-empty list"),
        ({"lora": False}, r"--no-lora needs --quantization none, got quantization='4bit'"),
        ({"packing": True, "group_by_length": True}, r"group_by_length and packing exclude each other"),
        ({"load_best_model_at_end": True, "eval_strategy": "no"}, r"load_best_model_at_end needs eval_strategy"),
        ({"warmup_steps": 2.5}, r"warmup_steps must be a fraction < 1 or a whole number"),
        ({"data_options": ["mask"]}, r"data_options must be a mapping"),
    ],
)
def test_bad_values_name_the_option_and_echo_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


def test_full_fine_tune_is_allowed_unquantized() -> None:
    assert TrainConfig(lora=False, quantization="none").lora is False


def test_unknown_key_suggests_the_closest_option() -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'lora_rank' \(did you mean lora_r\?\)"):
        TrainConfig.from_mapping({"lora_rank": 8})


def test_yaml_round_trip_and_overrides(tmp_path: Path) -> None:
    cfg = TrainConfig(data="x.json", template="alpaca", data_options={"mask": "last_assistant"}, quantization="8bit")
    path = tmp_path / "run.yaml"
    cfg.to_yaml(path)
    again = TrainConfig.from_yaml(path)
    assert again == cfg
    assert TrainConfig.from_yaml(path, lora_r=4).lora_r == 4


def test_yaml_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping of option: value, got list"):
        TrainConfig.from_yaml(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("lora_r: [1,\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        TrainConfig.from_yaml(broken)


def test_every_option_has_help_and_a_default() -> None:
    helps, defaults = field_help(), field_defaults()
    assert set(helps) == set(defaults)
    assert all(len(text) > 10 for text in helps.values())
    assert defaults["quantization"] == "4bit" and defaults["data_options"] == {}


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("train_*.yaml")), ids=lambda p: p.name)
def test_example_configs_load(path: Path) -> None:
    cfg = TrainConfig.from_yaml(path)
    assert cfg.data is not None


def test_there_are_example_configs() -> None:
    assert len(list(EXAMPLES.glob("train_*.yaml"))) >= 2
