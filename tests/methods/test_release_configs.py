"""Every YAML the NCL, ACE and CADEL releases shipped loads here as shipped (tests/fixtures/release_configs: every
key and value of each released file, paths aside) and runs with the release's behaviour (docs/deviations.md)."""
import glob
import os

import pytest

from conftest import ROOT, load_tool
from lib.config import build_config
from lib.methods import build_method
from lib.utils.errors import UserError

FIXTURES = os.path.join(ROOT, "tests", "fixtures", "release_configs")


def fixtures(family):
    return sorted(glob.glob(os.path.join(FIXTURES, family, "*.yaml")))


@pytest.mark.parametrize("path", [p for p in fixtures("ncl") if "NCL++" not in p], ids=os.path.basename)
def test_ncl_release_yamls_load_as_shipped_with_the_releases_behaviour(path):
    cfg = build_config(path)
    assert cfg.METHOD == "ncl" and cfg.TRAIN.COMBINER.TYPE == "default"
    assert cfg.LOSS.HCM_FILL == "zero" and cfg.TRAIN.DROP_LAST and cfg.DROPOUT is False
    assert cfg.NCL.MOCO.REPLICATE_RELEASE_QUIRKS


def test_the_ncl_plus_plus_yaml_is_a_one_line_error():
    with pytest.raises(UserError, match="NIL_NBOD_plus is NCL\\+\\+, which is not implemented"):
        build_config(next(p for p in fixtures("ncl") if "NCL++" in p))


@pytest.mark.parametrize("path", fixtures("ace"), ids=os.path.basename)
def test_ace_release_yamls_load_as_shipped_with_the_releases_behaviour(path):
    cfg = build_config(path)
    assert cfg.METHOD == "ace" and cfg.LOSS.LOSS_TYPE == "CrossEntropy" and not cfg.BACKBONE.TYPE.endswith("_group")
    assert cfg.TRAIN.DROP_LAST and cfg.DATASET.REORDER_CLASSES
    build_method(cfg, [int(500 * 0.01 ** (c / 99)) for c in range(100)])  # a CIFAR-100-LT IF 100 profile


@pytest.mark.parametrize("path", fixtures("cadel"), ids=os.path.basename)
def test_cadel_release_yamls_convert_with_the_releases_switches(path, tmp_path):
    out = tmp_path / "ours.yaml"
    load_tool("convert_cadel_config").main([path, "--out", str(out)])
    cfg = build_config(str(out))
    assert cfg.METHOD == "cadel"
    if cfg.BACKBONE.TYPE.startswith("vit"):
        assert (cfg.CADEL.WEIGHTING, cfg.CADEL.VIT_AUX_INIT, cfg.CADEL.AUX_LR_LAYER) == (
            "per_sample", "pytorch", "previous_block")
        assert cfg.TRAIN.LR_SCHEDULER.EPOCH_OFFSET == 1.0
    else:
        assert cfg.CADEL.WEIGHTING == "batch_mean" and cfg.CADEL.SE_BIAS is False
