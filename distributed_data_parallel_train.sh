#!/usr/bin/env bash
# DistributedDataParallel through torchrun: one process per GPU (NCCL), or per CPU slot (gloo).
#   bash distributed_data_parallel_train.sh CONFIG NUM_GPUS GPU_IDS [--ar] [KEY VALUE ...]
#   GPU_IDS: e.g. 0,1 (must list NUM_GPUS ids), or cpu (NUM_GPUS gloo processes on the CPU)
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT (defaults 1, 0, 127.0.0.1, 29500)
# on every node. TRAIN.BATCH_SIZE is the GLOBAL batch: each process gets BATCH_SIZE / world size.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash distributed_data_parallel_train.sh CONFIG NUM_GPUS GPU_IDS [--ar] [KEY VALUE ...]" >&2
  exit 2
fi
CONFIG=$1
NUM=$2
IDS=$3
shift 3
cd "$(dirname "$0")"
# this checkout's lib/ wins over any other installed copy
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! [[ "$NUM" =~ ^[1-9][0-9]*$ ]]; then
  echo "error: NUM_GPUS must be a positive integer, got '$NUM'" >&2
  exit 2
fi
if [ "$IDS" = "cpu" ]; then
  DEVICE=cpu
else
  if ! [[ "$IDS" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
    echo "error: GPU_IDS must be comma-separated integers (e.g. 0,1) or cpu, got '$IDS'" >&2
    exit 2
  fi
  n_ids=$(echo "$IDS" | tr ',' '\n' | wc -l)
  if [ "$n_ids" -ne "$NUM" ]; then
    echo "error: NUM_GPUS is $NUM but GPU_IDS '$IDS' lists $n_ids id(s)" >&2
    exit 2
  fi
  export CUDA_VISIBLE_DEVICES=$IDS
  DEVICE=cuda
fi
exec python -m torch.distributed.run \
  --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" --nproc_per_node "$NUM" \
  --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29500}" \
  main/train.py --cfg "$CONFIG" "$@" DEVICE "$DEVICE"
