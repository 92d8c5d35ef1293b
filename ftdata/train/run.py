"""One fine-tuning run, start to finish: run folder, model, data, trainer, outputs, record.

The trainer is chosen once, by the method the rows imply (`trainer.build_trainer`, one row of
`trainer.METHODS` per method): TRL's SFTTrainer, its DPOTrainer / KTOTrainer (`preference.py`) or
GRPOTrainer (`grpo.py`); everything else is the same run. A run folder (`runs/20250101-120000/`) holds:

    config.yaml         the resolved options (what --resume reads back)
    run.json            record: config, method, data fingerprint, versions, params, FLOPs, metrics
                        (GRPO: the rewards, and each one's mean per logged step)
    loss.png            train and eval loss curves
    rewards.png         DPO/KTO: train and eval reward margin (chosen - rejected); GRPO: mean reward
    checkpoint-N/       trainer checkpoints (adapter, optimizer, scheduler, RNG, data position)
    adapter/            the final LoRA adapter + tokenizer (model/ for a full fine-tune)
    merged/             base + adapter merged (with merge=True)
    eval_data/          the held-out rows, for `ftdata eval RUN`

Every process of an `accelerate launch` runs this same code; only the main process writes
files other than what `Trainer` itself writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftdata.errors import ConfigError
from ftdata.types import Task
from ftdata.train import record
from ftdata.train.carried import carry_template
from ftdata.train.config import Method, TrainConfig, changed_options, read_yaml
from ftdata.train.data import Splits, data_task, load_splits, save_eval_split
from ftdata.train.fused_head import trained_positions_only
from ftdata.train.generation import EvalReport, GenerationSettings
from ftdata.train.packing_probe import check_packed_rows
from ftdata.train.model import (
    LoadedModel,
    count_parameters,
    fit_embeddings,
    load_for_training,
    resolve_device,
    resolve_model_path,
)
from ftdata.train.preference_eval import PreferenceReport
from ftdata.train.progress import TrainingDisplay, quiet_libraries
from ftdata.train.media_model import load_media_for_training, merge_media_adapter, takes_media
from ftdata.train.trainer import METHODS, build_trainer, last_checkpoint, method_record, trainer_metrics

if TYPE_CHECKING:
    from rich.console import Console
    from transformers import TrainerCallback

# Options that shape the data, its order or the model: a resumed run must keep them.
RESUME_LOCKED = (
    "model",
    "tokenizer",
    "processor",
    "data",
    "data_options",
    "streaming",
    "shuffle_buffer",
    "lora",
    "lora_r",
    "lora_alpha",
    "target_modules",
    "quantization",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "method",
    "loss_type",
    "rewards",
    "num_generations",
)


@dataclass
class TrainResult:
    """Where a run lives and what it measured."""

    run_dir: Path
    output_dir: Path  # adapter/ (LoRA) or model/ (full fine-tune)
    merged_dir: Path | None
    metrics: dict[str, Any] = field(default_factory=dict)


def train(
    cfg: TrainConfig,
    *,
    resume: str | Path | None = None,
    callbacks: list[TrainerCallback] | None = None,
    verbose: bool = False,
    console: Console | None = None,
) -> TrainResult:
    """Fine-tune the model of `cfg` on its data and write a run folder.

    Args:
        cfg: the options; with `resume`, build it with `resume_config`.
        resume: an existing run folder: continue from its last checkpoint (same data order,
            global step, optimizer and RNG state).
        callbacks: extra `transformers.TrainerCallback`s.
        verbose: also print the raw log dicts and the libraries' own progress bars and
            warnings (the raw logs are always in run.json).
        console: where the progress bar and the eval table go (default: stdout).

    Raises:
        ConfigError: a bad option, missing data or model, or nothing to resume from.

    Example:
        >>> config = TrainConfig(data="alpaca.json", data_options={"template": "alpaca"}, max_steps=20)
        >>> result = train(config)  # doctest: +SKIP
        >>> result.metrics["last_loss"] < result.metrics["first_loss"]  # doctest: +SKIP
        True
    """
    from ftdata.train.dist import process_state

    if cfg.data is None:  # fail before the (slow) model load
        raise ConfigError("no training data: give DATA (a file ftdata can read) or `data:` in the YAML config")
    state = process_state()
    run_dir, checkpoint = _locate_run(cfg, resume, state)
    with quiet_libraries(not verbose):
        loaded, splits, base = _setup(cfg, run_dir, state, resuming=checkpoint is not None)
        trainer = build_trainer(
            cfg,
            loaded=loaded,
            splits=splits,
            run_dir=run_dir,
            callbacks=callbacks,
            resuming=checkpoint is not None,
            display=TrainingDisplay(console, verbose=verbose, method=splits.method),
        )
        with trained_positions_only():
            started = time.perf_counter()
            output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
            seconds = time.perf_counter() - started
            _final_eval(trainer, splits)
        output_dir = run_dir / ("adapter" if cfg.lora else "model")
        trainer.save_model(str(output_dir))
        if state.is_main_process:
            carry_template(output_dir, cfg.data, loaded.tokenizer)
    state.wait_for_everyone()
    merged_dir = None
    if cfg.merge and cfg.lora and state.is_main_process:
        with quiet_libraries(not verbose):
            merged_dir = merge_adapter(loaded, output_dir, run_dir / "merged")
            carry_template(merged_dir, cfg.data, loaded.tokenizer)
    total = base["model"]["total_params"]
    metrics = _metrics(
        trainer,
        output.metrics,
        base["data"],
        total=total,
        seconds=seconds,
        device=loaded.device.kind,
        global_batch=base["processes"]["global_batch_size"],
        method=splits.method,
    )
    result = TrainResult(run_dir=run_dir, output_dir=output_dir, merged_dir=merged_dir, metrics=metrics)
    if state.is_main_process:
        history = trainer.state.log_history
        _write_final_record(result, base, history, resumed_from=checkpoint, has_eval=splits.eval is not None)
    return result


def resume_config(run_dir: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config saved in `run_dir`, with `overrides` applied (e.g. a larger `max_steps`).

    Raises:
        ConfigError: `run_dir` is not a run folder, or an override changes an option that
            shapes the data, its order or the model (see `RESUME_LOCKED`).
    """
    folder = _resume_dir(run_dir)
    saved, origin = read_yaml(folder / record.CONFIG_FILE), str(folder / record.CONFIG_FILE)
    merged = TrainConfig.from_layers((origin, saved), ("overrides", overrides or {}))
    changed = changed_options(TrainConfig.from_mapping(saved, origin=origin), merged, RESUME_LOCKED)
    if changed:
        detail = ", ".join(f"{name}: {old!r} -> {new!r}" for name, old, new in changed)
        raise ConfigError(f"cannot change {detail} when resuming {folder.name}; start a new run instead")
    return merged


