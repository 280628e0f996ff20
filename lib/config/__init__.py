from .config import build_config, get_cfg_defaults  # noqa: F401
