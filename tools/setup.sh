#!/usr/bin/env bash
# Install everything the project needs on a fresh machine (idempotent; quick when already done).
#   bash tools/setup.sh
# torch/torchvision: see README "Installation". torchvision 0.28.0 is installed with --no-deps,
# because its metadata would otherwise make pip replace the local CPU torch with the CUDA stack.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
pip_install() { "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore "$@"; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "[setup] installing torch==2.13.0"
  pip_install torch==2.13.0
fi
if ! "$PY" -m pip show -q torchvision >/dev/null 2>&1; then
  echo "[setup] installing torchvision==0.28.0 (--no-deps)"
  pip_install --no-deps torchvision==0.28.0
fi
echo "[setup] installing requirements and the project (editable)"
grep -v '^torch==' requirements.txt > /tmp/ltr_requirements.txt
pip_install -r /tmp/ltr_requirements.txt
pip_install --no-deps -e .

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  echo "[setup] installing the Fashion-MNIST package (dataset-fashion-mnist)"
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null
fi
"$PY" -c "from lib.utils.tv import torchvision; import torch, yacs, tensorboardX; print(f'[setup] ok: torch {torch.__version__}, torchvision {torchvision.__version__}')"
