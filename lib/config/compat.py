"""Keys accepted only so that the originals' YAMLs run (BoT, ACE, NCL), and the notices they raise.

A key registered with `accept_unused(cfg, key, default, says)` exists in the defaults (so a
release YAML merges), does nothing here, and, when a config sets it to anything but its default,
produces one notice: "<key> = <value>: <says>". `says` is a string or a callable (cfg, value) -> str
for a notice that depends on the run (e.g. "this run uses TRAIN_JSON with IF 15").

Notices are collected by `build_config` (lib/config/config.py) together with the ones a method's
`adapt_config` returns, kept on the built config (`notices(cfg)`), and printed once at start-up by
the trainer and valid.py.
"""
from yacs.config import CfgNode as CN

_UNUSED = {}  # full key -> (default, says)


def _set_default(cfg, key, default):
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        if p not in node:
            node[p] = CN()
        node = node[p]
    if parts[-1] not in node:
        node[parts[-1]] = default


def accept_unused(cfg, key, default, says):
    """Add `key` (dotted) with `default` to `cfg` and remember what to tell a user who sets it."""
    _set_default(cfg, key, default)
    _UNUSED[key] = (default, says)


def value_of(cfg, key, missing=None):
    node = cfg
    for p in key.split("."):
        if not isinstance(node, dict) or p not in node:
            return missing
        node = node[p]
    return node


def unused_key_notices(cfg):
    """One line per compatibility-only key whose value differs from its default."""
    out = []
    for key, (default, says) in sorted(_UNUSED.items()):
        value = value_of(cfg, key, default)
        if _norm(value) != _norm(default):
            text = says(cfg, value) if callable(says) else says
            out.append(f"{key} = {value!r} is accepted for compatibility and not used here: {text}")
    return out


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def set_notices(cfg, lines):
    # kept outside the key tree (not dumped, not compared on resume); survives freeze
    cfg.__dict__["_notices"] = list(lines)


def notices(cfg):
    """What build_config wants the user told once (release config recognised, unused keys, readings applied)."""
    return list(cfg.__dict__.get("_notices", []))
