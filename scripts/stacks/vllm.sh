#!/usr/bin/env bash
# vLLM 0.33.0 (Python 3.11, CPU wheels, ~9.4 GB, ~3-5 min): its render server (`vllm launch render DIR`, no GPU and
# no weights) is what `ftdata check-serving --serve DIR` starts and tests/serve/test_vllm.py checks against.
set -euo pipefail
. "$(dirname "$0")/venv.sh"
stack_venv vllm 0.33.0 python3.11 -- vllm==0.33.0
