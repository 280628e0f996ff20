"""Config-driven image transforms (docs/data.md).

A pipeline maps a PIL image (already in cfg.COLOR_SPACE, "RGB" or "L") to a float32 tensor C x H x W:

    named PIL-level ops (in the listed order) [-> Resize(INPUT_SIZE)] -> ToImage -> ToDtype(float32, scale=True)
    -> tensor-level ops (cutout, in the listed order) -> Normalize (always last) -> plain tensor

Image size rule: every pipeline ends at INPUT_SIZE, so any image can reach a batch. The ops in FIXED_SIZE
produce exactly INPUT_SIZE (random_crop pads smaller images); shorter_resize_for_crop produces another
size; every other op keeps the size. Unless the last size-changing op of the list is in FIXED_SIZE, a
final Resize(INPUT_SIZE) (bilinear, antialiased; the identity for an image already of INPUT_SIZE) is
appended after the PIL-level ops. So an empty TEST_TRANSFORMS passes INPUT_SIZE images unchanged and
resizes any other image (e.g. one 40x28 image in a 28x28 set) instead of failing at the batch.

Names come from TRANSFORMS.TRAIN_TRANSFORMS / TEST_TRANSFORMS / SECOND_VIEW_TRANSFORMS; their
parameters from TRANSFORMS.PROCESS_DETAIL and the size S = (H, W) = cfg.INPUT_SIZE. An empty list
means ToTensor + Normalize only. Every op is a torchvision.transforms.v2 object or a module-level
class, so pipelines pickle (DataLoader workers).
"""
import torch

from ..utils.errors import UserError
from ..utils.registry import Registry, choose
from ..utils.tv import v2

TRANSFORMS = Registry("transform")

# Ops applied to the float tensor in [0, 1] (before Normalize) rather than to the PIL image.
TENSOR_LEVEL = {"cutout"}
# Ops whose output is exactly INPUT_SIZE, and the other ops that change the size (image size rule above).
FIXED_SIZE = {"random_crop", "random_resized_crop", "normal_resize", "center_crop"}
CHANGES_SIZE = FIXED_SIZE | {"shorter_resize_for_crop"}

# (mean, std) per named normalisation; 1-value constants are for grayscale datasets.
NORMALIZE_CONSTANTS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),  # ImageNet-LT, Places-LT
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "inat": ((0.466, 0.471, 0.380), (0.195, 0.194, 0.192)),  # NCL, CADEL
    "fashion_mnist": ((0.2860,), (0.3530,)),
}


def _channels(cfg):
    space = cfg.COLOR_SPACE
    if space not in ("RGB", "L"):
        raise UserError(f"COLOR_SPACE must be 'RGB' or 'L', got {space!r}")
    return 3 if space == "RGB" else 1


def _size(cfg):
    try:
        h, w = (int(s) for s in cfg.INPUT_SIZE)
    except (TypeError, ValueError):
        raise UserError(f"INPUT_SIZE must be (height, width), got {cfg.INPUT_SIZE!r}") from None
    if h <= 0 or w <= 0:
        raise UserError(f"INPUT_SIZE must be positive, got {cfg.INPUT_SIZE!r}")
    return h, w


def _fit_channels(values, channels, key):
    """Repeat a 1-value constant to 3 channels; average a 3-value constant to 1 channel (COLOR_SPACE L)."""
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    if len(values) == 1:
        return values * channels
    if len(values) == 3 and channels == 1:
        return (sum(values) / 3.0,)
    raise UserError(f"{key} has {len(values)} values; expected 1 or {channels} "
                    f"(COLOR_SPACE with {channels} channel(s))")


def normalize_stats(cfg):
    """(mean, std) for cfg.TRANSFORMS.NORMALIZE fitted to the channel count, or None for 'none'."""
    name = cfg.TRANSFORMS.NORMALIZE
    channels = _channels(cfg)
    if name == "none":
        return None
    if name == "custom":
        mean, std = list(cfg.TRANSFORMS.MEAN), list(cfg.TRANSFORMS.STD)
        if not mean or not std or len(mean) != len(std):
            raise UserError("TRANSFORMS.NORMALIZE is 'custom': TRANSFORMS.MEAN and TRANSFORMS.STD must be "
                            f"non-empty lists of equal length, got {mean} and {std}")
        key = "TRANSFORMS.MEAN/STD"
    elif name in NORMALIZE_CONSTANTS:
        mean, std = NORMALIZE_CONSTANTS[name]
        key = f"TRANSFORMS.NORMALIZE={name}"
    else:
        valid = ", ".join(sorted(NORMALIZE_CONSTANTS) + ["custom", "none"])
        raise UserError(f"unknown TRANSFORMS.NORMALIZE {name!r}; valid: {valid}")
    mean, std = _fit_channels(mean, channels, key), _fit_channels(std, channels, key)
    if any(s <= 0 for s in std):
        raise UserError(f"{key}: every std must be > 0, got {std}")
    return mean, std


