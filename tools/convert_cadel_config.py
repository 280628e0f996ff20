"""Convert an original CADEL YAML (cRT-style keys) into this framework's YAML for METHOD cadel.

    python tools/convert_cadel_config.py RELEASE.yaml [--out OURS.yaml] [--data-root data]
        [--num-shots num_shots.npz [--train-json TRAIN.json]]

Maps every key it knows (docs/methods/cadel.md) and lists every key it drops, with the reason, on stderr
and as comments at the top of the output. Without --out the converted YAML is printed.

    coslr true / endlr          -> TRAIN.LR_SCHEDULER cosine (T_max = epochs, stepped after each epoch) / ETA_MIN
    criterions.mixup.alpha      -> CADEL.MIXUP_ALPHA (no_mixup: 0)
    networks.<backbone>         -> BACKBONE.TYPE from def_file (ResNet-50 / ResNeXt-50 / ResNet-152), fix ->
                                   BACKBONE.FREEZE (BN statistics keep moving, as released)
    networks.*.optim_params     -> TRAIN.OPTIMIZER (SGD, no Nesterov): the heads' lr = BASE_LR, the backbone's
                                   lr / BASE_LR = CADEL.BACKBONE_LR_SCALE (0 for Places-LT), momentum, weight_decay
    networks.*.params.scale     -> CADEL.SCALE; num_classes -> DATASET.NUM_CLASSES
    training_opt.batch_size, num_epochs, num_workers, image_size, display_step -> TRAIN.BATCH_SIZE,
                                   TRAIN.MAX_EPOCH, TRAIN.NUM_WORKERS / TEST.NUM_WORKERS, INPUT_SIZE, SHOW_STEP
    training_opt.bins, gamma, base_weight -> CADEL.BINS, GAMMA, BASE_WEIGHT
    training_opt.dataset        -> DATASET.TRAIN/VALID/TEST_JSON under --data-root (our converters' names),
                                   transforms, normalisation and the tau grid of that dataset
    training_opt.log_dir        -> NAME (its last folder)
ViT-B/16 configs (a feature model whose def_file names a ViT; docs/methods/cadel.md): BACKBONE.TYPE vit_b16 with
the ViT defaults (aux heads CADEL.AUX_HEAD vit on blocks 7 and 9, CADEL.LOSS sigmoid, CADEL.HEADLINE mean, last head
re-initialised trunc_normal(2e-5), tau grid 1.3 .. 1.8, fp32, validation with tau = 1 as the ViT runner), and
    optim_params lr / weight_decay / min_lr / layer_decay / adamW2 -> TRAIN.OPTIMIZER ADAMW BASE_LR / WEIGHT_DECAY,
                                   LR_SCHEDULER.ETA_MIN, OPTIMIZER.LAYER_DECAY, BETAS (0.9, adamW2); no WD on 1-D
    training_opt.warmup_epoch   -> TRAIN.LR_SCHEDULER warmup_cosine (per iteration), WARM_EPOCH
    params drop_path / aux_depth / checkpoint -> BACKBONE.DROP_PATH / CADEL.AUX_DEPTH / BACKBONE.PRETRAINED_MODEL
                                   (a local file, never downloaded); classifier_num (3) and global_pool (true) checked
Class counts always come from the train JSON, so `num_shots.npz` is not needed; with --num-shots the tool
checks that its counts agree with the train JSON (--train-json, default the converted TRAIN_JSON).
"""
import argparse
import os
import sys

import numpy as np
import yaml

from lib.data.annotations import class_counts, read_json, validate_annotations
from lib.utils.atomic import write_text
from lib.utils.errors import UserError, exit_on_user_error