def merge_adapter(loaded: LoadedModel, adapter_dir: Path, target: Path) -> Path:
    """Save the full-precision base model with the adapter merged in (plus the tokenizer).

    The base is reloaded unquantized: merging into 4-bit weights would round the update away.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if loaded.media is not None:  # a model that reads media (media_model.py)
        return merge_media_adapter(loaded, adapter_dir, target)
    dtype = loaded.device.dtype if loaded.device.kind == "cuda" else torch.float32
    base = AutoModelForCausalLM.from_pretrained(
        str(loaded.path), dtype=dtype, local_files_only=True, trust_remote_code=False
    )
    fit_embeddings(base, loaded.tokenizer)  # add_chat_tokens: the rows the adapter's trained tokens replace
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(target))
    loaded.tokenizer.save_pretrained(str(target))
    return target


# --- helpers -----------------------------------------------------------------------------------


def _locate_run(cfg: TrainConfig, resume: str | Path | None, state: Any) -> tuple[Path, Path | None]:
    """The run folder and, when resuming, its last checkpoint."""
    if resume is None:
        return _new_run_dir(cfg, state), None
    run_dir = _resume_dir(resume)
    checkpoint = last_checkpoint(run_dir)
    if checkpoint is None:
        raise ConfigError(f"nothing to resume in {run_dir}: it has no checkpoint-N folder yet")
    return run_dir, checkpoint


def load_model(cfg: TrainConfig) -> LoadedModel:
    """The model of `cfg` loaded for training: a model that reads media with its processor and
    collator (`media_model.py`), else a causal LM (`model.py`). The one place training chooses."""
    path = resolve_model_path(cfg.model)
    if takes_media(path):
        return load_media_for_training(cfg, path, resolve_device(cfg.precision))
    return load_for_training(cfg)


def evaluate_run(
    run_dir: str | Path,
    *,
    max_samples: int | None = 32,
    compare_base: bool = True,
    settings: GenerationSettings | None = None,
    processor: str | Path | None = None,
) -> EvalReport | PreferenceReport:
    """`ftdata eval RUN`: generate answers for the run's held-out prompts and score them with sacreBLEU.

    The one place evaluation chooses: a DPO/KTO run (preference rows) gets the preference accuracy
    of both models on up to `max_samples` held-out pairs, `settings.batch_size` sequences at a time
    (`preference_eval.py`); a run whose model reads media (its config has a `vision_config`)
    also gets the eval loss and perplexity, and its prompts are answered with their images
    (`media_eval.py`, `processor`: its processor folder, default the one saved with the run); a text
    run is `evaluate.evaluate_text_run`.

    Writes `RUN/eval/comparison.csv` and `RUN/eval/comparison.json` and adds a summary to
    `RUN/run.json` under "evaluation".

    Raises:
        ConfigError: not a finished run folder, no eval rows (train with test_size), no usable prompt
            in them, or `processor` for a text run.

    Example:
        >>> report = evaluate_run("runs/20250101-120000", max_samples=16)  # doctest: +SKIP
        >>> report.bleu  # doctest: +SKIP
        {'tuned': 23.1, 'base': 9.8}
    """
    from ftdata.train.evaluate import eval_rows, evaluate_preference_run, evaluate_text_run, finished_run, record_report
    from ftdata.train.preference_eval import ScoringSettings

    settings = settings or GenerationSettings()
    folder = Path(run_dir).expanduser()
    cfg, tuned_dir = finished_run(folder)
    rows = eval_rows(folder)
    task = data_task(None, rows.column_names)
    if task is Task.PROMPTS:
        raise ConfigError(
            f"{folder.name} trained grpo on a prompt set: ftdata eval scores sft and preference runs; its rewards, "
            "each one's mean per step, are in run.json (rewards) and rewards.png"
        )
    if task is not Task.SFT:
        report: Any = evaluate_preference_run(
            folder,
            cfg,
            tuned_dir,
            rows,
            task,
            max_samples=max_samples,
            compare_base=compare_base,
            settings=ScoringSettings(settings.batch_size),
        )
    elif takes_media(resolve_model_path(cfg.model)):
        from ftdata.train.media_eval import evaluate_media_run

        report = evaluate_media_run(
            folder,
            cfg,
            tuned_dir,
            processor=processor,
            max_samples=max_samples,
            compare_base=compare_base,
            settings=settings,
        )
    elif processor is not None:
        raise ConfigError(
            f"--processor is for runs whose model reads media; {folder.name} trained the text model "
            f"{cfg.model or 'bundled'}"
        )
    else:
        report = evaluate_text_run(
            folder, cfg, tuned_dir, max_samples=max_samples, compare_base=compare_base, settings=settings
        )
    return record_report(folder, report)


def _setup(cfg: TrainConfig, run_dir: Path, state: Any, *, resuming: bool) -> tuple[LoadedModel, Splits, dict]:
    """Load model and data, write config.yaml, the starting run.json and eval_data/."""
    with state.main_process_first():  # materialise the bundled model once
        resolve_model_path(cfg.model)
    loaded = load_model(cfg)
    if state.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    splits = load_splits(cfg, loaded.tokenizer, rejects_path=run_dir / "rejects.jsonl")
    from ftdata.train.layouts import fit, training

    splits = fit(splits, loaded.model)  # rows as the model can train their layout (tree rows: else split rows)
    data = _data_record(splits)
    processes = _processes_record(cfg, state)
    if resuming:
        _check_same_data(run_dir, data)
        _check_same_processes(run_dir, processes)
    if training(splits.layout).probed:  # before any step: the route packed rows take on this model, proven on it
        loaded.packing = check_packed_rows(
            loaded.model,
            _first_rows(splits.train),
            device=loaded.device.kind,
            pad_token_id=loaded.tokenizer.pad_token_id,
            media=loaded.media is not None,
        )
    trainable, total = count_parameters(loaded.model)
    base = _base_record(cfg, run_dir, loaded, data, processes, trainable=trainable, total=total, splits=splits)
    if loaded.packing is not None:
        base["packing"] = loaded.packing.to_dict()
    if loaded.targets is not None:
        base["model"]["lora_targets"] = loaded.targets.to_dict(requested_dropout=cfg.lora_dropout)
    if state.is_main_process:
        cfg.to_yaml(run_dir / record.CONFIG_FILE)
        record.write_json(run_dir / record.RUN_FILE, {**base, "status": "running"})
        if not (run_dir / "eval_data").exists():
            save_eval_split(splits, run_dir)
    return loaded, splits, base


def _first_rows(rows: Any, count: int = 8) -> list[dict[str, Any]]:
    """The first `count` rows of a split (a loaded dataset or a stream)."""
    if hasattr(rows, "select"):
        return list(rows.select(range(min(count, rows.num_rows))))
    return list(rows.take(count))


def _write_final_record(
    result: TrainResult,
    base: dict[str, Any],
    history: list[dict[str, Any]],
    *,
    resumed_from: Path | None,
    has_eval: bool,
) -> None:
    run_dir = result.run_dir
    plot = record.plot_losses(history, run_dir / record.PLOT_FILE, title=f"ftdata run {run_dir.name}")
    rewards = record.plot_rewards(history, run_dir / record.REWARDS_PLOT_FILE, title=f"ftdata run {run_dir.name}")
    final = {
        **base,
        "status": "completed",
        "finished": record.now(),
        "resumed_from": resumed_from.name if resumed_from else None,
        "metrics": result.metrics,
        "outputs": {
            result.output_dir.name: result.output_dir.name,
            "merged": result.merged_dir.name if result.merged_dir else None,
            "loss_plot": plot.name if plot else None,
            **({"rewards_plot": rewards.name} if rewards else {}),
            "eval_data": "eval_data" if has_eval else None,
        },
        **({"rewards": rewards_by_step} if (rewards_by_step := _reward_steps(history)) else {}),
        "log_history": history,
    }
    record.write_json(run_dir / record.RUN_FILE, final)


def _reward_steps(history: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    """A GRPO run's rewards, each one's mean per logged step: `{"exact": [{"step": 1, "mean": 0.25}, ...]}`."""
    return {
        name: [{"step": step, "mean": mean} for step, mean in steps]
        for name, steps in record.reward_means(history).items()
    }


def _new_run_dir(cfg: TrainConfig, state: Any) -> Path:
    """`output_dir/run_name` (default: a timestamp), the same folder on every process."""
    parent = Path(cfg.output_dir).expanduser()
    name = cfg.run_name or datetime.now().strftime("%Y%m%d-%H%M%S")
    if cfg.run_name is None:
        base, n = name, 2
        while (parent / name).exists():
            name, n = f"{base}-{n}", n + 1
    elif (parent / name).exists() and any((parent / name).iterdir()):
        raise ConfigError(
            f"run folder {parent / name} already exists; use --resume {parent / name} or another --run-name"
        )
    if state.num_processes > 1:  # ranks may start a second apart: rank 0's name wins
        from accelerate.utils import broadcast_object_list

        name = broadcast_object_list([name])[0]
    return parent / name


def _resume_dir(run_dir: str | Path) -> Path:
    folder = Path(run_dir).expanduser()
    if not (folder / record.CONFIG_FILE).is_file():
        raise ConfigError(
            f"{folder} is not an ftdata run folder (no {record.CONFIG_FILE}); give the folder `ftdata train` created"
        )
    return folder


def _data_record(splits: Splits) -> dict[str, Any]:
    per_split = splits.fingerprint()
    out = {
        "fingerprint": record.data_fingerprint(per_split),
        "task": splits.task.value,
        "packed": splits.packed,
        "splits": per_split,
    }
    if splits.report is not None:  # what the build did to every record, kept with the run
        out["build"] = splits.report.to_dict()
    return out


def _check_same_data(run_dir: Path, data: dict[str, Any]) -> None:
    previous = record.read_run(run_dir).get("data", {})
    if previous and _content(previous) != _content(data):
        raise ConfigError(
            f"the data changed since {run_dir.name} started (fingerprint {previous.get('fingerprint')} -> "
            f"{data['fingerprint']}): resuming would not continue the same data order; start a new run"
        )


def _content(data: dict[str, Any]) -> dict[str, Any]:
    """What a resume compares: each split's columns, rows, token counts and content hash. Not datasets'
    own `_fingerprint`: it is random for rows built in memory (raw data), so no such run could resume."""
    return {
        name: {k: v for k, v in split.items() if k != "fingerprint"} for name, split in data.get("splits", {}).items()
    }


def _processes_record(cfg: TrainConfig, state: Any) -> dict[str, Any]:
    """How many processes train and how many rows one optimizer step sees across them."""
    world = state.num_processes
    return {
        "world_size": world,
        "backend": state.backend,  # gloo on CPU, nccl on CUDA, None for one process
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "global_batch_size": world * cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps,
    }


def _check_same_processes(run_dir: Path, processes: dict[str, Any]) -> None:
    """A checkpoint's data position counts batches of its world size: resume with the same one."""
    previous = record.read_run(run_dir).get("processes", {}).get("world_size")
    if previous is not None and previous != processes["world_size"]:
        raise ConfigError(
            f"{run_dir.name} was trained by {previous} process(es), this resume runs {processes['world_size']}: "
            "the checkpoint's data position and global batch would not carry over; resume with "
            f"{previous} process(es) or start a new run"
        )


