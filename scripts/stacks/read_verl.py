"""Run in verl's venv (scripts/stacks/verl.sh): load `ftdata export OUT --to verl` through verl's own
`MultiTurnSFTDataset` and print, per row, what it trains, as one JSON object a line:

    {"row": i, "mode": "parquet", "input_ids": [...], "loss_mask": [...], "refused": null | "why"}

mode "parquet": the rows as verl reads them from the Parquet file (nested values come back as Arrow structs).
mode "exact": the same dataset object, its messages and tools replaced by the record's exact JSON (the export's
`conversation` column), so verl's own per-message tokenization is measured apart from the Parquet round trip.
`refused`: verl's sanity check (the per-message concatenation differs from the whole render) raised; the ids
are then the ones verl trains with `ignore_input_ids_mismatch=True`.

    python read_verl.py EXPORT_DIR TOKENIZER_DIR
"""

import json
import sys
from pathlib import Path

import pandas as pd
from transformers import AutoTokenizer
from verl.utils.dataset.multiturn_sft_dataset import MultiTurnSFTDataset


def rows(dataset: MultiTurnSFTDataset, mode: str):
    for i in range(len(dataset)):
        refused = None
        try:
            item = dataset[i]
        except AssertionError as exc:
            refused = str(exc).splitlines()[0]
            dataset.ignore_input_ids_mismatch = True
            try:
                item = dataset[i]
            finally:
                dataset.ignore_input_ids_mismatch = False
        except Exception as exc:  # the template failed on what verl read back: nothing trained
            yield {"row": i, "mode": mode, "input_ids": [], "loss_mask": [], "refused": f"{type(exc).__name__}: {exc}"}
            continue
        yield {
            "row": i,
            "mode": mode,
            "input_ids": item["input_ids"].tolist(),
            "loss_mask": item["loss_mask"].tolist(),
            "refused": refused,
        }


def main() -> None:
    folder, tokenizer_dir = Path(sys.argv[1]), sys.argv[2]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = {"pad_mode": "no_padding", "truncation": "error", "max_length": 10**9}
    dataset = MultiTurnSFTDataset(str(folder / "train.parquet"), tokenizer, config)
    for row in rows(dataset, "parquet"):
        print(json.dumps(row), flush=True)
    exact = [json.loads(text) for text in dataset.dataframe["conversation"]]
    frame = pd.DataFrame({"messages": [c["messages"] for c in exact]})
    if "enable_thinking" in dataset.dataframe.columns:
        frame["enable_thinking"] = list(dataset.dataframe["enable_thinking"])
    dataset.dataframe = frame
    dataset.tools = [c["tools"] or None for c in exact]
    for row in rows(dataset, "exact"):
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
