#!/usr/bin/env bash
# The main job: sets up .venv on first use, then runs `nnunet-nerve demo` on the embedded
# synthetic registry. Output folder: first argument, default ./nerve_demo. Further
# arguments go to `nnunet-nerve demo`.
set -euo pipefail
root="$(cd "$(dirname "$0")" && pwd)"
py="$("$root/scripts/ensure_venv.sh")"
out="${1:-$root/nerve_demo}"; shift || true
# matplotlib's cache inside the environment (nothing left behind in /tmp)
export MPLCONFIGDIR="${MPLCONFIGDIR:-$(dirname "$(dirname "$py")")/mplconfig}"
exec "$(dirname "$py")/nnunet-nerve" demo "$out" "$@"
