"""ACE's release (the author's fork winterxx/ACE): its YAML spellings -> our keys, and its behaviour when a
release YAML is loaded as shipped (a YAML without METHOD that uses ResCELoss, a `*_group` backbone or the
mix_up_group combiner)."""
from yacs.config import CfgNode as CN

from ...utils.unused_keys import accept_unused
from . import apply_release_behaviour

# the release's `*_group` backbones -> ours (resnext50_group was broken by a typo in the release)
GROUP_BACKBONES = {f"{b}_group": b for b in ("res32_cifar", "res10", "res50", "res152", "resnext50")}
# what a release YAML runs with (docs/deviations.md): key -> (value, why)
RELEASE_BEHAVIOUR = {
    "TRAIN.DROP_LAST": (True, "the release's training loader drops the last partial batch"),
}


def add_keys(cfg):
    """The release schema's keys that do nothing here (each a notice when set)."""
    accept_unused(cfg, "LOSS.METRIC_LOSS_TYPE", "",
                  "ACE's optional second criterion is not implemented (no released config sets it)")
    why = "an unused key of the ACE release schema"
    for key, default in (("USE_HIERARCHICAL", False), ("USE_RES", False), ("FLOODING", 0.0),
                         ("START_FLOODING", 0), ("NTIRE", False), ("LOSS.WCenterLoss.FEA_DIM", 64),
                         ("TRAIN.TUNE_EPOCH", 0), ("TRAIN.TUNE_SAMPLER.TYPE", "default"),
                         ("TRAIN.TUNE_SAMPLER.WEIGHTED_SAMPLER.TYPE", "balance"),
                         ("TEST.PRED_FILE", ""), ("TEST.LABEL_FILE", ""), ("TEST.FEA_FILE", "")):
        accept_unused(cfg, key, default, why)
    accept_unused(cfg, "LOSS.HierarchicalCELoss", CN(), why)


def matches(cfg):
    return (cfg.LOSS.LOSS_TYPE == "ResCELoss" or cfg.BACKBONE.TYPE in GROUP_BACKBONES
            or cfg.TRAIN.COMBINER.TYPE == "mix_up_group")


def adapt(cfg, explicit):
    """Release spellings -> ours, in place (idempotent); returns the notices."""
    release = "METHOD" not in explicit and matches(cfg)  # a release YAML as shipped (before the translation)
    notes = []
    if cfg.BACKBONE.TYPE in GROUP_BACKBONES:
        new = GROUP_BACKBONES[cfg.BACKBONE.TYPE]
        notes.append(f"BACKBONE.TYPE {cfg.BACKBONE.TYPE} -> {new}: METHOD ace shares its stages and copies the "
                     "last one per expert")
        cfg.BACKBONE.TYPE = new
    if cfg.LOSS.LOSS_TYPE == "ResCELoss":
        notes.append("LOSS.LOSS_TYPE ResCELoss -> CrossEntropy: METHOD ace adds the complementary terms itself")
        cfg.LOSS.LOSS_TYPE = "CrossEntropy"
    if cfg.TRAIN.COMBINER.TYPE == "mix_up":
        notes.append("TRAIN.COMBINER.TYPE mix_up -> mix_up_group: ACE mixes in epochs 1..TRAIN.MAX_EPOCH - 1 only")
        cfg.TRAIN.COMBINER.TYPE = "mix_up_group"
    if cfg.TRAIN.OPTIMIZER.TYPE.upper() == "SGD_GROUP":
        notes.append(f"TRAIN.OPTIMIZER.TYPE {cfg.TRAIN.OPTIMIZER.TYPE}: SGD with one parameter group per expert, "
                     f"LR scaled by ACE.LR_SCALE {cfg.ACE.LR_SCALE}")
    if cfg.TRAIN.USE_AMP:
        notes.append("TRAIN.USE_AMP True: mixed precision through torch.amp (as TRAIN.AMP.ENABLE)")
    if "CLASSIFIER.TYPE" not in explicit and cfg.CLASSIFIER.TYPE == "FC":
        notes.append("CLASSIFIER.TYPE not set: ACE uses LWS heads (sigma * (W f + b), all trained)")
        cfg.CLASSIFIER.TYPE = "LWS"
    if "DATASET.REORDER_CLASSES" not in explicit and not cfg.DATASET.REORDER_CLASSES:
        notes.append("DATASET.REORDER_CLASSES True: ACE ranks classes by training count (class 0 = largest); "
                     "per-class outputs use the ranked ids (class_order.json maps them back)")
        cfg.DATASET.REORDER_CLASSES = True
    if release:
        notes += apply_release_behaviour(cfg, explicit, RELEASE_BEHAVIOUR)
    return notes
