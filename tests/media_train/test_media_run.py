"""A run whose model reads images, end to end like a text run: the tokens SFTTrainer logs, `--merge`,
`ftdata eval` (loss, perplexity, answers generated with the images) and resume.

The fast tests use literal rows and the tiny random-weight Qwen2-VL of `media_support` (sized for
the real Qwen2.5 tokenizer); the run tests train it once (marked slow)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("trl")
pytest.importorskip("peft")
datasets = pytest.importorskip("datasets")
transformers = pytest.importorskip("transformers")

from media_support import (  # noqa: E402
    IMG, PHOTOS, QWEN_TOKENIZER, chat_rows, image_item, make_row, qwen_config, qwen_folders, qwen_image_processor,
)

from ftdata.train import TrainConfig, resume_config, train  # noqa: E402
from ftdata.train.media_collator import ModelFacts, MediaCollator  # noqa: E402
from ftdata.train.media_model import TOKENS, CountingCollator  # noqa: E402
from ftdata.train.media_eval import prompt_text, media_samples  # noqa: E402

needs_tokenizer = pytest.mark.skipif(not QWEN_TOKENIZER.is_dir(), reason="shared Qwen2.5 tokenizer not found")


def fake_rope(seq, *, mm_token_type_ids, image_grid_thw):
    return torch.zeros((3, 1, seq.shape[1]), dtype=torch.long), None


def test_counting_collator_counts_the_rows_tokens_not_the_pads_nor_the_batch():
    a = make_row("qwen2_vl", prefix=3, images=[PHOTOS[0]], suffix=4, seed=1)  # 3 + (1 + 12 + 1 + 2) + 4 = 23 tokens
    b = make_row("qwen2_vl", prefix=2, images=[], suffix=3, seed=2)  # 5 tokens
    packed = {"input_ids": a["input_ids"] + b["input_ids"], "labels": a["labels"] + b["labels"],
              "seq_lengths": [23, 5], "media": a["media"]}  # fmt: skip
    collator = CountingCollator(MediaCollator(qwen_image_processor(), ModelFacts.of(qwen_config()), rope_index=fake_rope))
    batch = collator([packed, b])
    assert (len(a["input_ids"]), len(b["input_ids"])) == (23, 5)
    assert int(batch[TOKENS]) == 28 + 5  # the two rows' lengths; the batch is 2 x 28 slots
    # what TRL 1.16 counts without an attention mask: position_ids.size(1), i.e. the batch size
    assert batch["position_ids"].shape == (4, 2, 28) and "attention_mask" not in batch


def test_media_samples_keep_the_images_of_each_prompt_counted_from_its_start():
    a = make_row("qwen2_vl", prefix=3, images=[PHOTOS[1]], suffix=4, seed=1)
    b = make_row("qwen2_vl", prefix=2, images=[PHOTOS[0]], suffix=3, seed=2)
    n = len(a["input_ids"])
    packed = {"input_ids": a["input_ids"] + b["input_ids"], "labels": a["labels"] + b["labels"], "seq_lengths": [n, len(b["input_ids"])],
              "media": a["media"] + [{**b["media"][0], "start": n + b["media"][0]["start"]}]}  # fmt: skip
    samples, skipped = media_samples([packed], limit=None)
    assert skipped == 0 and [(s.sample.row, s.sample.sequence) for s in samples] == [(0, 0), (0, 1)]
    assert [[im["start"] for im in s.media] for s in samples] == [[4], [3]]  # prefix + the image-start token
    assert samples[1].sample.prompt_ids[3:15] == (IMG,) * 12


@needs_tokenizer
def test_prompt_text_shows_each_image_as_one_marker():
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER))
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ids = tokenizer.encode("Look: <|vision_start|>") + [pad] * 12 + tokenizer.encode("<|vision_end|>What is it?")
    sample = media_samples([{"input_ids": ids + [5], "labels": [-100] * len(ids) + [5],
                              "media": [image_item("x.jpg", 512, 600, 12, 4)]}],
                            limit=None)[0][0]  # fmt: skip
    assert prompt_text(tokenizer, sample, pad) == "Look: <|vision_start|>[image 512x600, 12 tokens]<|vision_end|>What is it?"


@needs_tokenizer
def test_merge_writes_a_media_model_folder_with_the_logits_of_base_plus_adapter(tmp_path):
    """`--merge` on a VLM run: AutoModelForImageTextToText loads the merged folder, and it gives the
    logits of the base with the adapter on, on a row with a real image."""
    from peft import PeftModel

    from ftdata.train.run import load_model
    from ftdata.media.processors import load_processor
    from ftdata.train.media_model import merge_media_adapter

    model_dir, processor_dir = qwen_folders(tmp_path)
    loaded = load_model(TrainConfig(model=str(model_dir), processor=str(processor_dir), quantization="none", lora_r=4))
    with torch.no_grad():  # a trained adapter: LoRA B starts at zero, which would merge to the base
        for name, param in loaded.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    loaded.model.save_pretrained(str(tmp_path / "adapter"))
    merged_dir = merge_media_adapter(loaded, tmp_path / "adapter", tmp_path / "merged")

    merged = transformers.AutoModelForImageTextToText.from_pretrained(str(merged_dir)).eval()
    assert type(merged).__name__ == "Qwen2VLForConditionalGeneration"
    assert {"preprocessor_config.json", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in merged_dir.iterdir()}
    processor = load_processor(str(merged_dir), tokenizer=loaded.tokenizer)  # the folder works as --processor too
    batch = loaded.media.collator([chat_rows(processor_dir)[0]])
    batch.pop("labels")
    base = transformers.AutoModelForImageTextToText.from_pretrained(str(model_dir)).eval()
    tuned = PeftModel.from_pretrained(base, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        got, want = merged(**batch).logits, tuned(**batch).logits
        with tuned.disable_adapter():
            plain = tuned(**batch).logits
    assert type(processor.image_processor).__name__.startswith("Qwen2VLImageProcessor")
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    assert (got - plain).abs().max() > 0.05  # the adapter changed the model: the merge carries it


# --- one real run of the tiny Qwen2-VL: 4 steps, checkpoints at 2 and 4, a test split, --merge ----

RUN_OPTIONS = dict(
    quantization="none", lora_r=8, lora_alpha=16, max_steps=4, learning_rate=1e-2, lr_scheduler_type="constant",
    warmup_steps=0, per_device_train_batch_size=2, logging_steps=1, save_strategy="steps", save_steps=2,
    eval_strategy="no", merge=True,
)  # fmt: skip


@pytest.fixture(scope="module")
def media_run(tmp_path_factory):
    if not QWEN_TOKENIZER.is_dir():
        pytest.skip("shared Qwen2.5 tokenizer not found")
    tmp = tmp_path_factory.mktemp("media_run")
    model_dir, processor_dir = qwen_folders(tmp)
    rows = chat_rows(processor_dir)
    splits = {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:2])}
    datasets.DatasetDict(splits).save_to_disk(str(tmp / "data"))
    cfg = TrainConfig(model=str(model_dir), processor=str(processor_dir), data=str(tmp / "data"),
                      output_dir=str(tmp / "runs"), run_name="vlm", **RUN_OPTIONS)  # fmt: skip
    result = train(cfg)
    return result, rows


def logged(run_dir: Path, key: str) -> dict[int, float]:
    history = json.loads((run_dir / "run.json").read_text())["log_history"]
    return {e["step"]: e[key] for e in history if key in e}


@pytest.mark.slow  # the run: ~30 s on 2 busy CPU cores
def test_media_run_logs_the_real_tokens_and_writes_what_a_text_run_writes(media_run):
    result, rows = media_run
    run = result.run_dir
    lengths = [len(r["input_ids"]) for r in rows]  # 2 rows a step, 2 epochs of 4 rows in 4 steps
    assert sum(lengths) == 187
    tokens = logged(run, "num_tokens")
    assert tokens[4] == 2 * sum(lengths) == result.metrics["tokens_seen"]  # TRL alone logged 2 a step: 2, 4, 6, 8
    assert all(tokens[s + 1] - tokens[s] in {a + b for a in lengths for b in lengths} for s in (1, 2, 3))
    record = json.loads((run / "run.json").read_text())
    assert record["outputs"]["merged"] == "merged" and record["outputs"]["loss_plot"] == "loss.png"
    assert (run / "loss.png").stat().st_size > 1000 and (run / "checkpoint-2" / "preprocessor_config.json").is_file()
    merged = transformers.AutoModelForImageTextToText.from_pretrained(str(result.merged_dir))
    assert type(merged).__name__ == "Qwen2VLForConditionalGeneration"


@pytest.mark.slow  # ~40 s: loss and generation with images, base and tuned
def test_eval_on_a_media_run_reports_loss_perplexity_and_answers_with_images(media_run):
    from ftdata.train.run import evaluate_run
    from ftdata.train.generation import GenerationSettings

    result, _ = media_run
    report = evaluate_run(result.run_dir, settings=GenerationSettings(max_new_tokens=4, batch_size=2))
    # one eval batch: the same mean as the trainer's own eval loss at the end of the run
    assert math.isclose(report.loss["tuned"], result.metrics["eval_loss"], rel_tol=1e-5)
    assert report.loss["tuned"] < report.loss["base"]
    scores = report.scores()
    assert scores["perplexity"]["tuned"] == pytest.approx(math.exp(report.loss["tuned"]), rel=1e-5)
    assert [r["reference"] for r in report.rows] == ["A woman in a navy uniform.", "It says matplotlib."]
    assert "<|vision_start|>[image 512x600, 12 tokens]<|vision_end|>Who is in the picture?" in report.rows[0]["prompt"]
    assert all(r["tuned"] and r["base"] for r in report.rows)
    saved = json.loads(Path(report.files["json"]).read_text())
    assert saved["loss"] == scores["loss"] and set(saved["perplexity"]) == {"base", "tuned"}
    assert json.loads((result.run_dir / "run.json").read_text())["evaluation"]["loss"] == scores["loss"]
    alone = evaluate_run(result.run_dir, compare_base=False, settings=GenerationSettings(max_new_tokens=4, batch_size=1))
    assert [r["tuned"] for r in alone.rows] == [r["tuned"] for r in report.rows]  # left padding changes nothing


@pytest.mark.slow  # ~25 s
def test_ftdata_eval_cli_on_a_media_run(media_run, tmp_path):
    from typer.testing import CliRunner

    from ftdata.cli.app import app

    result, _ = media_run
    out = CliRunner().invoke(app, ["eval", str(result.run_dir), "--no-base", "--max-new-tokens", "3", "--width", "60"])
    assert out.exit_code == 0, out.output
    assert "sacreBLEU: tuned" in out.output and "eval loss: tuned " in out.output and "(perplexity " in out.output
    bad = CliRunner().invoke(app, ["eval", str(result.run_dir), "--processor", str(tmp_path)])
    assert bad.exit_code == 2 and "has no preprocessor_config.json" in bad.output and "Traceback" not in bad.output


@pytest.mark.slow  # ~20 s: 2 steps from checkpoint-2
def test_resume_a_media_run_gives_the_uninterrupted_losses_and_token_counts(media_run, tmp_path):
    result, _ = media_run
    copy = tmp_path / "vlm"
    shutil.copytree(result.run_dir, copy)
    for name in ("checkpoint-4", "adapter", "merged"):  # as if killed after checkpoint-2
        shutil.rmtree(copy / name)
    resumed = train(resume_config(copy), resume=copy)
    record = json.loads((copy / "run.json").read_text())
    assert record["resumed_from"] == "checkpoint-2" and resumed.metrics["global_step"] == 4
    want, got = logged(result.run_dir, "loss"), logged(copy, "loss")
    assert [got[s] for s in (3, 4)] == pytest.approx([want[s] for s in (3, 4)], abs=1e-5)
    assert logged(copy, "num_tokens") == logged(result.run_dir, "num_tokens")  # the count goes on from the checkpoint


def test_image_folder_of_a_run(tmp_path, monkeypatch):
    """Where `sha256:` images are looked up: image_dir, else the build folder's images/, else the store a
    build of raw data (data: URIs) wrote them to."""
    from ftdata.train.media_model import image_folder

    monkeypatch.setenv("FTDATA_IMAGE_DIR", str(tmp_path / "store"))
    (tmp_path / "out" / "images").mkdir(parents=True)
    assert image_folder(TrainConfig(data=str(tmp_path / "out"))) == tmp_path / "out" / "images"
    assert image_folder(TrainConfig(data=str(tmp_path / "chat.jsonl"))) == tmp_path / "store"
    given = TrainConfig(data=str(tmp_path / "out"), data_options={"image_dir": str(tmp_path / "mine")})
    assert image_folder(given) == tmp_path / "mine"


def test_resume_compares_the_rows_not_the_random_fingerprint_of_an_in_memory_build(tmp_path):
    """Raw data (`ftdata train chat.jsonl ...`) is built in memory, where datasets draws a random
    `_fingerprint`: resuming such a run must compare what the rows hold, images included."""
    from ftdata.errors import ConfigError
    from ftdata.train import record
    from ftdata.train.data import Splits
    from ftdata.train.run import _check_same_data, _data_record

    rows = [make_row("qwen2_vl", prefix=3, images=[PHOTOS[0]], suffix=4, seed=1)]

    def data(images, fingerprint):
        ds = datasets.Dataset.from_list([{**rows[0], "media": images}])
        ds._fingerprint = fingerprint  # what `ftdata.build` of raw data gets: a random one per build
        return _data_record(Splits(train=ds, eval=None))

    first, again = data(rows[0]["media"], "76893142baa36b2b"), data(rows[0]["media"], "3785e14552214dff")
    record.write_json(tmp_path / record.RUN_FILE, {"data": first})
    _check_same_data(tmp_path, again)  # the same rows: resumes
    other = data([{**rows[0]["media"][0], "ref": str(PHOTOS[2])}], "76893142baa36b2b")  # the same tokens, another image
    with pytest.raises(ConfigError, match="the data changed since"):
        _check_same_data(tmp_path, other)


class DigitsTokenizer:
    """Just what generation needs: pad and end ids, and a decode that shows the ids."""

    pad_token_id, eos_token_id = 0, 999

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(str(int(i)) for i in ids if not (skip_special_tokens and int(i) in (0, 999)))


@pytest.mark.parametrize("family", ["qwen2_vl", "gemma3"])
def test_generation_with_images_batched_equals_one_by_one(family):
    """Prompts of different lengths with their images, left-padded in one batch, get the answers
    they get alone; the model receives the pixels and which tokens are image tokens."""
    from media_support import build, gemma_image_processor

    from ftdata.train.generation import GenerationSettings
    from ftdata.train.media_collator import rope_index_of
    from ftdata.train.media_eval import generate_with_media

    model = build(family, "sdpa")
    processor = qwen_image_processor() if family == "qwen2_vl" else gemma_image_processor()
    rope = rope_index_of(model) if family == "qwen2_vl" else None
    collator = MediaCollator(processor, ModelFacts.of(model.config), rope_index=rope)
    rows = [make_row(family, prefix=3, images=[PHOTOS[0]], suffix=4, seed=1),
            make_row(family, prefix=9, images=[PHOTOS[1], PHOTOS[2]], suffix=3, seed=2)]  # fmt: skip
    samples, _ = media_samples(rows, limit=None)
    seen = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(sorted(k for k, v in kw.items() if v is not None)), with_kwargs=True)

    def answers(batch_size):
        settings = GenerationSettings(max_new_tokens=5, batch_size=batch_size)
        return generate_with_media(model, DigitsTokenizer(), collator, samples, settings=settings, stop_ids={999})

    together = answers(2)
    # the image features (transformers 5.23 encodes the pixels before the first step) and the image-token flags
    assert {"pixel_values", "mm_encoder_outputs"} & set(seen[0]) and ("mm_token_type_ids" if family == "qwen2_vl" else "token_type_ids") in seen[0]
    assert together == answers(1) and all(len(a.split()) == 5 for a in together)
