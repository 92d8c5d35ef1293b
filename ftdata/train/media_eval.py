"""`ftdata eval RUN` on a run whose model reads media: eval loss and perplexity on the held-out rows,
and answers generated with their media, scored with sacreBLEU like a text run (`run.evaluate_run`
chooses this or `evaluate.py` once).

What differs from a text run (`evaluate.py`):

- the model loads with `AutoModelForImageTextToText` (`media_model.load_media_model`), the adapter on top;
- the processor is the one saved with the run (`RUN/adapter/`: tokenizer + preprocessor_config.json),
  or `--processor DIR`; its image processor makes the pixels, through the run's `MediaCollator`,
  which checks every item's features against its span first;
- loss: the rows go through the collator as in training (packed rows isolated the same way); the
  mean is over every trained token of the split (the trainer's `eval_loss` averages per batch);
- generation: each prompt keeps its images (the spans that start inside it), left-padded in a
  batch; the model also gets which tokens are image tokens (Qwen-VL `mm_token_type_ids` for its
  multimodal RoPE, Gemma 3 `token_type_ids` for attention inside an image);
- the table shows each item of a prompt as one marker `[image WxH, N tokens]`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ftdata.errors import ConfigError
from ftdata.media.column import MEDIA_FIELD
from ftdata.media.families import Collate
from ftdata.media.medium import size_text
from ftdata.media.processors import load_processor
from ftdata.train.config import TrainConfig
from ftdata.train.evaluate import eval_rows
from ftdata.train.generation import (
    EvalReport,
    GenerationSettings,
    corpus_bleu,
    left_padded,
    pad_id,
    rows_and_references,
)
from ftdata.train.media_collator import MediaCollator
from ftdata.train.samples import Sample, end_marker_ids, extract_samples, sequences
from ftdata.types import IGNORE_INDEX


@dataclass(frozen=True)
class MediaSample:
    """A held-out prompt with the media items inside it (`start` counted from the prompt's first token)."""

    sample: Sample
    media: tuple[dict[str, Any], ...]


def evaluate_media_run(
    folder: Path,
    cfg: TrainConfig,
    tuned_dir: Path,
    *,
    processor: str | Path | None,
    max_samples: int | None,
    compare_base: bool,
    settings: GenerationSettings,
) -> EvalReport:
    """Loss, perplexity and generated answers (base and tuned) of the eval rows of a run whose model reads media.

    Raises:
        ConfigError: no processor files, no usable prompt, or a model that reads no media.
    """
    from ftdata.io.resources import load_tokenizer
    from ftdata.train.media_model import collator_for, image_folder, load_media_model, processor_folder, save_parts_only
    from ftdata.train.model import resolve_device, resolve_model_path, with_pad_token

    rows = eval_rows(folder)
    samples, skipped = media_samples(rows, limit=max_samples)
    if not samples:
        raise ConfigError(
            f"no usable prompt in {folder / 'eval_data'}: all {skipped} sequences are trained "
            "from their first token (train_on_prompt), so there is no prompt to answer"
        )
    base_path = resolve_model_path(cfg.model)
    source = Path(processor).expanduser() if processor is not None else None
    if source is None:  # the processor saved with the run, else the run's own --processor
        source = tuned_dir if (tuned_dir / "preprocessor_config.json").is_file() else processor_folder(cfg, base_path)
    elif not (source / "preprocessor_config.json").is_file():
        raise ConfigError(
            f"processor folder {str(source)!r} has no preprocessor_config.json: give the folder the model repo ships"
        )
    proc = load_processor(str(source), tokenizer=with_pad_token(load_tokenizer(str(source))))
    save_parts_only(proc, source)
    tokenizer = proc.tokenizer
    device = resolve_device(cfg.precision)

    def load(path: Path) -> Any:
        return load_media_model(
            path, quantization=cfg.quantization, device=device, dtype=device.dtype, tokenizer=tokenizer
        ).eval()

    first = load(base_path)
    collator = collator_for(first, proc, image_dir=image_folder(cfg), dtype=device.dtype)
    stop_ids = end_marker_ids([s.sample for s in samples], set(tokenizer.all_special_ids)) | {tokenizer.eos_token_id}
    answers: dict[str, list[str]] = {}
    losses: dict[str, float] = {}

    def measure(name: str, model: Any) -> None:
        losses[name] = mean_loss(model, collator, rows, batch_size=settings.batch_size)
        answers[name] = generate_with_media(model, tokenizer, collator, samples, settings=settings, stop_ids=stop_ids)

    if cfg.lora:  # one model: the adapter switched off is the base
        from peft import PeftModel

        tuned = PeftModel.from_pretrained(first, str(tuned_dir)).eval()
        if compare_base:
            with tuned.disable_adapter():
                measure("base", tuned)
        measure("tuned", tuned)
    else:
        if compare_base:
            measure("base", first)
        measure("tuned", load(tuned_dir))
    table, references = rows_and_references(tokenizer, [s.sample for s in samples], answers)
    for row, vs in zip(table, samples):
        row["prompt"] = prompt_text(tokenizer, vs, collator.facts.image_token_id)
    bleu = {name: corpus_bleu(outputs, references) for name, outputs in answers.items()}
    return EvalReport(run_dir=folder, rows=table, bleu=bleu, skipped=skipped, settings=settings, loss=losses)


def media_samples(rows: Sequence[Mapping[str, Any]], *, limit: int | None) -> tuple[list[MediaSample], int]:
    """The held-out prompts (as `extract_samples`) with the media items that lie inside each."""
    samples, skipped = extract_samples(rows, limit=limit)
    out = []
    for sample in samples:
        row = rows[sample.row]
        offset = sum(len(ids) for ids, _ in list(sequences(row))[: sample.sequence])
        inside = [
            {**item, "start": int(item["start"]) - offset}
            for item in row.get(MEDIA_FIELD) or ()
            if offset <= int(item["start"]) < offset + len(sample.prompt_ids)
        ]
        out.append(MediaSample(sample, tuple(inside)))
    return out, skipped


def mean_loss(model: Any, collator: MediaCollator, rows: Sequence[Mapping[str, Any]], *, batch_size: int) -> float:
    """Mean cross-entropy over every trained token of `rows`, batched by the media collator as in training."""
    total, count = 0.0, 0
    device = next(model.parameters()).device
    for start in range(0, len(rows), batch_size):
        batch = collator([rows[i] for i in range(start, min(start + batch_size, len(rows)))])
        labels = batch.pop("labels")[:, 1:]
        with torch.no_grad():
            logits = model(**_to(batch, device), use_cache=False).logits[:, :-1].float()
        total += float(
            torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]),
                labels.reshape(-1).to(device),
                ignore_index=IGNORE_INDEX,
                reduction="sum",
            )
        )
        count += int((labels != IGNORE_INDEX).sum())
    if count == 0:
        raise ConfigError("the eval rows have no trained token: nothing to measure a loss on")
    return total / count


