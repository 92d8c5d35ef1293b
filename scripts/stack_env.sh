#!/usr/bin/env bash
# Make (once) and print the venv of another training/serving stack, kept apart from ftdata's own venv because each
# stack pins versions that conflict with ftdata's (see the stacks table in docs/templates.md).
#   scripts/stack_env.sh vllm      -> ~/.cache/ftdata/stacks/vllm-0.33.0 (vLLM's render server, CPU, no weights)
# Prints the venv's path on the last line. Re-running is a no-op once the venv is complete (its .complete marker).
# Another stack is one more `case` arm: its name, its Python and its pip arguments.
set -euo pipefail

stack="${1:?usage: scripts/stack_env.sh STACK (vllm)}"
root="${FTDATA_STACKS:-$HOME/.cache/ftdata/stacks}"

case "$stack" in
  vllm)
    version=0.33.0
    python=python3.11
    packages=("vllm==$version")
    ;;
  *)
    echo "scripts/stack_env.sh: unknown stack '$stack' (known: vllm)" >&2
    exit 2
    ;;
esac

venv="$root/$stack-$version"
if [ -f "$venv/.complete" ]; then
  echo "$venv"
  exit 0
fi
command -v "$python" >/dev/null || { echo "scripts/stack_env.sh: $stack needs $python on PATH" >&2; exit 1; }
mkdir -p "$root"
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "${packages[@]}"
touch "$venv/.complete"
echo "$venv"
