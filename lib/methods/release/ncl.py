"""NCL's release (Bazinga699/NCL): its YAML spellings -> our keys, and its behaviour when a release YAML is loaded.

A YAML without METHOD that uses NCL's names (NIL_NBOD, multi_network_* combiners, BACKBONE.MULTI_NETWORK_TYPE)
is an NCL release config; it loads as shipped and then runs as the release ran (RELEASE_BEHAVIOUR, unless the
YAML or the command line sets the key), with one notice per translation.
"""
import os

from ...utils.unused_keys import accept_unused
from . import apply_release_behaviour
from ...utils.errors import UserError

RELEASE_COMBINERS = ("multi_network_default", "multi_network_default_CON")
RELEASE_SAMPLERS = {  # TRAIN.SAMPLER.MULTI_NETWORK_TYPE[0] -> (TRAIN.SAMPLER.TYPE, WEIGHTED_SAMPLER.TYPE)
    "default": ("default", None), "weighted_balance": ("weighted sampler", "balance"),
    "weighted_square": ("weighted sampler", "square"), "weighted_progressive": ("weighted sampler", "progressive"),
}
_CIFAR_STRONG = ('TRAIN_TRANSFORMS ("random_crop", "random_horizontal_flip", "autoaugment", "cutout"), '
                 "NORMALIZE cifar (AutoAugment CIFAR10 policy with FILL 128, Cutout LENGTH 16)")
_CIFAR_SECOND = ('SECOND_VIEW_TRANSFORMS ("random_resized_crop", "random_horizontal_flip", "color_jitter", '
                 '"random_grayscale", "gaussian_blur") with RANDOM_RESIZED_CROP.SCALE (0.2, 1.0), COLOR_JITTER '
                 "(0.4, 0.4, 0.4, HUE 0.1, P 0.8), RANDOM_GRAYSCALE.P 0.2, GAUSSIAN_BLUR (P 0.5, SIGMA (0.1, 2.0))")
_RANDCLS = ('TRAIN_TRANSFORMS ("random_resized_crop", "random_horizontal_flip", "color_jitter", "randaugment"), '
            'TEST_TRANSFORMS ("shorter_resize_for_crop", "center_crop"), COLOR_JITTER (0.4, 0.4, 0.4, HUE 0, P 1), '
            "RANDAUGMENT (NUM_OPS 2, MAGNITUDE 10; torchvision's, the release used timm's rand-n2-m10-mstd0.5)")
_SIM_SIM = ('("random_resized_crop", "color_jitter", "random_grayscale", "gaussian_blur", '
            '"random_horizontal_flip") for TRAIN_TRANSFORMS and SECOND_VIEW_TRANSFORMS, TEST_TRANSFORMS '
            '("shorter_resize_for_crop", "center_crop"), NORMALIZE imagenet')
RELEASE_DATASETS = {  # the release's dataset class -> the named transforms that reproduce its hard-coded pipeline
    "MULTI_NETWORK_CIFAR_AUGPLIS": _CIFAR_STRONG + ", TEST_TRANSFORMS ()",
    "MULTI_NETWORK_CIFAR_MOCO_AUGPLIS": _CIFAR_STRONG + ", TEST_TRANSFORMS (), " + _CIFAR_SECOND,
    "MULTI_NETWORK_CIFAR_AUGPLIS_NCL_PLUS": _CIFAR_STRONG + " (NCL++'s INTRA_N copies are not implemented: one view)",
    "ImageNet_LT": _RANDCLS + ", NORMALIZE imagenet",
    "iNaturalist": _RANDCLS + ", NORMALIZE inat",
    "Places_LT_MOCO": _SIM_SIM,
}
# second views filled in for a two-view release dataset class when TRANSFORMS.SECOND_VIEW_TRANSFORMS is unset
SECOND_VIEWS = {
    "MULTI_NETWORK_CIFAR_MOCO_AUGPLIS": (
        ("random_resized_crop", "random_horizontal_flip", "color_jitter", "random_grayscale", "gaussian_blur"),
        {"RANDOM_RESIZED_CROP.SCALE": (0.2, 1.0), "COLOR_JITTER.HUE": 0.1, "COLOR_JITTER.P": 0.8,
         "RANDOM_GRAYSCALE.P": 0.2, "GAUSSIAN_BLUR.P": 0.5, "GAUSSIAN_BLUR.SIGMA": (0.1, 2.0)}),
    "Places_LT_MOCO": (
        ("random_resized_crop", "color_jitter", "random_grayscale", "gaussian_blur", "random_horizontal_flip"),
        {"COLOR_JITTER.HUE": 0.0, "COLOR_JITTER.P": 1.0, "RANDOM_GRAYSCALE.P": 0.2, "GAUSSIAN_BLUR.P": 0.5}),
}
# what a release YAML runs with (docs/deviations.md): key -> (value, why)
RELEASE_BEHAVIOUR = {
    "LOSS.HCM_FILL": ("zero", "the hard-category logits are z * M: unselected classes stay in the softmax at 0"),
    "TRAIN.DROP_LAST": (True, "the release's training loader drops the last partial batch"),
}
MOCO_RELEASE_BEHAVIOUR = {
    "NCL.MOCO.REPLICATE_RELEASE_QUIRKS": (True, "EMA K times per step after the forward, frozen key projector, "
                                                "key encoder not copied from the query"),
}


