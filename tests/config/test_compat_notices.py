"""Keys accepted only so that the originals' YAMLs run: each one marked in lib/config/defaults.py prints
one notice when set to anything but its default, saying what it does here; the dataset ones name this
run's training set and its imbalance factor once the trainer knows the class counts."""
import json
import os
import re

import pytest

from conftest import ROOT
from lib.config import build_config, notices
from lib.utils import unused_keys as compat
from lib.config.config import get_cfg_defaults
from lib.engine.trainer import train

# marked "accepted for compatibility" but doing something (documented next to the key): no notice
USED = {"CPU_MODE": "same as DEVICE cpu"}


def marked_keys():
    """Dotted leaf keys whose line (or whose node's line) in defaults.py says 'accepted for ... compatibility'."""
    cfg = get_cfg_defaults()
    out = []
    for line in open(os.path.join(ROOT, "lib", "config", "defaults.py")):
        m = re.match(r"_C\.([\w.]+)\s*=.*#.*accepted for (?:\w+ )?compatibility", line)
        if not m:
            continue
        node = compat.value_of(cfg, m.group(1))
        if isinstance(node, dict):
            out += [f"{m.group(1)}.{k}" for k in node]
        else:
            out.append(m.group(1))
    return out


def other_value(default):
    if isinstance(default, bool):
        return str(not default)
    if isinstance(default, float):
        return "0.02" if default != 0.02 else "0.1"
    if isinstance(default, int):
        return str(default + 1)
    return "SomethingElse"


def test_the_marked_keys_are_the_ones_the_issue_lists():
    keys = set(marked_keys())
    assert {"EVAL_MODE", "DATASET.DATASET", "DATASET.IMBALANCECIFAR.RATIO", "DATASET.IMBALANCECIFAR.RANDOM_SEED",
            "MODULE.TYPE", "TRAIN.DISTRIBUTED", "TRAIN.SAMPLER.BBN_SAMPLER.TYPE"} <= keys


@pytest.mark.parametrize("key", [k for k in marked_keys() if k not in USED])
def test_each_compatibility_key_gives_one_notice_when_set_and_none_at_its_default(key):
    default = compat.value_of(get_cfg_defaults(), key)
    assert key in compat._UNUSED, f"{key} is marked 'accepted for compatibility' but registered with no notice"
    assert not [n for n in notices(build_config("", [key, repr(default) if isinstance(default, str) else str(default)]))
                if n.startswith(key + " ")]
    said = [n for n in notices(build_config("", [key, other_value(default)])) if n.startswith(key + " ")]
    assert len(said) == 1 and "is accepted for compatibility and not used here: " in said[0], said
    assert len(said[0].split("not used here: ", 1)[1]) > 20  # says what happens instead


def test_a_bot_cifar_config_is_told_which_training_set_it_really_uses(tiny_lt, tmp_path, capsys):
    """The issue's case: IMBALANCECIFAR10 with RATIO 0.02 (IF 50) on a TRAIN_JSON of another IF."""
    f = tmp_path / "bot.yaml"
    template = open(os.path.join(ROOT, "tests", "tiny_template.yaml")).read()
    f.write_text(template.format(out=tmp_path / "out", train=tiny_lt["train"], val=tiny_lt["val"], test=tiny_lt["test"])
                 .replace("DATASET:\n", "DATASET:\n  DATASET: IMBALANCECIFAR10\n  IMBALANCECIFAR:\n    RATIO: 0.02\n")
                 .replace("MAX_EPOCH: 2", "MAX_EPOCH: 1"))
    cfg = build_config(str(f), ["DATASET.VALID_JSON", "", "DATASET.TEST_JSON", ""])
    counts = [0] * 10
    for a in json.load(open(tiny_lt["train"]))["annotations"]:
        counts[a["category_id"]] += 1
    at_start = notices(cfg, counts)
    ratio = [n for n in at_start if n.startswith("DATASET.IMBALANCECIFAR.RATIO = 0.02")]
    assert len(ratio) == 1
    assert ("an imbalanced set is built by tools/make_cifar_lt.py --imb_factor 50" in ratio[0]
            and f"this run uses DATASET.TRAIN_JSON (fmnist_lt_if10_train.json: 10 classes, {sum(counts)} images, "
                f"IF 10) as it is, not the IF 50 this key asks for" in ratio[0]), ratio
    assert any(n.startswith("DATASET.DATASET = 'IMBALANCECIFAR10'") and "IF 10" in n for n in at_start)
    capsys.readouterr()
    train(cfg)  # the trainer logs them with the counts it loaded
    out = capsys.readouterr().out
    assert f"notice: {ratio[0]}" in out


def test_a_method_registers_its_release_keys_with_the_same_function():
    cfg = get_cfg_defaults()
    compat.accept_unused(cfg, "TRAIN.DEMO_RELEASE_FLAG", False,
                         lambda c, v, run: "demo" + ("" if run is None else f" (IF {run['imbalance_factor']:g})"))
    try:
        cfg.TRAIN.DEMO_RELEASE_FLAG = True
        line = "TRAIN.DEMO_RELEASE_FLAG = True is accepted for compatibility and not used here: demo"
        assert line in compat.unused_key_notices(cfg)
        assert line + " (IF 20)" in compat.unused_key_notices(cfg, [100, 5])
    finally:
        del compat._UNUSED["TRAIN.DEMO_RELEASE_FLAG"]
