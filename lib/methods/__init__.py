"""Methods: every module in this package registers itself; adding a method = one new file."""
import importlib
import pkgutil

from .base import METHODS, Method  # noqa: F401

for _m in pkgutil.iter_modules(__path__):
    if _m.name != "base" and not _m.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_m.name}")


def registered_config_adders():
    return [METHODS.get(name).add_config for name in METHODS.names()]


def build_method(cfg, counts):
    """Instantiate cfg.METHOD for the training class counts (list of n_c)."""
    return METHODS.get(cfg.METHOD, "METHOD")(cfg, counts)