def add_keys(cfg):
    """The release's schema keys that only a release YAML uses (our method's own keys: NCLMethod.add_config)."""
    cfg.TRAIN.SAMPLER.MULTI_NETWORK_TYPE = []  # the release's sampler list (translated to TRAIN.SAMPLER.TYPE)
    cfg.DROPOUT = False  # the release's dropout (p 0.5) on each expert's feature: only False is supported
    unused = "an unused key of the NCL release schema"
    for key, default, why in (
            ("CLASSES_NUM", 0, "the class count comes from DATASET.TRAIN_JSON"),
            ("NETWORK.LOAD_BACKBONE_ONLY", False, unused),
            ("CLASSIFIER.MULTI_NETWORK_TYPE", [], "every expert gets CLASSIFIER.TYPE"),
            ("CLASSIFIER.NUM", 0, unused),
            ("TRANSFORMS.MULTI_AUG", False, "transforms always come from TRANSFORMS.*_TRANSFORMS"),
            ("DATASET.INTRA_N", 1, "NCL++'s INTRA_N augmented copies are not implemented")):
        accept_unused(cfg, key, default, why)


def matches(cfg):
    """True for a config written in the release's terms."""
    return (cfg.LOSS.LOSS_TYPE in ("NIL_NBOD", "NIL_NBOD_plus") or cfg.TRAIN.COMBINER.TYPE in RELEASE_COMBINERS
            or len(cfg.BACKBONE.MULTI_NETWORK_TYPE) > 0)


def adapt(cfg, explicit):
    """The release's spellings -> ours, in place and idempotently; returns the notices."""
    if cfg.LOSS.LOSS_TYPE == "NIL_NBOD_plus":
        raise UserError("LOSS.LOSS_TYPE NIL_NBOD_plus is NCL++, which is not implemented; use NIL_NBOD")
    if cfg.LOSS.LOSS_TYPE not in ("NIL_NBOD", "CrossEntropy") and "LOSS.LOSS_TYPE" in explicit:
        raise UserError(f"METHOD ncl computes its own loss (NIL + NBOD): LOSS.LOSS_TYPE must be NIL_NBOD, got "
                        f"{cfg.LOSS.LOSS_TYPE!r}")
    if cfg.DROPOUT:
        raise UserError("DROPOUT True (the release's dropout on each expert's feature) is not implemented; no "
                        "released NCL config sets it: set DROPOUT False")
    release = "METHOD" not in explicit and matches(cfg)  # a release YAML as shipped: run as the release ran
    notes = _combiner(cfg) + _experts(cfg) + _sampler(cfg) + _dataset(cfg, explicit)
    if release:
        wanted = dict(RELEASE_BEHAVIOUR, **(MOCO_RELEASE_BEHAVIOUR if cfg.NETWORK.MOCO else {}))
        notes += apply_release_behaviour(cfg, explicit, wanted) + _batch_notes(cfg)
    return notes


def _combiner(cfg):
    if cfg.TRAIN.COMBINER.TYPE not in RELEASE_COMBINERS:
        return []
    note = (f"TRAIN.COMBINER.TYPE {cfg.TRAIN.COMBINER.TYPE} -> default: METHOD ncl runs the experts and its loss "
            f"itself (MoCo on/off is NETWORK.MOCO, now {cfg.NETWORK.MOCO})")
    cfg.TRAIN.COMBINER.TYPE = "default"
    return [note]


