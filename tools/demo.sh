#!/usr/bin/env bash
# The main job on the embedded real data, from a fresh machine, on the CPU (a few minutes):
# set up, build Fashion-MNIST-LT, train ResNet-32 + CE, evaluate with valid.py, print the table.
#   bash tools/demo.sh [KEY VALUE ...]      e.g. bash tools/demo.sh TRAIN.MAX_EPOCH 4
set -euo pipefail
cd "$(dirname "$0")/.."
# this checkout's lib/ wins over any other installed copy
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
bash tools/setup.sh
PY=${PYTHON:-python3}
CFG=configs/fashion_mnist_lt/ce_res32.yaml
"$PY" tools/build_fashion_mnist_lt.py
"$PY" tools/dataset_stats.py data/fashion_mnist_lt/fmnist_lt_if100/fmnist_lt_if100_train.json
"$PY" main/train.py --cfg "$CFG" "$@"
echo
echo "== valid.py on the selected checkpoint (reproduces the numbers above) =="
"$PY" valid.py "$CFG" "$@"
RUN=$("$PY" -c "from lib.config import build_config; import sys; c = build_config('$CFG', sys.argv[1:]); print(c.OUTPUT_DIR + '/' + c.NAME)" "$@")
echo
echo "Run folder: $RUN"
echo "  results.json, per_class.csv, per_class_accuracy.png, confusion_matrix.png, models/, tensorboard/, logs/"
echo "  tensorboard --logdir $RUN/tensorboard"
