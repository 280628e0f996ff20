"""Checkpoints from elsewhere: numpy values load through torch's allow-list and every refusal names the
global; BACKBONE.PRETRAINED_MODEL finds the backbone in a framework, original-repository, multi-expert or
bare torchvision file; a head the method re-initialises may mismatch; a non-finite loss says what is on
disk."""
import io
import json
import os

import numpy as np
import pytest
import torch

from conftest import PY, ROOT, run_cli
from lib.config import build_config
from lib.engine import checkpoint as ckpt_mod
from lib.engine.trainer import train
from lib.methods import build_method
from lib.models.backbones import BACKBONES
from lib.models.pretrained import load_pretrained, load_state_dict_file
from lib.utils.errors import UserError


@pytest.fixture(scope="module")
def stage_one(tiny_lt, tmp_path_factory):
    """One finished 1-epoch CE run on the tiny set (10 classes): (its config file, its run folder)."""
    d = tmp_path_factory.mktemp("foreign")
    cfg_path = d / "tiny.yaml"
    cfg_path.write_text(open(os.path.join(ROOT, "tests", "tiny_template.yaml")).read().format(
        out=d / "out", train=tiny_lt["train"], val=tiny_lt["val"], test=tiny_lt["test"]))
    train(build_config(str(cfg_path), ["NAME", "stage1", "TRAIN.MAX_EPOCH", "1", "DATASET.TEST_JSON", ""]))
    return cfg_path, d / "out" / "stage1"


class Custom:  # a pickled instance of this needs the global test_checkpoints_foreign.Custom
    def __init__(self):
        self.x = 1


class Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


# ---------------------------------------------------------------- (a) numpy values, refusals
def test_numpy_scalars_dtypes_and_arrays_load_without_pickle_execution(tmp_path):
    path = tmp_path / "orig.pth"
    torch.save({"state_dict": {"w": torch.ones(2)}, "best_result": np.float64(3.5), "best_epoch": np.int64(7),
                "dtype": np.dtype("float64"), "dtype_class": type(np.dtype("float32")),
                "counts": np.arange(3, dtype=np.int64)}, path)
    ckpt = ckpt_mod.load_checkpoint(str(path))
    assert ckpt["best_result"] == 3.5 and isinstance(ckpt["best_result"], np.float64)
    assert ckpt["best_epoch"] == 7 and ckpt["dtype"] == np.float64
    assert ckpt["dtype_class"] is type(np.dtype("float32")) and ckpt["counts"].tolist() == [0, 1, 2]
    assert not [g for g in torch.serialization.get_safe_globals()  # allowed for this load only
                if "numpy" in str(getattr(g[0] if isinstance(g, tuple) else g, "__module__", ""))]
    # the same dict through the backbone loader (BACKBONE.PRETRAINED_MODEL)
    assert torch.equal(load_state_dict_file(path)["w"], torch.ones(2))


def test_a_numpy_1x_pickle_naming_numpy_core_loads_too(tmp_path):
    buf = io.BytesIO()  # the legacy format keeps the pickle uncompressed: rename the module as numpy 1.x wrote it
    torch.save({"best_result": np.float64(61.5), "state_dict": {}}, buf, _use_new_zipfile_serialization=False)
    raw = buf.getvalue()
    if b"numpy._core.multiarray" in raw:
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in raw
    (tmp_path / "np1.pth").write_bytes(raw)
    assert ckpt_mod.load_checkpoint(str(tmp_path / "np1.pth"))["best_result"] == 61.5


