#!/usr/bin/env bash
# The TRL that Unsloth 2026.10.9 pins (trl <= 1.15.0, transformers <= 5.17.0, datasets < 5; trl 1.15 needs datasets >= 4.7) on the CPU torch:
# Unsloth's SFTTrainer is TRL's, and its collator is what read_unsloth.py runs on `ftdata export OUT --to unsloth`.
# Unsloth itself is not installed: it imports only where it finds a GPU.
set -euo pipefail
. "$(dirname "$0")/venv.sh"
stack_venv unsloth trl1.15.0 python3.11 \
  -- "torch==2.13.0+cpu" \
  -- "torch==2.13.0+cpu" trl==1.15.0 transformers==5.17.0 "datasets>=4.7,<5" accelerate
