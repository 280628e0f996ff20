"""Optimizer from the method's parameter groups, and the per-epoch LR schedule.

The schedule is a factor f(e) of the 1-based epoch e (specs/bag_of_tricks.md §5); every group
gets lr = BASE_LR * f(e) * lr_scale, so per-expert LR ratios (ACE) survive every schedule.
"""
import math

import torch

from ..utils.errors import UserError


def build_optimizer(cfg, method):
    opt_cfg = cfg.TRAIN.OPTIMIZER
    groups = []
    for g in method.param_groups():
        params = [p for p in g["params"] if p.requires_grad]
        if not params:
            continue
        groups.append({
            "params": params,
            "lr": opt_cfg.BASE_LR * g.get("lr_scale", 1.0),
            "lr_scale": g.get("lr_scale", 1.0),
            "weight_decay": g.get("weight_decay", opt_cfg.WEIGHT_DECAY),
            "name": g.get("name", ""),
        })
    if not groups:
        raise UserError("the method has no trainable parameters (check BACKBONE.FREEZE / the method config)")
    kind = opt_cfg.TYPE.upper()
    if kind in ("SGD", "SGD_GROUP"):  # ACE's SGD_group: groups already carry their lr_scale
        return torch.optim.SGD(groups, lr=opt_cfg.BASE_LR, momentum=opt_cfg.MOMENTUM,
                               nesterov=opt_cfg.NESTEROV and opt_cfg.MOMENTUM > 0)
    if kind == "ADAM":
        return torch.optim.Adam(groups, lr=opt_cfg.BASE_LR, betas=tuple(opt_cfg.BETAS))
    if kind == "ADAMW":
        return torch.optim.AdamW(groups, lr=opt_cfg.BASE_LR, betas=tuple(opt_cfg.BETAS))
    raise UserError(f"unknown TRAIN.OPTIMIZER.TYPE {opt_cfg.TYPE!r}; valid: SGD, ADAM, ADAMW")


class EpochLR:
    """lr(e) = BASE_LR * f(e) * lr_scale for each group; `set_epoch(e)` at the start of epoch e.

    multistep: f = LR_FACTOR ** #{m in LR_STEP : m <= e}
    warmup:    multistep times w(e) = (1/3)(1 - e/W) + e/W for e < W (W = WARM_EPOCH)
    cosine:    f = eta + (1 - eta)(1 + cos(pi t / T)) / 2, eta = ETA_MIN / BASE_LR, T = COSINE_DECAY_END
               or MAX_EPOCH; t = e (BoT/NCL step at epoch start) or e - 1 (STEP_AT_EPOCH_START False)
    constant:  f = 1
    """

    def __init__(self, cfg, optimizer):
        s = cfg.TRAIN.LR_SCHEDULER
        self.optimizer = optimizer
        self.base_lr = cfg.TRAIN.OPTIMIZER.BASE_LR
        self.kind = s.TYPE
        if self.kind not in ("multistep", "warmup", "cosine", "constant"):
            raise UserError(f"unknown TRAIN.LR_SCHEDULER.TYPE {s.TYPE!r}; valid: multistep, warmup, cosine, constant")
        self.steps = list(s.LR_STEP)
        self.factor = s.LR_FACTOR
        self.warm = s.WARM_EPOCH
        self.period = s.COSINE_DECAY_END or cfg.TRAIN.MAX_EPOCH
        self.eta = s.ETA_MIN / self.base_lr if self.base_lr else 0.0
        self.at_start = s.STEP_AT_EPOCH_START
        self.epoch = 0

    def lr_factor(self, e):
        if self.kind == "constant":
            return 1.0
        if self.kind == "cosine":
            t = e if self.at_start else e - 1
            t = min(max(t, 0), self.period)
            return self.eta + (1 - self.eta) * (1 + math.cos(math.pi * t / self.period)) / 2
        f = self.factor ** sum(1 for m in self.steps if m <= e)
        if self.kind == "warmup" and e < self.warm:
            f *= (1.0 / 3.0) * (1 - e / self.warm) + e / self.warm
        return f

    def set_epoch(self, e):
        self.epoch = e
        f = self.lr_factor(e)
        for g in self.optimizer.param_groups:
            g["lr"] = self.base_lr * f * g.get("lr_scale", 1.0)

    def state_dict(self):
        return {"epoch": self.epoch}

    def load_state_dict(self, state):
        self.set_epoch(int(state["epoch"]))
