"""Checkpoints: atomic writes, weights_only loading, `module.` prefixes, clear mismatch errors.

A checkpoint is a plain dict of tensors and Python primitives (loadable with
`torch.load(..., weights_only=True)`): state_dict, optimizer, scheduler, scaler, sampler,
epoch, best_result, best_epoch, rng, method, config (the resolved YAML as text).
"""
import os
import pickle
import random
import zipfile

import numpy as np
import torch

from ..utils.atomic import atomic_open
from ..utils.errors import UserError

FORMAT_VERSION = 1


def unwrap(model):
    """The bare module inside DataParallel / DistributedDataParallel."""
    return model.module if hasattr(model, "module") else model


def strip_prefix(state_dict, prefix="module."):
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


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


def load_checkpoint(path):
    """Load with weights_only=True; missing, truncated, corrupt or unsafe files are one-line errors."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else "unsafe content"
        raise UserError(f"refusing to load {path}: it is not a plain weights file ({first[:160]})") from None
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


def load_weights(model, state_dict, source, allow_missing=()):
    """Load into the bare module; name every missing/unexpected key and shape mismatch in one line.

    `allow_missing`: key substrings that may be absent (e.g. a head being re-trained)."""
    target = unwrap(model)
    own = target.state_dict()
    state_dict = strip_prefix(state_dict)
    shape = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state_dict.items()
             if k in own and tuple(v.shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state_dict and not any(s in k for s in allow_missing)]
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
