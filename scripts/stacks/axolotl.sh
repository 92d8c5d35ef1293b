#!/usr/bin/env bash
# axolotl 0.21.0 (Python 3.12; 7.6 GB with the CUDA torch the index gives 3.12, which runs on CPU): its dataset
# preparation re-reads `ftdata export OUT --to axolotl` (a pretokenized dataset: no `type`).
set -euo pipefail
. "$(dirname "$0")/venv.sh"
stack_venv axolotl 0.21.0 python3.12 -- axolotl==0.21.0
