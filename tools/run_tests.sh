#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite on the CPU.
#   bash tools/run_tests.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
PY=${PYTHON:-python3}
exec "$PY" -m pytest "$@"
