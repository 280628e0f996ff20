"""One backbone carrying classifier heads at increasing depth (CADEL; docs/methods/cadel.md).

Head k < K reads the output of a backbone stage named in `taps` (e.g. "layer2", "layer3" of a ResNet;
"block7", "block9" of a ViT) through an aux head (lib/models/aux_heads.py); head K reads the pooled
final feature f = backbone.pool(last stage output). Every head shares the backbone below its tap.

The backbone is used only through its interface (lib/models/backbones.py): `stage_names`,
`stage_channels`, `forward_stages(x)` -> {stage name: output} and `pool(last output)`; nothing here
copies a backbone's forward, so any backbone with that interface gets taps.
"""
from torch import nn

from lib.utils.errors import UserError

from .network import bn_to_eval


def default_taps(backbone, num_aux=2):
    """The outputs of the `num_aux` stages before the last one (stem excluded): with 2, the last-but-two
    and last-but-one stages, i.e. layer2/layer3 of a 4-stage ResNet and layer1/layer2 of res32_cifar."""
    stages = [n for n in backbone.stage_names if n != "stem"]
    if len(stages) < num_aux + 1:
        raise UserError(f"backbone has stages {', '.join(stages)}: too few for {num_aux} automatic taps; "
                        "name them in CADEL.TAPS")
    return stages[-num_aux - 1:-1]


def check_taps(backbone, taps, key="CADEL.TAPS"):
    """Taps must be stage names of this backbone, in forward order, without repeats."""
    names = list(backbone.stage_names)
    for t in taps:
        if t not in names:
            raise UserError(f"{key}: {t!r} is not a stage of this backbone; valid: {', '.join(names)}")
    order = [names.index(t) for t in taps]
    if order != sorted(set(order)):
        raise UserError(f"{key} must name distinct stages from shallow to deep, got {list(taps)}")
    return list(taps)


class TappedNetwork(nn.Module):
    """forward(x) -> [z_1, ..., z_K] (each B x C), shallow to deep.

    freeze_backbone: backbone parameters get no gradient (CADEL Places-LT: backbone LR 0 as released;
    its BN statistics still move unless bn_eval). bn_eval: the backbone's BatchNorm stays in eval mode.
    """

    def __init__(self, backbone, taps, aux_heads, last_head, freeze_backbone=False, bn_eval=False):
        super().__init__()
        if len(taps) != len(aux_heads):
            raise ValueError("one aux head per tap")
        self.backbone = backbone
        self.taps = list(taps)
        self.aux_heads = nn.ModuleList(aux_heads)
        self.last_head = last_head
        self.last_stage = backbone.stage_names[-1]
        self.bn_eval = bn_eval
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    @property
    def num_heads(self):
        return len(self.aux_heads) + 1

    def heads(self):
        """The K head modules, shallow to deep."""
        return list(self.aux_heads) + [self.last_head]

    def train(self, mode=True):
        super().train(mode)
        if mode and self.bn_eval:
            bn_to_eval(self.backbone)
        return self

    def forward(self, x):
        feats = self.backbone.forward_stages(x)
        logits = [head(feats[name]) for name, head in zip(self.taps, self.aux_heads)]
        logits.append(self.last_head(self.backbone.pool(feats[self.last_stage])))
        return logits
