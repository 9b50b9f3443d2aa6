#!/usr/bin/env bash
# The test command: installs what the tests need, then runs them all. The broker is
# started by the tests' session fixture (KAFKA_BOOTSTRAP_SERVERS, else testcontainers
# where Docker answers, else a local KRaft broker from Maven Central's jars).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${RUNTIME_SIGNALS_CACHE:-$HOME/.cache/runtime-signals}
"$repo/scripts/bootstrap.sh"
cd "$repo"
exec "$cache/venv/bin/python" -m pytest -p no:cacheprovider "$@"
