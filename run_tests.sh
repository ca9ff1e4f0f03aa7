#!/usr/bin/env bash
# The test command: sets up .venv on first use, then runs the whole test suite.
# Extra arguments go to pytest (e.g. ./run_tests.sh -k network -x).
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
py="$("$root/scripts/ensure_venv.sh")"
cd "$root"
export MPLCONFIGDIR="${MPLCONFIGDIR:-$(mktemp -d)}"
exec "$py" -m pytest -ra "$@"
