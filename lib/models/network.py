"""A single network: backbone -> global pooled feature -> classifier head."""
from torch import nn

from .backbones import build_backbone
from .heads import build_head


def in_channels(cfg):
    return cfg.BACKBONE.IN_CHANNELS or (1 if cfg.COLOR_SPACE == "L" else 3)


class Network(nn.Module):
    """`features(x)` -> (B, d) pooled feature; `forward(x)` -> logits (B, C).

    With BACKBONE.FREEZE the backbone gets no gradient and (unless BACKBONE.FREEZE_BN is
    False) stays in eval mode, so its BN statistics do not move (cRT / WB stage two).
    """

    def __init__(self, cfg, num_classes):
        super().__init__()
        self.backbone = build_backbone(
            cfg.BACKBONE.TYPE, in_channels(cfg), init=cfg.BACKBONE.INIT, pretrained=cfg.BACKBONE.PRETRAINED_MODEL
        )
        self.head = build_head(
            cfg.CLASSIFIER.TYPE, self.backbone.out_dim, num_classes,
            bias=cfg.CLASSIFIER.BIAS, scale=cfg.CLASSIFIER.COS_SCALE,
        )
        self.freeze_backbone = cfg.BACKBONE.FREEZE
        self.freeze_bn = cfg.BACKBONE.FREEZE_BN
        if self.freeze_backbone:
            self.backbone.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        if self.freeze_backbone and self.freeze_bn:
            self.backbone.eval()
        return self

    def features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.head(self.backbone(x))
