"""End to end through the real JSON loading path on real (Fashion-MNIST) images."""
import glob
import json
import os

import pytest
import torch

from lib.config import build_config
from lib.engine.trainer import train
from conftest import PY, free_port, run_cli


def run_dir(cfg):
    return os.path.join(cfg.OUTPUT_DIR, cfg.NAME)


def weights(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def test_two_epoch_cpu_run_writes_every_artefact(tiny_cfg):
    cfg = build_config(str(tiny_cfg))
    results = train(cfg)
    d = run_dir(cfg)
    for rel in ("config.yaml", "models/latest.pth", "models/best_model.pth", "models/epoch_1.pth",
                "models/epoch_2.pth", "results.json", "per_class.csv", "per_class.json",
                "per_class_accuracy.png", "confusion_matrix.png"):
        assert os.path.isfile(os.path.join(d, rel)), rel
    assert glob.glob(os.path.join(d, "tensorboard", "events.out.tfevents.*"))
    assert glob.glob(os.path.join(d, "logs", "train_*.log"))
    saved = json.load(open(os.path.join(d, "results.json")))
    assert saved["top1"] == results["top1"]
    assert saved["checkpoint_selection"].startswith("best top-1 on VALID_JSON")
    assert saved["split"] == "test" and saved["num_images"] == 200
    assert {"many", "medium", "few", "top5"} <= set(saved)
    ckpt = weights(os.path.join(d, "models", "latest.pth"))
    assert ckpt["epoch"] == 2 and ckpt["method"] == "ce"
    assert build_config(str(tiny_cfg)).dump() == ckpt["config"]
    # the resolved config saved in the run folder loads back as a config
    assert build_config(os.path.join(d, "config.yaml")).TRAIN.MAX_EPOCH == 2


def test_resume_continues_from_saved_epoch_and_matches_uninterrupted_run(tiny_cfg):
    full = build_config(str(tiny_cfg), ["NAME", "full", "TRAIN.MAX_EPOCH", "3"])
    train(full)
    part = build_config(str(tiny_cfg), ["NAME", "part", "TRAIN.MAX_EPOCH", "2"])
    train(part)
    after_two = weights(os.path.join(run_dir(part), "models", "latest.pth"))
    resumed = build_config(str(tiny_cfg), ["NAME", "part", "TRAIN.MAX_EPOCH", "3"])
    train(resumed, auto_resume=True)
    a = weights(os.path.join(run_dir(full), "models", "latest.pth"))
    b = weights(os.path.join(run_dir(resumed), "models", "latest.pth"))
    assert b["epoch"] == 3
    assert not os.path.isfile(os.path.join(run_dir(resumed), "models", "epoch_4.pth"))
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k
    # the optimizer state continued (momentum buffers are not reset) and ends identical
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[i]["momentum_buffer"], sb[i]["momentum_buffer"]) for i in sa)
    assert after_two["optimizer"]["state"][0]["momentum_buffer"].abs().sum() > 0


def test_valid_py_reproduces_the_trainer_accuracy(tiny_cfg, tmp_path):
    cfg = build_config(str(tiny_cfg), ["NAME", "v"])
    results = train(cfg)
    import valid

    report = valid.main([str(tiny_cfg), "NAME", "v"])  # TEST.MODEL_FILE = best_model.pth
    assert report["top1"] == results["top1"]
    assert report["many"] == results["many"] and report["few"] == results["few"]
    assert os.path.isfile(os.path.join(run_dir(cfg), "eval", "test_best_model", "per_class_accuracy.png"))


@pytest.mark.slow
def test_data_parallel_launcher_on_cpu(tiny_cfg):
    r = run_cli(["bash", "data_parallel_train.sh", str(tiny_cfg), "cpu", "TRAIN.MAX_EPOCH", "1", "NAME", "dp"])
    assert r.returncode == 0, r.stderr[-2000:]
    out = os.path.join(os.path.dirname(tiny_cfg), "out", "dp")
    assert os.path.isfile(os.path.join(out, "results.json"))
    assert "| main |" in r.stdout


@pytest.mark.slow
def test_ddp_launcher_with_two_gloo_processes(tiny_cfg):
    r = run_cli(["bash", "distributed_data_parallel_train.sh", str(tiny_cfg), "2", "cpu",
                 "TRAIN.MAX_EPOCH", "2", "NAME", "ddp"], env={"MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    out = os.path.join(os.path.dirname(tiny_cfg), "out", "ddp")
    assert len(glob.glob(os.path.join(out, "logs", "*.log"))) == 1  # rank 0 alone writes
    assert "processes 2" in r.stdout
    res = json.load(open(os.path.join(out, "results.json")))
    assert res["num_images"] == 200  # the sharded evaluation gathered every image once
    assert torch.load(os.path.join(out, "models", "latest.pth"), weights_only=True)["epoch"] == 2


def test_ddp_launcher_rejects_id_count_mismatch(tiny_cfg):
    r = run_cli(["bash", "distributed_data_parallel_train.sh", str(tiny_cfg), "2", "0"])
    assert r.returncode == 2 and "NUM_GPUS is 2 but GPU_IDS '0' lists 1" in r.stderr


def test_gpu_ids_without_cuda_is_a_clear_error(tiny_cfg):
    if torch.cuda.is_available():
        pytest.skip("machine has CUDA")
    r = run_cli(["bash", "data_parallel_train.sh", str(tiny_cfg), "0,1"])
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "CUDA is not available" in r.stderr


@pytest.mark.parametrize("case", ["bad_key", "malformed_json", "missing_image"])
def test_bad_input_gives_one_line_error_and_exit_2(tiny_cfg, tmp_path, case):
    args = [PY, "main/train.py", "--cfg", str(tiny_cfg)]
    if case == "bad_key":
        args += ["TRAIN.BATCH_SIZ", "8"]
        expect = "unknown config key 'TRAIN.BATCH_SIZ'"
    elif case == "malformed_json":
        bad = tmp_path / "bad.json"
        bad.write_text('{"annotations": [')
        args += ["DATASET.TRAIN_JSON", str(bad)]
        expect = "malformed JSON"
    else:
        data = json.load(open(build_config(str(tiny_cfg)).DATASET.TRAIN_JSON))
        data["annotations"][3]["fpath"] = "no/such/image.png"
        bad = tmp_path / "missing.json"
        bad.write_text(json.dumps(data))
        root = os.path.dirname(build_config(str(tiny_cfg)).DATASET.TRAIN_JSON)
        args += ["DATASET.TRAIN_JSON", str(bad), "DATASET.ROOT", root]
        expect = "annotation 3: image not found"
    r = run_cli(args)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert err.count("\n") == 0 and err.startswith("error:") and expect in err, err
