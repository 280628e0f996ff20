#!/usr/bin/env bash
# Single-process training, DataParallel over GPU_IDS (comma-separated), or on the CPU.
#   bash data_parallel_train.sh [--cfg] CONFIG GPU_IDS [--ar | --resume PATH] [KEY VALUE ...]
#   GPU_IDS: e.g. 0 or 0,1,2,3 (DataParallel), or cpu. Flags may come before or after CONFIG.
# TRAIN.BATCH_SIZE is the total batch, split across the GPUs by DataParallel.
# Interpreter: ${PYTHON:-python3} (as every script here).
set -euo pipefail
cd "$(dirname "$0")"
# this checkout's lib/ wins over any other installed copy
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
# CONFIG, GPU_IDS, FLAGS=(...), OPTS=(...): one parser for every entry point (lib/utils/cli.py)
ARGS=$("$PY" -m lib.utils.cli data_parallel_train.sh "$@") || exit $?
eval "$ARGS"
if [ "$GPU_IDS" = "cpu" ]; then
  exec "$PY" main/train.py --cfg "$CONFIG" "${FLAGS[@]}" "${OPTS[@]}" DEVICE cpu
fi
if ! [[ "$GPU_IDS" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  echo "error: GPU_IDS must be comma-separated integers (e.g. 0,1) or cpu, got '$GPU_IDS'" >&2
  exit 2
fi
exec "$PY" main/train.py --cfg "$CONFIG" "${FLAGS[@]}" "${OPTS[@]}" DEVICE cuda GPUS "[$GPU_IDS]"
