"""Sigmoid focal losses (Lin et al.; docs/methods/baselines.md).

With q = σ(z) and y the one-hot target, per class c:
    FL_ic = BCE(q_c, y_c) · ((1 − q_c)·y_c + q_c·(1 − y_c))^γ
and the loss is Σ_{i,c} w_{y_i}·FL_ic / B (divided by B, not by Σ w). The modulating factor is
computed as exp(γ·log σ(−(2y − 1)·z)), which is stable for large |z|. Predictions stay the raw
logits: σ is monotone, so the argmax is unchanged.
"""
from torch.nn import functional as F

from .base import LOSSES, Loss
from .reduction import batch_mean, one_hot
from .weights import class_balanced_weights, inverse_frequency_weights


def sigmoid_focal_terms(logits, target, gamma):
    """(B,) Σ_c BCE(σ(z_c), y_c)·((1 − q_c)·y_c + q_c·(1 − y_c))^γ for each sample."""
    z = logits.float()
    y = one_hot(target, z.shape[1])
    bce = F.binary_cross_entropy_with_logits(z, y, reduction="none")
    if gamma:
        bce = bce * (gamma * F.logsigmoid(-(2 * y - 1) * z)).exp()  # (1 − p_t)^γ
    return bce.sum(1)


class _Focal(Loss):
    def __init__(self, cfg, counts, gamma, class_weight):
        super().__init__(cfg, counts)
        self.gamma = float(gamma)
        self.register_buffer("class_weight", class_weight.float(), persistent=False)
        self.update(1)

    def current_weight(self):
        raise NotImplementedError

    def update(self, epoch):
        super().update(epoch)
        self.weight = self.current_weight()

    def forward(self, logits, target, features=None, sample_weight=None):
        per_sample = sigmoid_focal_terms(logits, target, self.gamma)
        w = self.current_weight()
        if w is not None:
            per_sample = per_sample * w[target]
        return batch_mean(per_sample, sample_weight)


@LOSSES.register("FocalLoss")
class FocalLoss(_Focal):
    """Sigmoid focal loss, γ = LOSS.FocalLoss.GAMMA, w = 1. Under DRW, after START_EPOCH:
    w_c = n_min / n_c. γ = 0 is the summed sigmoid BCE Σ_{i,c} BCE_ic / B."""

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts, cfg.LOSS.FocalLoss.GAMMA, inverse_frequency_weights(counts))

    def current_weight(self):
        return self.class_weight if (self.drw and self.active) else None


@LOSSES.register("ClassBalanceFocal")
class ClassBalanceFocal(_Focal):
    """Focal loss with Cui et al.'s class-balanced weights (LOSS.ClassBalanceFocal.{BETA, GAMMA});
    under DRW w = 1 up to START_EPOCH."""

    def __init__(self, cfg, counts):
        fc = cfg.LOSS.ClassBalanceFocal
        super().__init__(cfg, counts, fc.GAMMA, class_balanced_weights(counts, float(fc.BETA)))

    def current_weight(self):
        return self.class_weight if self.active else None
