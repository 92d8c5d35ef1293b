"""Run in axolotl's venv (scripts/stacks/axolotl.sh): load `ftdata export OUT --to axolotl` through axolotl's own
dataset preparation (`axolotl.utils.data.sft._load_tokenized_prepared_datasets`, what `prepare_datasets` runs for
each split: load by `ds_type`, the wrapper that passes a pretokenized dataset through, the long-sequence filter)
with the config the export's docs give (`datasets: [{path, ds_type: parquet}]`, no `type`), and print per row the
ids and the positions whose label is kept:

    {"row": i, "input_ids": [...], "loss_mask": [...]}

    python read_axolotl.py EXPORT_DIR TOKENIZER_DIR
"""

import json
import sys
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

from axolotl.utils.data.sft import _load_tokenized_prepared_datasets
from axolotl.utils.dict import DictDefault


def main() -> None:
    folder, tokenizer_dir = Path(sys.argv[1]), sys.argv[2]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    with tempfile.TemporaryDirectory() as prepared:
        cfg = DictDefault(
            {
                "datasets": [{"path": str(folder / "train.parquet"), "ds_type": "parquet", "type": None}],
                "sequence_len": 1 << 20,
                "dataset_prepared_path": prepared,
                "dataset_num_proc": 1,
                "seed": 42,
                "is_preprocess": True,
            }
        )
        dataset, _ = _load_tokenized_prepared_datasets(tokenizer, cfg, split="train")
        for i, row in enumerate(dataset):
            ids = [int(t) for t in row["input_ids"]]
            mask = [int(label != -100) for label in row["labels"]]
            print(json.dumps({"row": i, "input_ids": ids, "loss_mask": mask}), flush=True)


if __name__ == "__main__":
    main()
