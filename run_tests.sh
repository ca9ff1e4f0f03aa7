#!/usr/bin/env bash
# The test command: sets up .venv on first use, then runs the whole test suite.
# Extra arguments go to pytest (e.g. ./run_tests.sh -k network -x).
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
py="$("$root/scripts/ensure_venv.sh")"
cd "$root"
# matplotlib's cache inside the environment (nothing left behind in /tmp; the tests give
# every subprocess a temporary one of its own)
export MPLCONFIGDIR="${MPLCONFIGDIR:-$(dirname "$(dirname "$py")")/mplconfig}"
exec "$py" -m pytest -ra "$@"
