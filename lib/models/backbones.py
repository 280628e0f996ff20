"""Backbones.

Every backbone returns the pooled feature f ∈ R^d from `forward(x)` and exposes its stages
(`stem`, `layer1` … `layer3`/`layer4`) as separately callable modules, so multi-expert
methods (ACE, CADEL) can share lower stages and copy or tap upper ones.

Names (registry `BACKBONES`): res32_cifar, res34_cifar, res10, res50, res152, resnext50, and the
timm Vision Transformers vit_b16, vit_tiny_p4 (lib/models/vit.py; same interface, tokens as stage outputs).
Factory signature: `factory(in_channels=3, init="kaiming") -> Backbone` (ViTs: image_size, drop_path too).
"""
from collections import OrderedDict

import torch.nn as nn
import torch.nn.functional as F

from lib.utils.errors import UserError
from lib.utils.registry import Registry
from lib.utils.tv import models

BACKBONES = Registry("backbone")
INITS = ("kaiming", "pytorch")


# ---------------------------------------------------------------- init schemes
def kaiming_cifar_(module):
    """He et al. CIFAR init: kaiming_normal_ (fan_in) on every Conv2d and Linear weight;
    BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def kaiming_imagenet_(module):
    """ImageNet ResNet init: kaiming_normal_(fan_out, relu) on convs; BN weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def pytorch_init_(module):
    """PyTorch default init: re-run each submodule's own `reset_parameters()` (NCL's res50/res152)."""
    for m in module.modules():
        if m is not module and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    return module


def _check_init(init):
    if init not in INITS:
        raise UserError(f"backbone init {init!r} is not one of {', '.join(INITS)}")


# ---------------------------------------------------------------- common wrapper
class Backbone(nn.Module):
    """A stem followed by named stages, then global average pooling.

    Attributes: `stem`, `layer1`…`layerK`, `stage_names` ("stem", "layer1", …),
    `stage_channels` {stage name: output channels}, `out_dim` = channels of the last stage.
    """

    def __init__(self, stem, layers, stage_channels):
        super().__init__()
        self.stem = stem
        names = ["stem"]
        for i, layer in enumerate(layers, start=1):
            setattr(self, f"layer{i}", layer)
            names.append(f"layer{i}")
        self.stage_names = tuple(names)
        self.stage_channels = dict(zip(self.stage_names, stage_channels))
        self.out_dim = stage_channels[-1]

    def stages(self):
        """[(name, module)] in forward order."""
        return [(n, getattr(self, n)) for n in self.stage_names]

    def forward_stages(self, x):
        """All stage outputs as an ordered {stage name: feature map}."""
        out = OrderedDict()
        for name, stage in self.stages():
            x = stage(x)
            out[name] = x
        return out

    def forward_features(self, x):
        """Feature map of the last stage."""
        for _, stage in self.stages():
            x = stage(x)
        return x

    @staticmethod
    def pool(fmap):
        """Global average pool + flatten: (B, C, H, W) -> (B, C)."""
        return F.adaptive_avg_pool2d(fmap, 1).flatten(1)

    def forward(self, x):
        return self.pool(self.forward_features(x))


