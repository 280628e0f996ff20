"""ACE: Ally Complementary Experts (Cai, Wang, Hwang, ICCV 2021; docs/methods/ace.md).

One-stage multi-expert training on classes ranked by training count (n_0 ≥ … ≥ n_{C−1}):

  split planner       r_j = Σ_{i≥j} n_i / N;  b(s) = the j with r_j > s ≥ r_{j+1};
                      thresholds s_1 > … > s_{K−1} give boundaries 0 = b_0 < b_1 < … < b_{K−1} < C;
                      expert k's target classes TC_k = [b_{k−1}, C), interfering classes IC_k = [0, b_{k−1})
  network             shared trunk, the last stage copied per expert, GAP, one LWS head per expert
                      (every head predicts all C classes): logits z_1 … z_K
  loss                L = Σ_k L_k,  S_k = {i : y_i ∈ TC_k},
                      L_k = CE(z_k[S_k], y[S_k]) + ‖z_k[S_k][:, IC_k]‖_F / |IC_k|   (L_1 = plain CE)
                      (mean CE over S_k, softmax over all C; L_k = 0 when S_k is empty)
  routing             z_k for k ≥ 2 is computed from stopgrad(trunk(x)): one backward pass
  learning rates      expert k's parameter group runs at BASE_LR·s_k (ACE.LR_SCALE)
  mixup               mix_up_group: λ ~ Beta(α, α) in epochs 1 … MAX_EPOCH − 1 (the release mixes while
                      epoch < MAX_EPOCH), L = λ·L(y_a) + (1 − λ)·L(y_b); then UNMIX_EPOCH + 1 epochs without
                      mixing (the LR schedule runs on)
  inference           w̄_k = mean_{c ∈ TC_k} ‖W_k[c]‖₂, m_k = w̄_1 / w̄_k,
                      score[c] = Σ_{k : c ∈ TC_k} m_k·z_k[c] / #{k : c ∈ TC_k}

The planner's groups ("expert target classes", cut at the "split boundaries") are not the
many/medium/few reporting groups (>100 / 20–100 / <20 images), which the evaluation code computes.

K ≥ 2 experts (default 3, the release). The paper's headline numbers are credited to 4 experts; the
4-expert layout here (3 thresholds, TC_k = [b_{k−1}, C), averaging over the experts covering a
class) is an extrapolation of the 3-expert release.
"""
from dataclasses import dataclass

import torch
from torch.nn import functional as F
from yacs.config import CfgNode as CN

from ..models.backbones import Backbone, build_backbone
from ..models.heads import build_head
from ..models.network import in_channels
from ..models.shared_trunk import SharedTrunkExperts
from ..utils import distributed as dist_utils
from ..utils.errors import UserError
from ..utils.registry import choose
from . import mixing
from .base import METHODS, Method
from .release import ace as release

LR_SCALES = ("data_share", "threshold", "batch_share", "none")
COMBINERS = ("default", "mix_up_group")
LOSS_TYPES = ("CrossEntropy", "ResCELoss")


# ---------------------------------------------------------------- split planner
def tail_shares(counts):
    """r_j = Σ_{i ≥ j} n_i / N for j = 0 … C (r_0 = 1, r_C = 0): the share of the training data
    in classes j … C−1."""
    total = float(sum(counts))
    out, acc = [0.0] * (len(counts) + 1), 0
    for j in range(len(counts) - 1, -1, -1):
        acc += counts[j]
        out[j] = acc / total
    return out


def split_boundary(shares, s):
    """b(s): the j in [0, C) with r_j > s ≥ r_{j+1} (r non-increasing, r_0 = 1 > s ≥ 0 = r_C)."""
    return sum(1 for r in shares[:-1] if r > s) - 1


@dataclass(frozen=True)
class ExpertSplits:
    """The planner's answer. Index k is 0-based here (expert k+1 of the paper):
    boundaries[k] = b_k with b_0 = 0; expert k's target classes are [boundaries[k], C);
    data_shares[k] = r_{b_k}, the share of training images in those classes (1 for expert 1)."""

    num_classes: int
    thresholds: tuple
    boundaries: tuple
    data_shares: tuple

    @property
    def num_experts(self):
        return len(self.boundaries)

    def target_classes(self, k):
        return range(self.boundaries[k], self.num_classes)

    def interfering_classes(self, k):
        return range(0, self.boundaries[k])

    def coverage(self):
        """(K, C) bool: coverage[k, c] = c ∈ TC_k."""
        c = torch.arange(self.num_classes)
        return torch.stack([c >= b for b in self.boundaries])