class Cutout(torch.nn.Module):
    """Cutout (DeVries & Taylor 2017), as used by PaCo/NCL: `holes` times, draw a centre (y, x) uniformly
    over the H x W image and zero the square [y - L//2, y + L//2) x [x - L//2, x + L//2) clipped at the
    borders, on every channel. Runs on the [0, 1] tensor BEFORE normalisation. Uses torch's RNG."""

    def __init__(self, length=16, holes=1):
        super().__init__()
        self.length, self.holes = int(length), int(holes)

    def forward(self, img):
        h, w = img.shape[-2:]
        img = img.clone()
        for _ in range(self.holes):
            y = int(torch.randint(h, ()))
            x = int(torch.randint(w, ()))
            y1, y2 = max(0, y - self.length // 2), min(h, y + self.length // 2)
            x1, x2 = max(0, x - self.length // 2), min(w, x + self.length // 2)
            img[..., y1:y2, x1:x2] = 0
        return img

    def extra_repr(self):
        return f"length={self.length}, holes={self.holes}"


def _with_prob(t, p):
    """Apply `t` with probability p (p >= 1: always, p <= 0: never)."""
    p = float(p)
    if p >= 1.0:
        return t
    if p <= 0.0:
        return v2.Identity()
    return v2.RandomApply([t], p=p)


def _fill(value, channels, key):
    """A per-channel fill list from an int or a sequence."""
    if isinstance(value, (int, float)):
        return [int(value)] * channels
    return [int(round(v)) for v in _fit_channels(value, channels, key)]


# ---------------------------------------------------------------- named ops: builder(cfg) -> transform
@TRANSFORMS.register("random_crop")
def _random_crop(cfg):
    """RandomCrop(S, padding=PADDING, zero fill); smaller inputs are padded up to S (pad_if_needed)."""
    pad = int(cfg.TRANSFORMS.PROCESS_DETAIL.RANDOM_CROP.PADDING)
    return v2.RandomCrop(_size(cfg), padding=pad or None, pad_if_needed=True, fill=0)


@TRANSFORMS.register("random_resized_crop")
def _random_resized_crop(cfg):
    d = cfg.TRANSFORMS.PROCESS_DETAIL.RANDOM_RESIZED_CROP
    return v2.RandomResizedCrop(_size(cfg), scale=tuple(d.SCALE), ratio=tuple(d.RATIO))


@TRANSFORMS.register("random_horizontal_flip")
def _random_horizontal_flip(cfg):
    return v2.RandomHorizontalFlip(p=0.5)


@TRANSFORMS.register("shorter_resize_for_crop")
def _shorter_resize_for_crop(cfg):
    """Resize the shorter side to int(S / SHORTER_RESIZE_RATIO) (256 for S = 224 and ratio 0.875).
    S = max(H, W) so the following center_crop always fits (BoT uses H; same for square inputs)."""
    ratio = float(cfg.TRANSFORMS.PROCESS_DETAIL.SHORTER_RESIZE_RATIO)
    if not 0 < ratio <= 1:
        raise UserError(f"TRANSFORMS.PROCESS_DETAIL.SHORTER_RESIZE_RATIO must be in (0, 1], got {ratio}")
    return v2.Resize(int(max(_size(cfg)) / ratio))


@TRANSFORMS.register("normal_resize")
def _normal_resize(cfg):
    return v2.Resize(_size(cfg))


@TRANSFORMS.register("center_crop")
def _center_crop(cfg):
    return v2.CenterCrop(_size(cfg))


@TRANSFORMS.register("color_jitter")
def _color_jitter(cfg):
    """ColorJitter(BRIGHTNESS, CONTRAST, SATURATION, HUE) applied with probability P (P = 1: always)."""
    d = cfg.TRANSFORMS.PROCESS_DETAIL.COLOR_JITTER
    jitter = v2.ColorJitter(brightness=d.BRIGHTNESS, contrast=d.CONTRAST, saturation=d.SATURATION, hue=d.HUE)
    return _with_prob(jitter, d.P)


@TRANSFORMS.register("random_grayscale")
def _random_grayscale(cfg):
    """Grayscale with probability P; the channel count is kept."""
    return v2.RandomGrayscale(p=float(cfg.TRANSFORMS.PROCESS_DETAIL.RANDOM_GRAYSCALE.P))


class PILGaussianBlur:
    """PIL's GaussianBlur(radius = sigma), sigma ~ U[lo, hi] from torch's RNG (seeded augmentation): MoCo v2's and
    NCL's release blur, whose radius is the Gaussian's standard deviation in pixels, on the whole image."""

    def __init__(self, sigma):
        self.lo, self.hi = float(sigma[0]), float(sigma[1])

    def __call__(self, img):
        from PIL import ImageFilter

        s = self.lo + (self.hi - self.lo) * float(torch.rand(()))
        return img.filter(ImageFilter.GaussianBlur(radius=s))


@TRANSFORMS.register("gaussian_blur")
def _gaussian_blur(cfg):
    """Gaussian blur with sigma ~ U[SIGMA] (PIL radius = sigma, as the NCL/MoCo v2 releases), with probability P."""
    d = cfg.TRANSFORMS.PROCESS_DETAIL.GAUSSIAN_BLUR
    return _with_prob(PILGaussianBlur(d.SIGMA), d.P)


_AA_POLICIES = {"cifar10": "CIFAR10", "imagenet": "IMAGENET", "svhn": "SVHN"}


@TRANSFORMS.register("autoaugment")
def _autoaugment(cfg):
    """torchvision AutoAugment (POLICY, default the CIFAR10 policy of 25 sub-policies) with FILL per channel.
    torchvision's magnitude mapping may differ slightly from the PaCo/NCL implementation (unverified)."""
    d = cfg.TRANSFORMS.PROCESS_DETAIL.AUTOAUGMENT
    policy = choose(str(d.POLICY).lower(), _AA_POLICIES, "TRANSFORMS.PROCESS_DETAIL.AUTOAUGMENT.POLICY")
    fill = _fill(d.FILL, _channels(cfg), "TRANSFORMS.PROCESS_DETAIL.AUTOAUGMENT.FILL")
    return v2.AutoAugment(policy=getattr(v2.AutoAugmentPolicy, _AA_POLICIES[policy]), fill=fill)


@TRANSFORMS.register("randaugment")
def _randaugment(cfg):
    """torchvision RandAugment(num_ops=NUM_OPS, magnitude=MAGNITUDE), fill 0.
    NCL used timm's `rand-n2-m10-mstd0.5` (each op with p 0.5, magnitude noise std 0.5, fill = ImageNet
    mean pixel, timm's 15-op set); this is the torchvision variant, not an exact replica."""
    d = cfg.TRANSFORMS.PROCESS_DETAIL.RANDAUGMENT
    return v2.RandAugment(num_ops=int(d.NUM_OPS), magnitude=int(d.MAGNITUDE))


@TRANSFORMS.register("cutout")
def _cutout(cfg):
    d = cfg.TRANSFORMS.PROCESS_DETAIL.CUTOUT
    return Cutout(length=d.LENGTH, holes=d.HOLES)


@TRANSFORMS.register("normalize")
def _normalize_marker(cfg):
    """Accepted for BoT-style lists; Normalize is always appended last anyway."""
    return None


# ---------------------------------------------------------------- pipelines
class Pipeline(v2.Compose):
    """v2.Compose defined here so that unpickling one (e.g. in a spawned DataLoader worker) imports this
    module, and with it the torchvision shim, before any torchvision object inside is restored."""


def needs_final_resize(names):
    """True unless the last size-changing op in `names` produces exactly INPUT_SIZE (image size rule)."""
    sizing = [n for n in names if n in CHANGES_SIZE]
    return not sizing or sizing[-1] not in FIXED_SIZE


def build_transform(names, cfg, key="TRANSFORMS.TRAIN_TRANSFORMS"):
    """Pipeline for the transform `names` (a list/tuple); `key` names the config key in error messages.
    Ends at INPUT_SIZE (a final Resize when the ops do not fix the size: module docstring)."""
    if isinstance(names, str):
        raise UserError(f"{key} must be a list of transform names, got the string {names!r}")
    _channels(cfg)  # validate COLOR_SPACE early
    pil_ops, tensor_ops = [], []
    for name in names:
        op = TRANSFORMS.get(name, key)(cfg)
        if op is not None:
            (tensor_ops if name in TENSOR_LEVEL else pil_ops).append(op)
    if needs_final_resize(list(names)):
        pil_ops.append(v2.Resize(_size(cfg)))
    ops = pil_ops + [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)] + tensor_ops
    stats = normalize_stats(cfg)
    if stats is not None:
        ops.append(v2.Normalize(mean=list(stats[0]), std=list(stats[1])))
    ops.append(v2.ToPureTensor())  # a plain torch.Tensor, not a tv_tensors.Image
    return Pipeline(ops)


def build_transforms(cfg):
    """{"train": ..., "test": ..., "second_view": ... or None (SECOND_VIEW_TRANSFORMS empty)}."""
    t = cfg.TRANSFORMS
    second = list(t.SECOND_VIEW_TRANSFORMS)
    return {
        "train": build_transform(t.TRAIN_TRANSFORMS, cfg, "TRANSFORMS.TRAIN_TRANSFORMS"),
        "test": build_transform(t.TEST_TRANSFORMS, cfg, "TRANSFORMS.TEST_TRANSFORMS"),
        "second_view": build_transform(second, cfg, "TRANSFORMS.SECOND_VIEW_TRANSFORMS") if second else None,
    }
