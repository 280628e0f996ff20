"""A shared trunk with K expert branches (docs/methods/ace.md; RIDE-style layout).

    x ─ trunk (stem, layer1 … layer_{L−1}) ─ f ─┬─ branch_1 (last stage) ─ GAP ─ head_1 ─ z_1
                                                 ├─ branch_2 (copy)       ─ GAP ─ head_2 ─ z_2
                                                 └─ …                                   ─ z_K

Built from any `Backbone` (lib/models/backbones.py) through its `stages()`: res32_cifar shares stem,
layer1, layer2 and copies layer3; the ImageNet ResNets (res10, res50, res152, resnext50) share stem …
layer3 and copy layer4. Branch 1 is the backbone's own last stage, so trunk + branch 1 is exactly the
single backbone. Branches 2..K are deep copies that are **re-initialised independently** with the
backbone's init scheme (the release builds `layermany`, `layermedium`, `layerfew` as separate
modules, hence separate random draws); when the backbone was loaded from BACKBONE.PRETRAINED_MODEL
they keep the loaded weights instead (re-initialising would discard them).

`forward(x)` returns the K logits [z_1, …, z_K] (each B×C). Branches listed in `detach_from` on
(k ≥ `detach_from`, 0-based) see stopgrad(f): their losses do not reach the trunk (docs/methods/ace.md).
"""
import copy
from collections import OrderedDict

from torch import nn

from .backbones import Backbone, CifarBasicBlock, kaiming_cifar_, kaiming_imagenet_, pytorch_init_


def reinit_like_backbone_(module, init="kaiming"):
    """Re-draw `module`'s parameters with the scheme its backbone used (lib/models/backbones.py):
    He et al. CIFAR init for CIFAR BasicBlocks, torchvision's Kaiming (fan_out) for the ImageNet
    ResNets, or every submodule's own reset_parameters() with init "pytorch" (or without convolutions)."""
    if init == "pytorch" or not any(isinstance(m, nn.Conv2d) for m in module.modules()):
        return pytorch_init_(module)
    if any(isinstance(m, CifarBasicBlock) for m in module.modules()):
        return kaiming_cifar_(module)
    return kaiming_imagenet_(module)


class SharedTrunkExperts(nn.Module):
    """K expert branches on one trunk.

    backbone: a `Backbone` (consumed: its stages move into this module).
    num_experts: K ≥ 1.  make_head(in_dim) -> a fresh head module (called K times, in order).
    reinit: re-initialise branches 2..K (else they start as copies of branch 1).
    detach_from: branches k ≥ detach_from (0-based) get a detached trunk feature.
    """

    def __init__(self, backbone: Backbone, num_experts, make_head, reinit=True, init="kaiming", detach_from=1):
        super().__init__()
        stages = backbone.stages()
        if len(stages) < 2:
            raise ValueError("a shared trunk needs a backbone with at least two stages")
        self.trunk_stage_names = tuple(n for n, _ in stages[:-1])
        self.branch_stage_name = stages[-1][0]
        self.trunk = nn.Sequential(OrderedDict(stages[:-1]))
        last = stages[-1][1]
        branches = [last]
        for _ in range(1, num_experts):
            b = copy.deepcopy(last)
            branches.append(reinit_like_backbone_(b, init) if reinit else b)
        self.branches = nn.ModuleList(branches)
        self.out_dim = backbone.out_dim
        self.heads = nn.ModuleList([make_head(self.out_dim) for _ in range(num_experts)])
        self.detach_from = detach_from

    @property
    def num_experts(self):
        return len(self.branches)

    def expert_modules(self, k):
        """Branch and head of expert k (0-based)."""
        return [self.branches[k], self.heads[k]]

    def forward(self, x):
        f = self.trunk(x)
        out = []
        for k, (branch, head) in enumerate(zip(self.branches, self.heads)):
            h = f.detach() if k >= self.detach_from else f  # stop-gradient (docs/methods/ace.md)
            out.append(head(Backbone.pool(branch(h))))
        return out