def check_non_increasing(counts):
    bad = next((j for j in range(1, len(counts)) if counts[j] > counts[j - 1]), None)
    if bad is not None:
        raise UserError(
            f"ACE needs classes ranked by training count, but class {bad} has {counts[bad]} images and class "
            f"{bad - 1} has {counts[bad - 1]}: set DATASET.REORDER_CLASSES True (ranks them at load time)")


def plan_expert_splits(counts, thresholds, key="TRAIN.OPTIMIZER.EXPERT"):
    """Split boundaries for K = len(thresholds) + 1 experts from sorted counts n_0 ≥ … ≥ n_{C−1}
    and thresholds 1 > s_1 > … > s_{K−1} > 0: b_k = b(s_k). Requires 0 < b_1 < … < b_{K−1} < C
    (every expert's target group and every interfering group non-empty); else a UserError naming `key`."""
    counts = [int(n) for n in counts]
    thresholds = tuple(float(s) for s in thresholds)
    check_non_increasing(counts)
    if not thresholds:
        raise UserError(f"{key} is empty: ACE needs K-1 split thresholds (e.g. [0.4, 0.1] for 3 experts)")
    if not all(0 < s < 1 for s in thresholds) or any(a <= b for a, b in zip(thresholds, thresholds[1:])):
        raise UserError(f"{key} must be strictly decreasing values in (0, 1), got {list(thresholds)}")
    shares = tail_shares(counts)
    bounds = (0,) + tuple(split_boundary(shares, s) for s in thresholds)
    C = len(counts)
    if not all(a < b for a, b in zip(bounds, bounds[1:])) or bounds[-1] >= C:
        raise UserError(
            f"{key} {list(thresholds)} gives split boundaries b = {list(bounds[1:])} on these {C} class counts: "
            f"an expert group would be empty (need 0 < b_1 < ... < C); the data shares r_j of the tail classes are "
            f"{', '.join(f'{r:.3g}' for r in shares[1:min(C, 12)])}{' ...' if C > 12 else ''}")
    return ExpertSplits(C, thresholds, bounds, tuple(shares[b] for b in bounds))


# ---------------------------------------------------------------- losses and aggregation
def expert_loss_terms(z, y, boundary):
    """(CE, complementary) of one expert for logits z (B×C, float) and labels y (B,), target classes
    [boundary, C). CE = mean over S = {i : y_i ≥ boundary} of −log softmax(z_i)[y_i] (all C logits);
    complementary = ‖z[S][:, :boundary]‖_F / boundary (0 for boundary 0). Both 0 when S is empty.
    Written with masks (no data-dependent shapes, no host synchronisation)."""
    ce = F.cross_entropy(z, y, reduction="none")
    if boundary == 0:
        return ce.mean(), z.new_zeros(())
    mask = (y >= boundary).to(z.dtype)
    ce_k = (ce * mask).sum() / mask.sum().clamp(min=1)
    # vector_norm's backward is 0 (not NaN) at a zero block
    comp = torch.linalg.vector_norm(z[:, :boundary] * mask[:, None]) / boundary
    return ce_k, comp


def mean_row_norms(head, classes, with_scales=False):
    """w̄ = mean over `classes` of ‖W[c]‖₂ for a head's Linear weight W (C×d); with_scales: ‖σ_c·W[c]‖₂
    for an LWS head (an option; the release ignores σ)."""
    w = head.weight.detach().float()
    norms = w.norm(dim=1)
    if with_scales and getattr(head, "scales", None) is not None:
        norms = norms * head.scales.detach().float().abs()
    return norms[classes].mean()


def aggregate(logits, factors, coverage):
    """score[c] = Σ_{k : c ∈ TC_k} m_k·z_k[c] / #{k : c ∈ TC_k} for logits [z_1 … z_K] (each B×C),
    factors m (K,) and coverage (K, C) bool."""
    cover = coverage.to(logits[0].device, torch.float32)
    z = torch.stack([t.float() for t in logits])  # K×B×C
    weight = cover * factors.to(cover.device)[:, None]  # K×C
    return (z * weight[:, None, :]).sum(0) / cover.sum(0)


