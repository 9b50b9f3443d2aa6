#!/usr/bin/env bash
# The main job: the whole pipeline on this machine against the bundled demo workload.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${RUNTIME_SIGNALS_CACHE:-$HOME/.cache/runtime-signals}
"$repo/scripts/bootstrap.sh"
cd "$repo"
exec "$cache/venv/bin/signals" demo "$@"
