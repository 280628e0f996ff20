"""Reliability guarantees: exact resume after SIGKILL, pre-emption, atomic and safe checkpoints,
numerical faults, DDP equivalence and crash propagation. The kill/signal tests run real processes."""
import os
import signal
import time

import pytest
import torch

from conftest import PY, ROOT, popen_cli, run_cli, wait_for_line
from lib.config import build_config
from lib.engine import checkpoint as ckpt_mod
from lib.engine.trainer import train
from lib.utils.errors import UserError


def latest(cfg_or_dir):
    d = cfg_or_dir if isinstance(cfg_or_dir, str) else os.path.join(cfg_or_dir.OUTPUT_DIR, cfg_or_dir.NAME)
    return torch.load(os.path.join(d, "models", "latest.pth"), map_location="cpu", weights_only=True)


def assert_same_weights(a, b):
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), k


def popen_train(cfg_path, *opts):
    return popen_cli([PY, "main/train.py", "--cfg", str(cfg_path), *opts])


OPTS = ["TRAIN.MAX_EPOCH", "3", "SHOW_STEP", "1", "TRAIN.NUM_WORKERS", "2", "DETERMINISTIC", "True",
        "DATASET.VALID_JSON", "", "DATASET.TEST_JSON", ""]


@pytest.fixture(scope="module")
def reference(tiny_lt, tmp_path_factory):
    """An uninterrupted 3-epoch run (2 data workers) to compare interrupted runs against."""
    d = tmp_path_factory.mktemp("ref")
    cfg_path = d / "ref.yaml"
    cfg_path.write_text(open(os.path.join(ROOT, "tests", "tiny_template.yaml")).read().format(
        out=d / "out", train=tiny_lt["train"], val=tiny_lt["val"], test=tiny_lt["test"]))
    cfg = build_config(str(cfg_path), ["NAME", "ref"] + OPTS)
    train(cfg)
    return cfg_path, latest(cfg)


@pytest.mark.slow
def test_sigkill_then_auto_resume_ends_with_identical_weights(reference):
    cfg_path, ref = reference
    p = popen_train(cfg_path, "NAME", "killed", *OPTS)
    wait_for_line(p, "epoch 2 iter 3/")  # mid-epoch 2, after epoch 1's checkpoint
    p.kill()
    p.wait()
    assert p.returncode == -signal.SIGKILL
    r = run_cli([PY, "main/train.py", "--cfg", str(cfg_path), "--ar", "NAME", "killed", *OPTS])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout
    out = os.path.join(os.path.dirname(cfg_path), "out", "killed")
    assert_same_weights(ref, latest(out))


@pytest.mark.slow
def test_sigterm_writes_a_mid_epoch_checkpoint_that_resumes_exactly(reference):
    cfg_path, ref = reference
    p = popen_train(cfg_path, "NAME", "term", *OPTS)
    wait_for_line(p, "epoch 2 iter 2/")
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM at epoch 2, iteration" in err and "--ar" in err
    out = os.path.join(os.path.dirname(cfg_path), "out", "term")
    partial = latest(out)
    assert partial["epoch"] == 1 and partial["iteration"] >= 2
    r = run_cli([PY, "main/train.py", "--cfg", str(cfg_path), "--ar", "NAME", "term", *OPTS])
    assert r.returncode == 0, r.stderr[-2000:]
    assert "at epoch 2, iteration" in r.stdout
    assert_same_weights(ref, latest(out))


