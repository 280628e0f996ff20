"""Optimizer from the method's parameter groups, and the LR schedule.

The schedule is a factor f of the 1-based epoch e, or of the iteration for warmup_cosine
(docs/methods/baselines.md); every group gets lr = BASE_LR * f * lr_scale, so per-group LR ratios
(ACE's experts, ViT layer-wise decay) survive every schedule.
"""
import math

import torch

from ..utils.errors import UserError
from ..utils.registry import choose


def param_layer_ids(method):
    """{parameter: (layer id, number of layer ids)} for the parameters of modules that define
    `lr_layer_id(name)` and `num_lr_layers` (the ViTs, BEiT-style layer-wise decay), and of modules with an
    integer `lr_layer_at` attribute (e.g. a head tapping block 7 takes block 7's id); others: none."""
    ids, top = {}, None
    for mod in method.modules():
        if hasattr(mod, "lr_layer_id"):
            top = mod.num_lr_layers
            for name, p in mod.named_parameters():
                ids.setdefault(p, mod.lr_layer_id(name))
    if top is None:  # no layered backbone: nothing to decay
        return {}
    for mod in method.modules():
        if isinstance(getattr(mod, "lr_layer_at", None), int):
            for p in mod.parameters():
                ids[p] = mod.lr_layer_at
    return {p: (i, top) for p, i in ids.items()}


def no_decay_params(method):
    """Parameters without weight decay under TRAIN.OPTIMIZER.NO_WEIGHT_DECAY_1D: 1-D tensors (biases, norm
    weights) and whatever a module lists in `no_weight_decay()` (ViT: pos_embed, cls_token)."""
    out = {p for p in method.parameters() if p.ndim <= 1}
    for mod in method.modules():
        if hasattr(mod, "no_weight_decay") and callable(mod.no_weight_decay):
            names = mod.no_weight_decay()
            out |= {p for n, p in mod.named_parameters(recurse=False) if n in names}
    return out


def build_optimizer(cfg, method):
    """One optimizer group per method group (its `lr_scale`, `weight_decay`), split further when
    TRAIN.OPTIMIZER.LAYER_DECAY < 1 (lr_scale x d^(L+1-layer id), BEiT) or NO_WEIGHT_DECAY_1D is set."""
    opt_cfg = cfg.TRAIN.OPTIMIZER
    decay = float(opt_cfg.LAYER_DECAY)
    if not 0 < decay <= 1:
        raise UserError(f"TRAIN.OPTIMIZER.LAYER_DECAY must be in (0, 1], got {decay}")
    layer = param_layer_ids(method) if decay < 1 else {}
    no_wd = no_decay_params(method) if opt_cfg.NO_WEIGHT_DECAY_1D else set()
    groups = []
    for g in method.param_groups():
        scale = g.get("lr_scale", 1.0)
        wd = g.get("weight_decay", opt_cfg.WEIGHT_DECAY)
        parts = {}
        for p in g["params"]:
            if not p.requires_grad:
                continue
            lid, top = layer.get(p, (None, None))
            key = (lid, top, p in no_wd)
            parts.setdefault(key, []).append(p)
        for (lid, top, skip_wd), params in parts.items():
            s = scale * (decay ** (top - 1 - lid) if lid is not None else 1.0)
            name = g.get("name", "") + (f"/layer{lid}" if lid is not None else "") + ("/no_wd" if skip_wd else "")
            groups.append({"params": params, "lr": opt_cfg.BASE_LR * s, "lr_scale": s,
                           "weight_decay": 0.0 if skip_wd else wd, "name": name,
                           # the method's group and this part's factor on its scale (for per-step lr_scales)
                           "method_group": g.get("name", ""), "lr_mult": s / scale if scale else 1.0})
    if not groups:
        raise UserError("the method has no trainable parameters (check BACKBONE.FREEZE / the method config)")
    kind = choose(opt_cfg.TYPE.upper(), ("SGD", "ADAM", "ADAMW", "SGD_GROUP"), "TRAIN.OPTIMIZER.TYPE")
    if kind in ("SGD", "SGD_GROUP"):  # ACE's SGD_group: groups already carry their lr_scale
        return torch.optim.SGD(groups, lr=opt_cfg.BASE_LR, momentum=opt_cfg.MOMENTUM,
                               nesterov=opt_cfg.NESTEROV and opt_cfg.MOMENTUM > 0)
    if kind == "ADAM":
        return torch.optim.Adam(groups, lr=opt_cfg.BASE_LR, betas=tuple(opt_cfg.BETAS))
    return torch.optim.AdamW(groups, lr=opt_cfg.BASE_LR, betas=tuple(opt_cfg.BETAS))