@pytest.mark.parametrize("payload,says", [
    (Custom(), f"it holds the Python global '{__name__}.Custom'"),  # a class: re-save if trusted
    (Exploit(), f"loading it would call '{os.system.__module__}.system' (pickled code); do not load it"),  # code
])
def test_every_refusal_names_the_global_and_says_what_to_do(tmp_path, payload, says, capsys):
    path = tmp_path / "bad.pth"
    torch.save({"state_dict": {"w": torch.ones(1)}, "extra": payload}, path)
    for load in (ckpt_mod.load_checkpoint, load_state_dict_file):
        with pytest.raises(UserError) as err:
            load(str(path))
        msg = str(err.value)
        assert "\n" not in msg and "\x1b" not in msg and "two options" not in msg, msg
        assert msg.startswith(f"refusing to load {path}: it is not a plain weights file") and says in msg, msg
        if isinstance(payload, Custom):  # what to do
            assert f"torch.load('{path}', weights_only=False)" in msg and "torch.save(" in msg
    assert "pwned" not in capsys.readouterr().out


# ---------------------------------------------------------------- (b) BACKBONE.PRETRAINED_MODEL layouts
def _layouts(sd):
    """name -> (file holding the backbone state dict `sd` in another layout (expert k: sd + k), the prefix
    the loader must find, how many file keys it must skip)."""
    n, n3 = len(sd), len([k for k in sd if k.startswith("layer3")])
    return {
        "bare (timm / torchvision-like)": (dict(sd), "", 0),
        "DataParallel": ({"module." + k: v for k, v in sd.items()}, "module.", 0),
        "framework checkpoint": ({"state_dict": {**{"net.backbone." + k: v for k, v in sd.items()},
                                                "net.head.weight": torch.zeros(7, 64), "net.head.bias": torch.zeros(7)},
                                  "epoch": 3, "best_result": 61.0, "config": "NAME: x\n"}, "net.backbone.", 2),
        "BoT": ({"state_dict": {**{"module.backbone." + k: v for k, v in sd.items()},
                                "module.classifier.weight": torch.zeros(7, 64)},
                 "best_result": np.float64(50.0), "epoch": 200}, "module.backbone.", 1),
        "NCL, 3 experts": ({"state_dict": {**{f"module.backbone.{e}.{k}": v + e for e in range(3) for k, v in sd.items()},
                                           **{f"module.classifier.{e}.weight": torch.zeros(7, 64) for e in range(3)}},
                            "best_result": np.float64(50.0)}, "module.backbone.0.", 2 * n + 3),
        "multi-expert framework": ({"state_dict": {f"net.experts.{e}.backbone.{k}": v + e for e in range(2)
                                                   for k, v in sd.items()}}, "net.experts.0.backbone.", n),
        "shared trunk": ({"state_dict": {**{f"net.trunk.{k}": v for k, v in sd.items() if not k.startswith("layer3")},
                                         **{f"net.experts.{e}.{k}": v + e for e in range(2)
                                            for k, v in sd.items() if k.startswith("layer3")},
                                         **{f"net.experts.{e}.head.weight": torch.zeros(7, 64) for e in range(2)}}},
                         "net.trunk.", n3 + 2),
    }


@pytest.mark.parametrize("layout", list(_layouts({})))
def test_backbone_pretrained_model_accepts_each_layout_and_reports_loaded_and_skipped(tmp_path, layout):
    src = BACKBONES.get("res32_cifar")()
    for p in src.parameters():
        torch.nn.init.normal_(p)
    sd = {k: v.clone() for k, v in src.state_dict().items()}
    obj, prefix, n_skipped = _layouts(sd)[layout]
    torch.save(obj, tmp_path / "w.pth")
    dst = BACKBONES.get("res32_cifar")()
    loaded, skipped = load_pretrained(dst, tmp_path / "w.pth")
    for k, v in sd.items():  # the (first expert's) backbone, bit for bit
        assert torch.equal(dst.state_dict()[k], v), (layout, k)
    assert sorted(loaded) == sorted(sd) and len(skipped) == n_skipped
    report = dst.pretrained_report
    assert report.startswith(f"pretrained weights {tmp_path / 'w.pth'}: loaded {len(sd)} of the backbone's "
                             f"{len(sd)} tensors")
    assert (f"under '{prefix}'" in report) == bool(prefix) and f"skipped {n_skipped}" in report
    if layout == "NCL, 3 experts":  # the other experts are summarised, not listed key by key
        assert f"'module.backbone.1.*' ({len(sd)} keys), 'module.backbone.2.*' ({len(sd)} keys)" in report


