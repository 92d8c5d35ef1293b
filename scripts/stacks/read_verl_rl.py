"""Run in verl's venv (scripts/stacks/verl.sh): load the verl export of a prompt set (`ftdata build DATA --task
prompts`, `ftdata export OUT --to verl`) through verl's own `RLHFDataset` (its RL trainers' dataset: length filter,
then one row per prompt) and print per row what its rollouts and reward managers get:

    {"row": i, "prompt": [...messages], "ground_truth": "...", "data_source": "...", "index": i}

    python read_verl_rl.py EXPORT_DIR TOKENIZER_DIR
"""

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf
from transformers import AutoTokenizer
from verl.utils.dataset.rl_dataset import RLHFDataset


def main() -> None:
    folder, tokenizer_dir = Path(sys.argv[1]), sys.argv[2]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = OmegaConf.create({"prompt_key": "prompt", "max_prompt_length": 1 << 20, "filter_overlong_prompts": True})
    dataset = RLHFDataset(str(folder / "train.parquet"), tokenizer, config)
    for i in range(len(dataset)):
        row = dataset[i]
        out = {
            "row": i,
            "prompt": [dict(m) for m in row["raw_prompt"]],
            "ground_truth": row["reward_model"]["ground_truth"],
            "data_source": row["data_source"],
            "index": int(row["index"]),
        }
        print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
