"""The generic parts of the method contract: release-config adoption, compatibility notices, the
per-iteration LR schedule and per-step lr_scales (lib/methods/base.py, lib/config/compat.py,
lib/engine/optim.py)."""
import math

import pytest
import torch

from lib.config import build_config, notices
from lib.utils import unused_keys as compat
from lib.engine.optim import LRSchedule
from lib.methods import METHODS, Method
from lib.utils.errors import UserError


@pytest.fixture
def release_method():
    """A throw-away method that recognises configs with LOSS.LOSS_TYPE 'DemoReleaseLoss'."""

    class Demo(Method):
        @staticmethod
        def matches_release_config(cfg):
            return cfg.LOSS.LOSS_TYPE == "DemoReleaseLoss"

        @staticmethod
        def adapt_config(cfg, explicit):
            if cfg.LOSS.LOSS_TYPE != "DemoReleaseLoss":
                return []
            cfg.LOSS.LOSS_TYPE = "CrossEntropy"
            return [f"demo: loss translated (MAX_EPOCH explicit: {'TRAIN.MAX_EPOCH' in explicit})"]

    METHODS._items["demo_release"] = Demo
    yield Demo
    del METHODS._items["demo_release"]


def test_a_yaml_without_method_that_matches_a_release_is_adopted_with_notices(tmp_path, release_method):
    f = tmp_path / "r.yaml"
    f.write_text("LOSS:\n  LOSS_TYPE: DemoReleaseLoss\nTRAIN:\n  MAX_EPOCH: 3\n")
    cfg = build_config(str(f))
    assert cfg.METHOD == "demo_release" and cfg.LOSS.LOSS_TYPE == "CrossEntropy"
    assert notices(cfg) == ["recognised an original demo_release release config: METHOD demo_release",
                            "demo: loss translated (MAX_EPOCH explicit: True)"]
    # an explicit METHOD is never overridden by recognition
    cfg = build_config(str(f), ["METHOD", "ce", "LOSS.LOSS_TYPE", "CrossEntropy"])
    assert cfg.METHOD == "ce" and notices(cfg) == []
    # the adapted config, saved and built again, is unchanged (adapt_config is idempotent)
    saved = tmp_path / "saved.yaml"
    saved.write_text(build_config(str(f)).dump())
    assert build_config(str(saved)).dump() == build_config(str(f)).dump()


def test_compatibility_only_keys_give_one_notice_when_set(tmp_path):
    from lib.config.config import get_cfg_defaults

    cfg = get_cfg_defaults()
    compat.accept_unused(cfg, "LOSS.DEMO_UNUSED_KEY", 0, lambda c, v: f"nothing reads it (value {v})")
    assert cfg.LOSS.DEMO_UNUSED_KEY == 0
    try:
        assert compat.unused_key_notices(cfg) == []
        cfg.LOSS.DEMO_UNUSED_KEY = 5
        assert compat.unused_key_notices(cfg) == [
            "LOSS.DEMO_UNUSED_KEY = 5 is accepted for compatibility and not used here: nothing reads it (value 5)"]
    finally:
        del compat._UNUSED["LOSS.DEMO_UNUSED_KEY"]


def test_two_matching_methods_are_an_error(tmp_path, release_method):
    class Other(Method):
        @staticmethod
        def matches_release_config(cfg):
            return True

    METHODS._items["zz_other"] = Other
    try:
        f = tmp_path / "r.yaml"
        f.write_text("LOSS:\n  LOSS_TYPE: DemoReleaseLoss\n")
        with pytest.raises(UserError, match="several methods .*set METHOD"):
            build_config(str(f))
    finally:
        del METHODS._items["zz_other"]


def _optimizer(scales):
    ps = [torch.nn.Parameter(torch.zeros(1)) for _ in scales]
    groups = [{"params": [p], "lr_scale": s, "name": f"g{i}"} for i, (p, s) in enumerate(zip(ps, scales))]
    return torch.optim.SGD(groups, lr=1.0)


def test_warmup_cosine_is_per_iteration_and_keeps_group_ratios():
    cfg = build_config("", ["TRAIN.OPTIMIZER.BASE_LR", "0.4", "TRAIN.LR_SCHEDULER.TYPE", "warmup_cosine",
                            "TRAIN.LR_SCHEDULER.WARM_EPOCH", "2", "TRAIN.LR_SCHEDULER.ETA_MIN", "0.04",
                            "TRAIN.MAX_EPOCH", "10"])
    opt = _optimizer([1.0, 0.5])
    sch = LRSchedule(cfg, opt)
    sch.set_epoch(1)
    sch.step(1, 0, 4)
    assert opt.param_groups[0]["lr"] == 0.0  # linear warm-up from 0 (MAE)
    sch.step(2, 2, 4)  # t = 1.5 epochs of W = 2
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 * 0.75)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.4 * 0.75 * 0.5)
    sch.step(6, 0, 4)  # t = 5: cosine over [2, 10], 3/8 of the way
    f = 0.1 + 0.9 * (1 + math.cos(math.pi * 3 / 8)) / 2
    assert opt.param_groups[0]["lr"] == pytest.approx(0.4 * f)
    sch.step(10, 4, 4)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.04)


def test_a_per_epoch_schedule_applies_a_methods_per_step_lr_scales():
    cfg = build_config("", ["TRAIN.OPTIMIZER.BASE_LR", "0.1", "TRAIN.LR_SCHEDULER.TYPE", "warmup",
                            "TRAIN.LR_SCHEDULER.WARM_EPOCH", "5", "TRAIN.LR_SCHEDULER.LR_STEP", "[8]"])
    opt = _optimizer([1.0, 1.0])
    sch = LRSchedule(cfg, opt)
    sch.set_epoch(2)
    w = (1 / 3) * (1 - 2 / 5) + 2 / 5
    sch.step(2, 0, 10, {"g1": 0.25})
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * w)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.1 * w * 0.25)
    sch.set_epoch(9)  # the new scale survives the epoch change and the LR step
    assert opt.param_groups[1]["lr"] == pytest.approx(0.1 * 0.1 * 0.25)
