from ..utils.unused_keys import notices  # noqa: F401
from .config import build_config, get_cfg_defaults  # noqa: F401
