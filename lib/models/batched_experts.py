"""K structurally identical networks run together as one wide network (NCL.BATCHED_EXPERTS).

The experts stay K separate modules (their parameters, buffers, state-dict keys and optimizer
state are those of K ordinary networks); only the forward pass differs. Every layer of the K
networks is executed as ONE layer of a K-times wider network, built on the fly from the experts'
own tensors, so gradients flow back to each expert's parameters:

    activations   (B, K·C, H, W): the experts' channels side by side, expert-major
    Conv2d        weights concatenated along the output channels, groups·K groups
                  (the first conv sees the shared input: plain conv with K·C_out outputs)
    BatchNorm2d   one BN over K·C channels = K per-expert BNs (statistics are per channel);
                  running statistics are written back to each expert's buffers
    ReLU, MaxPool channel-wise, unchanged
    option-A shortcut, torchvision BasicBlock / Bottleneck: the same block arithmetic
    pooled feature (B, K·d) -> (K, B, d);  FC / cos heads and Linear layers as batched matmuls

Outputs equal the K separate forwards up to floating-point summation order. Supported: the ResNets
of lib/models/backbones.py (res32_cifar, res34_cifar, res10, res50, res152, resnext50), heads FC and
cos, MLPs of Linear + ReLU; anything else is refused by `check_batchable` with a UserError naming
NCL.BATCHED_EXPERTS. Functions here take the module lists at call time (nothing is cached), so
DataParallel replicas use their own tensors.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..utils.errors import UserError
from ..utils.tv import models as tv_models
from .backbones import Backbone, CifarBasicBlock, OptionAShortcut
from .heads import FC, CosineHead

_TV_BLOCKS = (tv_models.resnet.BasicBlock, tv_models.resnet.Bottleneck)
_BN = nn.modules.batchnorm._BatchNorm
_LINEAR = (nn.Linear, FC, CosineHead)  # exact types: subclasses (LWS) compute something else


# ---------------------------------------------------------------- checks
def check_batchable(module, key="NCL.BATCHED_EXPERTS", where=""):
    """Raise a UserError if `module` holds a layer the batched forward does not implement."""
    where = where or type(module).__name__
    if isinstance(module, (Backbone, nn.Sequential, CifarBasicBlock, *_TV_BLOCKS)):
        for name, child in module.named_children():
            check_batchable(child, key, f"{where}.{name}")
    elif isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise UserError(f"{key} True: conv {where} uses padding {module.padding!r}/{module.padding_mode}; "
                            f"set {key} False")
    elif isinstance(module, (_BN, nn.ReLU, nn.MaxPool2d, nn.Identity, OptionAShortcut)) or type(module) in _LINEAR:
        pass
    else:
        raise UserError(f"{key} True does not support the layer {where} ({type(module).__name__}); "
                        f"set {key} False to run the experts one after another")


def check_same_structure(nets, key="NCL.BATCHED_EXPERTS"):
    """All K networks must have the same parameter and buffer names and shapes."""
    ref = {k: tuple(v.shape) for k, v in nets[0].state_dict().items()}
    for i, net in enumerate(nets[1:], start=1):
        other = {k: tuple(v.shape) for k, v in net.state_dict().items()}
        if other != ref:
            raise UserError(f"{key} True needs identical experts; expert {i} differs from expert 0")


# ---------------------------------------------------------------- layers
def _cat(tensors):
    return torch.cat(list(tensors))


def _conv(mods, x, shared):
    m = mods[0]
    k = len(mods)
    w = _cat(c.weight for c in mods)
    b = _cat(c.bias for c in mods) if m.bias is not None else None
    if shared and m.groups == 1:  # the same input for every expert: one conv with K·C_out outputs
        return F.conv2d(x, w, b, m.stride, m.padding, m.dilation, 1)
    if shared:
        x = x.repeat(1, k, 1, 1)
    return F.conv2d(x, w, b, m.stride, m.padding, m.dilation, m.groups * k)


def _batch_norm(mods, x):
    """One BN over K·C channels; in training mode the running statistics (and num_batches_tracked) of every
    expert's BN are updated exactly as K separate BN forwards would."""
    m = mods[0]
    track = m.track_running_stats and m.running_mean is not None
    w = _cat(b.weight for b in mods) if m.affine else None
    bias = _cat(b.bias for b in mods) if m.affine else None
    with torch.no_grad():
        rm = _cat(b.running_mean for b in mods) if track else None
        rv = _cat(b.running_var for b in mods) if track else None
        nbt = m.num_batches_tracked.clone() if track else None
    if type(m) in (nn.BatchNorm2d, nn.BatchNorm1d):
        update = m.training and track
        factor = 0.0 if m.momentum is None else m.momentum
        if update:
            nbt.add_(1)
            if m.momentum is None:
                factor = 1.0 / float(nbt)
        y = F.batch_norm(x, rm if (not m.training or track) else None, rv if (not m.training or track) else None,
                         w, bias, m.training or not track, factor, m.eps)
    else:  # e.g. SyncBatchNorm (TRAIN.SYNCBN): its own forward on the concatenated tensors
        state = {"weight": w, "bias": bias, "running_mean": rm, "running_var": rv, "num_batches_tracked": nbt}
        y = functional_call(m, {k: v for k, v in state.items() if v is not None}, (x,), strict=False)
        update = m.training and track
    if update:
        with torch.no_grad():
            c = m.num_features
            for i, b in enumerate(mods):
                b.running_mean.copy_(rm[i * c:(i + 1) * c])
                b.running_var.copy_(rv[i * c:(i + 1) * c])
                b.num_batches_tracked.copy_(nbt)
    return y


