"""Balanced Softmax (Ren et al. NeurIPS'20; docs/methods/baselines.md)."""
from torch.nn import functional as F

from .base import LOSSES, Loss
from .reduction import batch_mean


@LOSSES.register("BalancedSoftmaxCE")
class BalancedSoftmaxCE(Loss):
    """CE(z + log n, y), mean over the batch (adding log n_c equals adding log π_c up to a constant).
    Test time uses the raw logits. Under DRW: plain CE up to START_EPOCH. A class with n_c = 0 is an error."""

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        self.require_all_classes("log n_c")
        self.register_buffer("log_counts", self.counts.log(), persistent=False)

    def forward(self, logits, target, features=None, sample_weight=None):
        z = logits.float()
        if self.active:
            z = z + self.log_counts
        return batch_mean(F.cross_entropy(z, target, reduction="none"), sample_weight)
