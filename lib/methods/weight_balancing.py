"""Weight Balancing (Alshammari et al. CVPR'22; docs/methods/weight_balancing.md).

Stage one is the CE method with a tuned weight decay (a config, no code). Stage two is this
method: the CE method on the loaded stage-one network (frozen backbone, class-balanced loss,
weight decay 0.1 on the classifier) plus the MaxNorm constraint ‖w_c‖₂ ≤ δ solved by projected
gradient descent:

    once, from the stage-one classifier:  r_c = ‖w_c‖₂,  δ = min_c r_c + thresh·(max_c r_c − min_c r_c)
    projection:  w_c ← w_c·δ/‖w_c‖₂  for every class c with ‖w_c‖₂ > δ   (the bias is exempt)

applied after every optimiser step (WB.PGD_EVERY iteration, the paper) or once per epoch
after training (WB.PGD_EVERY epoch, the release notebook). δ is a buffer, so it is saved in
checkpoints and survives resume. Users report that MaxNorm never activates (WB issues #5,
#18), so every epoch logs how many rows were projected.
"""
import torch
from yacs.config import CfgNode as CN

from ..utils.errors import UserError
from ..utils.registry import choose
from .base import METHODS
from .ce import CrossEntropyMethod

PGD_EVERY = ("iteration", "epoch")
RTOL = 1e-6


def maxnorm_delta(weight, thresh):
    """δ = min_c r_c + thresh·(max_c r_c − min_c r_c), with r_c = ‖w_c‖₂ the row norms of `weight` (C×d)."""
    r = weight.detach().float().norm(dim=1)
    return float(r.min() + thresh * (r.max() - r.min()))


@torch.no_grad()
def maxnorm_project_(weight, delta):
    """In place: w_c ← w_c·δ/‖w_c‖₂ for rows with ‖w_c‖₂ > δ; other rows untouched (multiplied by
    exactly 1). `delta` is a float or a 0-d tensor; no host synchronisation. Returns the boolean mask
    (C,) of the rows that were projected.

    A row within a relative RTOL of δ counts as on the sphere: rescaling leaves float rounding
    error, and such a row must not be re-projected (and counted) at every later step."""
    norms = weight.norm(dim=1, keepdim=True)
    over = norms > delta * (1 + RTOL)
    weight.mul_(torch.where(over, delta / norms.clamp_min(1e-12), torch.ones_like(norms)).to(weight.dtype))
    return over.squeeze(1)


@METHODS.register("wb")
class WeightBalancingMethod(CrossEntropyMethod):
    @staticmethod
    def add_config(cfg):
        cfg.WB = CN()
        cfg.WB.MAXNORM = True  # project the classifier rows onto ‖w_c‖ ≤ δ
        cfg.WB.MAXNORM_THRESH = 0.1  # δ = min r + thresh·(max r − min r) of the stage-one row norms
        cfg.WB.PGD_EVERY = "iteration"  # iteration (paper) | epoch (release notebook, after the train phase)

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        wb = cfg.WB
        choose(wb.PGD_EVERY, PGD_EVERY, "WB.PGD_EVERY")
        if not 0.0 <= wb.MAXNORM_THRESH <= 1.0:
            raise UserError(f"WB.MAXNORM_THRESH must be in [0, 1], got {wb.MAXNORM_THRESH}")
        self.maxnorm = wb.MAXNORM
        self.thresh = float(wb.MAXNORM_THRESH)
        self.pgd_every = wb.PGD_EVERY
        # δ; NaN until computed (from the loaded stage-one head, or from the head at the first projection)
        self.register_buffer("maxnorm_delta", torch.tensor(float("nan")))
        self._delta_checked = False
        # per-epoch counters, kept on the head's device (read once per epoch): row projections (a row
        # projected at k steps counts k times) and the rows projected at least once
        self._projections = torch.zeros((), dtype=torch.long)
        self._rows = torch.zeros(self.num_classes, dtype=torch.bool)

    @property
    def pretrained_may_lack(self):
        # δ is recomputed from the loaded classifier, so a stage-one (CE) checkpoint need not hold it
        return super().pretrained_may_lack + ("maxnorm_delta",)

    def _weight(self):
        return self.net.head.weight

    def set_delta_from_classifier(self):
        self.maxnorm_delta.fill_(maxnorm_delta(self._weight(), self.thresh))
        return float(self.maxnorm_delta)

    def after_pretrained_loaded(self):
        # δ from the *loaded* stage-one classifier, before any re-initialisation
        if self.maxnorm:
            self.set_delta_from_classifier()
        super().after_pretrained_loaded()

    def project(self):
        """Apply the MaxNorm projection now; returns the mask (C,) of the rows projected."""
        if not self._delta_checked:  # δ is NaN only without a stage-one model: take it from the head now
            if torch.isnan(self.maxnorm_delta):
                self.set_delta_from_classifier()
            self._delta_checked = True
        over = maxnorm_project_(self._weight(), self.maxnorm_delta)
        if self._rows.device != over.device:
            self._projections, self._rows = self._projections.to(over.device), self._rows.to(over.device)
        self._projections += over.sum()
        self._rows |= over
        return over

    def after_optimizer_step(self):
        super().after_optimizer_step()
        if self.maxnorm and self.pgd_every == "iteration":
            self.project()

    def on_epoch_start(self, epoch):
        super().on_epoch_start(epoch)
        self._projections.zero_()
        self._rows.zero_()

    def on_epoch_end(self, epoch):
        logs = dict(super().on_epoch_end(epoch) or {})
        if not self.maxnorm:
            return logs
        if self.pgd_every == "epoch":
            self.project()
        norms = self._weight().detach().float().norm(dim=1)
        logs.update({
            "maxnorm_delta": float(self.maxnorm_delta),
            "maxnorm_rows_projected": int(self._rows.sum()),  # distinct classes projected this epoch
            "maxnorm_projections": int(self._projections),  # row projections summed over the epoch's steps
            "classifier_norm_max": float(norms.max()),
            "classifier_norm_min": float(norms.min()),
        })
        return logs
