"""Config keys accepted only so that the originals' YAMLs run, and the notices they raise.

A key registered with `accept_unused(cfg, key, default, says)` exists in the defaults (so a
release YAML merges), does nothing here, and, when a config sets it to anything but its default,
produces one notice: "<key> = <value> is accepted for compatibility and not used here: <says>".
`says` is a string, a callable (cfg, value) -> str, or a callable (cfg, value, run) -> str for a
notice that depends on the run's data: `run` is None when the config is built, and at start-up, where
the trainer knows the training class counts (`notices(cfg, counts)`), a dict with num_classes,
train_images, imbalance_factor (n_max / n_min) and counts; e.g. "this run uses TRAIN_JSON with IF 15".

A method registers its release's keys in its `add_config`; the core's own are in lib/config/compat.py.
Notices are collected by `build_config` (lib/config/config.py) together with the ones a method's
`adapt_config` returns, kept on the built config (`notices(cfg)`), and printed once at start-up by
the trainer (with the run's class counts) and valid.py.
"""
import inspect

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


def run_facts(counts):
    """What a `says` callable may know at start-up: the training class counts n_c and what follows."""
    counts = [int(c) for c in counts]
    lo = min(counts) if counts else 0
    return {"counts": counts, "num_classes": len(counts), "train_images": sum(counts),
            "imbalance_factor": (max(counts) / lo) if lo > 0 else float("inf")}


def _takes_run(says):
    try:
        inspect.signature(says).bind(None, None, None)
        return True
    except TypeError:
        return False


def unused_key_notices(cfg, counts=None):
    """One line per compatibility-only key whose value differs from its default (`counts`: the training
    class counts, known at start-up, for the notices that use them)."""
    out = []
    run = run_facts(counts) if counts is not None else None
    for key, (default, says) in sorted(_UNUSED.items()):
        value = value_of(cfg, key, default)
        if _norm(value) != _norm(default):
            if callable(says):
                text = says(cfg, value, run) if _takes_run(says) else says(cfg, value)
            else:
                text = says
            out.append(f"{key} = {value!r} is accepted for compatibility and not used here: {text}")
    return out


def _norm(v):
    return list(v) if isinstance(v, (list, tuple)) else v


def set_notices(cfg, lines):
    """Keep `lines` (the method's release-config notices) on `cfg`; the unused-key notices are added by
    `notices`. Kept outside the key tree (not dumped, not compared on resume); survives freeze."""
    cfg.__dict__["_notices"] = list(lines)


def notices(cfg, counts=None):
    """What the user is told once: release config recognised, readings applied (set_notices), then one line
    per compatibility-only key that is set. With the training class `counts` (the trainer, at start-up) the
    notices that depend on the data say what this run's data is (e.g. its imbalance factor)."""
    return list(cfg.__dict__.get("_notices", [])) + unused_key_notices(cfg, counts)
