#!/usr/bin/env bash
# Two-stage training (cRT, LWS, Weight Balancing): train stage one, then stage two, as two
# main/train.py runs with the same flags and KEY VALUE overrides.
#   bash tools/two_stage.sh [--cfg] STAGE1_CFG [--cfg] STAGE2_CFG [--ar] [KEY VALUE ...]
#   e.g. bash tools/two_stage.sh configs/fashion_mnist_lt/wb_stage1_wd_res32.yaml \
#            configs/fashion_mnist_lt/wb_stage2_maxnorm_res32.yaml OUTPUT_DIR output/wb SEED 1
# Stage-two configs name stage one's checkpoint relative to OUTPUT_DIR
# (NETWORK.PRETRAINED_MODEL: <stage-one NAME>/models/best_model.pth), so an OUTPUT_DIR override
# moves both runs together. The overrides reach BOTH stages: pass only keys meant for both
# (OUTPUT_DIR, SEED, DEVICE, data paths, ...), never NAME or TRAIN.MAX_EPOCH unless meant for both.
# --ar resumes each stage from its own latest.pth (a finished stage is not retrained).
# Runs from the repository root (like the other launchers): relative paths resolve against it.
# Interpreter: ${PYTHON:-python3} (as every script here).
set -euo pipefail
HERE=$PWD
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
# STAGE1_CFG, STAGE2_CFG, FLAGS=(...), OPTS=(...): one parser for every entry point (lib/utils/cli.py)
ARGS=$(cd "$HERE" && "$PY" -m lib.utils.cli two_stage.sh "$@") || exit $?
eval "$ARGS"
abspath() {
  local p=$1
  case "$p" in /*) ;; *) p="$HERE/$p" ;; esac
  [ -f "$p" ] || { echo "error: config file not found: $1" >&2; exit 2; }
  echo "$(cd "$(dirname "$p")" && pwd)/$(basename "$p")"
}
STAGE1=$(abspath "$STAGE1_CFG")
STAGE2=$(abspath "$STAGE2_CFG")
echo "== stage one: $STAGE1"
"$PY" main/train.py --cfg "$STAGE1" "${FLAGS[@]}" "${OPTS[@]}"
echo "== stage two: $STAGE2"
"$PY" main/train.py --cfg "$STAGE2" "${FLAGS[@]}" "${OPTS[@]}"
