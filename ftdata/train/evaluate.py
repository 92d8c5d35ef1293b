"""`ftdata eval RUN` on a text run: answer held-out prompts with the base and the fine-tuned model,
score both with sacreBLEU against the references, and save the side-by-side comparison
(`run.evaluate_run` chooses this or `media_eval.py` once).

The prompts and references come from the run's own `eval_data/` rows (see `samples.py`), so
evaluation needs nothing but the run folder. Generation is batched with left padding and only
the new tokens are decoded (the prompt is stripped, like `return_full_text=False`).

The rows choose the evaluation, once: preference rows (a DPO/KTO run) are scored by preference
accuracy (`preference_eval.py`), a vision-language model's by `vlm_eval.py`, the rest here.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftdata.errors import ConfigError
from ftdata.train import record
from ftdata.train.config import TrainConfig
from ftdata.train.generation import EvalReport, GenerationSettings, corpus_bleu, generate, pad_id, rows_and_references
from ftdata.train.preference_eval import (
    PreferenceReport,
    ScoringSettings,
    held_out_pairs,
    pair_margins,
    preference_report,
)
from ftdata.train.samples import Sample, end_marker_ids, extract_samples
from ftdata.types import Task

if TYPE_CHECKING:
    from collections.abc import Iterator

    from transformers import PreTrainedTokenizerBase


def evaluate_text_run(
    folder: Path,
    cfg: TrainConfig,
    tuned_dir: Path,
    *,
    max_samples: int | None,
    compare_base: bool,
    settings: GenerationSettings,
) -> EvalReport:
    """Answers (base and tuned) for a text run's held-out prompts, scored with sacreBLEU (`run.evaluate_run` chooses).

    Raises:
        ConfigError: no usable prompt in the eval rows.
    """
    samples, skipped = extract_samples(eval_rows(folder), limit=max_samples)
    if not samples:
        raise ConfigError(
            f"no usable prompt in {folder / 'eval_data'}: all {skipped} sequences are trained "
            "from their first token (train_on_prompt), so there is no prompt to answer"
        )
    from ftdata.io.resources import load_tokenizer
    from ftdata.train.model import with_pad_token

    tokenizer = with_pad_token(load_tokenizer(str(tuned_dir)))
    answers = _generate_all(cfg, tokenizer, tuned_dir, samples, settings=settings, compare_base=compare_base)
    rows, references = rows_and_references(tokenizer, samples, answers)
    bleu = {name: corpus_bleu(outputs, references) for name, outputs in answers.items()}
    return EvalReport(run_dir=folder, rows=rows, bleu=bleu, skipped=skipped, settings=settings)


def eval_rows(folder: Path) -> Any:
    """The run's held-out rows (`RUN/eval_data`)."""
    from datasets import load_from_disk

    return load_from_disk(str(folder / "eval_data"))


def record_report(folder: Path, report: EvalReport | PreferenceReport) -> EvalReport | PreferenceReport:
    """Write `report` to `RUN/eval/` and its summary to `RUN/run.json`; `report` with its files."""
    report.files = save_report(report, folder / "eval")
    _record_summary(folder, report)
    return report


def save_report(report: EvalReport | PreferenceReport, folder: Path) -> dict[str, str]:
    """Write the comparison as CSV (one row per sample) and JSON (with scores and settings)."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = folder / "comparison.csv", folder / "comparison.json"
    columns = list(report.rows[0]) if report.rows else ["prompt", "reference", "tuned"]
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(report.rows)
    payload = {
        **report.scores(),
        "samples": len(report.rows),
        "skipped": report.skipped,
        "settings": asdict(report.settings),
        "rows": report.rows,
    }
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"csv": str(csv_path), "json": str(json_path)}


# --- helpers -----------------------------------------------------------------------------------


def finished_run(folder: Path) -> tuple[TrainConfig, Path]:
    """The run's config and its trained output folder (adapter/ or model/)."""
    config_file = folder / record.CONFIG_FILE
    if not config_file.is_file():
        raise ConfigError(f"{folder} is not an ftdata run folder (no {record.CONFIG_FILE})")
    cfg = TrainConfig.from_yaml(config_file)
    tuned = folder / ("adapter" if cfg.lora else "model")
    if not tuned.is_dir():
        raise ConfigError(f"{folder} has no {tuned.name}/ yet: the run has not finished (resume it with --resume)")
    if not (folder / "eval_data").is_dir():
        raise ConfigError(f"{folder} has no eval_data/: train with a test split (e.g. --test-size 0.1) to evaluate")
    return cfg, tuned


