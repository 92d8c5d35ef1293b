"""Run in the venv of the TRL Unsloth pins (scripts/stacks/unsloth.sh): load the pairs of `ftdata export OUT --to
unsloth` (a preference build) as a DPO run under Unsloth does (`datasets.load_from_disk`), batch each pair with TRL's
own `DataCollatorForPreference` (what its DPOTrainer batches with) and print, per side, the ids and the positions
its completion mask trains:

    {"row": i, "chosen_ids": [...], "chosen_mask": [...], "rejected_ids": [...], "rejected_mask": [...]}

    python read_unsloth_pairs.py EXPORT_DIR TOKENIZER_DIR
"""

import json
import sys
from pathlib import Path

import datasets
from trl.trainer.dpo_trainer import DataCollatorForPreference


def main() -> None:
    folder = Path(sys.argv[1])
    collator = DataCollatorForPreference(pad_token_id=-1)
    for i, row in enumerate(datasets.load_from_disk(str(folder / "dataset"))["train"]):
        batch = collator([dict(row)])  # one pair: its chosen side, then its rejected side
        out = {"row": i}
        for k, side in enumerate(("chosen", "rejected")):
            kept = [j for j, a in enumerate(batch["attention_mask"][k].tolist()) if a]
            ids, mask = batch["input_ids"][k].tolist(), batch["completion_mask"][k].tolist()
            out[f"{side}_ids"] = [ids[j] for j in kept]
            out[f"{side}_mask"] = [mask[j] for j in kept]
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
