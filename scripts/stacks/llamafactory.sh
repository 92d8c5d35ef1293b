#!/usr/bin/env bash
# LLaMA-Factory 0.9.5 (Python 3.11, ~1.9 GB): its `tokenized_path` loading re-reads `ftdata export OUT --to
# llamafactory`. Installed without its dependencies (a plain install swaps in a CUDA torch through torchvision and
# torchaudio), then the versions it pins and the small packages it imports. torchaudio is imported at module level
# (llamafactory/data/mm_plugin.py) but no build on the index matches the CPU torch 2.13: it is installed without
# its compiled libraries, which torchaudio then reports as unavailable (audio only; text loading never calls it).
set -euo pipefail
. "$(dirname "$0")/venv.sh"
venv=$(stack_venv llamafactory 0.9.5 python3.11 \
  -- "torch==2.13.0+cpu" \
  -- --no-deps llamafactory==0.9.5 "torchaudio==2.11.0" \
  -- "torch==2.13.0+cpu" accelerate==1.11.0 datasets==4.0.0 peft==0.18.1 transformers==5.6.0 trl==0.24.0 \
     omegaconf pyyaml fire packaging pydantic sentencepiece tiktoken einops scipy protobuf av librosa tyro \
     matplotlib | tail -n 1)
rm -f "$venv"/lib/python3.11/site-packages/torchaudio/lib/*.so
echo "$venv"