def _base_record(
    cfg: TrainConfig,
    run_dir: Path,
    loaded: LoadedModel,
    data: dict[str, Any],
    processes: dict[str, Any],
    *,
    trainable: int,
    total: int,
    splits: Splits,
) -> dict[str, Any]:
    previous = record.read_run(run_dir)
    return {
        "run": run_dir.name,
        "started": previous.get("started", record.now()),
        "config": cfg.to_dict(),
        "method": method_record(cfg, splits),
        "model": {
            "path": str(loaded.path),
            "class": type(loaded.model).__name__,
            "device": loaded.device.describe(),
            "trainable_params": trainable,
            "total_params": total,
            "trainable_percent": round(100 * trainable / total, 4) if total else None,
            "memory_footprint_bytes": int(loaded.model.get_memory_footprint()),
        },
        "data": data,
        "processes": processes,
        "versions": record.versions(),
    }


def _final_eval(trainer: Any, splits: Splits) -> None:
    """Evaluate once more unless the last log entry already is an eval at the final step."""
    if splits.eval is None:
        return
    step = trainer.state.global_step
    if not any("eval_loss" in e and e.get("step") == step for e in trainer.state.log_history):
        trainer.evaluate()


def _metrics(
    trainer: Any,
    train_metrics: dict[str, Any],
    data: dict[str, Any],
    *,
    total: int,
    seconds: float,
    device: str,
    global_batch: int,
    method: Method,
) -> dict[str, Any]:
    # Tokens seen = train tokens x epochs done; robust to resume (TRL's own counter restarts at 0).
    split = data["splits"]["train"]
    epochs = float(trainer.state.epoch or 0.0)
    if split.get("streamed"):  # the Trainer cannot count the epochs of a stream (it has no length)
        epochs = trainer.state.global_step * global_batch / split["rows"]
    tokens_seen = round(split["tokens"] * epochs)
    sampled = [e["num_tokens"] for e in trainer.state.log_history if "num_tokens" in e]
    if method is Method.GRPO and sampled:  # prompts and the completions sampled for them, as TRL counts them
        tokens_seen = int(sampled[-1])
    return {
        **trainer_metrics(trainer),
        **{k: v for k, v in train_metrics.items() if isinstance(v, (int, float))},
        **record.summarize_losses(trainer.state.log_history, perplexities=method is Method.SFT),
        **METHODS[method].summary(trainer.state.log_history),
        "wall_seconds": round(seconds, 3),
        "tokens_seen": tokens_seen,
        "estimated_flops": record.estimated_flops(total, tokens_seen),
        "peak_memory_bytes": record.peak_memory_bytes(device),
    }
