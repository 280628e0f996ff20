"""Vision Transformer backbones from timm, LiVT/MAE style (docs/methods/cadel.md, "ViT backbones").

The model is timm's `VisionTransformer` with global average pooling over the patch tokens and
`fc_norm` (no final `norm`), exposed through the same interface as the ResNets in backbones.py:

    forward(x) -> f (B, D)           f = fc_norm(mean_{patch tokens} blocks(embed(x)))
    stage_names                      ("stem", "block0", ..., "block{L-1}")
    stages() / forward_stages(x)     stem = patch embedding + cls token + position embedding;
                                     block i = transformer block i; outputs are tokens (B, 1 + N, D)
    pool(tokens) -> f                the pooling above (so stage-by-stage code gives the same f)
    lr_layer_id(name)                BEiT layer-wise LR decay ids: 0 = embeddings, i + 1 = block i,
                                     L + 1 = everything above the blocks (fc_norm, heads)
    no_weight_decay()                names without weight decay (pos_embed, cls_token)
    load_pretrained(path)            a LOCAL timm / MAE / framework checkpoint (never downloaded)

Names: vit_b16 (ViT-B/16: D 768, 12 blocks, 12 heads; 224 or 384 px from INPUT_SIZE) and
vit_tiny_p4 (D 64, 6 blocks, 4 heads, 4-px patches: the CPU-sized variant for 28/32-px images).
Weights are initialised by timm (BACKBONE.INIT does not apply). timm is imported through
lib/utils/tv.py (torchvision import fix on the CPU wheel).
"""
from functools import partial

from torch import nn

from lib.models.pretrained import fit_problems
from lib.utils.errors import UserError
from lib.utils.state_dict import read_state_dict, strip_prefix
from lib.utils.tv import torchvision  # noqa: F401  (must precede timm: it imports torchvision)

from timm.layers import resample_abs_pos_embed  # noqa: E402
from timm.models.vision_transformer import Block, VisionTransformer  # noqa: E402,F401  (Block: CADEL's ViT aux heads)

# keys of MAE pre-training checkpoints that a classifier does not use (the decoder, the mask token)
_PRETRAIN_ONLY = ("decoder", "mask_token")


class ViTBackbone(VisionTransformer):
    """timm VisionTransformer with `global_pool="avg"`, `fc_norm`, no classifier (num_classes 0)."""

    def __init__(self, image_size=(224, 224), in_channels=3, drop_path=0.0, **arch):
        super().__init__(img_size=tuple(image_size), in_chans=in_channels, num_classes=0, global_pool="avg",
                         fc_norm=True, drop_path_rate=drop_path, **arch)
        depth = len(self.blocks)
        self.stage_names = ("stem",) + tuple(f"block{i}" for i in range(depth))
        self.stage_channels = {n: self.embed_dim for n in self.stage_names}
        self.out_dim = self.embed_dim
        self.num_lr_layers = depth + 2  # ids 0 .. depth + 1

    # -- the backbone interface (backbones.Backbone)
    def embed(self, x):
        """Patch embedding + cls token + position embedding: (B, C, H, W) -> tokens (B, 1 + N, D)."""
        return self.norm_pre(self.patch_drop(self._pos_embed(self.patch_embed(x))))

    def stages(self):
        return [("stem", self.embed)] + [(f"block{i}", b) for i, b in enumerate(self.blocks)]

    def forward_stages(self, x):
        out = {}
        for name, stage in self.stages():
            x = stage(x)
            out[name] = x
        return out

    def forward_features(self, x):
        return self.norm(self.blocks(self.embed(x)))

    def pool(self, tokens):
        """(B, 1 + N, D) -> (B, D): mean over the patch tokens (the cls token is left out), then fc_norm."""
        return self.fc_norm(tokens[:, self.num_prefix_tokens:].mean(dim=1))

    def forward_head(self, x, pre_logits=False):
        return self.pool(x)

    def forward(self, x):
        return self.pool(self.forward_features(x))

    def lr_layer_id(self, name):
        """BEiT/MAE layer id of parameter `name` (relative to this module)."""
        if name in ("cls_token", "pos_embed", "reg_token") or name.startswith("patch_embed"):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_lr_layers - 1

    # -- local checkpoints
    def load_pretrained(self, path):
        """Load a local checkpoint: a timm state dict, an MAE/LiVT file ({"model": ...}), or a checkpoint of
        this framework ({"state_dict": ...} with keys under `net.backbone.`). Position embeddings are
        resampled (bicubic) to this model's grid; the classifier (`head.*`), MAE's final `norm.*` (replaced by
        fc_norm under average pooling, as MAE fine-tuning does) and MAE's decoder are skipped. Every other
        key must exist with the same shape, and every weight of this model but fc_norm must be in the file;
        otherwise one UserError lists the problems. Returns (loaded keys, skipped keys)."""
        state = _read_state_dict(path)
        own = self.state_dict()
        grid = self.patch_embed.grid_size
        loaded, skipped, unexpected, mismatched, to_load = [], [], [], [], {}
        for key, value in state.items():
            if key.startswith(("head.", "norm.")) or key.startswith(_PRETRAIN_ONLY) or key == "head":
                skipped.append(key)
                continue
            if key not in own:
                unexpected.append(key)
                continue
            if key == "pos_embed" and value.shape != own[key].shape:
                value = resample_abs_pos_embed(value.float(), new_size=list(grid),
                                               num_prefix_tokens=self.num_prefix_tokens).to(own[key].dtype)
            if value.shape != own[key].shape:
                mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
                continue
            to_load[key] = value
            loaded.append(key)
        missing = [k for k in own if k not in to_load and not k.startswith("fc_norm.")]
        problems = fit_problems(mismatched, unexpected, missing)
        if problems:
            raise UserError(f"pretrained ViT weights {path} do not fit {type(self).__name__} "
                            f"(D {self.embed_dim}, {len(self.blocks)} blocks, patch {self.patch_embed.patch_size}): "
                            + "; ".join(problems))
        self.load_state_dict(to_load, strict=False)
        return loaded, skipped


def _read_state_dict(path):
    obj = strip_prefix(read_state_dict(path, ("model", "state_dict", "model_ema"), missing_hint=(
        " (ViT checkpoints are never downloaded: put the file there, see the config's header comment)")))
    for prefix in ("net.backbone.", "backbone.", "encoder."):  # a framework / wrapped checkpoint: its backbone only
        if any(k.startswith(prefix) for k in obj):
            return {k[len(prefix):]: v for k, v in obj.items() if k.startswith(prefix)}
    return obj


_LN = partial(nn.LayerNorm, eps=1e-6)


def vit_b16(in_channels=3, image_size=(224, 224), drop_path=0.0):
    """ViT-B/16 (Dosovitskiy et al.; MAE/LiVT fine-tuning form): D 768, 12 blocks, 12 heads, MLP 3072."""
    return ViTBackbone(image_size, in_channels, drop_path, patch_size=16, embed_dim=768, depth=12,
                       num_heads=12, mlp_ratio=4.0, qkv_bias=True, norm_layer=_LN)


def vit_tiny_p4(in_channels=3, image_size=(32, 32), drop_path=0.0):
    """A CPU-sized ViT for 28/32-px images: 4-px patches, D 64, 6 blocks, 4 heads, MLP 256 (~0.3 M parameters)."""
    return ViTBackbone(image_size, in_channels, drop_path, patch_size=4, embed_dim=64, depth=6,
                       num_heads=4, mlp_ratio=4.0, qkv_bias=True, norm_layer=_LN)


FACTORIES = {"vit_b16": vit_b16, "vit_tiny_p4": vit_tiny_p4}
