"""benchmarks/gpu_check.sh: the prepared GPU check must not rot while no GPU machine is lent.

`prepare --no-download` (no network) must print a device command, carry list and timeout within the device
tool's limits and a size check under 64 MiB; `run --dry` runs every step of the GPU check on this CPU with tiny
sizes, and every step must succeed (multi-expert configs: the first one found, if any exists).
"""
import json
import os
import re
import shutil
import subprocess
import tarfile

import pytest

from conftest import PY, ROOT, run_cli

DATA = os.path.join(ROOT, "data", "fashion_mnist_lt", "fmnist_lt_if100")
FMNIST = "/usr/share/datasets/fashion-mnist"
EXPECTED = ["0_env", "1_dp_train", "1_dp_valid", "2_ddp_train", "2_ddp_valid", "4_throughput_b128", "5_compile"]


def need_data_and_git():
    if shutil.which("git") is None or not os.path.isdir(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout")
    if not os.path.isdir(DATA) and not os.path.isdir(FMNIST):
        pytest.skip("neither data/fashion_mnist_lt nor the dataset-fashion-mnist package is here")


def test_helper_command_fits_the_device_limits(tmp_path):
    r = run_cli([PY, "benchmarks/gpu_check.py", "command", "--json", str(tmp_path / "c.json")])
    assert r.returncode == 0, r.stderr
    c = json.loads((tmp_path / "c.json").read_text())
    assert len(c["command"]) <= 2000 and len(c["rerun_command"]) <= 2000
    assert c["command"].startswith("PYTHONUNBUFFERED=1 bash benchmarks/gpu_check.sh run")
    assert 1 <= len(c["carry"]) <= 8 and ".whl" in c["carry"] and "data/fashion_mnist_lt" in c["carry"]
    assert c["budget_s"] + 30 <= c["timeout_s"] <= 480  # the script ends (and bundles) before the tool's limit
    # what is carried must be what git ignores (a tracked path needs no carrying)
    for p in c["carry"]:
        assert subprocess.run(["git", "check-ignore", "-q", p], cwd=ROOT).returncode == 0, p


def test_wheels_plan_names_what_the_gpu_machine_lacks():
    r = run_cli([PY, "benchmarks/gpu_check.py", "wheels-plan"])
    assert r.returncode == 0, r.stderr
    rows = [line.split("\t") for line in r.stdout.splitlines() if line and not line.startswith("#")]
    needed = {row[1] for row in rows if row[0] == "1"}
    assert {"yacs", "tensorboardX"} <= needed  # imported by lib/, absent from the device's package list
    assert not needed & {"torch", "tqdm", "numpy", "matplotlib", "pyyaml", "pillow"}  # present there


@pytest.mark.slow
def test_prepare_without_download_checks_sizes_and_prints_the_command():
    need_data_and_git()
    r = run_cli(["bash", "benchmarks/gpu_check.sh", "prepare", "--no-download"], timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    out = r.stdout
    total = re.search(r"total: ([0-9.]+) MiB \(([0-9.]+) MiB as a tar", out)
    assert total and float(total.group(2)) < 64, out
    assert re.search(r"data/fashion_mnist_lt: \d+ files", out)
    cmd = re.search(r"command:\s+(.+)", out).group(1)
    carry = json.loads(re.search(r"carry:\s+(\[.*\])", out).group(1))
    timeout = int(re.search(r"timeout_s:\s+(\d+)", out).group(1))
    assert len(cmd) <= 2000 and len(carry) <= 8 and timeout <= 480
    assert re.search(r"^prepare: ready", out, re.M), out


@pytest.mark.slow
def test_dry_run_runs_every_step(tmp_path):
    """The whole GPU check on the CPU, as the device would run it: $OUT set, at most 8 files back."""
    need_data_and_git()
    out = tmp_path / "out"
    out.mkdir()
    env = {"OUT": str(out), "OMP_NUM_THREADS": "1"}
    r = run_cli(["bash", "benchmarks/gpu_check.sh", "run", "--dry"], env=env, timeout=600)
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    if r.returncode != 0:
        pytest.fail("dry run failed:\n" + "\n".join(f"{s['step']}: {s['status']} {s['detail']}"
                                                    for s in summary["steps"]) + "\n" + r.stdout[-4000:])
    for name in EXPECTED:
        assert steps[name]["status"] == "ok", steps.get(name)
    multi = [s for s in steps if s.startswith("3_")]
    assert multi, steps
    found = run_cli([PY, "benchmarks/gpu_check.py", "discover"]).stdout.strip()
    if found:  # dry mode runs the first multi-expert config there is
        assert [steps[s]["status"] for s in multi] == ["ok"], multi
    else:
        assert steps["3_multi_expert"]["status"] == "skipped"
    assert steps.get("0_wheels", {"status": "skipped"})["status"] in ("ok", "skipped")
    b512 = steps["4_throughput_b512"]  # the same command as batch 128 with another --batch: not run on the CPU
    assert b512["status"] == "skipped" and b512["detail"].startswith("dry:") and "--batch 512" in b512["detail"]
    # what comes back from the device: at most 8 plain files, no folders
    files = sorted(os.listdir(out))
    assert len(files) <= 8 and all((out / f).is_file() for f in files), files
    assert {"gpu_check.log", "summary.md", "summary.json", "throughput_b128.md", "compile_ratio.md",
            "gpu_check_files.tar.gz"} <= set(files)
    with tarfile.open(out / "gpu_check_files.tar.gz") as t:
        names = t.getnames()
    assert any(n.endswith("logs/1_dp_train.log") for n in names)
    assert not any(n.endswith(".pth") for n in names)
    assert "| 1_dp_train | ok |" in (out / "summary.md").read_text()


@pytest.mark.slow
def test_gpu_mode_on_a_cpu_records_failures_and_goes_on(tmp_path):
    """Without CUDA every GPU step fails, quickly: each failure is recorded, the next step still runs, the
    exit status is non-zero, and the GPU-only command lines (throughput at batch 128/512, compile) parse."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the GPU steps would really run")
    need_data_and_git()
    out = tmp_path / "out"
    out.mkdir()
    env = {"OUT": str(out), "GPU_CHECK_SITE": str(tmp_path / "site"), "OMP_NUM_THREADS": "1"}
    r = run_cli(["bash", "benchmarks/gpu_check.sh", "run", "--only", "4,5", "--budget", "200"], env=env, timeout=300)
    assert r.returncode != 0
    steps = {s["step"]: s for s in json.loads((out / "summary.json").read_text())["steps"]}
    assert steps["0_env"]["status"] == "FAILED" and "CUDA is not available" in steps["0_env"]["detail"]
    assert not any(s.startswith(("1_", "2_", "3_")) for s in steps)  # --only 4,5
    for name in ("4_throughput_b128", "4_throughput_b512", "5_compile"):
        assert steps[name]["status"] == "FAILED", steps[name]
        assert "CUDA is not available" in steps[name]["detail"], steps[name]  # not an argparse error
    assert (out / "summary.md").is_file() and (out / "gpu_check_files.tar.gz").is_file()
