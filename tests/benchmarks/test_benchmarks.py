"""The benchmark harness itself on tiny runs: the files and columns it produces (never a speed)."""
import importlib
import json
import os

import pytest
import torch

from conftest import ROOT

BENCH = os.path.join(ROOT, "benchmarks")


@pytest.fixture
def bench(monkeypatch):
    """Import benchmarks.<name> (cwd = repo root, as the scripts run). One torch thread: on a loaded 2-core
    machine two spinning threads make tiny steps 5-10x slower."""
    monkeypatch.chdir(ROOT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield lambda name: importlib.import_module(f"benchmarks.{name}")
    torch.set_num_threads(threads)


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
    per_class = md.split("Per-class test accuracy")[1].splitlines()
    header = next(line for line in per_class if line.startswith("| config"))
    assert header.count("|") == 12  # config + 10 classes, each "name (training count)"
    assert next(line for line in per_class if line.startswith("| tiny |")).count("|") == 12
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
    assert set(saved["framework_vs_bare"]) == {"fp32", "fp32_channels_last", "bf16_channels_last"}
    for v in saved["framework_vs_bare"].values():
        assert set(v["ratio"]) == {"min", "median", "max", "n"} and v["ratio"]["n"] == 2
        assert v["ratio"]["min"] > 0
    assert {"images_per_s", "model_images_per_s", "ratio", "workers"} <= set(saved["data_pipeline"])
    assert saved["multi_expert"] == {}  # the tiny CE config is a single model
    assert set(saved["targets"]) == {"framework_step_ratio", "data_pipeline_ratio"}
    assert {"cpu", "cores", "torch", "date"} <= set(saved["machine"])
    assert "(a) Framework training step" in (tmp_path / "throughput_cpu_smoke.md").read_text()
    assert "ncl_experts" not in saved and "vit" not in saved  # studies of their own (benchmarks/studies/)


def test_ncl_experts_study_writes_both_paths_against_k_single_steps(bench, tmp_path):
    study = bench("studies.ncl_experts")
    r = study.main(["--smoke", "--variants", "fp32", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "ncl_experts_cpu_smoke.json").read_text())
    x = saved["ncl_experts"][0]
    assert saved == json.loads(json.dumps(r)) and x["K"] == 3 and x["variant"] == "fp32"
    assert set(x["ratio_to_K_single"]) == set(x["targets"]) == {"sequential", "batched"}
    assert set(x["step_ms"]) == {"sequential", "batched", "single"}
    assert "| fp32 | batched |" in (tmp_path / "ncl_experts_cpu_smoke.md").read_text()


def test_vit_step_study_compares_the_framework_step_with_a_bare_timm_loop_with_timms_lr_scales(bench, tmp_path):
    study = bench("studies.vit_step")
    r = study.main(["--smoke", "--variants", "fp32", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "vit_step_cpu_smoke.json").read_text())
    v = saved["vit"]["variants"]["fp32"]
    assert saved == json.loads(json.dumps(r)) and saved["vit"]["backbone"] == "vit_tiny_p4"
    assert v["same_lr_scales_as_timm"] is True and v["ratio"]["n"] == 2 and v["ratio"]["min"] > 0
    assert "ViT step: framework vs a bare timm loop" in (tmp_path / "vit_step_cpu_smoke.md").read_text()


def write_stage_configs(tiny_cfg, folder, **stage_twos):
    """folder/one.yaml (NAME stage_one) and, for each name=ONE, a stage-two folder/<name>.yaml (NAME <name>_run)
    loading the best_model.pth of the run named ONE. Returns the tiny config's text."""
    folder.mkdir(exist_ok=True)
    base = tiny_cfg.read_text()
    (folder / "one.yaml").write_text(base.replace("NAME: tiny", "NAME: stage_one"))
    for name, one in stage_twos.items():
        (folder / f"{name}.yaml").write_text(base.replace(
            "NAME: tiny", f"NAME: {name}_run\nNETWORK:\n  PRETRAINED: True\n"
                          f"  PRETRAINED_MODEL: {one}/models/best_model.pth\n"))
    return base


def test_stage_two_config_runs_after_its_stage_one_in_the_same_output_dir(bench, tiny_cfg, tmp_path):
    compare = bench("compare")
    folder = tmp_path / "cfgs"
    write_stage_configs(tiny_cfg, folder, two="stage_one")
    two = (folder / "two.yaml").read_text()
    args = compare.parse_args(["--configs", str(folder / "two.yaml"), "--quick"])
    plan = compare.Plan(args.configs, args)
    assert list(plan.entries) == ["one", "two"] and plan.errors == {}  # stage one added, and first
    assert plan.entries["one"]["added"] and plan.entries["two"]["depends"] == "one"
    cfg = plan.run_cfg("two", 5, str(tmp_path / "runs"))
    assert cfg.NETWORK.PRETRAINED_MODEL == str(tmp_path / "runs" / "stage_one" / "models" / "best_model.pth")
    assert cfg.SEED == 5 and cfg.OUTPUT_DIR == str(tmp_path / "runs") and cfg.TRAIN.MAX_EPOCH == 1
    assert plan.total_epochs("two") == 2
    (folder / "two.yaml").write_text(two.replace("stage_one/", "missing/"))
    plan = compare.Plan([str(folder / "two.yaml")], args)
    assert "two" not in plan.entries and "missing" in plan.errors["two"]


def test_runs_with_overrides_get_their_own_folder(bench, tmp_path):
    """A study with --opts trains under the configs' NAMEs: it must not overwrite the plain runs it sits beside."""
    compare = bench("compare")
    plain = compare.parse_args(["--output-dir", str(tmp_path)])
    assert compare.runs_root(plain, "if100_full") == str(tmp_path / "if100_full")
    tagged = compare.parse_args(["--output-dir", str(tmp_path), "--opts", "CADEL.WEIGHTING", "per_sample", "--tag", "ps"])
    assert compare.runs_root(tagged, "if100_full") == str(tmp_path / "if100_full_ps")
    untagged = compare.parse_args(["--output-dir", str(tmp_path), "--opts", "CADEL.WEIGHTING", "per_sample"])
    assert compare.runs_root(untagged, "if100_full") == str(tmp_path / "if100_full_CADEL.WEIGHTING_per_sample")


def test_sweep_runs_each_config_once_per_value_with_its_own_stage_one(bench, tiny_cfg, tmp_path):
    compare = bench("compare")
    folder = tmp_path / "cfgs"
    write_stage_configs(tiny_cfg, folder, two="stage_one")
    args = compare.parse_args(["--configs", str(folder / "two.yaml"), "--sweep", "TRAIN.OPTIMIZER.WEIGHT_DECAY",
                               "0", "0.02"])
    plan = compare.Plan(args.configs, args)
    assert plan.errors == {}
    assert list(plan.entries) == ["one [WEIGHT_DECAY=0]", "two [WEIGHT_DECAY=0]",
                                  "one [WEIGHT_DECAY=0.02]", "two [WEIGHT_DECAY=0.02]"]
    assert plan.entries["two [WEIGHT_DECAY=0.02]"]["depends"] == "one [WEIGHT_DECAY=0.02]"
    one = plan.entries["one [WEIGHT_DECAY=0.02]"]["cfg"]
    assert one.NAME == "stage_one_weight_decay0.02" and one.TRAIN.OPTIMIZER.WEIGHT_DECAY == 0.02
    cfg = plan.run_cfg("two [WEIGHT_DECAY=0.02]", 3, str(tmp_path / "runs"))
    assert cfg.NAME == "two_run_weight_decay0.02" and cfg.TRAIN.OPTIMIZER.WEIGHT_DECAY == 0.02
    assert cfg.NETWORK.PRETRAINED_MODEL == str(tmp_path / "runs" / "stage_one_weight_decay0.02" / "models"
                                               / "best_model.pth")
    with pytest.raises(SystemExit):
        compare.parse_args(["--sweep", "TRAIN.OPTIMIZER.WEIGHT_DECAY"])


def test_parallel_runs_wait_for_their_stage_one_and_a_failed_stage_one_is_reported(bench, tiny_cfg, tmp_path):
    compare = bench("compare")
    folder = tmp_path / "cfgs"
    base = write_stage_configs(tiny_cfg, folder, two="stage_one", after_bad="bad_one")
    # a stage one that fails at run time (its val JSON disappears after planning)
    val_json = base.split("VALID_JSON: ")[1].split("\n")[0]
    broken_json = tmp_path / "gone.json"
    broken_json.write_text(open(val_json).read())
    (folder / "bad.yaml").write_text(base.replace("NAME: tiny", "NAME: bad_one").replace(val_json, str(broken_json)))
    args = ["--configs", str(folder / "two.yaml"), str(folder / "after_bad.yaml"), "--epochs", "1", "--seeds", "3",
            "--jobs", "2", "--baseline", "one", "--out", str(tmp_path / "res"), "--output-dir", str(tmp_path / "runs")]
    plan = compare.Plan([str(folder / "two.yaml"), str(folder / "after_bad.yaml")], compare.parse_args(args))
    assert list(plan.entries) == ["one", "two", "bad", "after_bad"]
    broken_json.unlink()
    report = compare.main(args)
    rows = {r["config"]: r for r in report["rows"]}
    assert len(rows["one"]["runs"]) == 1 and len(rows["two"]["runs"]) == 1  # stage two ran on stage one's weights
    assert report["parallel_runs"] == 2 and report["threads_per_run"] >= 1
    fails = {f["config"]: f["error"] for f in report["failures"]}
    assert set(fails) == {"bad", "after_bad"}
    assert "gone.json" in fails["bad"] and "log:" in fails["bad"]  # the run's own one-line error, and its log
    assert fails["after_bad"] == "stage one bad failed"
    md = (tmp_path / "res" / "accuracy_if10.md").read_text()
    assert "2 at a time" in md and "Failed or skipped:" in md


def test_quick_mode_runs_every_mission_method_and_the_ce_baseline(bench):
    """--quick trims the config list (never a method's recipe): every name exists, CE is the baseline,
    ACE, NCL, CADEL and both Weight Balancing stages are in; full mode still runs every config."""
    compare = bench("compare")
    stems = {compare.stem_of(p) for p in compare.glob.glob(compare.CONFIG_GLOB)}
    assert set(compare.QUICK_CONFIGS) <= stems
    assert {"ce_res32", "ace_res32", "ncl_res32", "cadel_res32", "wb_stage2_maxnorm_res32"} <= set(compare.QUICK_CONFIGS)
    args = compare.parse_args(["--quick"])
    assert args.configs is None and args.epoch_scale == compare.QUICK_SCALE and args.seeds == [42]


def test_recipe_names_the_loss_a_method_trains_with(bench):
    """CADEL ignores LOSS.LOSS_TYPE: the table names its cascade loss, not the unused key's default."""
    compare = bench("compare")
    from lib.config import build_config

    cfg = build_config(os.path.join(ROOT, "configs/fashion_mnist_lt/cadel_res32.yaml"), [])
    assert compare.recipe(cfg).startswith("cadel, cascade softmax (LOSS.LOSS_TYPE unused), ")
    cfg = build_config(os.path.join(ROOT, "configs/fashion_mnist_lt/ldam_drw_res32.yaml"), [])
    assert compare.recipe(cfg).startswith("ce, LDAMLoss, ")


def test_a_multi_member_run_reports_the_member_chosen_on_val(bench, tiny_cfg, tmp_path):
    """results.json keeps each member's val top-1 at the selected checkpoint; compare.py adds the member each seed
    chose on val (its test numbers) beside the combined prediction, named and labelled as chosen on val."""
    compare = bench("compare")
    out = tmp_path / "results"
    compare.main(["--configs", str(tiny_cfg), "--epochs", "1", "--seeds", "7", "--baseline", "tiny", "--out", str(out),
                  "--output-dir", str(tmp_path / "runs"), "--opts", "METHOD", "ncl", "LOSS.LOSS_TYPE", "NIL_NBOD",
                  "LOSS.HCM_N", "3"])
    row = json.loads((out / "accuracy_if10.json").read_text())["rows"][0]
    run = row["runs"][0]
    res = json.loads(open(os.path.join(run["run_dir"], "results.json")).read())
    val = res["valid_members_top1"]
    assert set(val) == {"expert1", "expert2", "expert3"}
    assert run["best_member"] == max(val, key=val.get)
    assert row["best_member"]["top1"] == run["members"][run["best_member"]]["top1"]
    md = (out / "accuracy_if10.md").read_text()
    assert f"| ↳ best member, chosen on val ({run['best_member']}) | member of tiny |" in md


def test_committed_results_hold_no_path_of_the_machine_that_wrote_them(bench):
    """Result files are committed: the writer stores paths relative to the checkout (compare.py strips it from
    a failed run's message) and no file under benchmarks/results/ (studies/ included) names a machine's absolute path."""
    compare = bench("compare")
    assert compare.CHECKOUT == ROOT
    found = []
    for folder, _, names in os.walk(os.path.join(BENCH, "results")):
        for name in sorted(n for n in names if n.endswith((".md", ".json"))):
            text = open(os.path.join(folder, name), encoding="utf-8").read()
            found += [f"{name}: {p}" for p in (ROOT + os.sep,) + tuple(f"/{d}/" for d in ("work", "root", "home"))
                      if p in text]
    assert not found, found
