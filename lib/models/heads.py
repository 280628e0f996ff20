"""Classifier heads.

Notation: f is the feature (B, d), W ∈ R^{C×d} with rows w_c, x̂ = x/‖x‖, s the scale.
Every head exposes `.weight` (C×d Parameter) and `.bias` (C Parameter or None), so post-hoc
transforms (τ-norm, MaxNorm) act on all of them the same way.
Constructor: `(in_dim, num_classes, bias=True, scale=<class default>)`; each class says which
arguments it uses and ignores the others.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from lib.utils.registry import Registry

HEADS = Registry("classifier")


def _uniform_weight(num_classes, in_dim):
    bound = 1.0 / math.sqrt(in_dim)
    return nn.Parameter(torch.empty(num_classes, in_dim).uniform_(-bound, bound))


@HEADS.register("FC")
class FC(nn.Linear):
    """z_c = w_c·f + b_c. Uses `bias`; ignores `scale`. PyTorch default Linear init."""

    def __init__(self, in_dim, num_classes, bias=True, scale=None):
        super().__init__(in_dim, num_classes, bias=bias)


@HEADS.register("cos")
class CosineHead(nn.Module):
    """NCL cosine head: z_c = s·⟨f̂, ŵ_c⟩ + b_c. Uses `bias` (init 0, trainable) and `scale` (default 16).
    w ~ U(−1/√d, 1/√d)."""

    def __init__(self, in_dim, num_classes, bias=True, scale=16.0):
        super().__init__()
        self.scale = float(scale)
        self.weight = _uniform_weight(num_classes, in_dim)
        self.bias = nn.Parameter(torch.zeros(num_classes)) if bias else None

    def forward(self, f):
        z = self.scale * F.linear(F.normalize(f, dim=1), F.normalize(self.weight, dim=1))
        return z + self.bias if self.bias is not None else z


@HEADS.register("FCNorm")
class FCNorm(nn.Module):
    """Normalised linear head (LDAM's NormedLinear): z_c = ⟨f̂, ŵ_c⟩. No scale, no bias: ignores
    `bias` and `scale` (the LDAM loss multiplies by s = 30). `.bias` is None."""

    def __init__(self, in_dim, num_classes, bias=True, scale=None):
        super().__init__()
        # LDAM init: U(-1, 1), then each class vector rescaled to (about) unit norm.
        w = torch.empty(num_classes, in_dim).uniform_(-1, 1)
        self.weight = nn.Parameter(F.normalize(w, dim=1))
        self.register_parameter("bias", None)

    def forward(self, f):
        return F.linear(F.normalize(f, dim=1), F.normalize(self.weight, dim=1))


@HEADS.register("LWS")
class LWS(nn.Linear):
    """Learnable weight scaling: z_c = σ_c·(w_c·f + b_c), σ ∈ R^C initialised to 1.
    Uses `bias`; ignores `scale`. BoT's re-balancing stage calls `freeze_linear()` so only σ trains;
    ACE trains W, b and σ together."""

    def __init__(self, in_dim, num_classes, bias=True, scale=None):
        super().__init__(in_dim, num_classes, bias=bias)
        self.scales = nn.Parameter(torch.ones(num_classes))

    def freeze_linear(self):
        """Stop gradients to W and b (σ stays trainable)."""
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        return self

    def forward(self, f):
        return self.scales * super().forward(f)


@HEADS.register("CosNorm")
class CosNorm(nn.Module):
    """OLTR cosine-norm head: z_c = s·⟨g(f), ŵ_c⟩, g(f) = (‖f‖/(1+‖f‖))·f̂.
    Uses `scale` (default 30, as CADEL); no bias (ignores `bias`, `.bias` is None). W ~ U(±1/√d)."""

    def __init__(self, in_dim, num_classes, bias=True, scale=30.0):
        super().__init__()
        self.scale = float(scale)
        self.weight = _uniform_weight(num_classes, in_dim)
        self.register_parameter("bias", None)

    def forward(self, f):
        norm = f.norm(dim=1, keepdim=True)
        g = (norm / (1 + norm)) * F.normalize(f, dim=1)
        return self.scale * F.linear(g, F.normalize(self.weight, dim=1))


def build_head(name, in_dim, num_classes, bias=True, scale=None):
    """Build a registered head; `scale=None` keeps the class default (cos 16, CosNorm 30)."""
    cls = HEADS.get(name, "CLASSIFIER.TYPE")
    kwargs = {"bias": bias}
    if scale is not None:
        kwargs["scale"] = scale
    return cls(in_dim, num_classes, **kwargs)
