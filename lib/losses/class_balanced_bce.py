"""Cui et al.'s class-balanced loss, "softmax" type (Weight Balancing stage two;
docs/methods/weight_balancing.md, defaults LOSS.ClassBalanceSoftmaxBCE.BETA = 0.9999)."""
from .base import LOSSES, Loss
from .reduction import one_hot
from .weights import class_balanced_weights

LOG_CLAMP = -100.0  # PyTorch's binary_cross_entropy clamps its logs at -100


@LOSSES.register("ClassBalanceSoftmaxBCE")
class ClassBalanceSoftmaxBCE(Loss):
    """L = mean_{i,c} w_{y_i} · BCE(softmax(z_i)_c, onehot(y_i)_c), averaged over all B × C elements,
    with BCE(p, t) = −[t·log p + (1 − t)·log(1 − p)] and w_c = (1 − β)/(1 − β^{n_c}) normalised to
    Σ_c w_c = C. Not a weighted CE: the values are small (about 0.01–0.06). Under DRW: w = 1 up to
    START_EPOCH, like ClassBalanceCE."""

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        w = class_balanced_weights(counts, float(cfg.LOSS.ClassBalanceSoftmaxBCE.BETA))
        self.register_buffer("class_weight", w, persistent=False)
        self.update(1)

    def update(self, epoch):
        super().update(epoch)
        self.weight = self.class_weight if self.active else None

    def forward(self, logits, target, features=None, sample_weight=None):
        z = logits.float()
        t = one_hot(target, z.shape[1])
        logp = z.log_softmax(1)
        log_p = logp.clamp(min=LOG_CLAMP)
        # p is clamped below 1 first: log1p(-1) = -inf would give a 0 * inf = NaN gradient
        log_1mp = (-logp.exp().clamp(max=1 - 1e-6)).log1p().clamp(min=LOG_CLAMP)
        bce = -(t * log_p + (1 - t) * log_1mp)  # (B, C)
        row = bce.mean(1)  # mean over c; the mean over i follows
        if self.active:
            row = row * self.class_weight[target]
        if sample_weight is not None:
            row = row * sample_weight.to(row.dtype)
        return row.mean()
