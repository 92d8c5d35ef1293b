"""Run in LLaMA-Factory's venv (scripts/stacks/llamafactory.sh): load `ftdata export OUT --to llamafactory` the way
a run with `tokenized_path:` does (`llamafactory.data.get_dataset`, which loads it and skips preprocessing), pass each
row through LLaMA-Factory's SFT collator (`SFTDataCollatorWith4DAttentionMask`, what its trainer batches with) and
print the ids and the positions whose label is kept:

    {"row": i, "input_ids": [...], "loss_mask": [...]}

    python read_llamafactory.py EXPORT_DIR TOKENIZER_DIR
"""

import json
import sys
from pathlib import Path

from transformers import AutoTokenizer, Seq2SeqTrainingArguments

from llamafactory.data import SFTDataCollatorWith4DAttentionMask, get_dataset, get_template_and_fix_tokenizer
from llamafactory.extras.constants import IGNORE_INDEX
from llamafactory.hparams import DataArguments, ModelArguments


def main() -> None:
    folder, tokenizer_dir = Path(sys.argv[1]), sys.argv[2]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    data_args = DataArguments(tokenized_path=str(folder / "tokenized"), template="empty")
    model_args = ModelArguments(model_name_or_path=tokenizer_dir)
    training_args = Seq2SeqTrainingArguments(output_dir=str(folder / "unused"), report_to=[])
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    module = get_dataset(template, model_args, data_args, training_args, stage="sft", tokenizer=tokenizer)
    collator = SFTDataCollatorWith4DAttentionMask(
        template=template, tokenizer=tokenizer, label_pad_token_id=IGNORE_INDEX, compute_dtype=None
    )
    for i, row in enumerate(module["train_dataset"]):
        batch = collator([dict(row)])
        ids = batch["input_ids"][0].tolist()
        mask = [int(label != IGNORE_INDEX) for label in batch["labels"][0].tolist()]
        print(json.dumps({"row": i, "input_ids": ids, "loss_mask": mask}), flush=True)


if __name__ == "__main__":
    main()