# release dataset name -> (folder, file prefix, has a test split, normalisation, colour jitter, tau grid)
DATASETS = {
    "ImageNet_LT": ("ImageNet_LT", "ImageNet_LT", True, "imagenet", True, [0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]),
    "Places_LT": ("Places_LT", "Places_LT", True, "imagenet", True, [0.9, 1.0, 1.1, 1.2, 1.3, 1.4]),
    "iNaturalist18": ("iNat18", "iNat18", False, "inat", False, [0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5]),
}
UNUSED_TOP = {
    "shuffle": "only permutes inside a batch in the release; no effect",
    "memory": "unused by CADEL (OLTR's memory module)",
    "last": "not used by the CADEL runners",
    "step1": "the release's step schedule is effectively unused (it needs a key `g` no config has)",
    "step2": "the release's step schedule is effectively unused (it needs a key `g` no config has)",
    "tempture": "effectively unused in the release",
    "scheduler_params": "effectively unused in the release (coslr selects the schedule)",
}
VIT_KEYS = {"min_lr", "layer_decay", "adamW2", "classifier_num", "aux_depth", "drop_path", "global_pool",
            "checkpoint", "warmup_epoch"}
VIT_TAUS = [1.3, 1.4, 1.5, 1.6, 1.7, 1.8]
VIT_DIM = 768


class Conversion:
    def __init__(self):
        self.out = {}
        self.dropped = []  # (key, why)
        self.notes = []

    def set(self, dotted, value):
        node = self.out
        parts = dotted.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value

    def get(self, dotted, default=None):
        node = self.out
        for p in dotted.split("."):
            if not isinstance(node, dict) or p not in node:
                return default
            node = node[p]
        return node

    def drop(self, key, why):
        self.dropped.append((key, why))


def backbone_of(def_file, hint=""):
    """BACKBONE.TYPE from a release def_file (or training_opt.backbone)."""
    text = f"{def_file} {hint}".lower()
    if "vit" in text:
        return "vit_b16"
    if "resnext" in text:
        return "resnext50"
    if "152" in text:
        return "res152"
    if "resnet" in text or "50" in text:
        return "res50"
    raise UserError(f"networks: cannot tell the backbone from def_file {def_file!r}; expected a ResNet-50, "
                    "ResNeXt-50, ResNet-152 or ViT-B/16 feature model")


def _is_backbone(name, net):
    text = f"{name} {net.get('def_file', '')}".lower()
    return name == "feat_model" or "feature" in text


def convert(release, data_root="data"):
    """Release YAML (dict) -> Conversion with .out (our config as a nested dict), .dropped, .notes."""
    if not isinstance(release, dict) or not isinstance(release.get("networks"), dict) \
            or not isinstance(release.get("training_opt"), dict):
        raise UserError("not a CADEL release config: expected top-level 'networks' and 'training_opt' mappings")
    c = Conversion()
    opt = release["training_opt"]
    c.set("METHOD", "cadel")
    taus = _data_and_run(c, opt, data_root)
    bname, btype = _backbone(c, release["networks"], opt)
    vit = btype == "vit_b16"
    _recipe(c, btype, taus)
    _networks(c, release["networks"], bname, btype)
    _schedule(c, release, opt, vit)
    _mixup(c, release)
    _everything_else(c, release, opt, vit)
    return c


