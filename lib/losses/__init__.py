"""Classification losses selected by LOSS.LOSS_TYPE (BoT names); each module registers itself."""
import importlib
import pkgutil

from .base import LOSSES, Loss  # noqa: F401

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base" and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")


def build_loss(cfg, counts):
    return LOSSES.get(cfg.LOSS.LOSS_TYPE, "LOSS.LOSS_TYPE")(cfg, counts)
