"""Auxiliary classifier heads that read an intermediate feature map (CADEL; spec: cadel.md §2).

Registry `AUX_HEADS`; factory signature `factory(in_channels, num_classes, **options) -> nn.Module`
mapping the tapped stage output (here a map (B, C_in, H, W)) to logits (B, C). The options always include
`tap` (the stage name) and `backbone` (the module), so a head can match the backbone it reads, plus the
CADEL.AUX_* settings; options a factory does not use are ignored. A new kind (e.g. CADEL's ViT aux head:
2 extra transformer blocks on the tokens of block 7 or 9, drop-path and layer-decay id from the tap, mean
over patch tokens, CosNorm) is one more registered factory. Every head exposes `.head` (its final
classifier, with `.weight`/`.bias`).

CNN block (`Aux_Layer2` in the release), with width W (2048 in the release), projection width 2W:
    1. conv3x3(C_in -> W, pad 1), BN, ReLU
    2. grouped conv3x3(W -> W, groups G = 32, pad 0), BN, ReLU
    3. conv3x3(W -> W, pad 0), BN, ReLU
    4. projection W -> 2W: conv1x1 ("cnn") or conv3x3 pad 0 ("places", `Aux_Classifier`), BN, ReLU
    5. SE gate: s = sigmoid(FC(ReLU(FC(GAP(x))))) with 2W -> 2W/8 -> 2W, x <- x * s (channel-wise)
    6. GAP  7. Dropout(p = 0.5, training only)  8. CosNorm(2W -> C, s = 30, no bias)
The pad-0 convolutions shrink the map by 4 pixels ("places": 6), so a tap must be at least 5x5
(7x7): the layer3 output of a ResNet at 112 px or more. Convolutions have no bias (BN follows)
and Kaiming (fan_out, ReLU) init; BN weight 1, bias 0; the SE FCs keep PyTorch's default init.
"""
from collections import OrderedDict

import torch.nn as nn
import torch.nn.functional as F

from lib.utils.errors import UserError
from lib.utils.registry import Registry

from .backbones import kaiming_imagenet_
from .heads import CosNorm

AUX_HEADS = Registry("aux head")


def _conv_bn_relu(cin, cout, kernel, padding, groups=1):
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(cin, cout, kernel, 1, padding, groups=groups, bias=False),
        bn=nn.BatchNorm2d(cout), relu=nn.ReLU(inplace=True)))


class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 ReLU(W1 GAP(x))), W1: C -> C/r, W2: C/r -> C (r = 8 in the release: 4096 -> 512)."""

    def __init__(self, channels, reduction=8):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1).flatten(1)
        s = self.fc2(F.relu(self.fc1(s))).sigmoid()
        return x * s[:, :, None, None]


class ConvAuxHead(nn.Module):
    """The CNN aux head above; `proj_kernel` 1 ("cnn") or 3 ("places"). Input (B, C_in, H, W) with
    H, W >= 5 (1x1 projection) or 7 (3x3); output logits (B, num_classes)."""

    def __init__(self, in_channels, num_classes, width=2048, groups=32, proj_kernel=1, se_reduction=8,
                 dropout=0.5, scale=30.0):
        super().__init__()
        if width < 1 or width % groups:
            raise UserError(f"CADEL.AUX_WIDTH ({width}) must be a positive multiple of CADEL.AUX_GROUPS ({groups})")
        self.min_size = 5 if proj_kernel == 1 else 7
        out = 2 * width
        self.body = nn.Sequential(OrderedDict(
            block1=_conv_bn_relu(in_channels, width, 3, 1),
            block2=_conv_bn_relu(width, width, 3, 0, groups=groups),
            block3=_conv_bn_relu(width, width, 3, 0),
            proj=_conv_bn_relu(width, out, proj_kernel, 0),
        ))
        self.se = SqueezeExcite(out, se_reduction)
        self.dropout = nn.Dropout(dropout)
        self.head = CosNorm(out, num_classes, scale=scale)
        self.out_dim = out
        kaiming_imagenet_(self.body)

    def features(self, x):
        """Pooled aux feature (B, 2W), before dropout."""
        if x.shape[-1] < self.min_size or x.shape[-2] < self.min_size:
            raise UserError(f"aux head input {tuple(x.shape[-2:])} is smaller than {self.min_size}x{self.min_size}: "
                            "tap an earlier stage or use a larger INPUT_SIZE")
        return F.adaptive_avg_pool2d(self.se(self.body(x)), 1).flatten(1)

    def forward(self, x):
        return self.head(self.dropout(self.features(x)))


@AUX_HEADS.register("cnn")
def cnn_aux_head(in_channels, num_classes, width=2048, groups=32, se_reduction=8, dropout=0.5, scale=30.0, **_):
    """`Aux_Layer2` (ResNet-50 / ResNeXt-50; with a small width, the res32_cifar variant): 1x1 projection."""
    return ConvAuxHead(in_channels, num_classes, width, groups, 1, se_reduction, dropout, scale)


@AUX_HEADS.register("places")
def places_aux_head(in_channels, num_classes, width=2048, groups=32, se_reduction=8, dropout=0.5, scale=30.0, **_):
    """`Aux_Classifier` (ResNet-152, Places-LT): the 2W projection is a 3x3 conv with pad 0."""
    return ConvAuxHead(in_channels, num_classes, width, groups, 3, se_reduction, dropout, scale)


def build_aux_head(kind, in_channels, num_classes, **options):
    return AUX_HEADS.get(kind, "CADEL.AUX_HEAD")(in_channels, num_classes, **options)
