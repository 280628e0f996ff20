"""Shared fixtures: a tiny real long-tailed dataset (Fashion-MNIST images through the real
builder and the real JSON path) and a tiny training config."""
import importlib.util
import json
import os
import socket
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# every subprocess a test starts (tools, launchers, torchrun) imports this checkout's `lib`,
# whatever checkout an editable install points at
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
FMNIST = "/usr/share/datasets/fashion-mnist"


def load_tool(name):
    """Import tools/<name>.py (e.g. "dev/time_commands") as a module: tools/ is a folder of scripts, not a package."""
    spec = importlib.util.spec_from_file_location(f"tool_{name.replace('/', '_')}",
                                                  os.path.join(ROOT, "tools", f"{name}.py"))
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
    template = open(os.path.join(ROOT, "tests", "tiny_template.yaml")).read()
    cfg.write_text(template.format(out=tmp_path / "out", train=tiny_lt["train"], val=tiny_lt["val"], test=tiny_lt["test"]))
    return cfg


def free_port():
    """A TCP port free on this machine now (for a DDP rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(args, cwd=ROOT, env=None, timeout=300):
    """Run a command line as a user would; returns CompletedProcess (text)."""
    import subprocess

    full_env = dict(os.environ, **(env or {}))  # PYTHONPATH already starts with ROOT (set above)
    return subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


PY = sys.executable


def latest_weights(run_dir):
    """state_dict of <run_dir>/models/latest.pth."""
    import torch

    path = os.path.join(run_dir, "models", "latest.pth")
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def popen_cli(cmd):
    """Start a command line as run_cli does, unbuffered, with text pipes (for reading its output as it runs)."""
    import subprocess

    return subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for_line(proc, needle, timeout=120):
    """Read `proc`'s stdout up to the first line holding `needle` (that line is returned); an error if the process
    ends first or `timeout` seconds pass."""
    import time

    end = time.time() + timeout
    while time.time() < end:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise AssertionError(f"process ended before {needle!r}: {proc.stderr.read()[-2000:]}")
        if needle in line:
            return line
    raise AssertionError(f"timeout waiting for {needle!r}")


def kill_then_resume(cmd, needle="epoch 2 iter 3/", timeout=900):
    """Start `cmd` (a launcher command line ending with its KEY VALUE pairs), SIGKILL it at the first output line
    holding `needle` (default: mid-epoch 2, after epoch 1's checkpoint), then run it again with `--ar` appended;
    returns the resumed run's CompletedProcess (asserted successful)."""
    import signal

    p = popen_cli(cmd)
    wait_for_line(p, needle, timeout)
    p.kill()
    p.wait()
    assert p.returncode == -signal.SIGKILL
    r = run_cli(cmd + ["--ar"], timeout=timeout)  # flags may follow the KEY VALUE pairs (lib/utils/cli.py)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout
    return r


# ---------------------------------------------------------------- a test run leaves the checkout clean
_TOP_LEVEL = set()


def _leftovers(before):
    """New top-level entries a test run must not leave: hidden folders/files (a plugin's or a tool's cache,
    e.g. .benchmarks/) and empty folders; .pytest_cache is pytest's own (git-ignored)."""
    new = set(os.listdir(ROOT)) - before - {".pytest_cache"}
    return sorted(n for n in new if n.startswith(".") or (os.path.isdir(os.path.join(ROOT, n))
                                                          and not os.listdir(os.path.join(ROOT, n))))


def pytest_sessionstart(session):
    _TOP_LEVEL.update(os.listdir(ROOT))


def pytest_sessionfinish(session, exitstatus):
    left = _leftovers(_TOP_LEVEL)
    if left:
        print(f"\nerror: the test run left {', '.join(left)} in the checkout {ROOT}", file=sys.stderr)
        session.exitstatus = 1


def release_fixture(tmp_path, family, name, **paths):
    """A released YAML from tests/fixtures/release_configs/<family>/<name> as shipped, with only the paths given
    as KEY=value (e.g. TRAIN_JSON=...) changed; written into tmp_path, its path returned."""
    import re

    text = open(os.path.join(ROOT, "tests", "fixtures", "release_configs", family, name)).read()
    for key, value in paths.items():
        text, n = re.subn(rf"^(\s*{key}: ).*$", lambda m: f"{m.group(1)}'{value}'", text, count=1, flags=re.M)
        assert n == 1, key
    path = tmp_path / name
    path.write_text(text)
    return path
