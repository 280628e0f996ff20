"""The benchmark harness itself on tiny runs: the files and columns it produces (never a speed)."""
import importlib.util
import json
import os

import pytest

from conftest import ROOT

BENCH = os.path.join(ROOT, "benchmarks")


@pytest.fixture
def bench(monkeypatch):
    """Import benchmarks/<name>.py as the scripts run (their folder first on sys.path, cwd = repo root)."""
    monkeypatch.syspath_prepend(BENCH)
    monkeypatch.chdir(ROOT)

    def load(name):
        spec = importlib.util.spec_from_file_location(f"bench_{name}", os.path.join(BENCH, f"{name}.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


def test_compare_writes_table_json_and_plot_for_a_one_epoch_run(bench, tiny_cfg, tmp_path):
    compare = bench("compare")
    out = tmp_path / "results"
    report = compare.main(["--configs", str(tiny_cfg), "--epochs", "1", "--seeds", "7", "--baseline", "tiny",
                           "--out", str(out), "--output-dir", str(tmp_path / "runs")])
    stem = out / "accuracy_if10"  # IF read from the tiny data: 60 / 6 images
    md = (stem.with_suffix(".md")).read_text()
    header = next(line for line in md.splitlines() if line.startswith("| config"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    assert cols == ["config", "recipe", "epochs", "top-1", "many", "medium", "few", "Δ top-1", "Δ few",
                    "checkpoint", "wall / run"]
    assert "| tiny | ce, CrossEntropy" in md and "test-split" in md and "val split" in md
    assert "val, ep 1" in md  # the single epoch is the val-selected checkpoint
    saved = json.loads(stem.with_suffix(".json").read_text())
    assert saved["split"] == "test" and saved["seeds"] == [7] and saved["failures"] == []
    assert {"cpu", "cores", "torch", "date"} <= set(saved["machine"])
    row = saved["rows"][0]
    assert row["config"] == "tiny" and row["epochs"] == 1 and row["scaled_keys"]["TRAIN.MAX_EPOCH"] == 1
    assert row["delta_top1"] == 0.0 and row["top1_std"] is None  # one seed: no std
    run = row["runs"][0]
    assert run["seed"] == 7 and run["checkpoint_selection"].startswith("best top-1 on VALID_JSON")
    assert {"top1", "many", "medium", "few", "wall_s"} <= set(run) and len(run["per_class"]) == 10
    assert report["rows"][0]["top1"] == run["top1"]
    assert stem.with_suffix(".png").stat().st_size > 1000


def test_schedule_scaling_moves_every_epoch_key_with_the_budget(bench, tiny_cfg):
    compare = bench("compare")
    from lib.config import build_config

    cfg = build_config(str(tiny_cfg), ["TRAIN.MAX_EPOCH", "12", "TRAIN.LR_SCHEDULER.LR_STEP", "[9, 11]",
                                       "TRAIN.TWO_STAGE.DRW", "True", "TRAIN.TWO_STAGE.START_EPOCH", "9"])
    scaled = compare.schedule_overrides(cfg, 0.5)
    assert scaled["TRAIN.MAX_EPOCH"] == 6 and scaled["TRAIN.LR_SCHEDULER.LR_STEP"] == [5, 6]
    assert scaled["TRAIN.TWO_STAGE.START_EPOCH"] == 5
    assert compare.schedule_overrides(cfg, 1.0) == {}


def test_throughput_smoke_writes_ratios_with_expected_keys(bench, tiny_cfg, tmp_path):
    throughput = bench("throughput")
    r = throughput.main(["--smoke", "--workers", "0", "--configs", str(tiny_cfg), "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "throughput_cpu_smoke.json").read_text())
    assert saved == json.loads(json.dumps(r))
    assert set(saved["framework_vs_bare"]) == {"fp32", "bf16_channels_last"}
    for v in saved["framework_vs_bare"].values():
        assert set(v["ratio"]) == {"min", "median", "max", "n"} and v["ratio"]["n"] == 2
        assert v["ratio"]["min"] > 0
    assert {"images_per_s", "model_images_per_s", "ratio", "workers"} <= set(saved["data_pipeline"])
    assert saved["multi_expert"] == {}  # the tiny CE config is a single model
    assert set(saved["targets"]) == {"framework_step_ratio", "data_pipeline_ratio"}
    assert {"cpu", "cores", "torch", "date"} <= set(saved["machine"])
    assert "(a) Framework training step" in (tmp_path / "throughput_cpu_smoke.md").read_text()
