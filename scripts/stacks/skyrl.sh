#!/usr/bin/env bash
# SkyRL 0.4.0's pretokenized SFT loader (Python 3.12: pydantic fails on 3.11), what `pretokenized_dataset_paths`
# runs, re-reads `ftdata export OUT --to skyrl`. Only what skyrl/train/dataset/pretokenized.py imports (datasets,
# loguru, numpy, and torch through its SFTDataset), not the trainer's GPU extras. The index's CPU torch wheel is
# for Python 3.11 only, so this venv gets the CUDA build (~5 GB; it runs on CPU).
set -euo pipefail
. "$(dirname "$0")/venv.sh"
stack_venv skyrl 0.4.0 python3.12 -- --no-deps skyrl==0.4.0 -- datasets loguru torch
