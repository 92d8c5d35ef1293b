"""Prompt sets (`--task prompts`) for the stacks that train on them with their own rollouts: verl's RL Parquet.

    verl   train.parquet: data_source, prompt (messages), reward_model {style: rule, ground_truth}, extra_info
           {split, index, record columns}          data.train_files=... (its RLHFDataset, reward managers)

`ground_truth` is the build's reward column (`--reward-columns`, or the one it found) as the data holds it: a
reward function that wants the final number alone (verl's gsm8k scorer reads `#### 18`) gets the whole answer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ftdata.errors import ConfigError


def verl_rl_rows(split: Any, *, name: str, source: str, rewards: list[str]) -> dict[str, list[Any]]:
    """verl's RL columns for one split of a prompt-set build."""
    if not rewards:
        raise ConfigError(
            "a verl RL export needs a reward column for reward_model.ground_truth: build with --reward-columns "
            "(e.g. answer=string)"
        )
    first, prompts = rewards[0], split["prompt"]
    if prompts and isinstance(prompts[0], str):
        raise ConfigError("verl reads prompts as messages: build the prompt set with the tokenizer's chat template")
    columns = {name: split[name] for name in rewards}
    return {
        "data_source": [source] * len(split),
        "prompt": prompts,
        "reward_model": [{"style": "rule", "ground_truth": str(v)} for v in columns[first]],
        "extra_info": [
            {"split": name, "index": i, **{k: str(columns[k][i]) for k in rewards}} for i in range(len(split))
        ],
    }


def write_verl_rl(splits: dict[str, Any], folder: Path, *, source: str, rewards: list[str]) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    names = []
    for name, split in splits.items():
        rows = verl_rl_rows(split, name=name, source=source, rewards=rewards)
        pq.write_table(pa.table({k: pa.array(v) for k, v in rows.items()}), str(folder / f"{name}.parquet"))
        names.append(f"{name}.parquet")
    return names
