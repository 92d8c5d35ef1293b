#!/usr/bin/env bash
# verl 0.9.1 (Python 3.11, ~1.9 GB): its MultiTurnSFTDataset re-reads `ftdata export OUT --to verl`.
# torch is pinned to the CPU build first (else pip takes the CUDA one, +4 GB); uvicorn and fastapi are imported by
# verl.utils but not declared.
set -euo pipefail
. "$(dirname "$0")/venv.sh"
stack_venv verl 0.9.1 python3.11 -- "torch==2.13.0+cpu" -- verl==0.9.1 uvicorn fastapi "torch==2.13.0+cpu"
