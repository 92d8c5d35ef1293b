#!/usr/bin/env bash
# tinker's SDK (its `Datum` types): validates `ftdata export OUT --to tinker` line by line. tinker-cookbook's
# `datum_from_model_input_weights` builds the same Datum from tokens and weights; it writes no file of its own.
set -euo pipefail
. "$(dirname "$0")/venv.sh"
stack_venv tinker 0.38.0 python3.11 -- tinker==0.38.0
