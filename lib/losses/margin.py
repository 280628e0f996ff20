"""LDAM (Cao et al. NeurIPS'19; docs/methods/baselines.md). Use with the FCNorm head (cosine logits)."""
import torch
from torch.nn import functional as F

from .base import LOSSES, Loss
from .reduction import one_hot, weighted_mean
from .weights import class_balanced_weights


def ldam_margins(counts, max_margin):
    """m_c = K·n_c^{−1/4}, with K chosen so that max_c m_c = max_margin (n_c = 0 treated as 1)."""
    m = torch.as_tensor(counts, dtype=torch.float64).clamp(min=1) ** -0.25
    return (m * (max_margin / m.max())).float()


@LOSSES.register("LDAMLoss")
class LDAMLoss(Loss):
    """Weighted CE(s·z′, y), z′ = z − m_y·onehot(y): the margin is subtracted from the true-class
    logit only (s = LOSS.LDAMLoss.SCALE, max m = MAX_MARGIN). Weights are uniform; under DRW,
    after START_EPOCH, class-balanced with β = LOSS.LDAMLoss.DRW_BETA (weighted mean Σ w ℓ / Σ w).
    LOSS.LDAMLoss.DRW_AT_START_EPOCH True switches at epoch >= START_EPOCH, as BoT's LDAM (one epoch before the
    other losses); False at epoch > START_EPOCH."""

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        ld = cfg.LOSS.LDAMLoss
        self.scale = float(ld.SCALE)
        self.register_buffer("margins", ldam_margins(counts, float(ld.MAX_MARGIN)), persistent=False)
        self.register_buffer("drw_weight", class_balanced_weights(counts, float(ld.DRW_BETA)), persistent=False)
        self.at_start = bool(ld.DRW_AT_START_EPOCH)
        self.update(1)

    def current_weight(self):
        return self.drw_weight if (self.drw and self.active) else None

    def update(self, epoch):
        super().update(epoch)
        if self.at_start:
            self.active = (not self.drw) or epoch >= self.start_epoch
        self.weight = self.current_weight()

    def forward(self, logits, target, features=None, sample_weight=None):
        z = logits.float()
        z = z - one_hot(target, z.shape[1]) * self.margins[target].unsqueeze(1)
        per_sample = F.cross_entropy(self.scale * z, target, reduction="none")
        return weighted_mean(per_sample, target, self.current_weight(), sample_weight)
