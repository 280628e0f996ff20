"""Auxiliary classifier heads that read an intermediate feature map (CADEL; docs/methods/cadel.md).

Registry `AUX_HEADS`; factory signature `factory(in_channels, num_classes, **options) -> nn.Module`
mapping the tapped stage output (here a map (B, C_in, H, W)) to logits (B, C). The options always include
`tap` (the stage name) and `backbone` (the module), so a head can match the backbone it reads, plus the
CADEL.AUX_* settings; options a factory does not use are ignored. Every head exposes `.head` (its final
classifier, with `.weight`/`.bias`). Kinds: "cnn", "places" (feature maps, below) and "vit" (tokens,
ViTAuxHead: CADEL-ViT).

CNN block (`Aux_Layer2` in the release), with width W (2048 in the release), projection width 2W:
    1. conv3x3(C_in -> W, pad 1), BN, ReLU
    2. grouped conv3x3(W -> W, groups G = 32, pad 0), BN, ReLU
    3. conv3x3(W -> W, pad 0), BN, ReLU
    4. projection W -> 2W: conv1x1 ("cnn") or conv3x3 pad 0 ("places", `Aux_Classifier`), BN, ReLU
    5. SE gate: s = sigmoid(FC(ReLU(FC(GAP(x))))) with 2W -> 2W/8 -> 2W, x <- x * s (channel-wise);
       the release's two FCs have no bias (CADEL.SE_BIAS False)
    6. GAP  7. Dropout(p = 0.5, training only)  8. CosNorm(2W -> C, s = 30, no bias)
The pad-0 convolutions shrink the map by 4 pixels ("places": 6), so a tap must be at least 5x5
(7x7): the layer3 output of a ResNet at 112 px or more. Convolutions have no bias (BN follows)
and Kaiming (fan_out, ReLU) init; BN weight 1, bias 0; the SE FCs keep PyTorch's default init.
"""
from collections import OrderedDict
from functools import partial

import torch.nn as nn
import torch.nn.functional as F

from lib.utils.errors import UserError
from lib.utils.registry import Registry, choose

from .backbones import kaiming_imagenet_
from .heads import CosNorm

AUX_HEADS = Registry("aux head")


def _conv_bn_relu(cin, cout, kernel, padding, groups=1):
    return nn.Sequential(OrderedDict(
        conv=nn.Conv2d(cin, cout, kernel, 1, padding, groups=groups, bias=False),
        bn=nn.BatchNorm2d(cout), relu=nn.ReLU(inplace=True)))


class SqueezeExcite(nn.Module):
    """x * sigmoid(W2 ReLU(W1 GAP(x))), W1: C -> C/r, W2: C/r -> C (r = 8 in the release: 4096 -> 512)."""

    def __init__(self, channels, reduction=8, bias=False):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.fc1 = nn.Linear(channels, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, channels, bias=bias)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1).flatten(1)
        s = self.fc2(F.relu(self.fc1(s))).sigmoid()
        return x * s[:, :, None, None]


class ConvAuxHead(nn.Module):
    """The CNN aux head above; `proj_kernel` 1 ("cnn") or 3 ("places"). Input (B, C_in, H, W) with
    H, W >= 5 (1x1 projection) or 7 (3x3); output logits (B, num_classes)."""

    def __init__(self, in_channels, num_classes, width=2048, groups=32, proj_kernel=1, se_reduction=8,
                 dropout=0.5, scale=30.0, se_bias=False):
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
        self.se = SqueezeExcite(out, se_reduction, se_bias)
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
def cnn_aux_head(in_channels, num_classes, width=2048, groups=32, se_reduction=8, dropout=0.5, scale=30.0,
                 se_bias=False, **_):
    """`Aux_Layer2` (ResNet-50 / ResNeXt-50; with a small width, the res32_cifar variant): 1x1 projection."""
    return ConvAuxHead(in_channels, num_classes, width, groups, 1, se_reduction, dropout, scale, se_bias)


@AUX_HEADS.register("places")
def places_aux_head(in_channels, num_classes, width=2048, groups=32, se_reduction=8, dropout=0.5, scale=30.0,
                    se_bias=False, **_):
    """`Aux_Classifier` (ResNet-152, Places-LT): the 2W projection is a 3x3 conv with pad 0."""
    return ConvAuxHead(in_channels, num_classes, width, groups, 3, se_reduction, dropout, scale, se_bias)