def _data_and_run(c, opt, data_root):
    """Dataset files, transforms, run and CADEL keys of training_opt; returns the dataset's tau grid."""
    ds = opt.get("dataset")
    if ds not in DATASETS:
        raise UserError(f"training_opt.dataset {ds!r} is not one of {', '.join(DATASETS)}")
    folder, prefix, has_test, norm, jitter, taus = DATASETS[ds]
    base = os.path.join(data_root, folder, prefix)
    c.set("NAME", os.path.basename(os.path.normpath(str(opt["log_dir"]))) if opt.get("log_dir")
          else f"{prefix.lower()}_cadel")
    c.set("OUTPUT_DIR", "./output")
    c.set("DATASET.TRAIN_JSON", base + "_train.json")
    c.set("DATASET.VALID_JSON", base + "_val.json")
    c.set("DATASET.TEST_JSON", base + "_test.json" if has_test else "")
    if not has_test:
        c.notes.append(f"{ds} has no test split: val is both the selection and the report split")
    size = int(opt.get("image_size") or 224)
    c.set("INPUT_SIZE", [size, size])
    c.set("VALID_STEP", 1)
    train_tf = ["random_resized_crop", "random_horizontal_flip"] + (["color_jitter"] if jitter else [])
    c.set("TRANSFORMS.TRAIN_TRANSFORMS", train_tf)
    c.set("TRANSFORMS.TEST_TRANSFORMS", ["shorter_resize_for_crop", "center_crop"])
    c.set("TRANSFORMS.NORMALIZE", norm)
    for key, target in (("batch_size", "TRAIN.BATCH_SIZE"), ("num_epochs", "TRAIN.MAX_EPOCH"),
                        ("num_workers", "TRAIN.NUM_WORKERS"), ("display_step", "SHOW_STEP")):
        if opt.get(key) is not None:
            c.set(target, int(opt[key]))
    if opt.get("num_workers") is not None:
        c.set("TEST.NUM_WORKERS", int(opt["num_workers"]))
    c.notes.append("TRAIN.BATCH_SIZE is the global batch; if you divided batch_size by the GPU count as the "
                   "release README says, multiply it back")
    for key, target in (("bins", "CADEL.BINS"), ("gamma", "CADEL.GAMMA"), ("base_weight", "CADEL.BASE_WEIGHT")):
        if opt.get(key) is not None:
            c.set(target, int(opt[key]) if key == "bins" else float(opt[key]))
    if opt.get("num_classes") is not None:
        c.set("DATASET.NUM_CLASSES", int(opt["num_classes"]))
    return taus


def _backbone(c, nets, opt):
    """The one feature model: returns (its network name, BACKBONE.TYPE)."""
    backbone_nets = [n for n, v in nets.items() if isinstance(v, dict) and _is_backbone(n, v)]
    if len(backbone_nets) != 1:
        raise UserError(f"networks: expected one feature model (feat_model), found {backbone_nets or 'none'}")
    bname = backbone_nets[0]
    btype = backbone_of(nets[bname].get("def_file", ""), str(opt.get("backbone", "")))
    c.set("BACKBONE.TYPE", btype)
    return bname, btype


def _recipe(c, btype, taus):
    """The release runner's fixed choices for this backbone: heads, loss, optimiser, tau grid, headline."""
    if btype == "vit_b16":  # docs/methods/cadel.md
        c.set("CADEL.TAPS", ["block7", "block9"])
        c.set("CADEL.AUX_HEAD", "vit")
        c.set("CADEL.LOSS", "sigmoid")
        c.set("CADEL.HEADLINE", "mean")
        c.set("CADEL.LAST_HEAD_INIT_STD", 2e-5)
        c.set("CADEL.POSTHOC_TAUS", VIT_TAUS)
        c.set("CADEL.WEIGHTING", "per_sample")  # the ViT loss re-weights per sample (no broadcast)
        c.set("CADEL.VIT_AUX_INIT", "pytorch")
        c.set("CADEL.AUX_LR_LAYER", "previous_block")
        c.set("TRAIN.OPTIMIZER.TYPE", "ADAMW")
        c.set("TRAIN.OPTIMIZER.NO_WEIGHT_DECAY_1D", True)
        c.set("TRAIN.OPTIMIZER.LAYER_DECAY", 0.75)
        c.set("TRAIN.AMP.ENABLE", False)  # the release: fp32 (a loss scaler without autocast)
        c.set("TEST.LOGIT_ADJUST.TAU", 1.0)
        c.notes.append("ViT: validation (hence best_model.pth) uses the mean of heads with tau = 1 as the ViT runner "
                       "(TEST.LOGIT_ADJUST.TAU 1.0); stage two: python tools/posthoc_tau.py on the converted config")
    else:
        c.set("CADEL.TAPS", ["layer2", "layer3"])
        c.set("CADEL.AUX_HEAD", "places" if btype == "res152" else "cnn")
        c.set("CADEL.HEADLINE", "last")
        c.set("CADEL.POSTHOC_TAUS", taus)
        c.set("CADEL.WEIGHTING", "batch_mean")  # the CNN loss's (N,1) x (N,) broadcast
        c.set("CADEL.SE_BIAS", False)
        c.set("TRAIN.OPTIMIZER.TYPE", "SGD")
        c.set("TRAIN.OPTIMIZER.NESTEROV", False)


