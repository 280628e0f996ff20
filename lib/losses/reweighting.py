"""Class-weighted cross-entropy and class-dependent temperatures (docs/methods/baselines.md).

All weighted CEs reduce as BoT/PyTorch: Σ_i w_{y_i}·ℓ_i / Σ_i w_{y_i} (reduction.weighted_mean).
"""
from torch.nn import functional as F

from .base import LOSSES, Loss
from .reduction import batch_mean, weighted_mean
from .weights import class_balanced_weights, inverse_frequency_weights


class ClassWeightedCE(Loss):
    """Weighted CE with fixed class weights w (C,): on from epoch 1 without DRW; under DRW
    unweighted up to START_EPOCH and weighted when epoch > START_EPOCH."""

    def __init__(self, cfg, counts, class_weight):
        super().__init__(cfg, counts)
        self.register_buffer("class_weight", class_weight.float(), persistent=False)
        self.update(1)

    def update(self, epoch):
        super().update(epoch)
        self.weight = self.current_weight()

    def current_weight(self):
        return self.class_weight if self.active else None

    def forward(self, logits, target, features=None, sample_weight=None):
        per_sample = F.cross_entropy(logits.float(), target, reduction="none")
        return weighted_mean(per_sample, target, self.current_weight(), sample_weight)


@LOSSES.register("CostSensitiveCE")
class CostSensitiveCE(ClassWeightedCE):
    """Weighted CE with w_c = (n_min / n_c)^γ (γ = LOSS.CostSensitiveCE.GAMMA; 0.5 is the "square" variant)."""

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts, inverse_frequency_weights(counts, float(cfg.LOSS.CostSensitiveCE.GAMMA)))


@LOSSES.register("ClassBalanceCE")
class ClassBalanceCE(ClassWeightedCE):
    """Weighted CE with Cui et al.'s weights w_c = (1 − β)/(1 − β^{n_c}), normalised so Σ_c w_c = C
    (β = LOSS.ClassBalanceCE.BETA). β → 0 gives w_c = 1, i.e. plain CE."""

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts, class_balanced_weights(counts, float(cfg.LOSS.ClassBalanceCE.BETA)))


@LOSSES.register("CDT")
class CDT(Loss):
    """Class-dependent temperatures (Ye et al.): CE(z_c / a_c, y) with a_c = (n_max / n_c)^γ
    (γ = LOSS.CDT.GAMMA), mean over the batch. Under DRW a_c = 1 (plain CE) up to START_EPOCH."""

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        n = self.counts.clamp(min=1)
        self.register_buffer("temperatures", (n.max() / n) ** float(cfg.LOSS.CDT.GAMMA), persistent=False)

    def forward(self, logits, target, features=None, sample_weight=None):
        z = logits.float()
        if self.active:
            z = z / self.temperatures
        return batch_mean(F.cross_entropy(z, target, reduction="none"), sample_weight)
