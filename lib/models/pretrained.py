"""Loading local pretrained weights into a backbone (BACKBONE.PRETRAINED_MODEL; docs/training.md).
Nothing is ever downloaded.

What the file may be (all read with torch.load(weights_only=True), numpy scalars allowed):
- a bare state dict (torchvision / timm: `conv1.weight`, `layer1.0...`, `fc.*`; torchvision's top-level
  `conv1.` / `bn1.` map onto our `stem.conv1.` / `stem.bn1.`),
- a checkpoint dict holding one under "state_dict", "model" or "net" (the original repositories, this
  framework),
- with any key prefix in front of the backbone's names: `module.` (DataParallel/DDP), `backbone.` /
  `module.backbone.` (BoT, NCL), `net.backbone.` (this framework's checkpoints).

The prefix is found, not listed: every dotted prefix of every file key whose remainder is one of the
module's keys is a candidate, and the candidate that covers most of the module's keys wins (ties: the
one that comes first in the file). If it leaves some keys uncovered, the next best candidate fills them
(greedy), so a checkpoint whose trunk and upper stages live under different prefixes still loads.
A checkpoint holding several backbones (a multi-expert method's experts, e.g.
`net.experts.0.backbone.`, `net.experts.1.backbone.`) thus gives the FIRST expert's backbone (with a
shared trunk: the trunk plus the first expert's own stages); the report names the prefixes used.

Keys outside the chosen prefixes, or under one but outside the module's top-level parts (a head, other
experts, a MoCo queue), are skipped and listed. Keys containing a skip substring ("fc." by default: NCL
skips torchvision's classifier) are skipped. With shape_match="error" every other key in the module's
parts must fit (name and shape; a `layer4.0.conv3` in a BasicBlock model is an error) and every module
key must be found; CADEL's shape_match="skip" keeps only the keys that fit.

The one-line report of what was loaded and skipped is kept on the module (`pretrained_report`); the
trainer logs it at start-up.
"""
from lib.utils.errors import UserError
from lib.utils.state_dict import read_state_dict

# torchvision ResNet top-level names -> ours (layer1..layer4 keep their names).
_TV_PREFIXES = {"conv1.": "stem.conv1.", "bn1.": "stem.bn1."}
_SHOW = 5  # keys listed per category in a message
_CONTAINERS = ("state_dict", "model", "net")


def load_state_dict_file(path):
    """Read a state dict (name -> tensor) from `path`; a checkpoint dict holding it under
    "state_dict", "model" or "net" is unwrapped. Raises UserError naming the file otherwise."""
    return read_state_dict(path, _CONTAINERS)


def _short(items):
    items = list(items)
    more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def fit_problems(mismatched, unexpected, missing):
    """['shape mismatch k1, ...', 'unexpected keys ...', 'missing keys ...'], the non-empty ones (at most
    _SHOW keys each)."""
    return [f"{label} {_short(keys)}" for label, keys in (("shape mismatch", mismatched),
            ("unexpected keys", unexpected), ("missing keys", missing)) if keys]


def _aliases(own):
    """Name in a file -> the module's key: each key itself, plus torchvision's `conv1.*` / `bn1.*`."""
    out = {k: k for k in own}
    for tv, ours in _TV_PREFIXES.items():
        for k in own:
            if k.startswith(ours) and tv + k[len(ours):] not in out:
                out[tv + k[len(ours):]] = k
    return out


def locate_backbone(file_keys, own):
    """Choose the key prefixes under which the module's weights sit in a file (module docstring).
    Returns (prefixes in the order chosen, {file key: module key} for the keys under them,
    {file key: its candidate prefix} for every file key that has one)."""
    aliases = _aliases(own)
    found = {}  # prefix -> {file key: module key}, in order of first appearance in the file
    for f in file_keys:
        parts = f.split(".")
        for j in range(len(parts)):
            rest = ".".join(parts[j:])
            if rest in aliases:
                prefix = ".".join(parts[:j]) + ("." if j else "")
                found.setdefault(prefix, {})[f] = aliases[rest]
                break
    chosen, covered, mapping = [], set(), {}
    while True:
        gains = [(len(set(m.values()) - covered), -i, p) for i, (p, m) in enumerate(found.items()) if p not in chosen]
        if not gains or max(gains)[0] == 0:
            break
        _, _, best = max(gains)
        chosen.append(best)
        for f, k in found[best].items():
            if k not in covered:
                mapping[f] = k
        covered |= set(found[best].values())
    prefix_of = {f: p for p, m in found.items() for f in m}
    return chosen, mapping, prefix_of


def _summary(keys, prefix_of):
    """Skipped file keys grouped by backbone-like prefix: "'net.experts.1.backbone.*' (186 keys), net.head.weight"."""
    groups = {}
    for k in keys:
        label = f"'{prefix_of[k]}*'" if prefix_of.get(k) else k
        groups[label] = groups.get(label, 0) + 1
    return _short([f"{g} ({n} keys)" if n > 1 else g for g, n in groups.items()])


def load_pretrained(module, path, skip_substrings=("fc.",), shape_match="error"):
    """Load the backbone weights in the file at `path` into `module` (module docstring); returns
    (loaded keys in the module's names, skipped keys). Sets `module.pretrained_report` (one line).

    Keys containing any of `skip_substrings` are skipped. With shape_match="error" every key under the
    chosen prefix(es) must exist in the module with the same shape and every module key must be present
    (BN `num_batches_tracked`, absent from old torchvision files, excepted); all problems are reported in
    one UserError. With shape_match="skip", unknown and shape-mismatched keys are skipped instead (CADEL).
    """
    if shape_match not in ("error", "skip"):
        raise UserError(f"shape_match {shape_match!r} is not one of error, skip")
    state = load_state_dict_file(path)
    own = module.state_dict()
    prefixes, mapping, prefix_of = locate_backbone(list(state), own)
    children = {k.split(".")[0] for k in _aliases(own)}  # stem, layer1, ... (and torchvision's conv1, bn1)
    to_load, loaded, skipped, outside, unexpected, mismatched = {}, [], [], [], [], []
    for file_key, value in state.items():
        prefix = next((p for p in prefixes if file_key.startswith(p)), None)
        key = mapping.get(file_key, file_key[len(prefix):] if prefix is not None else file_key)
        if prefix is None or (file_key not in mapping and key.split(".")[0] not in children
                              and not any(s in key for s in skip_substrings)):
            outside.append(file_key)  # not a part of this backbone (a head, another expert, ...)
        elif any(s in key for s in skip_substrings):
            skipped.append(key)
        elif file_key not in mapping:
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
        missing = [k for k in own if k not in to_load and not k.endswith("num_batches_tracked")
                   and not any(s in k for s in skip_substrings)]
        problems = fit_problems(mismatched, unexpected, missing)
        if problems:
            where = f" (keys under {', '.join(repr(p) for p in prefixes)})" if any(prefixes) else ""
            raise UserError(f"pretrained weights file {path} does not fit the model{where}: " + "; ".join(problems))

    module.load_state_dict(to_load, strict=False)
    skipped += outside
    under = f" from the keys under {', '.join(repr(p) for p in prefixes)}" if any(prefixes) else ""
    module.pretrained_report = (
        f"pretrained weights {path}: loaded {len(loaded)} of the backbone's {len(own)} tensors{under}; "
        f"skipped {len(skipped)}" + (f": {_summary(skipped, prefix_of)}" if skipped else ""))
    return loaded, skipped
