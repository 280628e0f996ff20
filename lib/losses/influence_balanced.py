"""Influence-balanced loss (Park et al. ICCV'21; docs/methods/baselines.md).

Implements Park et al.'s formula. BoT's `influence_balanced_loss.py` is not followed: in at least
one BoT revision that file holds a copy of Balanced Softmax instead of IB.
"""
from torch.nn import functional as F

from .base import LOSSES, Loss
from .reduction import batch_mean, one_hot

EPSILON = 1e-3


@LOSSES.register("InfluenceBalancedLoss")
class InfluenceBalancedLoss(Loss):
    """Up to START_EPOCH: plain CE (mean over B). After (DRW): per sample

        IB_i = w_{y_i}·CE(z_i, y_i) · α / (‖p_i − onehot(y_i)‖₁ · ‖f_i‖₁ + 1e-3),

    mean over the batch, with f the pooled feature, p = softmax(z), α = LOSS.InfluenceBalancedLoss.ALPHA
    and w_c ∝ 1/n_c normalised to Σ_c w_c = C (whether the original normalises them is not known). The
    influence factor is not detached (the formula has no stop-gradient). Without TRAIN.TWO_STAGE.DRW the IB form
    applies from epoch 1, as in BoT's release (Park et al. start IB from a CE-trained network: use DRW)."""

    needs_features = True

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        self.alpha = float(cfg.LOSS.InfluenceBalancedLoss.ALPHA)
        inv = 1.0 / self.counts.clamp(min=1)
        self.register_buffer("class_weight", inv / inv.sum() * len(counts), persistent=False)
        self.update(1)

    def update(self, epoch):
        super().update(epoch)
        self.weight = self.class_weight if self.active else None

    def forward(self, logits, target, features=None, sample_weight=None):
        z = logits.float()
        ce = F.cross_entropy(z, target, reduction="none")
        if not self.active:
            return batch_mean(ce, sample_weight)
        if features is None:
            raise ValueError("InfluenceBalancedLoss needs the pooled features (forward(..., features=f))")
        grad_l1 = (F.softmax(z, dim=1) - one_hot(target, z.shape[1])).abs().sum(1)
        feat_l1 = features.float().flatten(1).abs().sum(1)
        ib = self.alpha / (grad_l1 * feat_l1 + EPSILON)
        return batch_mean(self.class_weight[target] * ce * ib, sample_weight)
