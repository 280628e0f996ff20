"""Every registered method, end to end through its own Fashion-MNIST-LT config on the tiny real data set
(tests/conftest.py: tiny_lt). A new method is covered here as soon as it registers and has a config; a registered
method without a configs/fashion_mnist_lt/ config fails test_every_registered_method_has_a_fashion_mnist_lt_config.

Configs: for each name in lib.methods.METHODS the first configs/fashion_mnist_lt/*.yaml by file name whose METHOD is
that name, plus EXTRA (the ViT path, and NCL with its MoCo branch: queue, key encoder and shuffle-BN must resume
bit for bit too). Each runs as shipped but for SHRINK (the tiny data, a temporary OUTPUT_DIR, 2 epochs of batch 32,
no workers, a log line per iteration, deterministic kernels).

Two-stage configs (NETWORK.PRETRAINED, e.g. Weight Balancing's stage two): the config of the same folder whose NAME
is the first folder of NETWORK.PRETRAINED_MODEL (its stage one; for WB a CE config) is trained first, shrunk alike,
into the same OUTPUT_DIR, so that the stage-two path resolves under OUTPUT_DIR as in a real two-stage run.

One reference run per config (module-scoped, uninterrupted, in-process, NAME ref) is shared by the checks:
build + one training step on real images, predict() (the main prediction and every member), the checkpoint round
trip, the launcher killed mid-epoch 2 and resumed with --ar (bit-identical weights to the reference), and valid.py
printing a row per member. The method-specific mathematics is tested in tests/methods/test_<method>.py.
"""
import glob
import os

import pytest
import torch
import yaml

from conftest import PY, ROOT, kill_then_resume, latest_weights, run_cli
from lib.config import build_config
from lib.engine.checkpoint import load_trained_method, save_checkpoint
from lib.engine.trainer import build, to_device, train, train_step
from lib.methods import METHODS

FOLDER = os.path.join(ROOT, "configs", "fashion_mnist_lt")
SHRINK = ["TRAIN.MAX_EPOCH", "2", "TRAIN.BATCH_SIZE", "32", "TRAIN.NUM_WORKERS", "0", "TEST.NUM_WORKERS", "0",
          "SHOW_STEP", "1", "SAVE_STEP", "0", "DETERMINISTIC", "True", "DEVICE", "cpu"]
MOCO = ["NETWORK.MOCO", "True", "NETWORK.MOCO_K", "64", "NETWORK.MOCO_DIM", "16",
        "TRANSFORMS.SECOND_VIEW_TRANSFORMS", "('random_crop', 'random_horizontal_flip')", "NCL.BATCHED_EXPERTS", "True"]
EXTRA = [("cadel_vit_tiny", "cadel_vit_tiny.yaml", []), ("ncl_res32+moco", "ncl_res32.yaml", MOCO)]  # (id, config, KEY VALUE)


def method_of(path):
    return build_config(path).METHOD


def first_config_per_method():
    """{method: the first configs/fashion_mnist_lt/*.yaml (by file name) whose METHOD it is} for every registered
    method that has one."""
    found = {}
    for path in sorted(glob.glob(os.path.join(FOLDER, "*.yaml"))):
        found.setdefault(method_of(path), path)
    return {m: found[m] for m in METHODS.names() if m in found}


def cases():
    chosen = [(os.path.splitext(os.path.basename(p))[0], os.path.basename(p), [])
              for _, p in sorted(first_config_per_method().items())]
    return [pytest.param((config, variant), id=case_id) for case_id, config, variant in chosen + EXTRA]


def test_every_registered_method_has_a_fashion_mnist_lt_config():
    missing = sorted(set(METHODS.names()) - set(first_config_per_method()))
    assert not missing, f"no configs/fashion_mnist_lt/*.yaml with METHOD {missing}: add one (it is then tested here)"


def stage_one_of(path):
    """The config of the same folder whose NAME is the first folder of `path`'s NETWORK.PRETRAINED_MODEL, or None."""
    cfg = build_config(path)
    if not cfg.NETWORK.PRETRAINED:
        return None
    name = cfg.NETWORK.PRETRAINED_MODEL.replace("\\", "/").split("/")[0]
    for other in sorted(glob.glob(os.path.join(os.path.dirname(path), "*.yaml"))):
        if (yaml.safe_load(open(other)) or {}).get("NAME") == name:
            return other
    raise AssertionError(f"{path}: no config in its folder has NAME {name} (its NETWORK.PRETRAINED_MODEL)")


