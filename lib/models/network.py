"""A single network: backbone -> global pooled feature -> classifier head."""
from torch import nn

from .backbones import build_backbone
from .heads import build_head


def in_channels(cfg):
    return cfg.BACKBONE.IN_CHANNELS or (1 if cfg.COLOR_SPACE == "L" else 3)


def backbone_from_config(cfg, pretrained=None):
    """The configured backbone (BACKBONE.TYPE, channels from COLOR_SPACE, INIT, INPUT_SIZE and DROP_PATH for
    ViTs), loaded from BACKBONE.PRETRAINED_MODEL unless `pretrained` says otherwise ("" = none)."""
    return build_backbone(cfg.BACKBONE.TYPE, in_channels(cfg), init=cfg.BACKBONE.INIT,
                          pretrained=cfg.BACKBONE.PRETRAINED_MODEL if pretrained is None else pretrained,
                          image_size=cfg.INPUT_SIZE, drop_path=cfg.BACKBONE.DROP_PATH)



def bn_to_eval(module):
    """Every BatchNorm layer of `module` in eval mode: running statistics frozen (BACKBONE.BN_EVAL, frozen stage two)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()

class Network(nn.Module):
    """`features(x)` -> (B, d) pooled feature; `forward(x)` -> logits (B, C).

    With BACKBONE.FREEZE the backbone gets no gradient and (unless BACKBONE.FREEZE_BN is
    False) its BatchNorm stays in eval mode, so its statistics do not move (cRT / WB stage two).
    BACKBONE.BN_EVAL keeps BN in eval mode while everything trains.
    """

    def __init__(self, cfg, num_classes):
        super().__init__()
        self.backbone = backbone_from_config(cfg)
        self.head = build_head(
            cfg.CLASSIFIER.TYPE, self.backbone.out_dim, num_classes,
            bias=cfg.CLASSIFIER.BIAS, scale=cfg.CLASSIFIER.COS_SCALE,
        )
        self.freeze_backbone = cfg.BACKBONE.FREEZE
        self.bn_eval = cfg.BACKBONE.BN_EVAL or (cfg.BACKBONE.FREEZE and cfg.BACKBONE.FREEZE_BN)
        if self.freeze_backbone:
            self.backbone.requires_grad_(False)

    def train(self, mode=True):
        super().train(mode)
        if mode and self.bn_eval:
            bn_to_eval(self.backbone)
        return self

    def features(self, x):
        return self.backbone(x)

    def forward(self, x):
        return self.head(self.backbone(x))