@pytest.mark.slow
def test_second_signal_exits_at_once(reference):
    cfg_path, _ = reference
    p = popen_train(cfg_path, "NAME", "twice", *OPTS)
    wait_for_line(p, "epoch 1 iter 1/")
    p.send_signal(signal.SIGINT)
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    assert p.returncode in (128 + signal.SIGINT, -signal.SIGINT)


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_file_intact(tmp_path, monkeypatch):
    path = str(tmp_path / "latest.pth")
    ckpt_mod.save_checkpoint(path, {"epoch": 1, "state_dict": {"w": torch.ones(3)}})

    def dying_save(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise KeyboardInterrupt  # the process is interrupted in the middle of writing

    monkeypatch.setattr(ckpt_mod.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        ckpt_mod.save_checkpoint(path, {"epoch": 2, "state_dict": {"w": torch.zeros(3)}})
    monkeypatch.undo()
    assert ckpt_mod.load_checkpoint(path)["epoch"] == 1
    assert os.listdir(tmp_path) == ["latest.pth"]  # no temp file left behind


def test_truncated_checkpoint_is_a_one_line_error_and_auto_resume_falls_back(tiny_cfg, capsys):
    cfg = build_config(str(tiny_cfg), ["NAME", "trunc", "TRAIN.MAX_EPOCH", "2"])
    train(cfg)
    models = os.path.join(cfg.OUTPUT_DIR, cfg.NAME, "models")
    data = open(os.path.join(models, "latest.pth"), "rb").read()
    open(os.path.join(models, "latest.pth"), "wb").write(data[: len(data) // 2])
    with pytest.raises(UserError, match="truncated or corrupt"):
        ckpt_mod.load_checkpoint(os.path.join(models, "latest.pth"))
    os.remove(os.path.join(models, "epoch_2.pth"))
    capsys.readouterr()
    train(build_config(str(tiny_cfg), ["NAME", "trunc", "TRAIN.MAX_EPOCH", "2"]), auto_resume=True)
    out = capsys.readouterr().out
    assert "skipping" in out and "falling back to" in out and "epoch_1.pth" in out
    assert "epoch 2/2" in out and "epoch 1/2" not in out  # continued after epoch 1


def test_a_fresh_run_moves_an_earlier_run_aside_and_auto_resume_keeps_it(tiny_cfg, capsys):
    opts = ["NAME", "again", "TRAIN.MAX_EPOCH", "1", "DATASET.TEST_JSON", ""]
    first = build_config(str(tiny_cfg), opts)
    train(first)
    run_dir = os.path.join(first.OUTPUT_DIR, "again")
    before = latest(first)
    capsys.readouterr()
    train(build_config(str(tiny_cfg), opts))  # the same command again: never writes into the earlier run
    out = capsys.readouterr().out
    (moved,) = [d for d in os.listdir(first.OUTPUT_DIR) if d.startswith("again.")]
    moved = os.path.join(first.OUTPUT_DIR, moved)
    assert f"notice: {run_dir} held an earlier run: moved it, unchanged, to {moved}" in out
    assert_same_weights(latest(moved), before)  # the earlier run's checkpoints are kept as they were
    for d in (run_dir, moved):  # one log and one event file each (add_scalars adds sub-folders)
        tb = os.path.join(d, "tensorboard")
        assert len(os.listdir(os.path.join(d, "logs"))) == 1
        assert len([f for f in os.listdir(tb) if os.path.isfile(os.path.join(tb, f))]) == 1
    train(build_config(str(tiny_cfg), opts + ["TRAIN.MAX_EPOCH", "2"]), auto_resume=True)  # --ar: the same folder
    assert len([d for d in os.listdir(first.OUTPUT_DIR) if d.startswith("again.")]) == 1
    assert latest(first)["epoch"] == 2


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_a_checkpoint_carrying_pickled_code_is_refused(tmp_path):
    path = str(tmp_path / "evil.pth")
    torch.save({"state_dict": {}, "payload": Exploit()}, path)
    with pytest.raises(UserError, match="refusing to load .*not a plain weights file"):
        ckpt_mod.load_checkpoint(path)


def test_mismatching_architecture_names_keys_and_shapes(tiny_cfg):
    from lib.methods import build_method

    cfg = build_config(str(tiny_cfg))
    ten = build_method(cfg, [10] * 10)
    five = build_method(cfg, [10] * 5)
    with pytest.raises(UserError, match=r"net\.head\.weight \(5, 64\) vs model \(10, 64\)"):
        ckpt_mod.load_weights(ten, five.state_dict(), "five.pth")
    other = build_method(build_config(str(tiny_cfg), ["BACKBONE.TYPE", "res10"]), [10] * 10)
    with pytest.raises(UserError, match="missing keys: .*unexpected keys"):
        ckpt_mod.load_weights(ten, other.state_dict(), "res10.pth")


def test_module_prefix_is_handled_both_ways(tiny_cfg):
    from torch import nn

    from lib.methods import build_method

    cfg = build_config(str(tiny_cfg))
    a, b = build_method(cfg, [10] * 10), build_method(cfg, [10] * 10)
    wrapped = nn.DataParallel(a)  # saving from a wrapped model gives bare keys
    saved = ckpt_mod.unwrap(wrapped).state_dict()
    assert not any(k.startswith("module.") for k in saved)
    prefixed = {"module." + k: v for k, v in saved.items()}  # loading a DP/DDP-style file
    ckpt_mod.load_weights(b, prefixed, "dp.pth")
    ckpt_mod.load_weights(nn.DataParallel(b), saved, "bare.pth")  # and into a wrapped model
    assert all(torch.equal(saved[k], b.state_dict()[k]) for k in saved)


def test_non_finite_loss_stops_with_epoch_iteration_and_value(tiny_cfg):
    cfg = build_config(str(tiny_cfg), ["NAME", "nan", "TRAIN.OPTIMIZER.BASE_LR", "1e30"])
    with pytest.raises(UserError, match=r"non-finite loss (nan|inf) at epoch 1, iteration \d+"):
        train(cfg)


def test_non_finite_loss_skip_mode_counts_skipped_steps(tiny_cfg, capsys):
    cfg = build_config(str(tiny_cfg), ["NAME", "nanskip", "TRAIN.OPTIMIZER.BASE_LR", "1e30",
                                       "TRAIN.NONFINITE_LOSS", "skip", "TRAIN.MAX_EPOCH", "1"])
    train(cfg)
    assert "non-finite steps" in capsys.readouterr().out


@pytest.mark.slow
def test_ddp_two_gloo_processes_equal_one_process_with_the_full_batch(tiny_cfg, tiny_lt, tmp_path):
    """Setting where batch statistics agree: BACKBONE.BN_EVAL True (BN uses running statistics, taken
    from a warm-up at LR 0; SyncBatchNorm has no CPU implementation). Every other parameter trains.
    N = 2 steps of per-process batch 16 on 2 processes == 2 steps of batch 32 in one process.
    (SGD is chaotic: a 1e-7 relative perturbation grows to ~1e-4 within 8 steps here, so N is small.)"""
    import json

    from conftest import free_port

    warm = build_config(str(tiny_cfg), ["NAME", "warm", "TRAIN.MAX_EPOCH", "2", "TRAIN.OPTIMIZER.BASE_LR", "0.0",
                                        "DATASET.VALID_JSON", "", "DATASET.TEST_JSON", ""])
    train(warm)
    data = json.load(open(tiny_lt["train"]))
    data["annotations"] = data["annotations"][::4][:64]
    subset = tmp_path / "subset64.json"
    subset.write_text(json.dumps(data))
    opts = ["TRAIN.MAX_EPOCH", "1", "BACKBONE.BN_EVAL", "True", "DATASET.VALID_JSON", "", "DATASET.TEST_JSON", "",
            "DATASET.TRAIN_JSON", str(subset), "DATASET.ROOT", str(tiny_lt["folder"]),
            "NETWORK.PRETRAINED", "True", "NETWORK.PRETRAINED_MODEL", "warm/models/latest.pth",
            "TRAIN.OPTIMIZER.BASE_LR", "0.01"]
    one = build_config(str(tiny_cfg), ["NAME", "one"] + opts)
    train(one)
    r = run_cli(["bash", "distributed_data_parallel_train.sh", str(tiny_cfg), "2", "cpu", "NAME", "two"] + opts,
                env={"MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    a = latest(one)
    b = latest(os.path.join(one.OUTPUT_DIR, "two"))
    moved = 0.0
    warm_sd = latest(warm)["state_dict"]
    for k, v in a["state_dict"].items():
        if v.is_floating_point():
            assert torch.allclose(v, b["state_dict"][k], atol=1e-5, rtol=0), (k, (v - b["state_dict"][k]).abs().max())
            moved = max(moved, (v - warm_sd[k]).abs().max().item())
    assert moved > 1e-3  # the weights did train
    out = os.path.join(one.OUTPUT_DIR, "two")
    assert sorted(os.listdir(out)) == ["config.yaml", "logs", "models", "tensorboard"]
    assert len(os.listdir(os.path.join(out, "logs"))) == 1  # rank 0 alone writes
    assert len(os.listdir(os.path.join(out, "tensorboard"))) == 1


@pytest.mark.slow
def test_a_crashing_rank_makes_the_launcher_exit_non_zero(tiny_cfg, tmp_path):
    from conftest import free_port

    hook = tmp_path / "crash_hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, threading\n"
        "if os.environ.get('RANK') == '1':\n"
        "    threading.Timer(4.0, lambda: os._exit(3)).start()\n")
    start = time.time()
    r = run_cli(["bash", "distributed_data_parallel_train.sh", str(tiny_cfg), "2", "cpu", "NAME", "crash",
                 "TRAIN.MAX_EPOCH", "50"],
                env={"MASTER_PORT": str(free_port()), "OMP_NUM_THREADS": "1",
                     "PYTHONPATH": f"{hook}{os.pathsep}{ROOT}"}, timeout=240)
    assert r.returncode != 0
    assert time.time() - start < 200