def test_a_framework_checkpoint_of_another_architecture_is_still_refused(tmp_path):
    torch.save({"state_dict": {"net.backbone." + k: v for k, v in BACKBONES.get("res10")().state_dict().items()}},
               tmp_path / "res10.pth")
    with pytest.raises(UserError) as err:
        load_pretrained(BACKBONES.get("res32_cifar")(), tmp_path / "res10.pth")
    msg = str(err.value)
    assert "does not fit the model (keys under 'net.backbone.')" in msg
    assert "shape mismatch" in msg or "missing keys" in msg


def test_a_trained_framework_run_initialises_a_backbone_and_the_log_says_what_was_loaded(stage_one, capsys):
    tiny_cfg, run = stage_one
    best = str(run / "models" / "best_model.pth")
    capsys.readouterr()
    cfg = build_config(str(tiny_cfg), ["NAME", "dst", "TRAIN.MAX_EPOCH", "1", "DATASET.VALID_JSON", "",
                                       "DATASET.TEST_JSON", "", "BACKBONE.PRETRAINED_MODEL", best,
                                       "TRAIN.OPTIMIZER.BASE_LR", "0.0"])
    method = build_method(cfg, [10] * 10)
    saved = torch.load(best, weights_only=True)["state_dict"]
    assert torch.equal(method.net.backbone.stem.conv1.weight, saved["net.backbone.stem.conv1.weight"])
    train(cfg)
    out = capsys.readouterr().out
    assert f"pretrained weights {best}: loaded" in out and "'net.backbone.'" in out
    assert "skipped 2: net.head.weight, net.head.bias" in out


# ---------------------------------------------------------------- (c) keys the method re-initialises
def test_load_weights_skips_only_the_keys_the_method_re_initialises(tiny_cfg):
    cfg = build_config(str(tiny_cfg))
    ten, five = build_method(cfg, [10] * 10), build_method(cfg, [10] * 5)
    skipped = ckpt_mod.load_weights(five, ten.state_dict(), "ten.pth", may_mismatch=("net.head.",))
    assert skipped == ["net.head.weight (10, 64) vs model (5, 64)", "net.head.bias (10,) vs model (5,)"]
    assert torch.equal(five.net.backbone.stem.conv1.weight, ten.net.backbone.stem.conv1.weight)
    other = dict(ten.state_dict())
    other["net.backbone.stem.conv1.weight"] = torch.zeros(16, 3, 5, 5)  # outside may_mismatch: still refused
    with pytest.raises(UserError, match=r"net\.backbone\.stem\.conv1\.weight \(16, 3, 5, 5\) vs model"):
        ckpt_mod.load_weights(five, other, "other.pth", may_mismatch=("net.head.",))
    with pytest.raises(UserError, match=r"net\.head\.weight \(10, 64\) vs model \(5, 64\)"):
        ckpt_mod.load_weights(five, ten.state_dict(), "ten.pth")  # nothing declared: refused as before


def _subset(src, dst, classes, per_class=None):
    data = json.load(open(src))
    seen = {}
    keep = []
    for a in data["annotations"]:
        c = a["category_id"]
        if c < classes and (per_class is None or seen.get(c, 0) < per_class):
            seen[c] = seen.get(c, 0) + 1
            keep.append(dict(a, fpath=os.path.join(os.path.dirname(str(src)), a["fpath"])))
    dst.write_text(json.dumps({"annotations": keep, "num_classes": classes}))
    return str(dst)


