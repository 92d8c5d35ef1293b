#!/usr/bin/env bash
# Shared by scripts/stacks/<stack>.sh: make (once) the venv of one training stack under
# ${FTDATA_STACKS:-~/.cache/ftdata/stacks}/<stack>-<version>, kept apart from ftdata's own venv because each stack
# pins versions that conflict with ftdata's (docs/training.md, "Train anywhere").
#   stack_venv NAME VERSION PYTHON -- PIP-ARGS...   (another `-- PIP-ARGS...` group is one more pip call)
# Prints the venv's path on the last line; a no-op once the venv is complete (its .complete marker).
set -euo pipefail

stack_venv() {
  local name="$1" version="$2" python="$3"
  shift 3
  local root="${FTDATA_STACKS:-$HOME/.cache/ftdata/stacks}"
  local venv="$root/$name-$version"
  if [ -f "$venv/.complete" ]; then
    echo "$venv"
    return 0
  fi
  if ! "$python" -c "" 2>/dev/null; then  # not on PATH (or a pyenv shim for a version not selected): pyenv's own
    python=$(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/bin/"$python" 2>/dev/null | tail -n 1)
    [ -n "$python" ] || { echo "scripts/stacks: $name needs $3 (on PATH or under pyenv)" >&2; return 1; }
  fi
  mkdir -p "$root"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
  local args=()
  for arg in "$@" --; do
    if [ "$arg" = "--" ]; then
      [ "${#args[@]}" -gt 0 ] && "$venv/bin/python" -m pip install -q "${args[@]}"
      args=()
    else
      args+=("$arg")
    fi
  done
  touch "$venv/.complete"
  echo "$venv"
}
