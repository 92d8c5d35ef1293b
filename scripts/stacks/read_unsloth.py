"""Run in the Unsloth stack's venv (scripts/stacks/unsloth.sh: TRL as Unsloth pins it, CPU torch): load
`ftdata export OUT --to unsloth` with `datasets.load_from_disk` and batch each row with TRL's own
`DataCollatorForLanguageModeling`, the collator Unsloth's SFTTrainer (TRL's) feeds the model with, and print the
ids and the positions whose label is kept:

    {"row": i, "input_ids": [...], "loss_mask": [...]}

    python read_unsloth.py EXPORT_DIR TOKENIZER_DIR
"""

import json
import sys
from pathlib import Path

import datasets
from transformers import AutoTokenizer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling


def main() -> None:
    folder, tokenizer_dir = Path(sys.argv[1]), sys.argv[2]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    rows = datasets.load_from_disk(str(folder / "dataset"))["train"]
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id or 0)
    for i, row in enumerate(rows):
        batch = collator([{k: row[k] for k in ("input_ids", "labels")}])
        ids = batch["input_ids"][0].tolist()
        mask = [int(label != -100) for label in batch["labels"][0].tolist()]
        print(json.dumps({"row": i, "input_ids": ids, "loss_mask": mask}), flush=True)


if __name__ == "__main__":
    main()
