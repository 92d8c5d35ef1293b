"""Run in SkyRL's venv (scripts/stacks/skyrl.sh): load `ftdata export OUT --to skyrl` through SkyRL's own
`load_from_pretokenized` (skyrl/train/dataset/pretokenized.py, what `pretokenized_dataset_paths` runs) and print, per
row, the ids and the full-sequence 0/1 loss mask it trains (its trailing action window put back in place):

    {"row": i, "input_ids": [...], "loss_mask": [...]}

    python read_skyrl.py EXPORT_DIR TOKENIZER_DIR
"""

import json
import sys
from pathlib import Path

from skyrl.train.dataset.pretokenized import load_from_pretokenized


def main() -> None:
    folder = Path(sys.argv[1])
    for i, row in enumerate(load_from_pretokenized(str(folder / "train.parquet"))):
        ids = [int(t) for t in row["input_ids"]]
        window = [int(v) for v in row["loss_mask"]]
        mask = [0] * (len(ids) - row["num_actions"]) + window
        print(json.dumps({"row": i, "input_ids": ids, "loss_mask": mask}), flush=True)


if __name__ == "__main__":
    main()
