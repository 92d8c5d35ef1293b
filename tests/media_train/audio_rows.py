"""Audio rows for the training tests, made by the real Qwen2-Audio processor itself (the oracle), and a
tiny random-weight Qwen2-Audio built from a config.

`audio_rows(processor, clips)` renders each chat with the processor's own template, runs
`processor(text=..., audio=...)` on the prompt and on the whole chat, and keeps the processor's ids as
they are: labels -100 over the prompt (every audio token included), the reply and its <|im_end|>
trained, the template's trailing newline not. Each row carries the `media` column in the build's
format (`ftdata/media/column.py`): `{kind: "audio", ref, start, tokens, width, height, seconds}`. The
build path for audio (`ftdata.build`) is written elsewhere; once it lands, these rows are what it must
equal, and the helper can be swapped for it.
"""

from __future__ import annotations

from pathlib import Path

import transformers
from support import TOKENIZERS

from ftdata.media.audio_files import load_audio
from ftdata.types import IGNORE_INDEX

QWEN_TOKENIZER = TOKENIZERS / "qwen2.5-instruct"
SHARED_AUDIO = TOKENIZERS.parent / "datasets" / "audio"
RATE = 16000

# the LLaMA-Factory audio demo's clips and chats (../shared/datasets/audio)
CHATS = [
    (SHARED_AUDIO / "mllm_demo_data" / "1.mp3", "What's that sound?", "It is the sound of glass shattering."),
    (SHARED_AUDIO / "mllm_demo_data" / "2.wav", "What can you hear?", "A woman is coughing."),
    (SHARED_AUDIO / "mllm_demo_data" / "3.flac", "What does the person say?", "Mister Quilter is the apostle of the middle classes."),
    (SHARED_AUDIO / "mllm_demo_data" / "4.mp3", "What's that sound?", "It is the sound of a dog barking."),
]


def qwen2_audio_processor(folder: Path):
    """Qwen2-Audio's processor (WhisperFeatureExtractor, 128 mel bins, 30 s; Qwen2.5's tokenizer with the
    audio tokens), saved to `folder` as a real processor folder and loaded back with AutoProcessor."""
    from transformers import AutoProcessor, AutoTokenizer, WhisperFeatureExtractor
    from transformers.models.qwen2_audio.processing_qwen2_audio import Qwen2AudioProcessor

    extra = {"audio_token": "<|AUDIO|>", "audio_bos_token": "<|audio_bos|>", "audio_eos_token": "<|audio_eos|>"}
    tokenizer = AutoTokenizer.from_pretrained(str(QWEN_TOKENIZER), extra_special_tokens=extra)
    fe = WhisperFeatureExtractor(feature_size=128, return_attention_mask=True)
    Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tokenizer).save_pretrained(str(folder))
    fe.save_pretrained(str(folder))  # preprocessor_config.json, as the model repo ships it
    return AutoProcessor.from_pretrained(str(folder))


def audio_rows(processor, chats=CHATS) -> list[dict]:
    """One row per `(clip, question, answer)`, ids and the clip's expansion exactly the processor's own."""
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    rows = []
    for clip, question, answer in chats:
        wave = load_audio(str(clip), rate=RATE)
        user = {"role": "user", "content": [{"type": "audio", "audio_url": str(clip)}, {"type": "text", "text": question}]}
        prompt_text = processor.apply_chat_template([user], add_generation_prompt=True)
        text = processor.apply_chat_template([user, {"role": "assistant", "content": answer}])
        prompt = processor(text=[prompt_text], audio=[wave], sampling_rate=RATE)["input_ids"][0]
        ids = processor(text=[text], audio=[wave], sampling_rate=RATE)["input_ids"][0]
        assert ids[: len(prompt)] == prompt, "the template is not prefix-stable over the generation prompt"
        stop = len(ids) - ids[::-1].index(end)  # the reply's <|im_end|> is trained, the newline after it not
        labels = [IGNORE_INDEX] * len(prompt) + ids[len(prompt) : stop] + [IGNORE_INDEX] * (len(ids) - stop)
        audio = processor.audio_token_id
        item = {"kind": "audio", "ref": str(Path(clip).resolve()), "start": ids.index(audio), "tokens": ids.count(audio),
                "width": None, "height": None, "seconds": len(wave) / RATE}  # fmt: skip
        rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels, "media": [item]})
    return rows


def qwen2_audio_config(tokenizer, **text):
    """A tiny Qwen2-Audio (1 encoder layer, d_model 16; 2 text layers, hidden 64) for `tokenizer`'s vocabulary."""
    return transformers.Qwen2AudioConfig(
        audio_config={"d_model": 16, "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 32,
                      "num_mel_bins": 128, "max_source_positions": 1500},
        text_config={"model_type": "qwen2", "vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128,
                     "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, **text},
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )  # fmt: skip


def qwen2_audio_folders(tmp: Path) -> tuple[Path, Path, object]:
    """(model folder, processor folder, processor): a random-weight tiny Qwen2-Audio and its processor folder."""
    import torch

    processor = qwen2_audio_processor(tmp / "processor")
    torch.manual_seed(0)
    model = tmp / "model"
    transformers.Qwen2AudioForConditionalGeneration(qwen2_audio_config(processor.tokenizer)).save_pretrained(str(model))
    return model, tmp / "processor", processor
