"""benchmarks/gpu_check.sh: the GPU check is a plain script for any CUDA machine, and must not rot while the
project has none. `--dry` runs the same plan on this CPU with tiny sizes, and every step must succeed."""
import json
import os
import re
import shutil

import pytest

from conftest import PY, ROOT, run_cli

DATA = os.path.join(ROOT, "data", "fashion_mnist_lt", "fmnist_lt_if100")
FMNIST = "/usr/share/datasets/fashion-mnist"
EXPECTED = ["0_env", "1_dp_train", "1_dp_valid", "2_ddp_train", "2_ddp_valid", "4_throughput_b128", "4_ncl_experts",
            "4_vit_step", "5_compile"]
SCRIPTS = ("benchmarks/gpu_check.sh", "benchmarks/gpu_check.py")


def test_the_check_assumes_nothing_about_how_files_reach_the_machine():
    """No wheel packing, no carry lists, no size or file-count limits of a remote tool, no absolute paths."""
    for rel in SCRIPTS:
        text = open(os.path.join(ROOT, rel)).read()
        for word in (".whl", "carry", "MiB", "wheel", "device tool", "$OUT", "/tmp/site", "prepare"):
            assert word not in text, (rel, word)
        assert not re.search(r"(?<![\w.$])/(work|root|home)/", text), rel


def test_without_cuda_it_stops_at_once_with_one_line_and_writes_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here: the check would really run")
    r = run_cli(["bash", "benchmarks/gpu_check.sh", "--out", str(tmp_path / "res")], timeout=120)
    err = r.stderr.strip()
    assert r.returncode == 2 and "\n" not in err and err.startswith("error: CUDA is not available"), err
    assert "--dry" in err and not (tmp_path / "res").exists()


@pytest.mark.parametrize("args,says", [(["--bogus"], "unknown option '--bogus'"), (["--budget", "x"], "whole seconds"),
                                       (["--only", "7"], "step numbers 1-5")])
def test_a_bad_option_is_one_line(args, says):
    r = run_cli(["bash", "benchmarks/gpu_check.sh", "--dry", *args], timeout=60)
    err = r.stderr.strip()
    assert r.returncode == 2 and "\n" not in err and says in err, err


def test_summary_writes_the_results_with_paths_relative_to_the_checkout(tmp_path):
    tsv = tmp_path / "steps.tsv"
    tsv.write_text(f"1_dp_train\tok\t3.5\t\tlogs/1_dp_train.log\n"
                   f"2_ddp_train\tFAILED\t1.0\trc 1: error: {ROOT}/data/x.json missing\tlogs/2_ddp_train.log\n")
    r = run_cli([PY, "benchmarks/gpu_check.py", "summary", str(tsv), str(tmp_path), "--mode", "GPU run",
                 "--seconds", "9", "--logs", "output/gpu_check/work/logs"])
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (result["ok"], result["failed"], result["all_ok"]) == (1, 1, False)
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| 2_ddp_train | FAILED | 1.0 | rc 1: error: data/x.json missing |" in md
    assert ROOT not in md + json.dumps(result)


@pytest.mark.slow
def test_dry_run_runs_every_step(tmp_path):
    """The whole GPU check on the CPU with tiny sizes; results into --out."""
    if not os.path.isdir(DATA) and not os.path.isdir(FMNIST):
        pytest.skip("neither data/fashion_mnist_lt nor the dataset-fashion-mnist package is here")
    if shutil.which("timeout") is None:
        pytest.skip("no coreutils timeout")
    res = tmp_path / "res"
    r = run_cli(["bash", "benchmarks/gpu_check.sh", "--dry", "--out", str(res)], env={"OMP_NUM_THREADS": "1"},
                timeout=600)
    summary = json.loads((res / "gpu_check.json").read_text())
    steps = {s["step"]: s for s in summary["steps"]}
    if r.returncode != 0:
        pytest.fail("dry run failed:\n" + "\n".join(f"{s['step']}: {s['status']} {s['detail']}"
                                                    for s in summary["steps"]) + "\n" + r.stdout[-4000:])
    for name in EXPECTED:
        assert steps[name]["status"] == "ok", steps.get(name)
    multi = [s for s in steps if s.startswith("3_")]
    found = run_cli([PY, "benchmarks/gpu_check.py", "discover"]).stdout.strip()
    if found:  # dry mode runs the first multi-expert config there is
        assert [steps[s]["status"] for s in multi] == ["ok"], multi
    else:
        assert steps["3_multi_expert"]["status"] == "skipped"
    b512 = steps["4_throughput_b512"]  # the same command as batch 128 with another --batch: not run on the CPU
    assert b512["status"] == "skipped" and b512["detail"].startswith("dry:") and "--batch 512" in b512["detail"]
    files = set(os.listdir(res))
    assert {"gpu_check.md", "gpu_check.json"} <= files, files
    assert any(re.fullmatch(r"throughput_cpu\w*\.md", f) for f in files), files
    studies = set(os.listdir(res / "studies"))  # the studies' tables, as in benchmarks/results/studies/
    assert {"compile_ratio_cpu.md", "ncl_experts_cpu_smoke.md", "vit_step_cpu_smoke.md"} <= studies, studies
    md = (res / "gpu_check.md").read_text()
    assert "| 1_dp_train | ok |" in md and "dry run on CPU" in md and ROOT not in md
    assert os.path.isfile(os.path.join(ROOT, "output", "gpu_check_dry", "work", "logs", "1_dp_train.log"))
