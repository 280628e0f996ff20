"""CADEL: cascaded deep ensemble (Chen et al. 2023; docs/methods/cadel.md).

One backbone with K heads at increasing depth: aux heads on the outputs of the stages named in
CADEL.TAPS (default: the last-but-two and last-but-one stages: layer2/layer3 of ResNet-50/152 and
ResNeXt-50, layer1/layer2 of res32_cifar; on a ViT blocks 7 and 9 of 12, block3/block4 of vit_tiny_p4's 6) and a
CosNorm head (s = 30, no bias) on the pooled final feature (ViT: fc_norm of the mean patch token). ViT aux
heads (CADEL.AUX_HEAD vit, lib/models/aux_heads.ViTAuxHead) are CADEL.AUX_DEPTH extra transformer blocks + mean
patch token + CosNorm, at the tapped block's layer-decay LR scale. All heads train jointly with the cascaded
re-weighted loss (the release's `ensemble_loss_v2`); for a batch of N samples, heads k = 1..K shallow to deep:

    p_k,i = P_k(y_i | x_i)  (detached)          m_k,i = mean_{j<=k} p_j,i   (the cascade)
    bins e_b = b/B, b = 0..B (last edge + 1e-6, so m = 1 is in the last bin); n_b = #{i: m_k,i in bin b}
    w_k,i = base + gamma * n_{b(i)} / N         (DOWN_WEIGHT: base - gamma * n_{b(i)} / N)
    L_k   = T * mean_i l_k,i + (1 - T) * R_k,      T = 1 - epoch / E  (epoch 1..E)
    R_k   = mean_i (w_k,i * l_k,i)                  CADEL.WEIGHTING per_sample (the ViT release)
          = mean_i w_k,i * mean_i l_k,i             CADEL.WEIGHTING batch_mean (the CNN release: an (N,1) x (N,)
                                                    broadcast; its published CNN numbers were trained so)
    L     = sum_k L_k

with (p, l) from a pluggable term function (CADEL.LOSS): "softmax" p = softmax(z)[y],
l = -log softmax(z)[y] (CNN release); "sigmoid" p = sigmoid(z)[y], l = BCE summed over classes (the
release's ViT loss `Ensemble_BCE_loss_v3`). Input mixup (CADEL.MIXUP_ALPHA > 0): lam ~ Beta(a, a) once per
batch, x~ = lam x + (1 - lam) x[perm], loss lam L(y_a) + (1 - lam) L(y_b), the accumulators m_k computed
separately for each label set. Histograms use the local batch only (per DDP rank, as released).

Prediction: the last head (CADEL.HEADLINE last, how the published CNN numbers were produced) or the
mean of the K heads' logits (mean, the ViT runner); members head1..headK plus the other combination, so
every report shows last head, mean of heads and each head. Stage two is the post-hoc logit
adjustment z - tau log pi searched on the val split: tools/posthoc_tau.py (generic; it takes its default
grid from `posthoc_taus`, here CADEL.POSTHOC_TAUS).
"""
import torch
from torch.nn import functional as F
from yacs.config import CfgNode as CN

from ..models.aux_heads import build_aux_head
from ..models.heads import CosNorm
from ..models.network import backbone_from_config
from ..models.tapped_network import TappedNetwork, check_taps, default_taps
from ..utils.errors import UserError
from ..utils.registry import choose
from . import mixing
from .base import METHODS, Method

HEADLINES = ("last", "mean")
SHAPE_MATCH = ("skip", "error")
WEIGHTINGS = ("batch_mean", "per_sample")


# ---------------------------------------------------------------- per-head terms (pluggable: CADEL.LOSS)
def softmax_terms(z, y):
    """CNN loss terms: (p, l) with p_i = softmax(z_i)[y_i] detached, l_i = -log softmax(z_i)[y_i]; shapes (N,)."""
    logp = F.log_softmax(z.float(), dim=1).gather(1, y[:, None]).squeeze(1)
    return logp.detach().exp(), -logp


def sigmoid_terms(z, y):
    """ViT loss terms: p_i = sigmoid(z_i)[y_i] detached, l_i = sum_c BCE(sigmoid(z_ic), [c = y_i]); shapes (N,)."""
    z = z.float()
    target = F.one_hot(y, z.shape[1]).to(z.dtype)
    l = F.binary_cross_entropy_with_logits(z, target, reduction="none").sum(1)
    return z.detach().gather(1, y[:, None]).squeeze(1).sigmoid(), l