def _experts(cfg):
    types = list(cfg.BACKBONE.MULTI_NETWORK_TYPE)
    if not (types and len(set(types)) == 1 and cfg.BACKBONE.TYPE != types[0]):
        return []
    note = (f"BACKBONE.TYPE {cfg.BACKBONE.TYPE} -> {types[0]}: the experts' type from BACKBONE.MULTI_NETWORK_TYPE "
            f"({len(types)} experts)")
    cfg.BACKBONE.TYPE = types[0]
    return [note]


def _sampler(cfg):
    samplers = list(cfg.TRAIN.SAMPLER.MULTI_NETWORK_TYPE)
    if not samplers:
        return []
    name = samplers[0]
    if name not in RELEASE_SAMPLERS:
        raise UserError(f"unknown TRAIN.SAMPLER.MULTI_NETWORK_TYPE {name!r}; valid: {', '.join(RELEASE_SAMPLERS)}")
    kind, weighted = RELEASE_SAMPLERS[name]
    cfg.TRAIN.SAMPLER.TYPE = kind
    if weighted:
        cfg.TRAIN.SAMPLER.WEIGHTED_SAMPLER.TYPE = weighted
    cfg.TRAIN.SAMPLER.MULTI_NETWORK_TYPE = []
    extra = (" (p_c proportional to sqrt(n_c); the release applied the root twice, n_c^(1/4))"
             if name == "weighted_square" else "")
    return [f"TRAIN.SAMPLER.MULTI_NETWORK_TYPE [{name}] -> TRAIN.SAMPLER.TYPE {kind!r}"
            + (f", WEIGHTED_SAMPLER.TYPE {weighted}" if weighted else "") + extra]


def _dataset(cfg, explicit):
    name = cfg.DATASET.DATASET
    if name not in RELEASE_DATASETS:
        return []
    notes = [f"DATASET.DATASET {name}: the release hard-coded this class's augmentation; this run uses "
             f"TRANSFORMS.TRAIN_TRANSFORMS {tuple(cfg.TRANSFORMS.TRAIN_TRANSFORMS)} as configured; to match the "
             f"release set TRANSFORMS.{RELEASE_DATASETS[name]}"]
    if name in SECOND_VIEWS and not len(cfg.TRANSFORMS.SECOND_VIEW_TRANSFORMS) \
            and "TRANSFORMS.SECOND_VIEW_TRANSFORMS" not in explicit:
        names, detail = SECOND_VIEWS[name]
        cfg.TRANSFORMS.SECOND_VIEW_TRANSFORMS = names
        set_detail = []
        for key, value in detail.items():
            if f"TRANSFORMS.PROCESS_DETAIL.{key}" not in explicit:
                node, leaf = key.split(".")
                cfg.TRANSFORMS.PROCESS_DETAIL[node][leaf] = value
                set_detail.append(f"{key} {value}")
        notes.append(f"TRANSFORMS.SECOND_VIEW_TRANSFORMS unset: the release's second view of {name}, {names}, with "
                     f"PROCESS_DETAIL {', '.join(set_detail) or 'as configured'}")
    return notes


def _batch_notes(cfg):
    b, world = cfg.TRAIN.BATCH_SIZE, max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
    per = f"{b // world}" if b % world == 0 else f"{b}/{world} (not divisible: an error at start-up)"
    notes = [f"TRAIN.BATCH_SIZE {b} is read as the GLOBAL batch (this framework's reading): {world} process(es) x "
             f"{per} images per step. The release read it per GPU under DDP (TRAIN.DISTRIBUTED "
             f"{cfg.TRAIN.DISTRIBUTED}) and as the total under DataParallel: to reproduce a release DDP run on N GPUs "
             f"set TRAIN.BATCH_SIZE {b} x N"]
    if cfg.NETWORK.PRETRAINED_MODEL and not cfg.NETWORK.PRETRAINED:
        notes.append(f"NETWORK.PRETRAINED_MODEL {cfg.NETWORK.PRETRAINED_MODEL} is not used (NETWORK.PRETRAINED False); "
                     "an ImageNet-pretrained backbone for every expert: BACKBONE.PRETRAINED_MODEL")
    return notes
