"""GRPO through `ftdata train --method grpo`: its options, the prompt checks before the first step, and two
steps of a tiny Llama (SmolLM2 vocabulary, CPU) on a GSM8K-shaped prompt set, scored by the built-in
rewards and a reward of the test's own (`--allow-code`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from train_records import GSM8K as GSM8K_RECORDS
from train_records import prompt_rows
from typer.testing import CliRunner

from ftdata.cli.app import app
from ftdata.cli.train import train_from_flags
from ftdata.errors import ConfigError
from ftdata.train import TrainConfig
from ftdata.train.config import Method
from ftdata.train.data import data_task
from ftdata.train.grpo import check_groups, check_prompts
from ftdata.train.rewards import completion_text
from ftdata.types import Task


def characters(completions: list, **columns) -> list[float]:
    """A reward that differs between any two completions of other lengths: TRL then has advantages to
    learn from, which the built-in rewards do not give a random model."""
    return [len(completion_text(c)) / 100 for c in completions]


# --- options --------------------------------------------------------------------------------------


def test_grpo_options_parse_once() -> None:
    cfg = TrainConfig(method="GRPO", rewards=" exact:answer , format", beta="0", num_generations="8", temperature="0.7")
    assert (cfg.method, cfg.rewards, cfg.beta, cfg.num_generations, cfg.temperature) == (
        Method.GRPO, ["exact:answer", "format"], 0.0, 8, 0.7,
    )  # fmt: skip
    assert cfg.to_dict()["rewards"] == ["exact:answer", "format"] and TrainConfig().rewards is None
    assert Method.GRPO.task is Task.PROMPTS and Method.of(Task.PROMPTS) is Method.GRPO


def test_grpo_options_are_checked_on_creation() -> None:
    cases = [
        ({"method": "dpo", "beta": 0}, "beta must be > 0, got beta=0"),  # 0 only where it means something: grpo
        ({"method": "grpo", "beta": -1}, "beta must be >= 0, got beta=-1"),
        ({"num_generations": 1}, "num_generations must be >= 2, got num_generations=1"),
        ({"max_completion_length": 0}, "max_completion_length must be >= 1, got max_completion_length=0"),
        ({"temperature": 0}, "temperature must be > 0, got temperature=0"),
        ({"rewards": []}, "rewards must be a non-empty list of reward names such as exact,format, got rewards=[]"),
        ({"rewards": "exact,acc"},
         "rewards: unknown reward 'acc'; choose exact, exact:COLUMN, format or package.module:function (with --allow-code)"),
        ({"method": "sft", "rewards": "exact"},
         "rewards is an option of --method grpo; this run trains sft rows, got rewards='exact'"),
        ({"method": "grpo", "packing": True}, "packing works on sft rows only and this run trains grpo: drop packing"),
        ({"method": "grpo", "streaming": True}, "streaming works on sft rows only and this run trains grpo: drop streaming"),
    ]  # fmt: skip
    for values, message in cases:
        with pytest.raises(ConfigError, match=f"^{re.escape(message)}$"):
            TrainConfig.from_mapping(values)


def test_a_step_holds_whole_groups() -> None:
    check_groups(TrainConfig(num_generations=4, per_device_train_batch_size=2, gradient_accumulation_steps=2), world=1,
                 evaluating=False)  # fmt: skip
    check_groups(TrainConfig(num_generations=8, per_device_train_batch_size=2), world=4, evaluating=False)
    with pytest.raises(ConfigError, match=re.escape(
        "--method grpo compares the num_generations=8 completions of each prompt within a step: per_device_train_batch_size "
        "x gradient_accumulation_steps x processes = 4 x 1 x 1 = 4 must be a multiple of 8; e.g. "
        "--per-device-train-batch-size 8, or a num_generations that divides 4"
    )):  # fmt: skip
        check_groups(TrainConfig(num_generations=8), world=1, evaluating=False)
    with pytest.raises(ConfigError, match=r"per_device_eval_batch_size x processes = 2 x 1 must be a multiple of 4"):
        check_groups(TrainConfig(num_generations=4, per_device_eval_batch_size=2), world=1, evaluating=True)


def test_a_prompt_set_is_told_by_its_columns() -> None:
    assert data_task(None, ["prompt", "prompt_ids", "answer"]) is Task.PROMPTS
    assert data_task(None, ["prompt_ids", "completion_ids", "label"]) is Task.KTO
    assert data_task(None, ["input_ids", "labels", "prompt_ids"]) is Task.SFT
    assert data_task("prompts", ["prompt", "prompt_ids"]) is Task.PROMPTS


def test_a_code_reward_needs_allow_code(tmp_path: Path, gsm8k_build: Path) -> None:
    flags = {"rewards": "exact,my_rewards:score"}
    with pytest.raises(ConfigError, match=re.escape(
        "--rewards names Python code ('my_rewards:score'), which ftdata runs only with --allow-code; add --allow-code "
        "if you trust that code, or use a built-in reward (exact, format)"
    )):  # fmt: skip
        train_from_flags(str(gsm8k_build), config=None, resume=None, data_option=None, flags=flags)
    config = tmp_path / "run.yaml"
    config.write_text("rewards: [format, my_rewards:score]\n")
    with pytest.raises(ConfigError, match=r"^rewards names Python code \('my_rewards:score'\)"):
        train_from_flags(str(gsm8k_build), config=config, resume=None, data_option=None, flags={})
    cfg = train_from_flags(str(gsm8k_build), config=None, resume=None, data_option=None, flags=flags, allow_code=True)
    assert cfg.rewards == ["exact", "my_rewards:score"]


# --- the prompts TRL will sample from -------------------------------------------------------------


def test_prompts_must_render_as_their_prompt_ids(smol_tok) -> None:
    from datasets import Dataset

    rows = prompt_rows(smol_tok)
    check_prompts(Dataset.from_list(rows), smol_tok, kwargs=None, split="train", data="gsm8k")
    rows[2]["prompt_ids"] = rows[2]["prompt_ids"][:-1]  # built with a template whose generation prompt differs
    with pytest.raises(ConfigError, match=re.escape(
        f"gsm8k: row 2 of the train split: TRL's GRPOTrainer renders its prompt to {len(rows[2]['prompt_ids']) + 1} tokens "
        f"that differ from its {len(rows[2]['prompt_ids'])} prompt_ids from token {len(rows[2]['prompt_ids'])} on; train "
        "with the tokenizer, chat template and chat_template_kwargs the prompt set was built with"
    )):  # fmt: skip
        check_prompts(Dataset.from_list(rows), smol_tok, kwargs=None, split="train", data="gsm8k")
    text = [{"prompt": "Q: 3 + 4?\nA:", "prompt_ids": smol_tok("Q: 3 + 4?\nA:")["input_ids"], "answer": "7"}]
    check_prompts(Dataset.from_list(text), smol_tok, kwargs=None, split="test", data="t")  # a prompt template's text


def test_prompts_with_tools_of_their_own_are_refused(smol_tok) -> None:
    from datasets import Dataset

    rows = [{**row, "tools": None} for row in prompt_rows(smol_tok)]
    rows[1]["tools"] = json.dumps([{"type": "function", "function": {"name": "add", "parameters": {}}}])
    with pytest.raises(ConfigError, match=re.escape(
        "gsm8k: row 1 of the train split has tools of its own, and TRL's GRPOTrainer renders every prompt with the "
        "trainer's tools only: it would sample from prompts other than their prompt_ids; build the prompt set from "
        "records without tools"
    )):  # fmt: skip
        check_prompts(Dataset.from_list(rows), smol_tok, kwargs=None, split="train", data="gsm8k")


# --- training -------------------------------------------------------------------------------------


@pytest.mark.parametrize("quantization", ["none", "4bit"])  # 4bit: QLoRA, bitsandbytes' CPU kernels
def test_grpo_trains_two_steps_and_records_each_reward(tmp_path: Path, tiny_model_dir: Path, gsm8k_build: Path,
                                                       quantization: str) -> None:  # fmt: skip
    args = [
        "train", gsm8k_build, "--method", "grpo", "--max-steps", "2", "--model", tiny_model_dir, "--quantization", quantization,
        "--lora-r", "8", "--lora-alpha", "16", "--learning-rate", "5e-3", "--lr-scheduler-type", "constant",
        "--warmup-steps", "0", "--per-device-train-batch-size", "4", "--num-generations", "2",
        "--max-completion-length", "8", "--logging-steps", "1", "--eval-strategy", "no", "--save-strategy", "no",
        "--rewards", "exact,format,test_grpo:characters", "--allow-code", "-o", tmp_path, "--run-name", "grpo",
    ]  # fmt: skip
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "grpo" / "run.json").read_text())
    assert record["method"] == {
        "name": "grpo", "loss_type": "dapo", "beta": 0.1, "num_generations": 2, "max_completion_length": 8,
        "temperature": 1.0, "reference": "the base model (adapter disabled)",
        "rewards": [{"name": "exact", "reference": "answer"}, {"name": "format", "opens": ""},
                    {"name": "characters", "code": "test_grpo:characters"}],
    }  # fmt: skip
    assert record["data"]["task"] == "prompts" and record["data"]["splits"]["train"]["rows"] == 2
    assert sorted(record["rewards"]) == ["characters", "exact", "format"]
    for name, steps in record["rewards"].items():  # each reward's mean at each of the 2 logged steps
        assert [s["step"] for s in steps] == [1, 2] and all(0 <= s["mean"] <= 1 for s in steps), (name, steps)
    history = [e for e in record["log_history"] if "rewards/exact/mean" in e]
    assert [e["rewards/characters/mean"] for e in history] == [s["mean"] for s in record["rewards"]["characters"]]
    assert any(e["grad_norm"] > 0 for e in history)  # the characters reward told completions apart: the adapter learnt
    m = record["metrics"]
    assert m["global_step"] == 2 and set(m["reward_means"]) == {"exact", "format", "characters"}
    assert m["tokens_seen"] == history[-1]["num_tokens"]  # prompts and sampled completions, as TRL counts them
    assert (tmp_path / "grpo" / "rewards.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "grpo" / "adapter" / "adapter_config.json").is_file()
    assert "  mean reward " in result.stdout and "    characters " in result.stdout
    assert [e["step"] for e in record["log_history"] if "eval_reward" in e] == [2]  # the held-out prompts, at the end
    evaluated = CliRunner().invoke(app, ["eval", str(tmp_path / "grpo")])
    assert (evaluated.exit_code, evaluated.stderr) == (2, (
        "error: grpo trained grpo on a prompt set: ftdata eval scores sft and preference runs; its rewards, each one's "
        "mean per step, are in run.json (rewards) and rewards.png\n"
    ))  # fmt: skip


def test_the_record_reads_opens_and_template_variables_from_build_json(tmp_path: Path, smol_tok) -> None:
    from train_records import prompt_set_build

    from ftdata.train.data import load_splits
    from ftdata.train.grpo import grpo_record, prompt_settings

    data = prompt_set_build(tmp_path / "think", chat_template="deepseek_r1_distill")  # its generation prompt opens <think>
    cfg = TrainConfig(data=str(data), rewards="format,exact:answer", beta=0, method="grpo", lora=False, quantization="none",
                      data_options={"chat_template": "deepseek_r1_distill"})  # fmt: skip
    from ftdata.chat.chat_template import load_chat_template

    splits = load_splits(cfg, load_chat_template("deepseek_r1_distill").applied(smol_tok))  # as the run loads it
    assert (splits.task, splits.method) == (Task.PROMPTS, Method.GRPO)
    assert prompt_settings(cfg, splits) == ("<think>\n", None)
    record = grpo_record(cfg, Method.GRPO, splits)
    assert record["rewards"] == [{"name": "format", "opens": "<think>\n"}, {"name": "exact", "reference": "answer"}]
    assert record["reference"] == "none (beta 0)"
    no_reference = TrainConfig(data=str(data), rewards="exact:solution", method="grpo", data_options={"chat_template": "deepseek_r1_distill"})
    with pytest.raises(ConfigError, match=r"^rewards: exact:solution names a column the prompt set lacks; it has answer$"):
        grpo_record(no_reference, Method.GRPO, splits)


def test_grpo_fine_tunes_every_weight_against_the_reloaded_base(tmp_path: Path, tiny_model_dir: Path, gsm8k_build: Path) -> None:
    from ftdata.train import train

    cfg = TrainConfig(
        model=str(tiny_model_dir), data=str(gsm8k_build), method="grpo", lora=False, quantization="none", max_steps=1,
        per_device_train_batch_size=2, num_generations=2, max_completion_length=4, logging_steps=1, eval_strategy="no",
        save_strategy="no", rewards=["format"], output_dir=str(tmp_path), run_name="full",
    )  # fmt: skip
    result = train(cfg)
    record = json.loads((result.run_dir / "run.json").read_text())
    assert record["method"]["reference"] == "the base model, reloaded from its folder by TRL"
    assert record["rewards"] == {"format": [{"step": 1, "mean": 0.0}]}  # a random model writes no think block
    assert (result.run_dir / "model" / "model.safetensors").is_file()


def test_raw_prompts_built_by_the_run_carry_what_the_template_opens(tmp_path: Path, smol_tok) -> None:
    """`ftdata train DATA --method grpo` on a data file builds the prompt set in memory: the format reward still
    knows what the generation prompt opens."""
    from ftdata.chat.chat_template import load_chat_template
    from ftdata.train.data import load_splits
    from ftdata.train.grpo import prompt_settings

    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in GSM8K_RECORDS))
    cfg = TrainConfig(data=str(data), method="grpo", rewards="format", data_options={"chat_template": "deepseek_r1_distill"})
    splits = load_splits(cfg, load_chat_template("deepseek_r1_distill").applied(smol_tok))
    assert splits.task is Task.PROMPTS and len(splits.train) == len(GSM8K_RECORDS)
    assert prompt_settings(cfg, splits) == ("<think>\n", None)
