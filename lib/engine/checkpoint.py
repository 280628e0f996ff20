"""Checkpoint files: atomic writes, weights_only loading, `module.` prefixes, clear mismatch errors.

A checkpoint is a plain dict of tensors and Python primitives (loadable with
`torch.load(..., weights_only=True)`); its keys are defined once, in engine/checkpointer.py.
Files from elsewhere (numpy scalars in the originals' checkpoints, pickled code) are read by the one safe
loader, lib/utils/state_dict.py. What a training checkpoint holds is defined in engine/checkpointer.py.
"""
import os
import random
import time
import zipfile

import numpy as np
import torch

from ..utils.atomic import atomic_open
from ..utils.errors import UserError
from ..utils.state_dict import safe_torch_load, strip_prefix

FORMAT_VERSION = 1


def unwrap(model):
    """The bare module inside DataParallel / DistributedDataParallel."""
    return model.module if hasattr(model, "module") else model


def rng_state():
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path, payload):
    """Write atomically: a kill during the write leaves the previous file intact."""
    payload = dict(payload, format_version=FORMAT_VERSION)
    with atomic_open(path, "wb") as f:
        torch.save(payload, f)
    _SAVED[os.path.abspath(path)] = (int(payload.get("epoch", 0)), int(payload.get("iteration", 0)))


def load_checkpoint(path):
    """Load with weights_only=True; missing, truncated, corrupt or unsafe files are one-line errors."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = safe_torch_load(path)
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise UserError(f"checkpoint {path} is truncated or corrupt ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"checkpoint {path} is not a dict")
    return ckpt


def extract_state_dict(ckpt):
    for key in ("state_dict", "model", "net"):
        if key in ckpt and isinstance(ckpt[key], dict):
            return strip_prefix(ckpt[key])
    if all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return strip_prefix(ckpt)
    raise UserError("checkpoint holds no state_dict")


def _matches(key, substrings):
    return any(s in key for s in substrings)


def load_weights(model, state_dict, source, allow_missing=(), may_mismatch=()):
    """Load into the bare module; name every missing/unexpected key and shape mismatch in one line.

    `allow_missing`: key substrings that may be absent (e.g. LWS's scales, initialised to 1).
    `may_mismatch`: key substrings the caller re-initialises after loading (a method's
    `pretrained_may_mismatch`, e.g. the head under CLASSIFIER.REINIT): there a different shape, a missing
    or an extra key is skipped instead of refused. Every other key must fit.
    Returns the skipped keys, described ("net.head.weight (10, 64) vs model (5, 64)")."""
    target = unwrap(model)
    own = target.state_dict()
    state_dict = strip_prefix(state_dict)
    skipped, in_file = [], set(state_dict)
    for k in list(state_dict):
        if not _matches(k, may_mismatch):
            continue
        if k not in own:
            skipped.append(f"{k} (not in this model)")
            del state_dict[k]
        elif tuple(state_dict[k].shape) != tuple(own[k].shape):
            skipped.append(f"{k} {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}")
            del state_dict[k]
    skipped += [f"{k} (not in the checkpoint)" for k in own if k not in in_file and _matches(k, may_mismatch)
                and not _matches(k, allow_missing)]
    shape = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state_dict.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state_dict and not _matches(k, allow_missing)
               and not _matches(k, may_mismatch)]
    unexpected = [k for k in state_dict if k not in own]
    if shape or missing or unexpected:
        parts = []
        if shape:
            parts.append("shape mismatch: " + "; ".join(shape[:5]) + (" ..." if len(shape) > 5 else ""))
        if missing:
            parts.append("missing keys: " + ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else ""))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected[:5]) + (" ..." if len(unexpected) > 5 else ""))
        raise UserError(f"checkpoint {source} does not fit this model ({' | '.join(parts)})")
    target.load_state_dict(state_dict, strict=False)
    return skipped


# ---------------------------------------------------------------- what is on disk (for error messages)
_SAVED = {}  # absolute path -> (epoch, iteration) of what this process last wrote there
_STARTED = time.time()  # about when this process started (DDP: rank 0 writes, the others see the file change)


def last_good_state(models_dir):
    """What `models_dir/latest.pth` holds, in words, for a run stopped by an error: written by this run
    (which epoch), written before this run started (an earlier run in the same folder, or the checkpoint
    this run resumed from), or nothing saved yet."""
    path = os.path.join(models_dir, "latest.pth")
    rel = os.path.join("models", "latest.pth")
    if not os.path.isfile(path):
        return "no checkpoint has been written yet (the first is models/latest.pth at the end of epoch 1)"
    mine = _SAVED.get(os.path.abspath(path))
    try:
        if mine is None:
            ckpt = safe_torch_load(path)
            mine = (int(ckpt.get("epoch", -1)), int(ckpt.get("iteration", 0)))
            if os.path.getmtime(path) < _STARTED:
                return (f"{rel} holds epoch {mine[0]}, written before this run started: this run has saved "
                        f"nothing yet")
    except Exception:  # an unreadable leftover: say so rather than fail while reporting
        return f"{rel} exists but is not readable"
    epoch, iteration = mine
    at = f"epoch {epoch + 1}, iteration {iteration}" if iteration else f"the end of epoch {epoch}"
    return f"{rel} holds the last good state ({at})"


def load_trained_method(cfg, counts, path, device):
    """The method of `cfg` for classes with training `counts`, with the weights of checkpoint `path`, its heads
    τ-normalised when TEST.TAU_NORM.USE_TAU_NORM, on `device`. Returns (method, the checkpoint dict)."""
    from ..methods import build_method

    method = build_method(cfg, counts)
    ckpt = load_checkpoint(path)
    load_weights(method, extract_state_dict(ckpt), path)
    if cfg.TEST.TAU_NORM.USE_TAU_NORM:
        method.tau_normalize(cfg.TEST.TAU_NORM.TAU)
    return method.to(device), ckpt
