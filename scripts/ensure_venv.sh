#!/usr/bin/env bash
# Creates the project virtual environment .venv (first run only) and installs the package
# with its test extras into it. Re-installs when pyproject.toml changed.
# Sourced by run_tests.sh and run_demo.sh; prints the venv's python on stdout.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${NNUNET_NERVE_VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.nnunet-nerve-installed"
want="$(cat "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ]; then
  echo ">> creating virtual environment $venv" >&2
  "$python" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo ">> installing nnunet-nerve and its dependencies into $venv (first run: a few minutes)" >&2
  log="$venv/nnunet-nerve-install.log"
  # No torch pin: pip takes PyPI's torch, whose torchvision matches (see README, Install).
  if ! { "$venv/bin/python" -m pip install --upgrade pip && "$venv/bin/python" -m pip install -e "$root[test]"; } >"$log" 2>&1; then
    tail -n 30 "$log" >&2
    echo "error: installing into $venv failed; full log: $log" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
echo "$venv/bin/python"
