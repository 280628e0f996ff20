import pytest

from lib.config import build_config
from lib.utils.errors import UserError


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_yaml_then_command_line_overrides_then_frozen(tmp_path):
    f = write(tmp_path, "TRAIN:\n  BATCH_SIZE: 64\n  MAX_EPOCH: 5\n")
    cfg = build_config(f, ["TRAIN.MAX_EPOCH", "7", "NAME", "x"])
    assert cfg.TRAIN.BATCH_SIZE == 64  # from YAML
    assert cfg.TRAIN.MAX_EPOCH == 7  # command line wins over YAML
    assert cfg.NAME == "x"
    assert cfg.TRAIN.OPTIMIZER.MOMENTUM == 0.9  # default kept
    assert cfg.is_frozen()


def test_unknown_yaml_key_names_the_key_and_file(tmp_path):
    f = write(tmp_path, "TRAIN:\n  BATCH_SIZ: 64\n")
    with pytest.raises(UserError, match=r"c\.yaml: unknown config key 'TRAIN.BATCH_SIZ'"):
        build_config(f)


def test_unknown_command_line_key(tmp_path):
    with pytest.raises(UserError, match="command line: unknown config key 'TRAIN.NOPE'"):
        build_config("", ["TRAIN.NOPE", "1"])


def test_wrong_value_type_names_the_key(tmp_path):
    f = write(tmp_path, "TRAIN:\n  BATCH_SIZE: many\n")
    with pytest.raises(UserError, match="'TRAIN.BATCH_SIZE' expects 'int'"):
        build_config(f)


def test_an_integer_where_a_float_is_expected_is_widened_but_a_float_for_an_int_is_not(tmp_path):
    f = write(tmp_path, "TRAIN:\n  OPTIMIZER:\n    WEIGHT_DECAY: 0\n    BASE_LR: 1\n")
    cfg = build_config(f, ["TRAIN.OPTIMIZER.MOMENTUM", "0"])
    assert cfg.TRAIN.OPTIMIZER.WEIGHT_DECAY == 0.0 and isinstance(cfg.TRAIN.OPTIMIZER.WEIGHT_DECAY, float)
    assert cfg.TRAIN.OPTIMIZER.BASE_LR == 1.0 and cfg.TRAIN.OPTIMIZER.MOMENTUM == 0.0
    with pytest.raises(UserError, match="'TRAIN.BATCH_SIZE' expects 'int'"):
        build_config("", ["TRAIN.BATCH_SIZE", "64.0"])


def test_malformed_yaml_gives_line(tmp_path):
    f = write(tmp_path, "TRAIN:\n  BATCH_SIZE: [64\n")
    with pytest.raises(UserError, match="malformed YAML"):
        build_config(f)


def test_missing_config_file():
    with pytest.raises(UserError, match="config file not found: nope.yaml"):
        build_config("nope.yaml")


def test_odd_override_list():
    with pytest.raises(UserError, match="KEY VALUE pairs"):
        build_config("", ["TRAIN.MAX_EPOCH"])


def test_unknown_method_lists_valid_ones():
    with pytest.raises(UserError, match=r"unknown method 'nope' \(METHOD\); valid: .*ce"):
        build_config("", ["METHOD", "nope"])


def test_every_shipped_config_loads():
    import glob

    files = glob.glob("configs/**/*.yaml", recursive=True)
    assert files
    for f in files:
        build_config(f)