def generate_with_media(
    model: Any,
    tokenizer: Any,
    collator: MediaCollator,
    samples: Sequence[MediaSample],
    *,
    settings: GenerationSettings,
    stop_ids: set[int],
) -> list[str]:
    """Answers to the prompts with their media, batched with left padding, prompt stripped, in input order."""
    device = next(model.parameters()).device
    answers: dict[int, str] = {}
    for order, ids, mask, shifts in left_padded([s.sample.prompt_ids for s in samples], tokenizer, settings.batch_size):
        batch = [samples[i] for i in order]
        items, item_row = [], []
        for row, (s, shift) in enumerate(zip(batch, shifts)):  # each item moves with its prompt's padding
            for item in s.media:
                items.append({**item, "start": int(item["start"]) + shift})
                item_row.append(row)
        names = [{"record": f"eval_data row {s.sample.row}, sequence {s.sample.sequence}"} for s in batch]
        inputs = {"input_ids": ids, "attention_mask": mask, **collator.features(ids, items, item_row, names)}
        is_image = ids == collator.facts.image_token_id
        if collator.facts.collate is Collate.MROPE:  # which tokens get the 3-D image positions
            inputs["mm_token_type_ids"] = is_image.int()
        elif collator.facts.collate is Collate.BLOCKS:  # which tokens attend both ways inside their image
            inputs["token_type_ids"] = is_image.long()
        with torch.no_grad():
            out = model.generate(
                **_to(inputs, device),
                max_new_tokens=settings.max_new_tokens,
                num_beams=settings.num_beams,
                do_sample=False,
                eos_token_id=sorted(stop_ids),
                pad_token_id=pad_id(tokenizer),
            )
        for row, i in enumerate(order):
            answers[i] = tokenizer.decode(out[row, ids.shape[1] :], skip_special_tokens=True).strip()
    return [answers[i] for i in range(len(samples))]


def prompt_text(tokenizer: Any, ms: MediaSample, image_token_id: int | None) -> str:
    """The prompt decoded, each item's run of pad tokens shown as one `[image WxH, N tokens]`."""
    ids, parts, begin = list(ms.sample.prompt_ids), [], 0
    for item in sorted(ms.media, key=lambda im: int(im["start"])):
        start, end = int(item["start"]), int(item["start"])
        while end < len(ids) and ids[end] == image_token_id:  # Idefics3 spreads pads over tiles: the first run
            end += 1
        parts += [tokenizer.decode(ids[begin:start]), f"[{item['kind']} {size_text(item)}, {item['tokens']} tokens]"]
        begin = end
    return "".join([*parts, tokenizer.decode(ids[begin:])])


def _to(value: Any, device: torch.device) -> Any:
    """Tensors (also inside a mask dict) on `device`."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return type(value)({k: _to(v, device) for k, v in value.items()})
    return value