def _option_a(mods, x, k):
    pad = mods[0].pad
    sub = x[:, :, ::2, ::2]
    c = sub.shape[1] // k
    return torch.cat([F.pad(sub[:, i * c:(i + 1) * c], (0, 0, 0, 0, pad, pad)) for i in range(k)], dim=1)


def _children(mods, name):
    return [getattr(m, name) for m in mods]


def run_maps(mods, x, shared=True):
    """Batched forward of K identical feature-map modules. `x` is the shared input (B, C, H, W) when
    `shared`, else the experts' activations side by side (B, K·C, H, W). Returns (B, K·C', H', W')."""
    m = mods[0]
    k = len(mods)
    if isinstance(m, nn.Conv2d):
        return _conv(mods, x, shared)
    if isinstance(m, nn.Sequential):
        for name, _ in m.named_children():
            x = run_maps(_children(mods, name), x, shared)
            shared = False
        return x.repeat(1, k, 1, 1) if shared else x
    if shared:  # every layer below works on the side-by-side activations
        x = x.repeat(1, k, 1, 1)
    if isinstance(m, _BN):
        return _batch_norm(mods, x)
    if isinstance(m, nn.ReLU):
        return F.relu(x)
    if isinstance(m, nn.MaxPool2d):
        return F.max_pool2d(x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode)
    if isinstance(m, nn.Identity):
        return x
    if isinstance(m, OptionAShortcut):
        return _option_a(mods, x, k)
    if isinstance(m, CifarBasicBlock):
        out = F.relu(run_maps(_children(mods, "bn1"), run_maps(_children(mods, "conv1"), x, False), False))
        out = run_maps(_children(mods, "bn2"), run_maps(_children(mods, "conv2"), out, False), False)
        return F.relu(out + run_maps(_children(mods, "shortcut"), x, False))
    if isinstance(m, _TV_BLOCKS):
        out = F.relu(run_maps(_children(mods, "bn1"), run_maps(_children(mods, "conv1"), x, False), False))
        out = run_maps(_children(mods, "bn2"), run_maps(_children(mods, "conv2"), out, False), False)
        if hasattr(m, "conv3"):
            out = F.relu(out)
            out = run_maps(_children(mods, "bn3"), run_maps(_children(mods, "conv3"), out, False), False)
        identity = x if m.downsample is None else run_maps(_children(mods, "downsample"), x, False)
        return F.relu(out + identity)
    raise UserError(f"NCL.BATCHED_EXPERTS True does not support {type(m).__name__}")


def backbone_features(backbones, x):
    """Pooled features of K backbones on the same input x (B, C, H, W): (K, B, d)."""
    fmap = x
    shared = True
    for name in backbones[0].stage_names:
        fmap = run_maps(_children(backbones, name), fmap, shared)
        shared = False
    k, b = len(backbones), x.shape[0]
    return Backbone.pool(fmap).view(b, k, -1).transpose(0, 1)


def run_vectors(mods, f):
    """Batched forward of K identical vector modules (Linear, ReLU, Sequential of them, FC / cos heads)
    on per-expert inputs f (K, B, d): (K, B, d')."""
    m = mods[0]
    if type(m) in (nn.Linear, FC):
        w = torch.stack([h.weight for h in mods]).transpose(1, 2)  # (K, d, C)
        if m.bias is None:
            return torch.bmm(f, w)
        return torch.baddbmm(torch.stack([h.bias for h in mods]).unsqueeze(1), f, w)
    if type(m) is CosineHead:  # s·<f̂, ŵ_c> + b_c
        w = F.normalize(torch.stack([h.weight for h in mods]), dim=2).transpose(1, 2)
        z = m.scale * torch.bmm(F.normalize(f, dim=2), w)
        return z + torch.stack([h.bias for h in mods]).unsqueeze(1) if m.bias is not None else z
    if isinstance(m, nn.ReLU):
        return F.relu(f)
    if isinstance(m, nn.Identity):
        return f
    if isinstance(m, nn.Sequential):
        for name, _ in m.named_children():
            f = run_vectors(_children(mods, name), f)
        return f
    raise UserError(f"NCL.BATCHED_EXPERTS True does not support the head {type(m).__name__}; "
                    "valid heads: FC, cos (or set NCL.BATCHED_EXPERTS False)")
