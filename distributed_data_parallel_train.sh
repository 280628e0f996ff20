#!/usr/bin/env bash
# DistributedDataParallel through torchrun: one process per GPU (NCCL), or per CPU slot (gloo).
#   bash distributed_data_parallel_train.sh [--cfg] CONFIG NUM_GPUS GPU_IDS [--ar | --resume PATH] [KEY VALUE ...]
#   GPU_IDS: e.g. 0,1 (must list NUM_GPUS ids), or cpu (NUM_GPUS gloo processes on the CPU).
#   Flags may come before or after CONFIG.
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (defaults 1, 0, 127.0.0.1, 29500)
# on every node. TRAIN.BATCH_SIZE is the GLOBAL batch: each process gets BATCH_SIZE / world size.
# Interpreter: ${PYTHON:-python3} (as every script here).
set -euo pipefail
cd "$(dirname "$0")"
# this checkout's lib/ wins over any other installed copy
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
# CONFIG, NUM_GPUS, GPU_IDS, FLAGS=(...), OPTS=(...): one parser for every entry point (lib/utils/cli.py)
ARGS=$("$PY" -m lib.utils.cli distributed_data_parallel_train.sh "$@") || exit $?
eval "$ARGS"
if ! [[ "$NUM_GPUS" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: NUM_GPUS must be a positive integer, got '$NUM_GPUS'" >&2
  exit 2
fi
if [ "$GPU_IDS" = "cpu" ]; then
  DEVICE=cpu
else
  if ! [[ "$GPU_IDS" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    echo "error: GPU_IDS must be comma-separated integers (e.g. 0,1) or cpu, got '$GPU_IDS'" >&2
    exit 2
  fi
  n_ids=$(echo "$GPU_IDS" | tr ',' '\n' | wc -l)
  if [ "$n_ids" -ne "$NUM_GPUS" ]; then
    echo "error: NUM_GPUS is $NUM_GPUS but GPU_IDS '$GPU_IDS' lists $n_ids id(s)" >&2
    exit 2
  fi
  # no CUDA, or an id this machine lacks: one line here instead of torchrun's per-rank tracebacks
  "$PY" -m lib.utils.distributed "$GPU_IDS" "$NUM_GPUS" || exit $?
  export CUDA_VISIBLE_DEVICES=$GPU_IDS
  DEVICE=cuda
fi
exec "$PY" -m torch.distributed.run \
  --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" --nproc_per_node "$NUM_GPUS" \
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
  main/train.py --cfg "$CONFIG" "${FLAGS[@]}" "${OPTS[@]}" DEVICE "$DEVICE"
