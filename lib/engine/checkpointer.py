"""Training state and its one owner: what a checkpoint holds, saving it, resuming from it, and placing
every random stream at the resumed position. A resume bug is looked for here first.

A checkpoint is a plain dict (torch.load weights_only=True):
    state_dict  the method's weights               optimizer  its state (each group's lr, lr_scale)
    scaler      the AMP GradScaler's state         rng        python / numpy / torch (/ cuda) RNG states
    method      cfg.METHOD                         config     the resolved YAML (text)
    + the TrainState fields below, and format_version (engine/checkpoint.py).
The epoch is stored once (TrainState.epoch): the LR schedule and the sampler are set from it at each
epoch start, and every random stream derives from (SEED, stream, epoch[, index]) (lib/utils/seeding.py).
Older files (sampler / scheduler entries, the meter under `epoch_meter`) still load.
"""
import dataclasses
import glob
import os
import re

import yaml

from ..utils import distributed as dist_utils
from ..utils.errors import UserError
from ..utils.seeding import derive_seed
from .checkpoint import (extract_state_dict, load_checkpoint, load_weights, rng_state, save_checkpoint,
                         set_rng_state, unwrap)
from .run_dir import resolve_checkpoint

# config keys that may change between a run and its resumption (a method adds its own: resume_may_change)
RUN_CONTROL_KEYS = ("NAME", "OUTPUT_DIR", "TRAIN.MAX_EPOCH", "TRAIN.NUM_WORKERS", "RESUME_MODEL", "RESUME_MODE",
                    "AUTO_RESUME", "DEVICE", "GPUS", "CPU_MODE", "VALID_STEP", "SAVE_STEP", "SHOW_STEP", "PIN_MEMORY",
                    "TEST", "TRAIN.TENSORBOARD", "DATASET.CHECK_IMAGES")


@dataclasses.dataclass
class TrainState:
    """Where the run is. `epoch`: the last completed epoch; `iteration` > 0: that many steps of epoch + 1 are
    done too, with `meter` their running sums (EpochMeter state); the best checkpoint chosen on val so far."""
    epoch: int = 0
    iteration: int = 0
    meter: dict = None
    best_result: float = -1.0
    best_epoch: int = 0
    best_members: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def from_checkpoint(cls, ckpt):
        return cls(epoch=int(ckpt["epoch"]), iteration=int(ckpt.get("iteration", 0)),
                   meter=ckpt.get("meter", ckpt.get("epoch_meter")) or None,
                   best_result=float(ckpt["best_result"]), best_epoch=int(ckpt["best_epoch"]),
                   best_members={k: float(v) for k, v in (ckpt.get("best_members") or {}).items()})

    def mark_best(self, epoch, report):
        """Record `report` (a validation report, or None) if its top-1 beats the best so far; True if it does."""
        if report is None or report["top1"] <= self.best_result:
            return False
        self.best_result, self.best_epoch = report["top1"], epoch
        self.best_members = {m: r["top1"] for m, r in report["members"].items()}
        return True