def _networks(c, nets, bname, btype):
    """Every networks.<name> key: backbone freezing, optimiser settings, network parameters; then the LRs."""
    vit = btype == "vit_b16"
    lrs = {"head": None, "backbone": None}
    wds = []  # (key, weight decay, of the backbone)
    for name, net in nets.items():
        if not isinstance(net, dict):
            c.drop(f"networks.{name}", "not a network mapping")
            continue
        is_bb = name == bname
        for key, value in net.items():
            where = f"networks.{name}.{key}"
            if key == "def_file":
                if not is_bb:
                    c.drop(where, "the heads are fixed by METHOD cadel (aux heads + CosNorm); the file is not read")
            elif key == "fix":
                if value and is_bb:
                    c.set("BACKBONE.FREEZE", True)
                    c.set("BACKBONE.FREEZE_BN", False)  # the release keeps BN in train mode
                elif value:
                    c.drop(where, "freezing a head network is not supported (only the backbone: BACKBONE.FREEZE)")
            elif key == "optim_params" and isinstance(value, dict):
                for k, v in value.items():
                    _optim_param(c, f"{where}.{k}", k, v, is_bb, vit, lrs, wds)
            elif key == "params" and isinstance(value, dict):
                for k, v in value.items():
                    _net_param(c, f"{where}.{k}", k, v, vit)
            else:
                c.drop(where, "not a network key we know")
    _learning_rates(c, lrs["head"], lrs["backbone"], wds, btype)


def _optim_param(c, where, k, v, is_bb, vit, lrs, wds):
    """networks.<name>.optim_params.<k>: an LR (into `lrs`), a weight decay (into `wds`), or a setting."""
    if k == "lr":
        if is_bb:
            lrs["backbone"] = float(v)
        elif lrs["head"] is None:
            lrs["head"] = float(v)
        elif float(v) != lrs["head"]:
            c.drop(where, f"head networks share one LR here; using {lrs['head']}")
    elif k == "momentum":
        if vit:
            c.drop(where, "AdamW (the ViT runner) has no momentum")
        else:
            c.set("TRAIN.OPTIMIZER.MOMENTUM", float(v))
    elif k == "weight_decay":
        wds.append((where, float(v), is_bb))
    elif k in VIT_KEYS and vit:
        if k == "min_lr":
            c.set("TRAIN.LR_SCHEDULER.ETA_MIN", float(v))
        elif k == "layer_decay":
            c.set("TRAIN.OPTIMIZER.LAYER_DECAY", float(v))
        elif k == "adamW2":
            c.set("TRAIN.OPTIMIZER.BETAS", [0.9, float(v)])
        else:
            c.drop(where, "not an optimiser setting")
    elif k in VIT_KEYS:
        c.drop(where, "ViT optimiser key in a CNN config: unused")
    else:
        c.drop(where, "not an SGD setting of the release")


def _net_param(c, where, k, v, vit):
    """networks.<name>.params.<k>: mapped, checked against the backbone, or dropped with the reason."""
    feat_dim = VIT_DIM if vit else 2048
    if k == "scale":
        c.set("CADEL.SCALE", float(v))
    elif k == "num_classes":
        if c.get("DATASET.NUM_CLASSES") not in (None, int(v)):
            raise UserError(f"{where} = {v} disagrees with training_opt.num_classes {c.get('DATASET.NUM_CLASSES')}")
        c.set("DATASET.NUM_CLASSES", int(v))
    elif k in ("feat_dim", "in_dim", "feature_dim"):
        if int(v) != feat_dim:
            raise UserError(f"{where} = {v}: the CADEL {'ViT-B/16' if vit else 'CNN'} backbone has "
                            f"{feat_dim}-d features")
        c.drop(where, f"checked: {feat_dim}, the backbone's feature width")
    elif k in VIT_KEYS and vit:
        _vit_param(c, where, k, v)
    elif k in VIT_KEYS:
        c.drop(where, "ViT network key in a CNN config: unused")
    elif k == "normalized":
        c.drop(where, "every CADEL head is a CosNorm (normalised) classifier")
    else:
        c.drop(where, "not used by our CADEL network (architecture fixed by METHOD cadel)")


