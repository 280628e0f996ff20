"""Shared fixtures: a tiny real long-tailed dataset (Fashion-MNIST images through the real
builder and the real JSON path) and a tiny training config."""
import importlib.util
import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"


def load_tool(name):
    """Import tools/<name>.py as a module (tools/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(ROOT, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def tiny_lt(tmp_path_factory):
    """Fashion-MNIST-LT with n_max 60, IF 10 (239 train images), 10 val and 20 test images per class."""
    if not os.path.isdir(FMNIST):
        if os.environ.get("CI"):
            pytest.fail(f"{FMNIST} missing: .ci/run must install dataset-fashion-mnist")
        pytest.skip("Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)")
    out = tmp_path_factory.mktemp("fmnist")
    build = load_tool("build_fashion_mnist_lt")
    build.main(["--source", FMNIST, "--output_path", str(out), "--n_max", "60", "--imb_factor", "10",
                "--val-per-class", "10"])
    folder = out / "fmnist_lt_if10"
    test_json = folder / "fmnist_lt_if10_test.json"
    data = json.loads(test_json.read_text())
    kept, per_class = [], {}
    for a in data["annotations"]:
        if per_class.get(a["category_id"], 0) < 20:
            per_class[a["category_id"]] = per_class.get(a["category_id"], 0) + 1
            kept.append(a)
    small = folder / "fmnist_lt_if10_test_small.json"
    small.write_text(json.dumps({"annotations": kept, "num_classes": data["num_classes"]}))
    return {"folder": folder, "train": folder / "fmnist_lt_if10_train.json",
            "val": folder / "fmnist_lt_if10_val.json", "test": small}


@pytest.fixture
def tiny_cfg(tiny_lt, tmp_path):
    """Write a tiny CE config for tiny_lt into tmp_path; returns its path."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(f"""
NAME: tiny
OUTPUT_DIR: {tmp_path / 'out'}
METHOD: ce
INPUT_SIZE: (28, 28)
SAVE_STEP: 1
SHOW_STEP: 0
DATASET:
  TRAIN_JSON: {tiny_lt['train']}
  VALID_JSON: {tiny_lt['val']}
  TEST_JSON: {tiny_lt['test']}
BACKBONE:
  TYPE: res32_cifar
TRAIN:
  BATCH_SIZE: 32
  MAX_EPOCH: 2
  NUM_WORKERS: 0
  OPTIMIZER:
    BASE_LR: 0.05
    WEIGHT_DECAY: 5e-4
  LR_SCHEDULER:
    TYPE: multistep
    LR_STEP: [2]
TEST:
  BATCH_SIZE: 100
  NUM_WORKERS: 0
TRANSFORMS:
  TRAIN_TRANSFORMS: ("random_crop", "random_horizontal_flip")
  TEST_TRANSFORMS: ()
  NORMALIZE: fashion_mnist
""")
    return cfg


def run_cli(args, cwd=ROOT, env=None, timeout=300):
    """Run a command line as a user would; returns CompletedProcess (text)."""
    import subprocess

    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.update(env or {})
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


PY = sys.executable
