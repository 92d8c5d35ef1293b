"""GRPO on a prompt set: TRL 1.16's `GRPOTrainer`, its completions scored by `rewards.py`.

A prompt-set build (`--task prompts`) holds, per row, the conversational `prompt` (messages ending on
a user or tool turn; a string where the build used a prompt template), its `prompt_ids` (the prompt as
inference tokenizes it: `apply_chat_template(prompt, add_generation_prompt=True)`) and the record's
other columns, the reward columns (`answer`, `solution`, ...). Each step, TRL samples `num_generations`
completions of each prompt, scores them with the rewards, and moves the policy toward the completions
that scored above their group's mean:

    prompt ──sample x num_generations──▶ completions ──rewards──▶ advantages (reward - group mean) ──▶ loss

TRL renders `prompt` itself, with the trainer's tokenizer, chat template and `chat_template_kwargs`
(the build's), and tools of the trainer only. So before the first step every prompt is rendered as
TRL will render it and must give the row's `prompt_ids`: a prompt set built with another template,
other template variables or per-record tools would train on prompts other than the ones it holds,
and is refused instead (`check_prompts`).

The reference model (`beta` > 0): with LoRA, the model with its adapter switched off (TRL would copy
the fresh adapter into a "ref" adapter: the base at a second adapter's cost); for full fine-tuning,
TRL reloads the base model from its folder. `beta` 0 (with `--method grpo`) uses no reference model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftdata.errors import ConfigError
from ftdata.train.args import Parts, common_args, trainer_config
from ftdata.train.config import DEFAULT_LOSS, DEFAULT_REWARDS, Method, TrainConfig
from ftdata.train.data import Splits
from ftdata.train.model import LoadedModel
from ftdata.train.preference import drop_reference_adapter, loss_type, reference_model
from ftdata.train.rewards import describe, make_rewards

if TYPE_CHECKING:
    from collections.abc import Mapping

    from transformers import PreTrainedTokenizerBase
    from trl import GRPOConfig

# Rows checked against TRL's rendering per `apply_chat_template` call.
CHECK_BATCH = 256


def prompt_settings(cfg: TrainConfig, splits: Splits) -> tuple[str, dict[str, Any] | None]:
    """What the build rendered its prompts with, that TRL must render them with too: `opens`, the text the
    chat template writes after the assistant header in the generation prompt (build.json's `counts.prompt_opens`;
    "" when the build does not say), and the build's `chat_template_kwargs` (a build folder's own, else the
    run's data options, with which the run built its raw data)."""
    manifest = splits.manifest or {}
    found = sorted(((manifest.get("counts") or {}).get("prompt_opens") or {}).items(), key=lambda kv: -kv[1])
    if len(found) > 1:  # per-record chat_template_kwargs that open different blocks: one format reward cannot hold both
        listed = ", ".join(f"{text!r} ({n} prompts)" for text, n in found)
        raise ConfigError(
            f"the prompt set's generation prompts open different texts ({listed}); the format reward reads one: "
            "build with one chat_template_kwargs"
        )
    opens = found[0][0] if found else ""
    options = manifest.get("options") or {}
    kwargs = options.get("chat_template_kwargs", cfg.data_options.data.chat_template_kwargs)
    return opens, dict(kwargs) if kwargs else None


def rewards_of(cfg: TrainConfig, splits: Splits) -> list[Any]:
    """The run's reward functions (`cfg.rewards`, default exact and format), checked against the prompt set.

    Raises:
        ConfigError: a reward that does not fit the prompt set (see `rewards.make_rewards`).
    """
    opens, _ = prompt_settings(cfg, splits)
    return make_rewards(
        cfg.rewards or DEFAULT_REWARDS,
        columns=dict(splits.train.features) if splits.train.features else splits.train.column_names,
        opens=opens,
    )


def grpo_record(cfg: TrainConfig, method: Method, splits: Splits) -> dict[str, Any]:
    """What run.json says of a GRPO run: loss type, beta, sampling, the rewards (each as TRL logs it,
    `rewards/<name>/mean`, with its reference column or `opens`) and the reference model.

    Raises:
        ConfigError: a reward that does not fit the prompt set: at the start of the run, not at its first step.
    """
    return {
        "name": method.value,
        "loss_type": cfg.loss_type or DEFAULT_LOSS[method],
        "beta": cfg.beta,
        "num_generations": cfg.num_generations,
        "max_completion_length": cfg.max_completion_length,
        "temperature": cfg.temperature,
        "rewards": describe(rewards_of(cfg, splits)),
        "reference": "none (beta 0)"
        if cfg.beta == 0
        else reference_model(cfg)
        if cfg.lora
        else "the base model, reloaded from its folder by TRL",
    }