class Case:
    """One config's shrunk command line and its reference run (NAME ref)."""

    def __init__(self, path, variant, tiny_lt, out):
        self.path, self.out = path, str(out)
        self.opts = [*SHRINK, *variant, "OUTPUT_DIR", self.out, "DATASET.TRAIN_JSON", str(tiny_lt["train"]),
                     "DATASET.VALID_JSON", str(tiny_lt["val"]), "DATASET.TEST_JSON", str(tiny_lt["test"])]

    def cfg(self, name, path=None):
        return build_config(path or self.path, [*self.opts, *(["NAME", name] if name else [])])

    def run_dir(self, name):
        return os.path.join(self.out, name)


@pytest.fixture(scope="module", params=cases())
def case(request, tiny_lt, tmp_path_factory):
    name, variant = request.param
    path = os.path.join(FOLDER, name)
    c = Case(path, variant, tiny_lt, tmp_path_factory.mktemp(os.path.splitext(name)[0]))
    one = stage_one_of(path)
    if one:
        train(c.cfg("", one))  # under its own NAME, where NETWORK.PRETRAINED_MODEL looks
    c.results = train(c.cfg("ref"))
    return c


def test_builds_and_one_training_step_on_real_images_changes_the_weights(case):
    run = build(case.cfg("step"))
    assert type(run.method) is METHODS.get(run.cfg.METHOD)
    run.scheduler.set_epoch(1)
    run.method.on_epoch_start(1)
    batch = to_device(next(iter(run.loader)), run.device, run.cfg.TRAIN.CHANNELS_LAST)
    before = {k: v.detach().clone() for k, v in run.method.named_parameters()}
    loss, _, logs = train_step(run.model, run.method, batch, run.optimizer, run.amp, 1, run.cfg,
                               (run.scheduler, 1, len(run.loader)))  # iteration 1: past a warm-up's zero LR
    assert torch.isfinite(loss) and all(torch.isfinite(torch.as_tensor(v)) for v in logs.values()), logs
    moved = [k for k, p in run.method.named_parameters() if not torch.equal(p, before[k])]
    assert moved, "no parameter changed"
    assert any(run.method.get_parameter(k).requires_grad for k in moved)  # (a MoCo key encoder moves by EMA)


def predictions(method, batch):
    method.eval()
    with torch.no_grad():
        return method.predict(method(batch))


def real_batch(case):
    """The training counts and one training batch of real images, as the trainer builds them."""
    cfg = case.cfg("ref")
    run = build(cfg)
    return run.data.counts, to_device(next(iter(run.loader)), run.device, cfg.TRAIN.CHANNELS_LAST)


def test_predict_returns_the_main_prediction_and_every_member(case):
    counts, batch = real_batch(case)
    cfg = case.cfg("ref")
    method, _ = load_trained_method(cfg, counts, os.path.join(case.run_dir("ref"), "models", "latest.pth"), "cpu")
    p = predictions(method, batch)
    b, c = batch["label"].shape[0], len(counts)
    assert set(p) == {"logits", "members"} and p["logits"].shape == (b, c) and torch.isfinite(p["logits"]).all()
    assert all(m.shape == (b, c) and torch.isfinite(m).all() for m in p["members"].values())
    assert list(case.results["members"]) == list(p["members"])  # the trainer's report names the same members


def test_checkpoint_round_trip_gives_the_same_weights_and_predictions(case, tmp_path):
    counts, batch = real_batch(case)
    cfg = case.cfg("ref")
    saved = latest_weights(case.run_dir("ref"))
    a, ckpt = load_trained_method(cfg, counts, os.path.join(case.run_dir("ref"), "models", "latest.pth"), "cpu")
    assert ckpt["method"] == cfg.METHOD and ckpt["epoch"] == a.epochs
    sd = a.state_dict()
    assert sd.keys() == saved.keys() and all(torch.equal(sd[k], saved[k]) for k in sd)
    again = tmp_path / "again.pth"
    save_checkpoint(str(again), {"state_dict": sd})
    b, _ = load_trained_method(cfg, counts, str(again), "cpu")
    pa, pb = predictions(a, batch), predictions(b, batch)
    assert torch.equal(pa["logits"], pb["logits"])
    assert all(torch.equal(pa["members"][m], pb["members"][m]) for m in pa["members"])


@pytest.mark.slow
def test_launcher_killed_mid_epoch_and_resumed_with_ar_ends_with_identical_weights(case):
    kill_then_resume(["bash", "data_parallel_train.sh", case.path, "cpu", "NAME", "killed", *case.opts])
    a, b = latest_weights(case.run_dir("ref")), latest_weights(case.run_dir("killed"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow
def test_valid_py_prints_the_main_prediction_and_every_member(case):
    r = run_cli([PY, "valid.py", case.path, "NAME", "ref", *case.opts])
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [ln.split("|")[1].strip() for ln in r.stdout.splitlines() if ln.startswith("| ") and "---" not in ln]
    name = case.results["prediction"]  # the method's prediction_name
    assert rows == ["prediction", f"main ({name})" if name else "main", *case.results["members"]]