def test_stage_two_with_reinit_onto_another_class_count_skips_and_logs_the_head(stage_one, tiny_lt, tmp_path,
                                                                                   capsys):
    tiny_cfg, _ = stage_one
    five = ["DATASET.TRAIN_JSON", _subset(tiny_lt["train"], tmp_path / "tr5.json", 5),
            "DATASET.VALID_JSON", _subset(tiny_lt["val"], tmp_path / "va5.json", 5, 4), "DATASET.TEST_JSON", "",
            "NETWORK.PRETRAINED", "True", "NETWORK.PRETRAINED_MODEL", "stage1/models/latest.pth",
            "BACKBONE.FREEZE", "True", "TRAIN.MAX_EPOCH", "1"]
    capsys.readouterr()
    results = train(build_config(str(tiny_cfg), ["NAME", "crt5"] + five + ["CLASSIFIER.REINIT", "True"]))
    out = capsys.readouterr().out
    assert "not loaded, re-initialised by the method: net.head.weight (10, 64) vs model (5, 64), " \
           "net.head.bias (10,) vs model (5,)" in out
    assert results["num_images"] == 20
    with pytest.raises(UserError, match=r"net\.head\.weight \(10, 64\) vs model \(5, 64\)"):
        train(build_config(str(tiny_cfg), ["NAME", "keephead5"] + five))  # no REINIT: the head must fit


# ---------------------------------------------------------------- (d) non-finite loss: what is on disk
def test_non_finite_loss_in_epoch_one_says_no_checkpoint_exists_yet(tiny_cfg):
    cfg = build_config(str(tiny_cfg), ["NAME", "nan1", "TRAIN.OPTIMIZER.BASE_LR", "1e30"])
    with pytest.raises(UserError) as err:
        train(cfg)
    msg = str(err.value)
    assert "at epoch 1" in msg and "no checkpoint has been written yet" in msg and "holds the last good" not in msg
    assert not os.path.exists(os.path.join(cfg.OUTPUT_DIR, "nan1", "models", "latest.pth"))


def test_non_finite_loss_later_names_the_epoch_latest_pth_holds(tiny_cfg, monkeypatch):
    from lib.methods.ce import CrossEntropyMethod

    real = CrossEntropyMethod.loss

    def nan_in_epoch_two(self, outputs, batch, epoch):
        loss, logs = real(self, outputs, batch, epoch)
        return (loss * float("nan") if epoch == 2 else loss), logs

    monkeypatch.setattr(CrossEntropyMethod, "loss", nan_in_epoch_two)
    cfg = build_config(str(tiny_cfg), ["NAME", "nan2", "TRAIN.MAX_EPOCH", "2", "DATASET.TEST_JSON", ""])
    with pytest.raises(UserError, match=r"at epoch 2, iteration 1; stopped \(models/latest\.pth holds the last "
                                        r"good state \(the end of epoch 1\)"):
        train(cfg)
    assert ckpt_mod.load_checkpoint(os.path.join(cfg.OUTPUT_DIR, "nan2", "models", "latest.pth"))["epoch"] == 1


@pytest.mark.slow
def test_non_finite_loss_over_an_earlier_runs_folder_keeps_the_earlier_run_and_says_nothing_is_saved(stage_one):
    tiny_cfg, run = stage_one  # a new process, same run folder, without --ar: the earlier run is moved aside first
    before = ckpt_mod.load_checkpoint(os.path.join(run, "models", "latest.pth"))["epoch"]
    r = run_cli([PY, "main/train.py", str(tiny_cfg), "NAME", "stage1", "TRAIN.OPTIMIZER.BASE_LR", "1e30",
                 "TRAIN.MAX_EPOCH", "1", "DATASET.TEST_JSON", ""], cwd=ROOT)
    err = r.stderr.strip()
    assert r.returncode == 2 and "\n" not in err
    assert "non-finite loss" in err and "no checkpoint has been written yet" in err
    moved = [d for d in os.listdir(run.parent) if d.startswith("stage1.")]
    assert len(moved) == 1 and f"moved it, unchanged, to {run.parent / moved[0]}" in r.stdout + r.stderr
    assert ckpt_mod.load_checkpoint(os.path.join(run.parent, moved[0], "models", "latest.pth"))["epoch"] == before
