#!/usr/bin/env bash
# Set up (idempotent) and run the whole test suite on the CPU; prints the time taken at the end.
#   bash tools/run_tests.sh [pytest args]      e.g. -m "not slow": the quick subset (no end-to-end runs)
# The README's measured time: python3 tools/dev/time_commands.py --tests --update-readme
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
PY=${PYTHON:-python3}
status=0
"$PY" -m pytest "$@" || status=$?
echo "run_tests.sh: $((SECONDS / 60))m$((SECONDS % 60))s including set-up (exit code $status)"
exit "$status"