def _learning_rates(c, head_lr, backbone_lr, wds, btype):
    """BASE_LR (the heads'), CADEL.BACKBONE_LR_SCALE and the one weight decay."""
    if head_lr is None:
        head_lr = backbone_lr
        c.notes.append("no head network with optim_params: heads use the backbone's lr")
    if head_lr is None:
        raise UserError("networks: no optim_params.lr anywhere")
    if head_lr <= 0:
        raise UserError(f"networks: the heads' lr is {head_lr}; it must be > 0")
    c.set("TRAIN.OPTIMIZER.BASE_LR", head_lr)
    # one weight decay for every group: the heads' (else the backbone's); the release used 5e-4 everywhere
    wds.sort(key=lambda t: t[2])  # head networks first
    wd = wds[0][1] if wds else 5e-4
    c.set("TRAIN.OPTIMIZER.WEIGHT_DECAY", wd)
    for w, v, _ in wds[1:]:
        if v != wd:
            c.drop(w, f"one weight decay for every group here; using {wd}")
    scale = 1.0 if backbone_lr is None else backbone_lr / head_lr
    c.set("CADEL.BACKBONE_LR_SCALE", scale)
    if scale not in (0.0, 1.0) and btype != "res152":
        c.notes.append(f"backbone lr {backbone_lr} differs from the heads' {head_lr}: in the ResNet-50/ResNeXt-50 "
                       "release the aux heads sit in the feature model's group; here they take the heads' lr")


def _schedule(c, release, opt, vit):
    """coslr / endlr (CNN) or the ViT runner's per-iteration warmup + cosine."""
    if vit:  # the ViT runner: per-iteration linear warmup + half-cycle cosine to min_lr, whatever coslr says
        c.set("TRAIN.LR_SCHEDULER.TYPE", "warmup_cosine")
        c.set("TRAIN.LR_SCHEDULER.COSINE_DECAY_END", 0)
        c.set("TRAIN.LR_SCHEDULER.WARM_EPOCH", int(opt.get("warmup_epoch", 5) or 0))
        c.set("TRAIN.LR_SCHEDULER.EPOCH_OFFSET", 1.0)  # the runner evaluates it at the 1-based epoch + step/len
        if c.get("TRAIN.LR_SCHEDULER.ETA_MIN") is None:
            c.set("TRAIN.LR_SCHEDULER.ETA_MIN", 0.0)
        for k in ("coslr", "endlr"):
            if k in release:
                c.drop(k, "the ViT runner always uses the per-iteration warmup + cosine to min_lr")
    elif release.get("coslr", False):
        c.set("TRAIN.LR_SCHEDULER.TYPE", "cosine")
        c.set("TRAIN.LR_SCHEDULER.COSINE_DECAY_END", 0)
        c.set("TRAIN.LR_SCHEDULER.STEP_AT_EPOCH_START", False)
        c.set("TRAIN.LR_SCHEDULER.ETA_MIN", float(release.get("endlr") or 0.0))
    else:
        c.set("TRAIN.LR_SCHEDULER.TYPE", "constant")
        c.notes.append("coslr is false: the release's step schedule needs a key no config has; a constant LR "
                       "is used (set TRAIN.LR_SCHEDULER yourself)")
        if release.get("endlr") is not None:
            c.drop("endlr", "only used with coslr true")