def _generate_all(
    cfg: TrainConfig,
    tokenizer: PreTrainedTokenizerBase,
    tuned_dir: Path,
    samples: list[Sample],
    *,
    settings: GenerationSettings,
    compare_base: bool,
) -> dict[str, list[str]]:
    """Answers by model: {"base": [...], "tuned": [...]} (no "base" without `compare_base`)."""
    stop_ids = end_marker_ids(samples, set(tokenizer.all_special_ids)) | {tokenizer.eos_token_id}
    prompts = [s.prompt_ids for s in samples]
    return {
        name: generate(model, tokenizer, prompts, settings=settings, stop_ids=stop_ids)
        for name, model in _each_model(cfg, tokenizer, tuned_dir, compare_base=compare_base)
    }


def evaluate_preference_run(
    folder: Path,
    cfg: TrainConfig,
    tuned_dir: Path,
    rows: Any,
    task: Task,
    *,
    max_samples: int | None,
    compare_base: bool,
    settings: ScoringSettings,
) -> PreferenceReport:
    """The preference accuracy of the base and the tuned model on a DPO/KTO run's held-out pairs
    (`run.evaluate_run` chooses)."""
    from ftdata.io.resources import load_tokenizer
    from ftdata.train.model import with_pad_token

    pairs, skipped = held_out_pairs(rows, task, limit=max_samples)
    if not pairs:
        raise ConfigError(
            f"no held-out pair in {folder / 'eval_data'}: no prompt has both a desirable and an "
            f"undesirable row ({skipped} rows without a partner)"
        )
    tokenizer = with_pad_token(load_tokenizer(str(tuned_dir)))
    margins = {
        name: pair_margins(model, pairs, settings=settings, pad_id=pad_id(tokenizer))
        for name, model in _each_model(cfg, tokenizer, tuned_dir, compare_base=compare_base)
    }
    return preference_report(folder, tokenizer, pairs, margins, skipped=skipped, settings=settings)


def _each_model(
    cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, tuned_dir: Path, *, compare_base: bool
) -> Iterator[tuple[str, Any]]:
    """("base", model) (with `compare_base`), then ("tuned", model), each ready while the caller
    holds it: for a LoRA run one model, its adapter switched off for the base."""
    from ftdata.train.model import fit_embeddings, load_base_model, resolve_device, resolve_model_path, sync_pad_token

    device = resolve_device(cfg.precision)

    def load(path: Path) -> Any:
        model = load_base_model(path, quantization=cfg.quantization, device=device, trainable=False)
        fit_embeddings(model, tokenizer)  # add_chat_tokens: rows for the tokens the run added, as in training
        sync_pad_token(model, tokenizer)
        return model.eval()

    base_path = resolve_model_path(cfg.model)
    if cfg.lora:  # one model: the adapter switched off is the base
        from peft import PeftModel

        model = PeftModel.from_pretrained(load(base_path), str(tuned_dir)).eval()
        if compare_base:
            with model.disable_adapter():
                yield "base", model
        yield "tuned", model
        return
    if compare_base:
        yield "base", load(base_path)
    yield "tuned", load(tuned_dir)


def _record_summary(folder: Path, report: EvalReport | PreferenceReport) -> None:
    run = record.read_run(folder)
    if run:
        run["evaluation"] = {
            **report.scores(),
            "samples": len(report.rows),
            "skipped": report.skipped,
            "settings": asdict(report.settings),
            "finished": record.now(),
            **report.files,
        }
        record.write_json(folder / record.RUN_FILE, run)
