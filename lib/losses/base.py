"""Loss contract: built from (cfg, counts); `update(epoch)` applies deferred switches (DRW)."""
import torch
from torch import nn
from torch.nn import functional as F

from ..utils.errors import UserError
from ..utils.registry import Registry
from .reduction import weighted_mean
from .weights import inverse_frequency_weights

LOSSES = Registry("loss")


class Loss(nn.Module):
    """forward(logits, target, features=None, sample_weight=None) -> scalar. Subclasses set
    `self.weight` (per-class weights or None) in `update`. DRW (TRAIN.TWO_STAGE.DRW) switches on
    when epoch > START_EPOCH for every loss (BoT's LDAM used >=; docs/methods/baselines.md).

    `sample_weight` (B,) scales each sample's term, not the denominator (mixup / Remix; see
    reduction.py). A loss that needs the pooled feature f sets the class attribute
    `needs_features = True`; the method then passes `features`."""

    needs_features = False

    def __init__(self, cfg, counts):
        super().__init__()
        self.register_buffer("counts", torch.tensor(counts, dtype=torch.float32), persistent=False)
        self.drw = cfg.TRAIN.TWO_STAGE.DRW
        self.start_epoch = cfg.TRAIN.TWO_STAGE.START_EPOCH
        self.weight = None
        self.active = not self.drw  # without DRW, re-weighting is on from epoch 1

    def update(self, epoch):
        self.active = (not self.drw) or epoch > self.start_epoch

    def require_all_classes(self, why):
        """Losses built on log n_c or n_c^-q cannot handle a class without training images."""
        empty = (self.counts == 0).nonzero().flatten().tolist()
        if empty:
            raise UserError(f"LOSS.LOSS_TYPE {type(self).__name__} needs {why}, but class {empty[0]} has no training "
                            f"images ({len(empty)} empty class(es) in DATASET.TRAIN_JSON)")

    def forward(self, logits, target, features=None, sample_weight=None):
        raise NotImplementedError


@LOSSES.register("CrossEntropy")
class CrossEntropy(Loss):
    """CE(z, y). Under DRW, after START_EPOCH: weighted CE with w_c = n_min / n_c (BoT before commit 32b7fdf,
    ACE's fork); weighted mean sum_i w_{y_i} l_i / sum_i w_{y_i}, as PyTorch/BoT. LOSS.CrossEntropy.DRW_WEIGHTS
    False is BoT's HEAD, where DRW leaves CrossEntropy unweighted."""

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        self.drw_weights = bool(cfg.LOSS.CrossEntropy.DRW_WEIGHTS)

    def update(self, epoch):
        super().update(epoch)
        if self.drw and self.active and self.drw_weights:
            self.weight = inverse_frequency_weights(self.counts.tolist()).to(self.counts.device)
        else:
            self.weight = None

    def forward(self, logits, target, features=None, sample_weight=None):
        per_sample = F.cross_entropy(logits.float(), target, reduction="none")
        return weighted_mean(per_sample, target, self.weight, sample_weight)