def _mixup(c, release):
    """criterions.mixup.alpha (no_mixup: 0); the release's other criterions are dropped."""
    crit = release.get("criterions") or {}
    alpha = 0.0
    mix = crit.get("mixup") if isinstance(crit, dict) else None
    if isinstance(mix, dict) and mix.get("alpha") is not None:
        alpha = float(mix["alpha"])
    no_mixup = bool(release.get("no_mixup") or (isinstance(crit, dict) and crit.get("no_mixup"))
                    or (isinstance(mix, dict) and mix.get("no_mixup")))
    c.set("CADEL.MIXUP_ALPHA", 0.0 if no_mixup else alpha)
    if isinstance(crit, dict):
        for k, v in crit.items():
            if k == "mixup" and isinstance(v, dict):
                for kk in v:
                    if kk not in ("alpha", "no_mixup"):
                        c.drop(f"criterions.mixup.{kk}", "only alpha is read")
            elif k != "no_mixup":
                c.drop(f"criterions.{k}", "the loss is CADEL's cascaded loss; the release's other losses "
                                          "are imported but unused")


def _everything_else(c, release, opt, vit):
    """The remaining top-level and training_opt keys: checked, mapped (ViT), or dropped with the reason."""
    known_top = {"networks", "training_opt", "criterions", "coslr", "endlr", "no_mixup"}
    if release.get("model_dir"):
        c.drop("model_dir", "stage two here is `python tools/posthoc_tau.py CONFIG` on our stage-one run (a release "
                            "checkpoint does not load into our network)")
    for k in release:
        if k in known_top or k == "model_dir":
            continue
        c.drop(k, UNUSED_TOP.get(k, "not a CADEL key we know"))
    opt_known = {"batch_size", "num_epochs", "num_workers", "display_step", "bins", "gamma", "base_weight",
                 "num_classes", "dataset", "log_dir", "image_size", "backbone"} | ({"warmup_epoch"} if vit else set())
    feat_dim = VIT_DIM if vit else 2048
    for k, v in opt.items():
        if k in opt_known:
            continue
        w = f"training_opt.{k}"
        if k == "num_dir":
            c.drop(w, "class counts come from TRAIN_JSON; pass --num-shots to check them")
        elif k == "feature_dim":
            if v is not None and int(v) != feat_dim:
                raise UserError(f"{w} = {v}: the CADEL {'ViT-B/16' if vit else 'CNN'} backbone has {feat_dim}-d "
                                "features")
            c.drop(w, f"checked: {feat_dim}, the backbone's feature width")
        elif k == "sampler":
            c.drop(w, f"sampler {v!r} ignored: CADEL trains with plain instance sampling" if v
                   else "null: instance sampling, our default")
        elif k in VIT_KEYS and vit:
            _vit_param(c, w, k, v)
        elif k in VIT_KEYS:
            c.drop(w, "ViT key in a CNN config: unused")
        elif k in UNUSED_TOP:
            c.drop(w, UNUSED_TOP[k])
        else:
            c.drop(w, "not used by the CADEL runners")


def _vit_param(c, where, key, value):
    """A ViT network parameter (networks.<name>.params or training_opt): mapped, checked, or dropped with the reason."""
    if key == "drop_path":
        c.set("BACKBONE.DROP_PATH", float(value))
    elif key == "aux_depth":
        c.set("CADEL.AUX_DEPTH", int(value))
    elif key == "checkpoint":
        if value:
            c.set("BACKBONE.PRETRAINED_MODEL", str(value))
            c.notes.append(f"BACKBONE.PRETRAINED_MODEL {value}: a LOCAL file (nothing is downloaded); put the "
                           "checkpoint there or change the path")
    elif key == "classifier_num":
        if int(value) != 3:
            raise UserError(f"{where} = {value}: our CADEL-ViT has 3 heads (aux heads on blocks 7 and 9 + the last); "
                            "set CADEL.TAPS for another count")
        c.drop(where, "checked: 3 heads")
    elif key == "global_pool":
        if value is not True:
            raise UserError(f"{where} = {value!r}: only global_pool true (mean patch token + fc_norm, the release's "
                            "setting) is implemented")
        c.drop(where, "checked: mean patch token + fc_norm (no LayerNorm in the aux heads)")
    else:  # min_lr, layer_decay, adamW2 outside optim_params
        c.drop(where, "expected under networks.<name>.optim_params")


