"""`ftdata eval RUN`: answer held-out prompts with the base and the fine-tuned model, score
both with sacreBLEU against the references, and save the side-by-side comparison.

The prompts and references come from the run's own `eval_data/` rows (see `samples.py`), so
evaluation needs nothing but the run folder. Generation is batched with left padding and only
the new tokens are decoded (the prompt is stripped, like `return_full_text=False`).
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
from ftdata.train.generation import EvalReport, GenerationSettings, corpus_bleu, generate, rows_and_references
from ftdata.train.samples import Sample, end_marker_ids, extract_samples

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


def evaluate_run(
    run_dir: str | Path,
    *,
    max_samples: int | None = 32,
    compare_base: bool = True,
    settings: GenerationSettings | None = None,
    processor: str | Path | None = None,
) -> EvalReport:
    """Generate answers for the run's held-out prompts and score them with sacreBLEU.

    A vision-language run (its model's config has a `vision_config`) also gets the eval loss
    and perplexity, and its prompts are answered with their images (`vlm_eval.py`); `processor`
    is its processor folder (default: the one saved with the run).

    Writes `RUN/eval/comparison.csv` and `RUN/eval/comparison.json` and adds a summary to
    `RUN/run.json` under "evaluation".

    Raises:
        ConfigError: not a finished run folder, no eval rows (train with test_size), or no
            usable prompt in them.

    Example:
        >>> report = evaluate_run("runs/20250101-120000", max_samples=16)  # doctest: +SKIP
        >>> report.bleu  # doctest: +SKIP
        {'tuned': 23.1, 'base': 9.8}
    """
    settings = settings or GenerationSettings()
    folder = Path(run_dir).expanduser()
    cfg, tuned_dir = _finished_run(folder)
    from datasets import load_from_disk

    rows = load_from_disk(str(folder / "eval_data"))
    from ftdata.train.model import resolve_model_path
    from ftdata.train.vlm import is_vision_language

    if is_vision_language(resolve_model_path(cfg.model)):
        from ftdata.train.vlm_eval import evaluate_vision_run

        report = evaluate_vision_run(folder, cfg, tuned_dir, rows, processor=processor, max_samples=max_samples,
                                     compare_base=compare_base, settings=settings)  # fmt: skip
        report.files = save_report(report, folder / "eval")
        _record_summary(folder, report)
        return report
    if processor is not None:
        raise ConfigError(f"--processor is for vision-language runs; {folder.name} trained the text model {cfg.model or 'bundled'}")
    samples, skipped = extract_samples(rows, limit=max_samples)
    if not samples:
        raise ConfigError(f"no usable prompt in {folder / 'eval_data'}: all {skipped} sequences are trained "
                          "from their first token (train_on_prompt), so there is no prompt to answer")
    from ftdata.io.resources import load_tokenizer
    from ftdata.train.model import with_pad_token

    tokenizer = with_pad_token(load_tokenizer(str(tuned_dir)))
    answers = _generate_all(cfg, tokenizer, tuned_dir, samples, settings=settings, compare_base=compare_base)
    rows, references = rows_and_references(tokenizer, samples, answers)
    bleu = {name: corpus_bleu(outputs, references) for name, outputs in answers.items()}
    report = EvalReport(run_dir=folder, rows=rows, bleu=bleu, skipped=skipped, settings=settings)
    report.files = save_report(report, folder / "eval")
    _record_summary(folder, report)
    return report


def save_report(report: EvalReport, folder: Path) -> dict[str, str]:
    """Write the comparison as CSV (one row per sample) and JSON (with scores and settings)."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = folder / "comparison.csv", folder / "comparison.json"
    columns = list(report.rows[0]) if report.rows else ["prompt", "reference", "tuned"]
    with csv_path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(report.rows)
    payload = {**report.scores(), "samples": len(report.rows), "skipped": report.skipped,
               "settings": asdict(report.settings), "rows": report.rows}
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return {"csv": str(csv_path), "json": str(json_path)}


# --- helpers -----------------------------------------------------------------------------------


def _finished_run(folder: Path) -> tuple[TrainConfig, Path]:
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


def _generate_all(cfg: TrainConfig, tokenizer: PreTrainedTokenizerBase, tuned_dir: Path, samples: list[Sample], *,
                  settings: GenerationSettings, compare_base: bool) -> dict[str, list[str]]:
    """Answers by model: {"base": [...], "tuned": [...]} (no "base" without `compare_base`)."""
    from ftdata.train.model import fit_embeddings, load_base_model, resolve_device, resolve_model_path, sync_pad_token

    device = resolve_device(cfg.precision)
    stop_ids = end_marker_ids(samples, set(tokenizer.all_special_ids)) | {tokenizer.eos_token_id}
    prompts = [s.prompt_ids for s in samples]
    out: dict[str, list[str]] = {}

    def load(path: Path) -> Any:
        model = load_base_model(path, quantization=cfg.quantization, device=device, trainable=False)
        fit_embeddings(model, tokenizer)  # add_chat_tokens: rows for the tokens the run added, as in training
        sync_pad_token(model, tokenizer)
        return model.eval()

    def answer(model: Any) -> list[str]:
        return generate(model, tokenizer, prompts, settings=settings, stop_ids=stop_ids)

    base_path = resolve_model_path(cfg.model)
    if cfg.lora:  # one model: the adapter switched off is the base
        from peft import PeftModel

        model = PeftModel.from_pretrained(load(base_path), str(tuned_dir)).eval()
        if compare_base:
            with model.disable_adapter():
                out["base"] = answer(model)
        out["tuned"] = answer(model)
        return out
    if compare_base:
        out["base"] = answer(load(base_path))
    out["tuned"] = answer(load(tuned_dir))
    return out


def _record_summary(folder: Path, report: EvalReport) -> None:
    run = record.read_run(folder)
    if run:
        run["evaluation"] = {**report.scores(), "samples": len(report.rows), "skipped": report.skipped,
                             "settings": asdict(report.settings), "finished": record.now(), **report.files}
        record.write_json(folder / record.RUN_FILE, run)