TERMS = {"softmax": softmax_terms, "sigmoid": sigmoid_terms}


def vit_default_taps(backbone):
    """The release's tap depths for ViTs, blocks 7 and 9 of 12 (0-based), at the same relative depth for L blocks:
    block floor(7L/12) and block floor(9L/12) (vit_tiny_p4, L = 6: block3 and block4)."""
    L = len(backbone.blocks)
    taps = [f"block{7 * L // 12}", f"block{9 * L // 12}"]
    if L < 4 or taps[0] == taps[1]:
        raise UserError(f"backbone has {L} transformer blocks: too few for automatic taps; name them in CADEL.TAPS")
    return taps


def anneal_T(epoch, epochs):
    """T = 1 - epoch / E for the 1-based epoch: 1 - 1/E in the first epoch, 0 in the last."""
    return 1.0 - float(epoch) / float(epochs)


@torch.no_grad()
def bin_weights(m, bins, gamma, base, down_weight=False):
    """w_i = base + gamma * n_{b(i)} / N (or base - ... with down_weight) for confidences m (N,) in [0, 1].

    Bin b holds e_b <= m < e_{b+1} with e_b = b / B and the last edge raised by 1e-6 (m = 1 is in bin
    B - 1); n_b counts the samples of this batch in bin b. Returns (w (N,), n (B,))."""
    edges = torch.arange(bins + 1, dtype=torch.float32, device=m.device) / bins
    edges[-1] += 1e-6
    idx = torch.bucketize(m.float(), edges[1:], right=True).clamp_(0, bins - 1)
    n = torch.bincount(idx, minlength=bins)
    frac = n[idx].float() / m.numel()
    return (base - gamma * frac) if down_weight else (base + gamma * frac), n


def reweighted(w, l, weighting):
    """R = mean_i(w_i l_i) (per_sample) or mean_i(w_i) mean_i(l_i) (batch_mean, the CNN release)."""
    return (w * l).mean() if weighting == "per_sample" else w.mean() * l.mean()


def cascade_loss(logits, y, T, bins, gamma, base, down_weight=False, terms=softmax_terms, weighting="per_sample"):
    """L = sum_k [T mean_i l_k,i + (1 - T) R_k] for head logits [z_1 .. z_K] (each N x C), R_k the
    re-weighted term of `weighting`, w_k from the running mean of p_1..p_k (module docstring).
    Returns (L, [L_1 .. L_K])."""
    per_head, p_sum = [], 0.0
    for k, z in enumerate(logits, start=1):
        p, l = terms(z, y)
        p_sum = p_sum + p
        w, _ = bin_weights(p_sum / k, bins, gamma, base, down_weight)
        per_head.append(T * l.mean() + (1 - T) * reweighted(w, l, weighting))
    return sum(per_head), per_head


