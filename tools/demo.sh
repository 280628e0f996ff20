#!/usr/bin/env bash
# The main job on the embedded real data, from a fresh machine, on the CPU (a few minutes):
# set up, build Fashion-MNIST-LT, train ResNet-32 + CE, evaluate with valid.py, print the table.
#   bash tools/demo.sh [[--cfg] CONFIG] [--ar] [KEY VALUE ...]      e.g. bash tools/demo.sh TRAIN.MAX_EPOCH 4
#   CONFIG defaults to configs/fashion_mnist_lt/ce_res32.yaml (any Fashion-MNIST-LT config works);
#   --ar resumes an interrupted demo run. Flags may come before or after CONFIG.
# Interpreter: ${PYTHON:-python3} (as every script here).
set -euo pipefail
cd "$(dirname "$0")/.."
# this checkout's lib/ wins over any other installed copy
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
# CONFIG, FLAGS=(...), OPTS=(...): one parser for every entry point (lib/utils/cli.py); checked
# before the (slow) setup so that a typo fails at once
ARGS=$("$PY" -m lib.utils.cli demo.sh "$@") || exit $?
eval "$ARGS"
bash tools/setup.sh
"$PY" tools/build_fashion_mnist_lt.py
"$PY" tools/dataset_stats.py data/fashion_mnist_lt/fmnist_lt_if100/fmnist_lt_if100_train.json
"$PY" main/train.py --cfg "$CONFIG" "${FLAGS[@]}" "${OPTS[@]}"
echo
echo "== valid.py on the selected checkpoint (reproduces the numbers above) =="
"$PY" valid.py "$CONFIG" "${OPTS[@]}"
RUN=$("$PY" -c "import sys; from lib.config import build_config; c = build_config(sys.argv[1], sys.argv[2:]); print(c.OUTPUT_DIR + '/' + c.NAME)" "$CONFIG" "${OPTS[@]}")
echo
echo "Run folder: $RUN"
echo "  results.json, per_class.csv, per_class_accuracy.png, confusion_matrix.png, models/, tensorboard/, logs/"
# tensorboardX writes the event files; the viewer is not installed by tools/setup.sh (it would add ~15 MB)
echo "  TensorBoard event files in $RUN/tensorboard (to view: pip install tensorboard; tensorboard --logdir $RUN/tensorboard)"
