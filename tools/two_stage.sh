#!/usr/bin/env bash
# Two-stage training (cRT, LWS, Weight Balancing): train stage one, then stage two, as two
# main/train.py runs with the same KEY VALUE overrides.
#   bash tools/two_stage.sh STAGE1_CFG STAGE2_CFG [KEY VALUE ...]
#   e.g. bash tools/two_stage.sh configs/fashion_mnist_lt/wb_stage1_wd_res32.yaml \
#            configs/fashion_mnist_lt/wb_stage2_maxnorm_res32.yaml OUTPUT_DIR output/wb SEED 1
# Stage-two configs name stage one's checkpoint relative to OUTPUT_DIR
# (NETWORK.PRETRAINED_MODEL: <stage-one NAME>/models/best_model.pth), so an OUTPUT_DIR override
# moves both runs together. The overrides reach BOTH stages: pass only keys meant for both
# (OUTPUT_DIR, SEED, DEVICE, data paths, ...), never NAME or TRAIN.MAX_EPOCH unless meant for both.
# Runs from the repository root (like the other launchers): relative paths resolve against it.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash tools/two_stage.sh STAGE1_CFG STAGE2_CFG [KEY VALUE ...]" >&2
  exit 2
fi
abspath() { [ -f "$1" ] || { echo "error: config file not found: $1" >&2; exit 2; }; echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; }
STAGE1=$(abspath "$1")
STAGE2=$(abspath "$2")
shift 2
if [ $(($# % 2)) -ne 0 ]; then
  echo "error: overrides must be KEY VALUE pairs; '${!#}' has no value" >&2
  exit 2
fi
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
echo "== stage one: $STAGE1"
"$PY" main/train.py --cfg "$STAGE1" "$@"
echo "== stage two: $STAGE2"
"$PY" main/train.py --cfg "$STAGE2" "$@"