# ---------------------------------------------------------------- the method
@METHODS.register("ace")
class ACEMethod(Method):
    prediction_name = "weight-norm aggregate"

    @staticmethod
    def resume_may_change(cfg):
        return ("TRAIN.UNMIX_EPOCH",)  # like TRAIN.MAX_EPOCH: a longer run continues

    @staticmethod
    def add_config(cfg):
        cfg.ACE = CN()
        cfg.ACE.NUM_EXPERTS = 3  # K >= 2 (the release: 3; K = 4 is an extrapolation, see the module doc)
        cfg.ACE.THRESHOLDS = []  # K-1 split thresholds s_1 > ... > s_{K-1}; [] = TRAIN.OPTIMIZER.EXPERT
        cfg.ACE.LR_SCALE = "data_share"  # data_share | threshold | batch_share | none
        cfg.ACE.NORM_WITH_SCALES = False  # aggregation norms ||sigma_c W[c]|| instead of ||W[c]|| (an option)
        cfg.ACE.AGGREGATION = "weight_norm"  # weight_norm (m_k = w̄_1 / w̄_k, the release) | plain (m_k = 1)
        cfg.ACE.REINIT_EXPERTS = True  # experts 2..K get their own random init (False: copies of expert 1)
        # the release's keys
        if "EXPERT" not in cfg.TRAIN.OPTIMIZER:
            cfg.TRAIN.OPTIMIZER.EXPERT = []  # ACE split thresholds [s1, s2] (the release's key)
        if "UNMIX_EPOCH" not in cfg.TRAIN:
            cfg.TRAIN.UNMIX_EPOCH = 25  # ACE: epochs without mixup after MAX_EPOCH (release schema default)
        release.add_keys(cfg)

    @staticmethod
    def matches_release_config(cfg):
        return release.matches(cfg)

    @staticmethod
    def adapt_config(cfg, explicit):
        return release.adapt(cfg, explicit)

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        a = cfg.ACE
        K = int(a.NUM_EXPERTS)
        if K < 2:
            raise UserError(f"ACE.NUM_EXPERTS must be >= 2, got {K}")
        key = "ACE.THRESHOLDS" if len(a.THRESHOLDS) else "TRAIN.OPTIMIZER.EXPERT"
        thresholds = list(a.THRESHOLDS) if len(a.THRESHOLDS) else list(cfg.TRAIN.OPTIMIZER.EXPERT)
        if thresholds and len(thresholds) != K - 1:
            raise UserError(f"{key} has {len(thresholds)} thresholds but ACE.NUM_EXPERTS {K} needs {K - 1}")
        self.splits = plan_expert_splits(counts, thresholds, key)
        self.threshold_key = key
        self.lr_rule = choose(a.LR_SCALE, LR_SCALES, "ACE.LR_SCALE")
        self.norm_with_scales = bool(a.NORM_WITH_SCALES)
        self.rescale = choose(a.AGGREGATION, ("weight_norm", "plain"), "ACE.AGGREGATION") == "weight_norm"
        if not self.rescale:
            self.prediction_name = "plain aggregate"
        if cfg.LOSS.LOSS_TYPE not in LOSS_TYPES:
            raise UserError(f"METHOD ace computes its own loss (ResCELoss): LOSS.LOSS_TYPE must be "
                            f"CrossEntropy or ResCELoss, got {cfg.LOSS.LOSS_TYPE!r}")
        self.combiner = cfg.TRAIN.COMBINER.TYPE
        if self.combiner not in COMBINERS:
            raise UserError(f"METHOD ace supports TRAIN.COMBINER.TYPE {' or '.join(COMBINERS)}, got {self.combiner!r}")
        self.alpha = cfg.TRAIN.COMBINER.ALPHA
        if self.combiner != "default" and not self.alpha > 0:
            raise UserError(f"TRAIN.COMBINER.ALPHA must be > 0 for mix_up_group, got {self.alpha}")
        if cfg.TRAIN.UNMIX_EPOCH < 0:
            raise UserError(f"TRAIN.UNMIX_EPOCH must be >= 0, got {cfg.TRAIN.UNMIX_EPOCH}")
        if cfg.BACKBONE.FREEZE or cfg.CLASSIFIER.LWS_FREEZE_LINEAR:
            raise UserError("METHOD ace trains trunk and heads in one stage: BACKBONE.FREEZE and "
                            "CLASSIFIER.LWS_FREEZE_LINEAR must be False")
        self.mix_epochs = int(cfg.TRAIN.MAX_EPOCH)
        self.unmix_epochs = int(cfg.TRAIN.UNMIX_EPOCH)

        backbone = build_backbone(cfg.BACKBONE.TYPE, in_channels(cfg), init=cfg.BACKBONE.INIT,
                                  pretrained=cfg.BACKBONE.PRETRAINED_MODEL)
        if type(backbone) is not Backbone:  # stages + global average pooling of a feature map (the ResNets)
            raise UserError(f"METHOD ace needs a ResNet backbone (res32_cifar, res34_cifar, res10, res50, res152, "
                            f"resnext50), got BACKBONE.TYPE {cfg.BACKBONE.TYPE!r}")
        C, c = self.num_classes, cfg.CLASSIFIER
        self.net = SharedTrunkExperts(
            backbone, K, lambda d: build_head(c.TYPE, d, C, bias=c.BIAS, scale=c.COS_SCALE),
            reinit=bool(a.REINIT_EXPERTS) and not cfg.BACKBONE.PRETRAINED_MODEL, init=cfg.BACKBONE.INIT)
        self.register_buffer("coverage", self.splits.coverage(), persistent=False)

    # -------------------------------------------------------------- contract
    @staticmethod
    def total_epochs(cfg):
        return int(cfg.TRAIN.MAX_EPOCH) + int(cfg.TRAIN.UNMIX_EPOCH)  # mixed, then un-mixed epochs

    @property
    def num_experts(self):
        return self.splits.num_experts

    def describe(self):
        s = self.splits
        lines = [f"ACE: {s.num_experts} experts; shared trunk {'+'.join(self.net.trunk_stage_names)}, one "
                 f"{self.net.branch_stage_name} + GAP + {self.cfg.CLASSIFIER.TYPE} head per expert; split thresholds "
                 f"{list(s.thresholds)} ({self.threshold_key}) -> split boundaries b = {list(s.boundaries[1:])}"]
        scales = self.static_lr_scales()
        for k in range(s.num_experts):
            tc = s.target_classes(k)
            lr = ("#S_k/B per batch" if self.lr_rule == "batch_share" and k else f"x{scales[k]:.4g}")
            ic = s.interfering_classes(k)
            lines.append(f"  expert{k + 1}: target classes {tc.start}..{tc.stop - 1} ({len(tc)} classes, "
                         f"{100 * s.data_shares[k]:.1f}% of the training images), interfering classes "
                         f"{f'{ic.start}..{ic.stop - 1}' if len(ic) else 'none'}, LR {lr}")
        mixed = f"epochs 1..{self.mix_epochs - 1}" if self.mix_epochs > 1 else "no epoch"
        mix = (f"mixup (alpha {self.alpha}) in {mixed} (the release mixes while epoch < MAX_EPOCH)"
               if self.combiner == "mix_up_group" else f"no mixup in {mixed}")
        lines.append(f"  schedule: {mix}, then {self.unmix_epochs + 1} un-mixed epochs ({self.epochs} in total)")
        return lines

    def static_lr_scales(self):
        """s_k per expert (expert 1 and the trunk: 1) for the rules that do not depend on the batch."""
        s = self.splits
        if self.lr_rule == "threshold":
            return [1.0] + list(s.thresholds)
        if self.lr_rule == "none":
            return [1.0] * s.num_experts
        return list(s.data_shares)  # data_share; also batch_share's value before the first batch

    def param_groups(self):
        """Group "trunk_expert1" (trunk + expert 1) at lr_scale 1; group "expert<k>" (branch + head k) at s_k."""
        scales = self.static_lr_scales()
        groups = [{"params": list(self.net.trunk.parameters())
                   + [p for m in self.net.expert_modules(0) for p in m.parameters()],
                   "lr_scale": 1.0, "name": "trunk_expert1"}]
        for k in range(1, self.num_experts):
            groups.append({"params": [p for m in self.net.expert_modules(k) for p in m.parameters()],
                           "lr_scale": float(scales[k]), "name": f"expert{k + 1}"})
        return groups

    def _mixing(self, epoch):
        return self.combiner == "mix_up_group" and self.training and epoch < self.mix_epochs  # as the release

    def prepare_batch(self, batch, epoch):
        """mix_up_group in epochs 1..MAX_EPOCH − 1: x = λ·x_a + (1 − λ)·x_b, λ ~ Beta(α, α) once per batch."""
        if not self._mixing(epoch):
            return batch
        return mixing.mixup_batch(batch, self.alpha)

    def lr_scales(self, batch):
        """batch_share: s_k = (λ·#S_k(y_a) + (1 − λ)·#S_k(y_b)) / B, summed over DDP ranks."""
        if self.lr_rule != "batch_share" or not self.training:
            return None
        b = torch.tensor(self.splits.boundaries[1:], device=batch["label"].device)

        def in_tc(y):
            return (y[:, None] >= b[None, :]).float().sum(0)

        if "label_b" in batch:
            lam = batch["lam"]
            n = lam * in_tc(batch["label"]) + (1 - lam) * in_tc(batch["label_b"])
        else:
            n = in_tc(batch["label"])
        n = torch.cat([n, n.new_tensor([batch["label"].shape[0]])])
        if dist_utils.is_distributed():
            n = dist_utils.all_reduce_sum(n)
        n = n.tolist()
        return {f"expert{k + 2}": n[k] / max(n[-1], 1) for k in range(len(n) - 1)}

    def forward(self, batch):
        """[z_1, …, z_K], each B×C; z_k for k ≥ 2 from the detached trunk feature."""
        return self.net(batch["image"])

    def expert_losses(self, logits, labels):
        """[(CE_k, complementary_k)] for k = 1..K (float32, safe under autocast)."""
        return [expert_loss_terms(z.float(), labels, b) for z, b in zip(logits, self.splits.boundaries)]

    def loss(self, outputs, batch, epoch):
        """L = Σ_k L_k; under mixup λ·L(y_a) + (1 − λ)·L(y_b), each with its own subsets S_k."""
        terms = self.expert_losses(outputs, batch["label"])
        if "label_b" in batch:
            lam = batch["lam"]
            terms_b = self.expert_losses(outputs, batch["label_b"])
            terms = [(lam * ce + (1 - lam) * ce_b, lam * comp + (1 - lam) * comp_b)
                     for (ce, comp), (ce_b, comp_b) in zip(terms, terms_b)]
        total = sum(ce + comp for ce, comp in terms)
        logs = {}
        for k, (ce, comp) in enumerate(terms):
            logs[f"expert{k + 1}_ce"] = ce.detach()
            if k:
                logs[f"expert{k + 1}_comp"] = comp.detach()
        return total, logs

    def aggregation_factors(self):
        """m_k = w̄_1 / w̄_k (m_1 = 1), w̄_k = mean row norm of head k over its target classes; all 1 when
        ACE.AGGREGATION is plain."""
        heads, s = self.net.heads, self.splits
        if not self.rescale:
            return torch.ones(s.num_experts)
        w = [mean_row_norms(heads[k], list(s.target_classes(k)), self.norm_with_scales) for k in range(s.num_experts)]
        return torch.stack([w[0] / wk.clamp(min=1e-12) for wk in w])

    def predict(self, outputs):
        """{"logits": the weight-norm-rescaled aggregate, "members": {"expert<k>": z_k}}.
        Training accuracy uses the same aggregate (the release used m_k = 1 while training)."""
        with torch.no_grad():
            factors = self.aggregation_factors()
        score = aggregate(outputs, factors, self.coverage)
        return {"logits": score, "members": {f"expert{k + 1}": z for k, z in enumerate(outputs)}}

    def on_epoch_end(self, epoch):
        f = self.aggregation_factors()
        return {f"agg_factor_expert{k + 1}": float(f[k]) for k in range(1, self.num_experts)}

    def classifier_heads(self):
        return list(self.net.heads)

