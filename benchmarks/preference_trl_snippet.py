"""TRL 1.16 DPOTrainer and KTOTrainer on pre-tokenized rows: 2 DPO steps, 2 KTO steps, CPU, a tiny Llama.

The snippet docs/preference-research.md quotes. TRL 1.16 has no switch that skips its own dataset
preparation for text data (`DPOTrainer.__init__` skips it for vision data only), and that
preparation reads `chosen`/`rejected` text (`extract_prompt`): pre-tokenized rows need a subclass
whose `_prepare_dataset` keeps them. KTO's KL term needs `KL_completion_ids`, which the skipped
preparation would have added: the subclass adds them the way TRL does.

    python benchmarks/preference_trl_snippet.py [--lora] [--precompute]
"""

from __future__ import annotations

import argparse
import copy
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

import ftdata


class PretokenizedDPOTrainer(DPOTrainer):
    """DPOTrainer for rows that are already `prompt_ids`/`chosen_ids`/`rejected_ids`."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        return dataset


class PretokenizedKTOTrainer(KTOTrainer):
    """KTOTrainer for rows that are already `prompt_ids`/`completion_ids`/`label`."""

    def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
        if self.calculate_KL and "KL_completion_ids" not in dataset.column_names:
            # TRL's own KL rows (kto_trainer.py, "Extracting KL"): completions rotated by one within each batch.
            def rotate(batch):
                return {"KL_completion_ids": [batch["completion_ids"][-1]] + batch["completion_ids"][:-1]}

            dataset = dataset.map(rotate, batched=True, batch_size=args.per_device_train_batch_size)
        return dataset


def tiny_model(vocab_size: int) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lora", action="store_true", help="train a LoRA adapter (reference = adapter disabled)")
    parser.add_argument("--precompute", action="store_true", help="precompute_ref_log_probs=True")
    opts = parser.parse_args()
    tok = ftdata.load_tokenizer(None)  # bundled SmolLM2-135M-Instruct tokenizer

    # Rows by hand: the prompt as inference renders it (generation prompt included, tokenized alone),
    # each completion the reply and its end-of-turn token, nothing the template writes after it.
    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    def prompt(question: str) -> list[int]:
        messages = [{"role": "user", "content": question}]
        return tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"]

    questions = [("What colour is the sky?", "Blue.", "Green."), ("2+2?", "4", "5"),
                 ("Capital of France?", "Paris.", "Rome."), ("Largest planet?", "Jupiter.", "Mars.")]  # fmt: skip
    pairs = Dataset.from_list(
        [{"prompt_ids": prompt(q), "chosen_ids": ids(good + "<|im_end|>"), "rejected_ids": ids(bad + "<|im_end|>")}
         for q, good, bad in questions]
    )  # fmt: skip
    unpaired = Dataset.from_list(
        [{"prompt_ids": prompt(q), "completion_ids": ids(text + "<|im_end|>"), "label": label}
         for q, good, bad in questions for text, label in ((good, True), (bad, False))]
    )  # fmt: skip

    peft_config = None
    if opts.lora:
        from peft import LoraConfig

        peft_config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    common = {
        "max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1, "report_to": [],
        "use_cpu": True, "bf16": False, "gradient_checkpointing": False, "save_strategy": "no",
        "max_length": None,  # ftdata's rows already fit: the collator must not cut a completion
        "precompute_ref_log_probs": opts.precompute,
    }  # fmt: skip
    for name, trainer_class, config_class, dataset in (
        ("dpo", PretokenizedDPOTrainer, DPOConfig, pairs),
        ("kto", PretokenizedKTOTrainer, KTOConfig, unpaired),
    ):
        args = config_class(output_dir=f"/tmp/ftdata-{name}-snippet", **common)
        model = tiny_model(len(tok))
        # Full fine-tuning without precompute reloads the reference from model.config._name_or_path
        # (dpo_trainer.py:926): a model built in memory has none, so pass its copy.
        ref_model = None if opts.lora or opts.precompute else copy.deepcopy(model)
        trainer = trainer_class(
            model=model, ref_model=ref_model, args=args, train_dataset=dataset, processing_class=tok,
            peft_config=peft_config,
        )
        trainer.train()
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses
        print(f"{name}: {len(losses)} steps, losses {[round(x, 4) for x in losses]}")


if __name__ == "__main__":
    main()