def read_num_shots(path, num_classes):
    """Per-class counts from a release num_shots.npz: the one integer array of length C (or a key naming it)."""
    if not os.path.isfile(path):
        raise UserError(f"--num-shots: file not found: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as e:
        raise UserError(f"--num-shots {path}: not a readable .npz ({type(e).__name__})") from None
    arrays = {k: npz[k] for k in npz.files}
    fits = {k: a for k, a in arrays.items() if a.ndim == 1 and len(a) == num_classes}
    for key in ("num_shots", "cls_num", "counts", "cls_num_list"):
        if key in fits:
            return [int(x) for x in fits[key]]
    if len(fits) == 1:
        return [int(x) for x in next(iter(fits.values()))]
    raise UserError(f"--num-shots {path}: expected one per-class array of length {num_classes}, found "
                    f"{', '.join(f'{k} {a.shape}' for k, a in arrays.items()) or 'no arrays'}")


def check_num_shots(npz_path, train_json):
    """Compare num_shots.npz with the counts of the train JSON; raises UserError naming the first differences."""
    if not os.path.isfile(train_json):
        raise UserError(f"--num-shots needs the train JSON to compare with: {train_json} not found (--train-json)")
    anns, C = validate_annotations(read_json(train_json), source=train_json)
    ours = class_counts([a["category_id"] for a in anns], C)
    theirs = read_num_shots(npz_path, C)
    diff = [c for c in range(C) if ours[c] != theirs[c]]
    if diff:
        show = ", ".join(f"class {c}: npz {theirs[c]} vs JSON {ours[c]}" for c in diff[:5])
        raise UserError(f"{npz_path} disagrees with {train_json} on {len(diff)} of {C} classes ({show})")
    return C


def render(conv, source):
    lines = [f"# Converted from the CADEL release config {source} by tools/convert_cadel_config.py."]
    lines += [f"# note: {n}" for n in conv.notes]
    lines += [f"# dropped: {k}: {why}" for k, why in conv.dropped]
    return "\n".join(lines) + "\n" + yaml.safe_dump(conv.out, sort_keys=False, default_flow_style=False)


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("release_yaml", help="the original CADEL YAML")
    p.add_argument("--out", default="", help="write our YAML here (default: print it)")
    p.add_argument("--data-root", default="data", help="folder holding the converted JSONs (default data)")
    p.add_argument("--num-shots", default="", help="release num_shots.npz: check its counts against the train JSON")
    p.add_argument("--train-json", default="", help="train JSON for --num-shots (default: the converted TRAIN_JSON)")
    return p


@exit_on_user_error
def main(argv=None):
    args = get_parser().parse_args(argv)
    if not os.path.isfile(args.release_yaml):
        raise UserError(f"config file not found: {args.release_yaml}")
    try:
        with open(args.release_yaml) as f:
            release = yaml.safe_load(f)
    except yaml.YAMLError:
        raise UserError(f"{args.release_yaml}: malformed YAML") from None
    conv = convert(release, args.data_root)
    if args.num_shots:
        train_json = args.train_json or conv.get("DATASET.TRAIN_JSON")
        C = check_num_shots(args.num_shots, train_json)
        conv.notes.append(f"{args.num_shots}: counts of all {C} classes agree with {train_json}")
    text = render(conv, args.release_yaml)
    if args.out:
        write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    for n in conv.notes:
        print(f"note: {n}", file=sys.stderr)
    for k, why in conv.dropped:
        print(f"dropped: {k}: {why}", file=sys.stderr)
    return conv


if __name__ == "__main__":
    main()