class LRSchedule:
    """lr = BASE_LR * f * lr_scale for each group. The trainer calls `set_epoch(e)` at the start of epoch e
    and `step(e, i, n)` before each optimizer step (i of n iterations done in epoch e).

    multistep: f(e) = LR_FACTOR ** #{m in LR_STEP : m <= e}
    warmup:    multistep times w(e) = (1/3)(1 - e/W) + e/W for e < W (W = WARM_EPOCH)
    cosine:    f(e) = eta + (1 - eta)(1 + cos(pi t / T)) / 2, eta = ETA_MIN / BASE_LR, T = COSINE_DECAY_END
               or the run's epochs; t = e (BoT/NCL step at epoch start) or e - 1 (STEP_AT_EPOCH_START False)
    constant:  f = 1
    warmup_cosine (per iteration, MAE/BEiT fine-tuning): t = e - 1 + i/n + EPOCH_OFFSET epochs;
               f = t/W for t < W, else eta + (1 - eta)(1 + cos(pi (t - W)/(T - W))) / 2, t clamped at
               T + EPOCH_OFFSET. EPOCH_OFFSET 1 is CADEL-ViT's release (1-based epochs: the warm-up starts at
               1/W, peaks one epoch early, and the last epoch runs past the half cycle)
    The per-epoch types change the LR once per epoch; `step` re-applies them only when a group's
    lr_scale changed (a method's `lr_scales`).
    """

    TYPES = ("multistep", "warmup", "cosine", "constant", "warmup_cosine")

    def __init__(self, cfg, optimizer, epochs=None):
        s = cfg.TRAIN.LR_SCHEDULER
        self.optimizer = optimizer
        self.base_lr = cfg.TRAIN.OPTIMIZER.BASE_LR
        self.kind = choose(s.TYPE, self.TYPES, "TRAIN.LR_SCHEDULER.TYPE")
        self.steps = list(s.LR_STEP)
        self.factor = s.LR_FACTOR
        self.warm = s.WARM_EPOCH
        self.period = s.COSINE_DECAY_END or epochs or cfg.TRAIN.MAX_EPOCH
        if self.kind == "warmup_cosine" and self.period <= self.warm:
            raise UserError(f"TRAIN.LR_SCHEDULER warmup_cosine needs COSINE_DECAY_END (or the run's epochs, "
                            f"{self.period}) > WARM_EPOCH ({self.warm})")
        self.eta = s.ETA_MIN / self.base_lr if self.base_lr else 0.0
        self.at_start = s.STEP_AT_EPOCH_START
        self.offset = float(s.EPOCH_OFFSET)
        self.per_iteration = self.kind == "warmup_cosine"
        self.epoch = 0
        self.f = None

    def lr_factor(self, e, frac=0.0):
        """f at epoch e (1-based) plus `frac` of it done (used by the per-iteration type only)."""
        if self.kind == "constant":
            return 1.0
        if self.kind == "warmup_cosine":
            t = e - 1 + frac + self.offset
            if t < self.warm:
                return t / self.warm
            t = min(t, self.period + self.offset)
            return self.eta + (1 - self.eta) * (1 + math.cos(math.pi * (t - self.warm) / (self.period - self.warm))) / 2
        if self.kind == "cosine":
            t = e if self.at_start else e - 1
            t = min(max(t, 0), self.period)
            return self.eta + (1 - self.eta) * (1 + math.cos(math.pi * t / self.period)) / 2
        f = self.factor ** sum(1 for m in self.steps if m <= e)
        if self.kind == "warmup" and e < self.warm:
            f *= (1.0 / 3.0) * (1 - e / self.warm) + e / self.warm
        return f

    def _apply(self, f):
        self.f = f
        for g in self.optimizer.param_groups:
            g["lr"] = self.base_lr * f * g.get("lr_scale", 1.0)

    def set_epoch(self, e):
        self.epoch = e
        self._apply(self.lr_factor(e))

    def step(self, e, i, n, lr_scales=None):
        """Before the optimizer step of iteration i (0-based) of n in epoch e; `lr_scales` {group name: s}
        (a method's group name; the parts build_optimizer split it into get s times their own factor)."""
        changed = False
        if lr_scales:
            for g in self.optimizer.param_groups:
                s = lr_scales.get(g.get("name"))
                if s is None and g.get("method_group") in lr_scales:  # a part of a split method group
                    s = lr_scales[g["method_group"]] * g.get("lr_mult", 1.0)
                if s is not None and s != g.get("lr_scale"):
                    g["lr_scale"], changed = float(s), True
        if self.per_iteration:
            self._apply(self.lr_factor(e, i / max(n, 1)))
        elif changed:
            self._apply(self.f if self.f is not None else self.lr_factor(e))
