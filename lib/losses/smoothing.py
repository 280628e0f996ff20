"""Label smoothing and MiSLAS label-aware smoothing (docs/methods/baselines.md).

Neither has class weights, so DRW does not change them."""
import math

import torch
from torch.nn import functional as F

from ..utils.registry import choose
from .base import LOSSES, Loss
from .reduction import batch_mean

SHAPES = ("concave", "linear", "convex")


@LOSSES.register("CrossEntropyLabelSmooth")
class CrossEntropyLabelSmooth(Loss):
    """CE against the target t = (1 − ε)·onehot(y) + ε/C (ε = LOSS.CrossEntropyLabelSmooth.EPSILON),
    i.e. per sample (1 − ε)·(−log p_y) + ε·mean_c(−log p_c); mean over the batch."""

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        self.epsilon = float(cfg.LOSS.CrossEntropyLabelSmooth.EPSILON)

    def forward(self, logits, target, features=None, sample_weight=None):
        logp = F.log_softmax(logits.float(), dim=1)
        nll = -logp.gather(1, target[:, None]).squeeze(1)
        per_sample = (1 - self.epsilon) * nll - self.epsilon * logp.mean(1)
        return batch_mean(per_sample, sample_weight)


def label_aware_epsilons(counts, head, tail, shape):
    """ε_c for MiSLAS (Zhong et al.): with u_c = (n_c − n_min)/(n_max − n_min) (denominator 1 if n_max = n_min),
        concave: ε_tail + (ε_head − ε_tail)·sin(π·u/2)
        linear:  ε_tail + (ε_head − ε_tail)·u
        convex:  ε_head + (ε_head − ε_tail)·sin(3π/2 + π·u/2) = ε_tail + (ε_head − ε_tail)·(1 − cos(π·u/2))
    so ε goes from ε_tail at the rarest class to ε_head at the largest."""
    choose(shape, SHAPES, "LOSS.CrossEntropyLabelAwareSmooth.SHAPE")
    n = torch.as_tensor(counts, dtype=torch.float64)
    span = float(n.max() - n.min()) or 1.0
    u = (n - n.min()) / span
    if shape == "concave":
        eps = tail + (head - tail) * torch.sin(math.pi * u / 2)
    elif shape == "linear":
        eps = tail + (head - tail) * u
    else:
        eps = head + (head - tail) * torch.sin(3 * math.pi / 2 + math.pi * u / 2)
    return eps.float()


@LOSSES.register("CrossEntropyLabelAwareSmooth")
class CrossEntropyLabelAwareSmooth(Loss):
    """Per sample (1 − ε_y)·(−log p_y) + ε_y·mean_c(−log p_c), mean over the batch; ε_c from
    `label_aware_epsilons` (LOSS.CrossEntropyLabelAwareSmooth.{SMOOTH_HEAD, SMOOTH_TAIL, SHAPE})."""

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        ls = cfg.LOSS.CrossEntropyLabelAwareSmooth
        eps = label_aware_epsilons(counts, float(ls.SMOOTH_HEAD), float(ls.SMOOTH_TAIL), ls.SHAPE)
        self.register_buffer("epsilons", eps, persistent=False)

    def forward(self, logits, target, features=None, sample_weight=None):
        logp = F.log_softmax(logits.float(), dim=1)
        nll = -logp.gather(1, target[:, None]).squeeze(1)
        eps = self.epsilons[target]
        per_sample = (1 - eps) * nll - eps * logp.mean(1)
        return batch_mean(per_sample, sample_weight)
