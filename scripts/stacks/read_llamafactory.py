"""Run in LLaMA-Factory's venv (scripts/stacks/llamafactory.sh): load `ftdata export OUT --to llamafactory` the way
a run with `tokenized_path:` does (`llamafactory.data.get_dataset`, which loads it and skips preprocessing), pass each
row through the collator LLaMA-Factory's trainer batches with and print the ids and the positions whose label is kept:

    SFT rows (SFTDataCollatorWith4DAttentionMask)      {"row": i, "input_ids": [...], "loss_mask": [...]}
    pairs, `stage: dpo` (PairwiseDataCollatorWithPadding)
        {"row": i, "chosen_ids": [...], "chosen_mask": [...], "rejected_ids": [...], "rejected_mask": [...]}

    python read_llamafactory.py EXPORT_DIR TOKENIZER_DIR
"""

import json
import sys
from pathlib import Path

from datasets import load_from_disk
from transformers import AutoTokenizer, Seq2SeqTrainingArguments

from llamafactory.data import (
    PairwiseDataCollatorWithPadding,
    SFTDataCollatorWith4DAttentionMask,
    get_dataset,
    get_template_and_fix_tokenizer,
)
from llamafactory.extras.constants import IGNORE_INDEX
from llamafactory.hparams import DataArguments, ModelArguments


def main() -> None:
    folder, tokenizer_dir = Path(sys.argv[1]), sys.argv[2]
    pairs = "chosen_input_ids" in load_from_disk(str(folder / "tokenized"))["train"].column_names
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    data_args = DataArguments(tokenized_path=str(folder / "tokenized"), template="empty")
    model_args = ModelArguments(model_name_or_path=tokenizer_dir)
    training_args = Seq2SeqTrainingArguments(output_dir=str(folder / "unused"), report_to=[])
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    stage = "rm" if pairs else "sft"
    module = get_dataset(template, model_args, data_args, training_args, stage=stage, tokenizer=tokenizer)
    if pairs:
        collator = PairwiseDataCollatorWithPadding(template=template, tokenizer=tokenizer, label_pad_token_id=IGNORE_INDEX)
    else:
        collator = SFTDataCollatorWith4DAttentionMask(
            template=template, tokenizer=tokenizer, label_pad_token_id=IGNORE_INDEX, compute_dtype=None
        )
    for i, row in enumerate(module["train_dataset"]):
        batch = collator([dict(row)])  # pairs: the chosen side, then the rejected side
        sides = ("chosen", "rejected") if pairs else ("",)
        out = {"row": i}
        for k, side in enumerate(sides):  # a pair's shorter side is padded: its attention is 0 there
            kept = [j for j, a in enumerate(batch["attention_mask"][k].tolist()) if a] if pairs else None
            ids, labels = batch["input_ids"][k].tolist(), batch["labels"][k].tolist()
            if kept is not None:
                ids, labels = [ids[j] for j in kept], [labels[j] for j in kept]
            mask = [int(label != IGNORE_INDEX) for label in labels]
            out.update({f"{side}_ids": ids, f"{side}_mask": mask} if pairs else {"input_ids": ids, "loss_mask": mask})
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