@METHODS.register("cadel")
class CADEL(Method):
    @property
    def prediction_name(self):
        return "last head" if self.headline == "last" else "mean of heads' logits"

    @staticmethod
    def loss_name(cfg):
        return f"cascade {cfg.CADEL.LOSS} (LOSS.LOSS_TYPE unused)"

    @staticmethod
    def add_config(cfg):
        cfg.CADEL = CN()
        cfg.CADEL.BINS = 8  # B: confidence bins of the per-sample weights (training_opt.bins)
        cfg.CADEL.GAMMA = 1.0  # gamma: w = base + gamma * n_b / N (training_opt.gamma)
        cfg.CADEL.BASE_WEIGHT = 2.0  # base (training_opt.base_weight)
        cfg.CADEL.DOWN_WEIGHT = False  # w = base - gamma * n_b / N (the unused `ensemble_loss` variant)
        cfg.CADEL.LOSS = "softmax"  # per-head terms: softmax (CE, CNN release) | sigmoid (BCE over classes, ViT release)
        cfg.CADEL.WEIGHTING = "batch_mean"  # re-weighted term: batch_mean mean(w)*mean(l) (CNN release) | per_sample mean(w*l) (ViT release)
        cfg.CADEL.MIXUP_ALPHA = 0.0  # input mixup lam ~ Beta(a, a) (criterions.mixup.alpha); 0 = off
        cfg.CADEL.TAPS = []  # stage outputs read by the aux heads, shallow to deep; [] = last-but-two and last-but-one stages
        cfg.CADEL.AUX_HEAD = "cnn"  # cnn (Aux_Layer2, 1x1 projection) | places (Aux_Classifier, 3x3 projection) | vit (ViTs)
        cfg.CADEL.AUX_DEPTH = 2  # vit aux head: extra transformer blocks after the tapped block (params.aux_depth)
        cfg.CADEL.AUX_WIDTH = 0  # aux conv width W (projection 2W); 0 = the backbone's feature width (2048 on ResNet-50)
        cfg.CADEL.AUX_GROUPS = 32  # groups of the aux head's grouped 3x3 conv
        cfg.CADEL.AUX_DROPOUT = 0.5  # dropout before each aux head's CosNorm
        cfg.CADEL.SE_BIAS = False  # biases in the cnn/places aux heads' SE gate (the release has none)
        cfg.CADEL.VIT_AUX_INIT = "pytorch"  # vit aux blocks: pytorch default init (release) | trunc_normal (timm's ViT init)
        cfg.CADEL.AUX_LR_LAYER = "previous_block"  # vit aux head's layer-decay id: previous_block (release: tap index) | tapped_block
        cfg.CADEL.SCALE = 30.0  # CosNorm scale s of every head
        cfg.CADEL.LAST_HEAD_INIT_STD = 0.0  # > 0: last head's W ~ trunc_normal(std) (ViT release: 2e-5); 0 = U(+-1/sqrt(d))
        cfg.CADEL.HEADLINE = "last"  # prediction: last (last head; CNN release) | mean (mean of the heads' logits; ViT)
        cfg.CADEL.BACKBONE_LR_SCALE = 1.0  # backbone LR / head LR; 0 = backbone frozen, BN statistics still move (Places)
        cfg.CADEL.PRETRAINED_SHAPE_MATCH = "skip"  # BACKBONE.PRETRAINED_MODEL: skip keys whose shape differs (release) | error
        cfg.CADEL.POSTHOC_TAUS = [0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]  # tools/posthoc_tau.py grid (CNN release)

    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        c = cfg.CADEL
        if c.BINS < 1:
            raise UserError(f"CADEL.BINS must be >= 1, got {c.BINS}")
        for key, valid in (("WEIGHTING", WEIGHTINGS), ("LOSS", TERMS), ("HEADLINE", HEADLINES),
                           ("PRETRAINED_SHAPE_MATCH", SHAPE_MATCH)):
            choose(c[key], valid, f"CADEL.{key}")
        if c.MIXUP_ALPHA < 0:
            raise UserError(f"CADEL.MIXUP_ALPHA must be >= 0 (0 = no mixup), got {c.MIXUP_ALPHA}")
        if c.BACKBONE_LR_SCALE < 0:
            raise UserError(f"CADEL.BACKBONE_LR_SCALE must be >= 0, got {c.BACKBONE_LR_SCALE}")
        self.bins, self.gamma, self.base = int(c.BINS), float(c.GAMMA), float(c.BASE_WEIGHT)
        self.down_weight = bool(c.DOWN_WEIGHT)
        self.terms = TERMS[c.LOSS]
        self.weighting = c.WEIGHTING
        self.alpha = float(c.MIXUP_ALPHA)
        self.headline = c.HEADLINE
        self.backbone_lr_scale = float(c.BACKBONE_LR_SCALE)
        self.posthoc_taus = [float(t) for t in c.POSTHOC_TAUS]  # read by tools/posthoc_tau.py

        backbone = backbone_from_config(cfg, pretrained="")
        if cfg.BACKBONE.PRETRAINED_MODEL:
            self._load_backbone(backbone, cfg.BACKBONE.PRETRAINED_MODEL, c.PRETRAINED_SHAPE_MATCH)
        tokens = hasattr(backbone, "num_prefix_tokens")  # a ViT (lib/models/vit.py): its stages output tokens
        if tokens and c.AUX_HEAD != "vit":
            raise UserError(f"CADEL.AUX_HEAD {c.AUX_HEAD} reads feature maps, but BACKBONE.TYPE {cfg.BACKBONE.TYPE} "
                            "outputs tokens: set CADEL.AUX_HEAD vit")
        if len(c.TAPS):
            taps = check_taps(backbone, list(c.TAPS))
        else:
            taps = vit_default_taps(backbone) if tokens else default_taps(backbone)
        width = int(c.AUX_WIDTH) or backbone.out_dim
        aux = [build_aux_head(c.AUX_HEAD, backbone.stage_channels[t], self.num_classes, tap=t, backbone=backbone,
                              width=width, groups=int(c.AUX_GROUPS), dropout=float(c.AUX_DROPOUT),
                              scale=float(c.SCALE), depth=int(c.AUX_DEPTH), se_bias=bool(c.SE_BIAS),
                              vit_init=c.VIT_AUX_INIT, lr_layer=c.AUX_LR_LAYER)
               for t in taps]
        last = CosNorm(backbone.out_dim, self.num_classes, scale=float(c.SCALE))
        if c.LAST_HEAD_INIT_STD < 0:
            raise UserError(f"CADEL.LAST_HEAD_INIT_STD must be >= 0 (0 = CosNorm's own init), got {c.LAST_HEAD_INIT_STD}")
        if c.LAST_HEAD_INIT_STD > 0:  # MAE/LiVT fine-tuning: head.weight <- trunc_normal(std 2e-5)
            torch.nn.init.trunc_normal_(last.weight, std=float(c.LAST_HEAD_INIT_STD))
        b = cfg.BACKBONE
        self.net = TappedNetwork(backbone, taps, aux, last,
                                 freeze_backbone=b.FREEZE or self.backbone_lr_scale == 0,
                                 bn_eval=b.BN_EVAL or (b.FREEZE and b.FREEZE_BN))
        self.head_names = [f"head{k}" for k in range(1, self.net.num_heads + 1)]

    @staticmethod
    def _load_backbone(backbone, path, shape_match):
        """BACKBONE.PRETRAINED_MODEL, keeping only the keys whose names and shapes match (the release's rule
        for Places-LT); a file where nothing matches is an error. lib/models/pretrained.py keeps a one-line
        report of what was loaded and skipped on the backbone (`pretrained_report`), which the trainer logs."""
        if hasattr(backbone, "load_pretrained"):  # a backbone with its own loader (the ViTs)
            backbone.load_pretrained(path)
            return
        from ..models.pretrained import load_pretrained

        load_pretrained(backbone, path, shape_match=shape_match)

    # -- training
    def prepare_batch(self, batch, epoch):
        """Input mixup while training when CADEL.MIXUP_ALPHA > 0 (mixing.mixup_batch)."""
        if not (self.training and self.alpha > 0):
            return batch
        return mixing.mixup_batch(batch, self.alpha)

    def forward(self, batch):
        """[z_1, ..., z_K], each (B, C), shallow to deep."""
        return self.net(batch["image"])

    def loss(self, outputs, batch, epoch):
        T = anneal_T(epoch, self.epochs)
        args = (T, self.bins, self.gamma, self.base, self.down_weight, self.terms, self.weighting)
        loss, per_head = cascade_loss(outputs, batch["label"], *args)
        if "label_b" in batch:  # lam L(y_a) + (1 - lam) L(y_b), each with its own accumulators
            lam = batch["lam"]
            loss_b, per_head_b = cascade_loss(outputs, batch["label_b"], *args)
            loss = lam * loss + (1 - lam) * loss_b
            per_head = [lam * a + (1 - lam) * b for a, b in zip(per_head, per_head_b)]
        logs = {"T": T}
        logs.update({f"loss_{n}": v.detach() for n, v in zip(self.head_names, per_head)})
        return loss, logs

    # -- prediction
    def predict(self, outputs):
        mean = torch.stack([z.float() for z in outputs]).mean(0)
        members = dict(zip(self.head_names, outputs))
        if self.headline == "last":
            members["mean_of_heads"] = mean
            return {"logits": outputs[-1], "members": members}
        members["last_head"] = outputs[-1]
        return {"logits": mean, "members": members}

    # -- optimisation
    def param_groups(self):
        """SGD groups as released (one per network): backbone (lr_scale CADEL.BACKBONE_LR_SCALE), each head."""
        groups = [{"params": list(self.net.backbone.parameters()), "lr_scale": self.backbone_lr_scale,
                   "name": "backbone"}]
        for name, head in zip(self.head_names, self.net.heads()):
            groups.append({"params": list(head.parameters()), "lr_scale": 1.0, "name": name})
        return groups

    def classifier_heads(self):
        """The K CosNorm classifiers, shallow to deep."""
        return [getattr(h, "head", h) for h in self.net.heads()]
