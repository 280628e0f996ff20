"""Loading local pretrained weights (spec: backbones.md §1.3). Nothing is ever downloaded.

NCL: torchvision's resnet152 file, keys containing "fc" skipped, every key must fit.
CADEL: keep only the keys whose shapes match (`shape_match="skip"`).
"""
import os

import torch

from lib.utils.errors import UserError

# torchvision ResNet top-level names -> ours (layer1..layer4 keep their names).
_TV_PREFIXES = {"conv1.": "stem.conv1.", "bn1.": "stem.bn1."}
_SHOW = 5  # keys listed per category in an error message


def load_state_dict_file(path):
    """Read a state dict (name -> tensor) from `path`; a checkpoint dict holding it under
    "state_dict" or "model" is unwrapped. Raises UserError naming the file otherwise."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"pretrained weights file {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle/zip errors of many kinds
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"pretrained weights file {path} could not be read: {type(e).__name__}: {msg}") from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not (isinstance(obj, dict) and obj and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        raise UserError(f"pretrained weights file {path} is not a state dict "
                        f"(expected a non-empty dict of name -> tensor, or one under 'state_dict'/'model')")
    return obj


def _short(items):
    items = list(items)
    more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def _target_key(key, own):
    """File key -> our key: strip a leading "module." (DataParallel), map torchvision names onto stem.*."""
    if key.startswith("module."):
        key = key[len("module."):]
    if key not in own:
        for tv, ours in _TV_PREFIXES.items():
            if key.startswith(tv) and ours + key[len(tv):] in own:
                return ours + key[len(tv):]
    return key


def load_pretrained(module, path, skip_substrings=("fc.",), shape_match="error"):
    """Load the state dict at `path` into `module`; returns (loaded_keys, skipped_keys) in the module's names.

    Keys containing any of `skip_substrings` are skipped. With shape_match="error" every other file key
    must exist in the module with the same shape and every module key must be present (BN
    `num_batches_tracked`, absent from old torchvision files, excepted); all problems are reported in one
    UserError. With shape_match="skip", unknown and shape-mismatched keys are skipped instead (CADEL).
    """
    if shape_match not in ("error", "skip"):
        raise UserError(f"shape_match {shape_match!r} is not one of error, skip")
    state = load_state_dict_file(path)
    own = module.state_dict()
    to_load, loaded, skipped, unexpected, mismatched = {}, [], [], [], []
    for file_key, value in state.items():
        key = _target_key(file_key, own)
        if any(s in key for s in skip_substrings):
            skipped.append(key)
        elif key not in own:
            unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            mismatched.append(f"{key}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}")
            skipped.append(key)
        else:
            to_load[key] = value
            loaded.append(key)

    if shape_match == "skip":
        skipped += unexpected
        if not loaded:
            raise UserError(f"pretrained weights file {path}: no key matches the model in name and shape")
    else:
        seen = set(loaded) | set(skipped)
        missing = [k for k in own if k not in seen and not k.endswith("num_batches_tracked")
                   and not any(s in k for s in skip_substrings)]
        problems = []
        if mismatched:
            problems.append("shape mismatch " + _short(mismatched))
        if unexpected:
            problems.append("unexpected keys " + _short(unexpected))
        if missing:
            problems.append("missing keys " + _short(missing))
        if problems:
            raise UserError(f"pretrained weights file {path} does not fit the model: " + "; ".join(problems))

    module.load_state_dict(to_load, strict=False)
    return loaded, skipped