# ---------------------------------------------------------------- ResNet-32 (CIFAR)
class OptionAShortcut(nn.Module):
    """Parameter-free shortcut (option A): x[:, :, ::2, ::2], zero-padded by planes//4 channels each side."""

    def __init__(self, planes):
        super().__init__()
        self.pad = planes // 4

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class CifarBasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN, + shortcut, then ReLU."""

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = OptionAShortcut(planes)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def _cifar_stage(in_planes, planes, blocks, stride):
    layers = [CifarBasicBlock(in_planes, planes, stride)]
    layers += [CifarBasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def cifar_resnet(n=5, in_channels=3, init="kaiming"):
    """ResNet-(6n+2) for 32x32 inputs: 16-ch 3x3 stem, 3 stages of n BasicBlocks, widths 16/32/64."""
    _check_init(init)
    stem = nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False), bn1=nn.BatchNorm2d(16), relu=nn.ReLU(inplace=True)))
    layers = [_cifar_stage(16, 16, n, 1), _cifar_stage(16, 32, n, 2), _cifar_stage(32, 64, n, 2)]
    net = Backbone(stem, layers, (16, 16, 32, 64))
    return kaiming_cifar_(net) if init == "kaiming" else pytorch_init_(net)


@BACKBONES.register("res32_cifar")
def res32_cifar(in_channels=3, init="kaiming"):
    return cifar_resnet(5, in_channels, init)


# ---------------------------------------------------------------- torchvision-based ResNets
def _from_torchvision(tv_net, cifar_stem=False, in_channels=3, init="kaiming"):
    """Re-expose a torchvision ResNet as stem + layer1..4 (its avgpool and fc are dropped).

    cifar_stem: WB's CIFAR ResNet-34 (docs/methods/weight_balancing.md): 3x3 stride-1 conv1 (64 ch) and no max-pool.
    """
    _check_init(init)
    if cifar_stem:
        conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        stem = nn.Sequential(OrderedDict(conv1=conv1, bn1=tv_net.bn1, relu=tv_net.relu))
    else:
        conv1 = tv_net.conv1 if in_channels == 3 else nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        stem = nn.Sequential(OrderedDict(conv1=conv1, bn1=tv_net.bn1, relu=tv_net.relu, maxpool=tv_net.maxpool))
    layers = [tv_net.layer1, tv_net.layer2, tv_net.layer3, tv_net.layer4]
    widths = [64] + [_block_out(layer) for layer in layers]
    net = Backbone(stem, layers, tuple(widths))
    if init == "pytorch":
        return pytorch_init_(net)
    # torchvision's constructor already applied this Kaiming scheme to the body; a replaced conv1 needs it too.
    kaiming_imagenet_(net.stem)
    return net


def _block_out(layer):
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


def _tv_resnet(block, depths, **kw):
    # num_classes=1: the fc is dropped anyway, no point allocating a 1000-way one.
    return models.resnet.ResNet(block, depths, num_classes=1, **kw)


@BACKBONES.register("res34_cifar")
def res34_cifar(in_channels=3, init="kaiming"):
    return _from_torchvision(_tv_resnet(models.resnet.BasicBlock, [3, 4, 6, 3]), True, in_channels, init)


@BACKBONES.register("res10")
def res10(in_channels=3, init="kaiming"):
    return _from_torchvision(_tv_resnet(models.resnet.BasicBlock, [1, 1, 1, 1]), False, in_channels, init)


@BACKBONES.register("res50")
def res50(in_channels=3, init="kaiming"):
    return _from_torchvision(_tv_resnet(models.resnet.Bottleneck, [3, 4, 6, 3]), False, in_channels, init)


@BACKBONES.register("res152")
def res152(in_channels=3, init="kaiming"):
    return _from_torchvision(_tv_resnet(models.resnet.Bottleneck, [3, 8, 36, 3]), False, in_channels, init)


@BACKBONES.register("resnext50")
def resnext50(in_channels=3, init="kaiming"):
    net = _tv_resnet(models.resnet.Bottleneck, [3, 4, 6, 3], groups=32, width_per_group=4)
    return _from_torchvision(net, False, in_channels, init)


# ---------------------------------------------------------------- Vision Transformers (lib/models/vit.py, timm)
def _vit_factory(name):
    def factory(in_channels=3, init="kaiming", image_size=(224, 224), drop_path=0.0):
        from . import vit  # timm is imported only when a ViT is built

        return vit.FACTORIES[name](in_channels, image_size, drop_path)

    factory.takes_image_size = True
    return factory


for _name in ("vit_b16", "vit_tiny_p4"):
    BACKBONES.register(_name)(_vit_factory(_name))


# ---------------------------------------------------------------- builder
def build_backbone(name, in_channels=3, init="kaiming", pretrained="", shape_match="error", image_size=None,
                   drop_path=0.0):
    """Build a registered backbone; if `pretrained` is a non-empty local path, load it (ResNets: keys with "fc."
    skipped, lib/models/pretrained.py; ViTs: their own loader with position-embedding resampling).
    `image_size` (H, W) and `drop_path` (stochastic depth rate) are used by the ViTs only."""
    factory = BACKBONES.get(name, "BACKBONE.TYPE")
    if getattr(factory, "takes_image_size", False):
        net = factory(in_channels=in_channels, image_size=tuple(image_size or (224, 224)), drop_path=drop_path)
    else:
        net = factory(in_channels=in_channels, init=init)
    if pretrained:
        if hasattr(net, "load_pretrained"):
            net.load_pretrained(pretrained)
        else:
            from .pretrained import load_pretrained

            load_pretrained(net, pretrained, shape_match=shape_match)
    return net