class ViTAuxHead(nn.Module):
    """CADEL-ViT aux head (docs/methods/cadel.md) on the tokens of transformer block i:

        t' = Block_{i,D}(... Block_{i,1}(t))      D = CADEL.AUX_DEPTH (2) extra timm Blocks, input t = block i's
                                                  output (B, 1 + N, d), same width d, heads, MLP ratio, qkv bias
                                                  and LayerNorm as the backbone's blocks
        g  = mean_{n > prefix} t'_n               mean over the N patch tokens (cls token left out), (B, d)
        z  = CosNorm_s(g)                         (B, C), s = 30, no bias

    No LayerNorm before the pooling: the release's `global_pool=True` is a bool, so its aux heads skip the norm
    the main head's `fc_norm` applies. Stochastic depth of the extra blocks = the backbone's rate at block i
    (dpr[i] of its linear 0 -> BACKBONE.DROP_PATH rule, read from the tapped block). The checkpoint has no aux
    weights, so they start from `init`: "pytorch" (PyTorch's default Linear/LayerNorm init: the release builds its
    aux blocks after timm's init has run) or "trunc_normal" (timm's ViT init: trunc_normal std .02, zero biases).
    Layer-wise LR decay: every parameter of the head gets BEiT layer id `lr_layer_at` = i ("previous_block", the
    release: the tap index itself, i.e. block i-1's id) or i + 1 ("tapped_block": block i's own id)."""

    INITS = ("pytorch", "trunc_normal")
    LR_LAYERS = ("previous_block", "tapped_block")

    def __init__(self, backbone, block_index, num_classes, depth=2, scale=30.0, init="pytorch",
                 lr_layer="previous_block"):
        super().__init__()
        from .vit import Block  # timm, imported through lib/models/vit.py (torchvision import fix)
        from timm.layers import trunc_normal_

        if depth < 1:
            raise UserError(f"CADEL.AUX_DEPTH must be >= 1 for the vit aux head, got {depth}")
        choose(init, self.INITS, "CADEL.VIT_AUX_INIT")
        choose(lr_layer, self.LR_LAYERS, "CADEL.AUX_LR_LAYER")
        ref = backbone.blocks[block_index]
        dim = backbone.embed_dim
        drop_path = float(getattr(ref.drop_path1, "drop_prob", 0.0))
        self.blocks = nn.Sequential(*[
            Block(dim, ref.attn.num_heads, mlp_ratio=ref.mlp.fc1.out_features / dim,
                  qkv_bias=ref.attn.qkv.bias is not None, drop_path=drop_path,
                  act_layer=type(ref.mlp.act), norm_layer=partial(type(ref.norm1), eps=ref.norm1.eps))
            for _ in range(depth)])
        if init == "trunc_normal":
            for m in self.blocks.modules():
                if isinstance(m, nn.Linear):
                    trunc_normal_(m.weight, std=0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
        self.num_prefix_tokens = backbone.num_prefix_tokens
        self.head = CosNorm(dim, num_classes, scale=scale)
        self.out_dim = dim
        self.drop_path = drop_path
        # lib/engine/optim.py: every parameter here gets this layer id
        self.lr_layer_at = block_index + (1 if lr_layer == "tapped_block" else 0)

    def features(self, tokens):
        """(B, 1 + N, d) tokens of the tapped block -> pooled aux feature g (B, d)."""
        return self.blocks(tokens)[:, self.num_prefix_tokens:].mean(dim=1)

    def forward(self, tokens):
        return self.head(self.features(tokens))


@AUX_HEADS.register("vit")
def vit_aux_head(in_channels, num_classes, tap=None, backbone=None, depth=2, scale=30.0, vit_init="pytorch",
                 lr_layer="previous_block", **_):
    """CADEL-ViT aux head on transformer block `tap` ("block7") of a ViT backbone (lib/models/vit.py)."""
    blocks = getattr(backbone, "blocks", None)
    if blocks is None or not hasattr(backbone, "num_prefix_tokens"):
        raise UserError(f"CADEL.AUX_HEAD vit needs a ViT backbone (vit_b16, vit_tiny_p4), got {type(backbone).__name__}")
    if not (isinstance(tap, str) and tap.startswith("block") and tap[5:].isdigit() and int(tap[5:]) < len(blocks)):
        raise UserError(f"CADEL.TAPS: the vit aux head reads a transformer block (block0 .. block{len(blocks) - 1}), "
                        f"got {tap!r}")
    return ViTAuxHead(backbone, int(tap[5:]), num_classes, depth=int(depth), scale=scale, init=vit_init,
                      lr_layer=lr_layer)


def build_aux_head(kind, in_channels, num_classes, **options):
    return AUX_HEADS.get(kind, "CADEL.AUX_HEAD")(in_channels, num_classes, **options)
