"""Config = defaults, then the YAML file (--cfg), then trailing KEY VALUE pairs, then freeze.

Every problem (missing file, malformed YAML, unknown key, wrong type) is a one-line UserError
naming the file or key; all unknown keys of a config are named in one message. Values are parsed
with yacs' literal_eval; nothing is eval'ed. Command lines are parsed by lib/utils/cli.py.
"""
import os
import re

import yaml
from yacs.config import CfgNode as CN

from ..utils.errors import UserError
from ..utils.unused_keys import set_notices, value_of
from .defaults import get_defaults


def get_cfg_defaults():
    """Core defaults plus the config node of every registered method."""
    from ..methods import registered_config_adders  # methods register their own nodes

    cfg = get_defaults()
    for add_config in registered_config_adders():
        add_config(cfg)
    return cfg


def _explain(err, where):
    msg = str(err).strip().strip("'\"")
    m = re.search(r"Non-existent (?:config )?key: (\S+)", msg)
    if m:
        return f"{where}: unknown config key '{m.group(1)}'"
    m = re.search(r"Type mismatch \((.*?) vs\. (.*?)\) with values \((.*?) vs\. (.*?)\) for config key: (\S+)", msg)
    if m:
        exp, got, _old, new, key = m.groups()
        return f"{where}: config key '{key}' expects {exp.replace('<class ', '').rstrip('>')}, got {new!s} ({got.replace('<class ', '').rstrip('>')})"
    return f"{where}: {msg.splitlines()[0] if msg else type(err).__name__}"


def _widen_ints(cfg, loaded, prefix=""):
    """YAML ints where the default is a float become floats (`WEIGHT_DECAY: 0`); yacs would reject them."""
    for k, v in (loaded or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            _widen_ints(cfg, v, key + ".")
        elif type(v) is int and isinstance(value_of(cfg, key), float):
            loaded[k] = float(v)


def _widen_int_opts(cfg, opts):
    """The same for KEY VALUE pairs: `TRAIN.OPTIMIZER.WEIGHT_DECAY 0` means 0.0."""
    out = list(opts)
    for i in range(0, len(out) - 1, 2):
        if isinstance(value_of(cfg, out[i]), float) and isinstance(out[i + 1], str) \
                and re.fullmatch(r"[+-]?\d+", out[i + 1].strip()):
            out[i + 1] = str(float(out[i + 1]))
    return out


def _unknown_keys(cfg, loaded, prefix=""):
    """Every dotted key of `loaded` (a YAML mapping) that the defaults lack; yacs stops at the first."""
    out = []
    for k, v in (loaded or {}).items():
        key = f"{prefix}{k}"
        if not isinstance(cfg, dict) or k not in cfg:
            out.append(key)
        elif isinstance(v, dict) and isinstance(cfg[k], dict):
            out += _unknown_keys(cfg[k], v, key + ".")
    return out


def _describe_unknown(cfg, keys):
    import difflib

    known = list(_dotted_keys(cfg))
    shown = []
    for key in keys:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.85)
        shown.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return f"unknown config key{'s' if len(keys) > 1 else ''} " + ", ".join(shown)


def check_known_keys(cfg, cfg_file, loaded, opts):
    """All unknown keys of the YAML and of the KEY VALUE pairs in one UserError (a config written with
    another codebase's keys is fixed in one go, not one run per key)."""
    parts = []
    in_file = _unknown_keys(cfg, loaded)
    if in_file:
        parts.append(f"{cfg_file}: {_describe_unknown(cfg, in_file)}")
    on_line = [k for k in opts[0::2] if value_of(cfg, str(k)) is None]
    if on_line:
        parts.append(f"command line: {_describe_unknown(cfg, on_line)}")
    if parts:
        raise UserError("; ".join(parts))


def _dotted_keys(d, prefix=""):
    for k, v in (d or {}).items():
        if isinstance(v, dict):
            yield from _dotted_keys(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def adopt_method(cfg, explicit):
    """Pick the method of a release YAML that does not name one, let the method translate the release's
    spellings (lib/methods/base.py: matches_release_config, adapt_config); returns the notices."""
    from ..methods import METHODS

    notes = []
    if "METHOD" not in explicit:
        found = [n for n in METHODS.names() if METHODS.get(n).matches_release_config(cfg)]
        if len(found) > 1:
            raise UserError(f"this config looks like a release config of several methods ({', '.join(found)}): "
                            "set METHOD")
        if found:
            cfg.METHOD = found[0]
            notes.append(f"recognised an original {found[0]} release config: METHOD {found[0]}")
    notes += METHODS.get(cfg.METHOD, "METHOD").adapt_config(cfg, explicit) or []
    return notes


def build_config(cfg_file="", opts=(), freeze=True):
    """defaults <- YAML <- KEY VALUE pairs, then the method's release-config translation, checks, freeze.
    Notices for the user (release config recognised, compatibility-only keys set) are read from the
    result with lib.config.notices(cfg[, counts]) (lib/utils/unused_keys.py)."""
    cfg = get_cfg_defaults()
    loaded = None
    if cfg_file:
        if not os.path.isfile(cfg_file):
            raise UserError(f"config file not found: {cfg_file}")
        try:
            with open(cfg_file) as f:
                loaded = yaml.safe_load(f)
        except yaml.YAMLError as e:
            line = getattr(getattr(e, "problem_mark", None), "line", None)
            at = f" at line {line + 1}" if line is not None else ""
            raise UserError(f"{cfg_file}: malformed YAML{at}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise UserError(f"{cfg_file}: top level must be a mapping of config keys")
        check_known_keys(cfg, cfg_file, loaded, list(opts))
        _widen_ints(cfg, loaded)
        try:
            cfg.merge_from_other_cfg(CN(loaded or {}))
        except (KeyError, ValueError, AssertionError, TypeError) as e:
            raise UserError(_explain(e, cfg_file)) from None
    opts = list(opts)
    if len(opts) % 2:
        raise UserError(f"command-line overrides must be KEY VALUE pairs; '{opts[-1]}' has no value")
    check_known_keys(cfg, cfg_file, None, opts)
    try:
        cfg.merge_from_list(_widen_int_opts(cfg, opts))
    except (KeyError, ValueError, AssertionError, TypeError) as e:
        raise UserError(_explain(e, "command line")) from None
    explicit = set(_dotted_keys(loaded)) | {str(k) for k in opts[0::2]}
    notes = adopt_method(cfg, explicit)
    check_config(cfg)
    set_notices(cfg, notes)
    if freeze:
        cfg.freeze()
    return cfg


def check_config(cfg):
    """Value checks that yacs' type check cannot express."""
    from ..methods import METHODS

    METHODS.get(cfg.METHOD, "METHOD")
    if cfg.COLOR_SPACE not in ("RGB", "L"):
        raise UserError(f"COLOR_SPACE must be RGB or L, got {cfg.COLOR_SPACE!r}")
    if cfg.TRAIN.BATCH_SIZE < 1 or cfg.TEST.BATCH_SIZE < 1:
        raise UserError("TRAIN.BATCH_SIZE and TEST.BATCH_SIZE must be >= 1")
    if cfg.TRAIN.MAX_EPOCH < 1:
        raise UserError("TRAIN.MAX_EPOCH must be >= 1")
    if cfg.RESUME_MODE not in ("all", "state_dict"):
        raise UserError(f"RESUME_MODE must be 'all' or 'state_dict', got {cfg.RESUME_MODE!r}")
    if len(cfg.INPUT_SIZE) != 2:
        raise UserError(f"INPUT_SIZE must be (height, width), got {cfg.INPUT_SIZE!r}")
