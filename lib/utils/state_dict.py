"""The one safe reader of weight files (checkpoints, pretrained backbones, ViT weights).

`torch.load(weights_only=True)` with numpy scalars, dtypes and arrays on the allow-list: the original
repositories store `best_result` as a numpy scalar; these are rebuilt without running pickled code.
Anything else that needs a Python global is refused with one line naming it and saying how to re-save
the weights. `read_state_dict` adds the checks every caller wants: the file exists, it is readable, and
it holds (or wraps) a name -> tensor dict.
"""
import os
import pickle
import re

import torch

from .errors import UserError


def numpy_safe_globals():
    """numpy's scalar, dtype and array constructors under the names numpy 1.x (`numpy.core`) and 2.x
    (`numpy._core`) write into pickles: what `torch.load(weights_only=True)` may rebuild besides
    tensors. Each only builds a value from plain data (no attribute lookup, no call of a pickled name)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    out = [np.dtype, np.ndarray]
    for fn in (core.multiarray.scalar, core.multiarray._reconstruct):
        out += [(fn, f"{mod}.multiarray.{fn.__name__}") for mod in ("numpy.core", "numpy._core")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25: numpy.dtypes.Float64DType, ...
    if dtypes is not None:
        out += [getattr(dtypes, n) for n in dir(dtypes) if n.endswith("DType") and isinstance(getattr(dtypes, n), type)]
    return out


def _refusal(path, err):
    """torch's refusal text (terminal escape codes, "two options", the cause at the end) -> one line that
    names the global and says what to do."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err))
    m = re.search(r"GLOBAL ([\w.]+)", text)
    if m and re.search(r"whose module \S+ is blocked", text):  # os.system & co.: code, never weights
        return (f"refusing to load {path}: it is not a plain weights file: loading it would call "
                f"'{m.group(1)}' (pickled code); do not load it with weights_only=False, get the weights from a "
                f"trusted source")
    if m:
        what = f"the Python global '{m.group(1)}'"
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Check the documentation")]
        cause = re.sub(r"^WeightsUnpickler error:\s*", "", lines[-1] if lines else "unknown content")
        what = f"content weights-only loading cannot read ({cause[:160]})"
    return (f"refusing to load {path}: it is not a plain weights file: it holds {what}, which only a full "
            f"unpickle (torch.load weights_only=False, which can run code) would rebuild; tensors, numbers, "
            f"strings, containers and numpy scalars/dtypes/arrays load safely. If you trust its source, re-save "
            f"its weights: python3 -c \"import torch; c = torch.load('{path}', weights_only=False); "
            f"torch.save(c.get('state_dict', c), 'weights.pth')\"")


def safe_torch_load(path):
    """torch.load(weights_only=True) with numpy's scalars/dtypes/arrays allowed (numpy_safe_globals).
    Raises UserError (one line) for a file that needs any other Python global."""
    try:
        with torch.serialization.safe_globals(numpy_safe_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UserError(_refusal(path, e)) from None


def strip_prefix(state_dict, prefix="module."):
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def read_state_dict(path, containers=("state_dict", "model", "net"), missing_hint=""):
    """The state dict (name -> tensor) in the file at `path`, unwrapped from
    the first of `containers` the file holds. One-line UserError naming the file otherwise;
    `missing_hint` is added to the message for a missing file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"pretrained weights file {path} does not exist{missing_hint}")
    try:
        obj = safe_torch_load(path)
    except UserError:  # a refusal: it names the global and what to do
        raise
    except Exception as e:  # zip/EOF errors of many kinds
        msg = " ".join(str(e).split())[:200]
        raise UserError(f"pretrained weights file {path} could not be read: {type(e).__name__}: {msg}") from None
    if isinstance(obj, dict):
        for key in containers:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not (isinstance(obj, dict) and obj and all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())):
        under = "/".join(f"'{c}'" for c in containers)
        raise UserError(f"pretrained weights file {path} is not a state dict "
                        f"(expected a non-empty dict of name -> tensor, or one under {under})")
    return obj