class Checkpointer:
    """Saves and restores everything a run needs to continue bit-identically (module docstring)."""

    def __init__(self, cfg, method, optimizer, amp, models_dir, log):
        self.cfg, self.method, self.optimizer, self.amp = cfg, method, optimizer, amp
        self.models_dir, self.log = models_dir, log

    def payload(self, state):
        return {"state_dict": unwrap(self.method).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.amp.state_dict(), "rng": rng_state(), "method": self.cfg.METHOD,
                "config": self.cfg.dump(), **dataclasses.asdict(state)}

    def save(self, name, state):
        if dist_utils.is_main():
            save_checkpoint(os.path.join(self.models_dir, name), self.payload(state))

    def save_epoch(self, state, is_best):
        """At the end of epoch `state.epoch`: latest.pth, best_model.pth if it is the best, epoch_<e>.pth per
        SAVE_STEP."""
        self.save("latest.pth", state)
        if is_best:
            self.save("best_model.pth", state)
        if self.cfg.SAVE_STEP and state.epoch % self.cfg.SAVE_STEP == 0:
            self.save(f"epoch_{state.epoch}.pth", state)

    def save_partial(self, state, iteration, meter):
        """Mid-epoch (pre-emption): `iteration` steps of epoch state.epoch + 1 done, `meter` their sums."""
        self.save("latest.pth", dataclasses.replace(state, iteration=iteration, meter=meter.state_dict()))

    def resume(self, path="", auto=False):
        """The TrainState to start from: `path` (--resume), else RESUME_MODEL, else with `auto` the newest intact
        checkpoint of this run; a fresh state when there is none. Restores everything RESUME_MODE asks for."""
        if not path and self.cfg.RESUME_MODEL:
            path = resolve_checkpoint(self.cfg, self.cfg.RESUME_MODEL, "RESUME_MODEL")
        if path:
            ckpt = load_checkpoint(path)
        elif auto:
            path, ckpt = find_resume_checkpoint(self.models_dir, self.log)
            if ckpt is None:
                return TrainState()
        else:
            return TrainState()
        if self.cfg.RESUME_MODE == "all":
            check_same_config(ckpt, self.cfg, path, self.method.resume_may_change(self.cfg))
        load_weights(self.method, extract_state_dict(ckpt), path)
        if self.cfg.RESUME_MODE == "state_dict":
            self.log.info(f"loaded weights from {path} (RESUME_MODE state_dict: optimizer and epoch start fresh)")
            return TrainState()
        return self._restore(ckpt, path)

    def _restore(self, ckpt, path):
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
        except (ValueError, KeyError) as e:
            raise UserError(f"checkpoint {path}: optimizer state does not fit this config ({e})") from None
        self.amp.load_state_dict(ckpt.get("scaler") or {})
        if "rng" in ckpt:
            set_rng_state(ckpt["rng"])
        state = TrainState.from_checkpoint(ckpt)
        where = (f"epoch {state.epoch + 1}, iteration {state.iteration}" if state.iteration
                 else f"the end of epoch {state.epoch}")
        self.log.info(f"resumed from {path} at {where} (best {state.best_result:.2f} at epoch {state.best_epoch})")
        return state

    def start_epoch(self, epoch, state, loader, scheduler):
        """Set the sampler, augmentation, worker seeds, LR and method for `epoch`; returns the iteration it
        starts at (state.iteration in the epoch a mid-epoch checkpoint stopped in, else 0)."""
        start_iter = state.iteration if epoch == state.epoch + 1 else 0
        loader.sampler.set_epoch(epoch)
        loader.sampler.skip(start_iter * loader.batch_size)
        loader.dataset.set_epoch(epoch)
        loader.generator.manual_seed(derive_seed(self.cfg.SEED, "workers", epoch))  # workers: (seed, epoch) only
        scheduler.set_epoch(epoch)
        self.method.on_epoch_start(epoch)
        return start_iter


def init_from_pretrained(cfg, method, log):
    """NETWORK.PRETRAINED_MODEL into the method (keys it declares it may lack or re-initialise are skipped),
    then the method's after_pretrained_loaded; logs what was loaded, also for BACKBONE.PRETRAINED_MODEL."""
    if cfg.NETWORK.PRETRAINED:
        path = resolve_checkpoint(cfg, cfg.NETWORK.PRETRAINED_MODEL, "NETWORK.PRETRAINED_MODEL")
        skipped = load_weights(method, extract_state_dict(load_checkpoint(path)), path,
                               allow_missing=method.pretrained_may_lack, may_mismatch=method.pretrained_may_mismatch)
        method.after_pretrained_loaded()
        log.info(f"initialised from {path}" + (f"; not loaded, re-initialised by the method: {', '.join(skipped)}"
                                               if skipped else ""))
    for line in method.pretrained_reports():
        log.info(line)


def find_resume_checkpoint(models_dir, log):
    """latest.pth, else the newest intact epoch_<e>.pth; corrupt files are skipped with a message.
    Returns (path, checkpoint) or ("", None) when there is nothing to resume."""
    def epoch_of(p):
        m = re.search(r"epoch_(\d+)\.pth$", p)
        return int(m.group(1)) if m else -1

    epochs = sorted(glob.glob(os.path.join(models_dir, "epoch_*.pth")), key=epoch_of, reverse=True)
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


def check_same_config(ckpt, cfg, path, may_change=()):
    """A full resume must continue the same experiment: every key but the run-control ones (and the method's
    `may_change`) must match."""
    if ckpt.get("method", cfg.METHOD) != cfg.METHOD:
        raise UserError(f"checkpoint {path} was trained with METHOD {ckpt.get('method')!r}, this config uses "
                        f"{cfg.METHOD!r}")
    if "config" not in ckpt:
        return
    old = _flatten(yaml.safe_load(ckpt["config"]) or {})
    new = _flatten(yaml.safe_load(cfg.dump()))
    free = RUN_CONTROL_KEYS + tuple(may_change)
    diff = [k for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and not any(k == c or k.startswith(c + ".") for c in free)]
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff[:4])
        raise UserError(f"checkpoint {path} belongs to another config ({shown}{' ...' if len(diff) > 4 else ''}); "
                        f"use RESUME_MODE state_dict to start a new run from its weights")
