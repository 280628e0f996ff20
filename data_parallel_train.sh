#!/usr/bin/env bash
# Single-process training, DataParallel over GPU_IDS (comma-separated), or on the CPU.
#   bash data_parallel_train.sh CONFIG GPU_IDS [--ar] [KEY VALUE ...]
#   GPU_IDS: e.g. 0 or 0,1,2,3 (DataParallel), or cpu
# TRAIN.BATCH_SIZE is the total batch, split across the GPUs by DataParallel.
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: bash data_parallel_train.sh CONFIG GPU_IDS [--ar] [KEY VALUE ...]   (GPU_IDS: 0,1,... or cpu)" >&2
  exit 2
fi
CONFIG=$1
IDS=$2
shift 2
cd "$(dirname "$0")"
# this checkout's lib/ wins over any other installed copy
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$IDS" = "cpu" ]; then
  exec python main/train.py --cfg "$CONFIG" "$@" DEVICE cpu
fi
if ! [[ "$IDS" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
  echo "error: GPU_IDS must be comma-separated integers (e.g. 0,1) or cpu, got '$IDS'" >&2
  exit 2
fi
exec python main/train.py --cfg "$CONFIG" "$@" DEVICE cuda GPUS "[$IDS]"