def grpo_args(
    cfg: TrainConfig, method: Method, *, run_dir: Path, loaded: LoadedModel, splits: Splits, resuming: bool = False
) -> GRPOConfig:
    """The `GRPOConfig` of a run: the settings every method shares (`common_args`) and GRPO's own; the
    prompts rendered with the build's `chat_template_kwargs`.

    Raises:
        ConfigError: a step's batch that cannot hold whole groups of `num_generations` completions, an unknown
            loss type, or a value TRL rejects.
    """
    from trl import GRPOConfig

    from ftdata.train.dist import process_state

    world = process_state().num_processes
    check_groups(cfg, world=world, evaluating=splits.eval is not None)
    _, kwargs = prompt_settings(cfg, splits)
    return trainer_config(
        GRPOConfig,
        common_args(cfg, run_dir=run_dir, device=loaded.device, splits=splits, resuming=resuming),
        num_generations=cfg.num_generations,
        max_completion_length=cfg.max_completion_length,
        temperature=cfg.temperature,
        beta=cfg.beta,
        loss_type=loss_type(cfg, method),
        chat_template_kwargs=kwargs,
        remove_unused_columns=False,  # the reward columns reach the rewards
        log_completions=False,  # TRL would print a table of completions at every log and write parquet files
    )


def check_groups(cfg: TrainConfig, *, world: int, evaluating: bool) -> None:
    """A step's batch holds whole groups: per_device_train_batch_size x gradient_accumulation_steps x processes
    completions, a multiple of `num_generations` (and so is an eval batch, when there is an eval split).

    Raises:
        ConfigError: naming the sizes and a batch size that fits.
    """
    n = cfg.num_generations
    batch = cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * world
    if batch % n:
        raise ConfigError(
            f"--method grpo compares the num_generations={n} completions of each prompt within a step: "
            "per_device_train_batch_size x gradient_accumulation_steps x processes = "
            f"{cfg.per_device_train_batch_size} "
            f"x {cfg.gradient_accumulation_steps} x {world} = {batch} must be a multiple of {n}; "
            f"e.g. --per-device-train-batch-size {n}, or a num_generations that divides {batch}"
        )
    if evaluating and cfg.eval_strategy.value != "no" and (cfg.per_device_eval_batch_size * world) % n:
        raise ConfigError(
            f"--method grpo evaluates whole groups of num_generations={n} completions: per_device_eval_batch_size x "
            f"processes = {cfg.per_device_eval_batch_size} x {world} must be a multiple of {n}; "
            f"e.g. --per-device-eval-batch-size {n}"
        )


def grpo_parts(cfg: TrainConfig, method: Method, *, args: Any, loaded: LoadedModel, splits: Splits) -> Parts:
    """GRPOTrainer with the run's rewards, on prompts checked to render as their `prompt_ids`.

    Raises:
        ConfigError: prompts with per-record tools, a prompt TRL would render otherwise than its `prompt_ids`,
            or a reward that does not fit the prompt set.
    """
    for name, split in (("train", splits.train), ("test", splits.eval)):
        if split is not None:
            check_prompts(split, loaded.tokenizer, kwargs=args.chat_template_kwargs, split=name, data=cfg.data)
    return Parts(grpo_trainer_class(), {"reward_funcs": rewards_of(cfg, splits)})


def check_prompts(
    rows: Any, tokenizer: PreTrainedTokenizerBase, *, kwargs: Mapping[str, Any] | None, split: str, data: str | None
) -> None:
    """Every prompt, rendered as TRL's GRPOTrainer renders it (its `_tokenize_prompts`: the chat template
    with the generation prompt and no tools; a text prompt tokenized as is), gives the row's `prompt_ids`.

    Raises:
        ConfigError: a row with per-record tools (TRL renders every prompt with the trainer's tools only),
            or the first row whose rendering differs, with the token where they part.
    """
    if "tools" in rows.column_names:
        with_tools = next((i for i, tools in enumerate(rows["tools"]) if tools), None)
        if with_tools is not None:
            raise ConfigError(
                f"{data}: row {with_tools} of the {split} split has tools of its own, and TRL's GRPOTrainer renders "
                "every prompt with the trainer's tools only: it would sample from prompts other than their prompt_ids; "
                "build the prompt set from records without tools"
            )
    for start in range(0, len(rows), CHECK_BATCH):
        batch = rows[start : start + CHECK_BATCH]
        prompts, expected = batch["prompt"], batch["prompt_ids"]
        encoded: Any = (
            tokenizer(text=prompts)
            if isinstance(prompts[0], str)
            else tokenizer.apply_chat_template(
                prompts, add_generation_prompt=True, tokenize=True, return_dict=True, **(kwargs or {})
            )
        )
        rendered = encoded["input_ids"]
        for i, (ours, theirs) in enumerate(zip(expected, rendered, strict=True)):
            if list(ours) != list(theirs):
                at = next((k for k, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
                raise ConfigError(
                    f"{data}: row {start + i} of the {split} split: TRL's GRPOTrainer renders its prompt to "
                    f"{len(theirs)} "
                    f"tokens that differ from its {len(ours)} prompt_ids from token {at} on; train with the tokenizer, "
                    "chat template and chat_template_kwargs the prompt set was built with"
                )


def grpo_trainer_class() -> type:
    """TRL's GRPOTrainer whose reference is the model with its adapter off (LoRA), not a copied adapter."""
    from trl import GRPOTrainer

    class RowsGRPOTrainer(GRPOTrainer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            drop_reference_adapter(self)

    return RowsGRPOTrainer
