"""Resuming: find the newest intact checkpoint, check it belongs to this config, restore every state."""
import glob
import os
import re

import yaml

from ..utils.errors import UserError
from .checkpoint import extract_state_dict, load_checkpoint, load_weights, set_rng_state

# keys that may change between a run and its resumption
RUN_CONTROL_KEYS = ("NAME", "OUTPUT_DIR", "TRAIN.MAX_EPOCH", "TRAIN.UNMIX_EPOCH", "TRAIN.NUM_WORKERS", "RESUME_MODEL", "RESUME_MODE",
                    "AUTO_RESUME", "DEVICE", "GPUS", "CPU_MODE", "VALID_STEP", "SAVE_STEP", "SHOW_STEP", "PIN_MEMORY",
                    "TEST", "TRAIN.TENSORBOARD", "DATASET.CHECK_IMAGES")


def find_resume_checkpoint(models_dir, log):
    """latest.pth, else the newest intact epoch_<e>.pth; corrupt files are skipped with a message.
    Returns (path, checkpoint) or ("", None) when there is nothing to resume."""
    epochs = sorted(glob.glob(os.path.join(models_dir, "epoch_*.pth")),
                    key=lambda p: int(re.findall(r"epoch_(\d+)\.pth$", p)[0]) if re.findall(r"epoch_(\d+)\.pth$", p)
                    else -1, reverse=True)
    candidates = [os.path.join(models_dir, "latest.pth")] + epochs
    for path in candidates:
        if not os.path.isfile(path):
            continue
        try:
            ckpt = load_checkpoint(path)
        except UserError as e:
            log.info(f"auto-resume: skipping {path}: {e}")
            continue
        if path != candidates[0]:
            log.info(f"auto-resume: falling back to {path}")
        return path, ckpt
    log.info(f"auto-resume: no checkpoint in {models_dir}, starting from scratch")
    return "", None


def _flatten(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def check_same_config(ckpt, cfg, path):
    """A full resume must continue the same experiment: every key but run-control ones must match."""
    if ckpt.get("method", cfg.METHOD) != cfg.METHOD:
        raise UserError(f"checkpoint {path} was trained with METHOD {ckpt.get('method')!r}, this config uses "
                        f"{cfg.METHOD!r}")
    if "config" not in ckpt:
        return
    old = _flatten(yaml.safe_load(ckpt["config"]) or {})
    new = _flatten(yaml.safe_load(cfg.dump()))
    diff = [k for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and not any(k == c or k.startswith(c + ".") for c in RUN_CONTROL_KEYS)]
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
        raise UserError(f"checkpoint {path} belongs to another config ({shown}{' ...' if len(diff) > 4 else ''}); "
                        f"use RESUME_MODE state_dict to start a new run from its weights")


def fresh_state():
    """The training state before epoch 1: nothing done, no best checkpoint yet."""
    return {"epoch": 0, "iteration": 0, "meter": None, "best_result": -1.0, "best_epoch": 0, "best_members": {}}


def restore(ckpt, path, cfg, method, optimizer, scheduler, amp, sampler, log):
    """Load weights (and with RESUME_MODE all: optimizer, scheduler, scaler, sampler, RNG, epoch)."""
    load_weights(method, extract_state_dict(ckpt), path)
    if cfg.RESUME_MODE == "state_dict":
        log.info(f"loaded weights from {path} (RESUME_MODE state_dict: optimizer and epoch start fresh)")
        return fresh_state()
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (ValueError, KeyError) as e:
        raise UserError(f"checkpoint {path}: optimizer state does not fit this config ({e})") from None
    scheduler.load_state_dict(ckpt["scheduler"])
    amp.load_state_dict(ckpt.get("scaler") or {})
    if hasattr(sampler, "load_state_dict") and ckpt.get("sampler"):
        sampler.load_state_dict(ckpt["sampler"])
    if "rng" in ckpt:
        set_rng_state(ckpt["rng"])
    it = int(ckpt.get("iteration", 0))
    where = f"epoch {ckpt['epoch'] + 1}, iteration {it}" if it else f"the end of epoch {ckpt['epoch']}"
    log.info(f"resumed from {path} at {where} (best {ckpt['best_result']:.2f} at epoch {ckpt['best_epoch']})")
    return {"epoch": int(ckpt["epoch"]), "iteration": it, "meter": ckpt.get("epoch_meter") or None,
            "best_result": float(ckpt["best_result"]), "best_epoch": int(ckpt["best_epoch"]),
            "best_members": {k: float(v) for k, v in (ckpt.get("best_members") or {}).items()}}
