"""Softmax equalization loss (Tan et al. CVPR'20; docs/methods/baselines.md)."""
import torch
from torch.nn import functional as F

from .base import LOSSES, Loss
from .reduction import batch_mean, one_hot


@LOSSES.register("SEQL")
class SEQL(Loss):
    """p_j = e^{z_j} / Σ_k w_k e^{z_k}, w_k = 1 − β_k·T_λ(f_k)·(1 − y_k); loss = −log p_y, mean over B.

    f_k = n_k / N, T_λ(f) = 1 if f < λ (a tail class), β_k ~ Bernoulli(γ) drawn fresh for every
    (sample, class) at every call from torch's global RNG (γ = LOSS.SEQL.GAMMA, λ = LOSS.SEQL.LAMBDA).
    Since w_k ∈ {0, 1}, this is CE on logits with the dropped classes set to −∞. It has no
    class weights, so DRW does not change it."""

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        self.gamma = float(cfg.LOSS.SEQL.GAMMA)
        freq = self.counts / self.counts.sum()
        self.register_buffer("tail", (freq < float(cfg.LOSS.SEQL.LAMBDA)).float(), persistent=False)

    def forward(self, logits, target, features=None, sample_weight=None):
        z = logits.float()
        beta = (torch.rand(z.shape, device="cpu") < self.gamma).to(z.device, z.dtype)
        drop = beta * self.tail * (1 - one_hot(target, z.shape[1]))  # 1 where w_k = 0
        z = z.masked_fill(drop.bool(), float("-inf"))
        return batch_mean(F.cross_entropy(z, target, reduction="none"), sample_weight)
