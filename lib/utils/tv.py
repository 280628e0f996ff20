"""The one place torchvision is imported.

torchvision 0.28.0 wheels link their compiled ops against CUDA torch; with the CPU torch
wheel `import torchvision` fails with "operator torchvision::nms does not exist". Only in
that case we register the two missing operator schemas and import again (never up front:
with a CUDA torch the real extension registers them and a second registration aborts).
The Python part (transforms v2, model definitions) then works; compiled ops stay unavailable.
"""
import sys

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_lib = None


def _import():
    import torchvision  # noqa: F401

    return torchvision


def import_torchvision():
    global _lib
    try:
        return _import()
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if _lib is None:
        _lib = torch.library.Library("torchvision", "FRAGMENT")
        for schema in _SCHEMAS.values():
            try:
                _lib.define(schema)
            except RuntimeError:
                pass  # already defined by a partial import
    return _import()


torchvision = import_torchvision()
from torchvision import models, transforms  # noqa: E402,F401
from torchvision.transforms import v2  # noqa: E402,F401
