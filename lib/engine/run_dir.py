"""The run folder OUTPUT_DIR/NAME/ with models/ logs/ tensorboard/ config.yaml; never prompts."""
import os

from ..utils.atomic import write_text
from ..utils.errors import UserError


def run_dir_of(cfg):
    return os.path.join(cfg.OUTPUT_DIR, cfg.NAME)


def prepare_run_dir(cfg, write=True):
    """Create the folders (an existing run folder is reused, e.g. to resume) and save the resolved config."""
    run_dir = run_dir_of(cfg)
    if not write:
        return run_dir
    try:
        for sub in ("models", "logs", "tensorboard"):
            os.makedirs(os.path.join(run_dir, sub), exist_ok=True)
        write_text(os.path.join(run_dir, "config.yaml"), cfg.dump())
    except OSError as e:
        raise UserError(f"output folder {run_dir} is not writable ({e.strerror}); set OUTPUT_DIR") from None
    return run_dir


def resolve_checkpoint(cfg, name, key):
    """A checkpoint named by a config key: a path as is, else a file in OUTPUT_DIR/NAME/models/."""
    if not name:
        raise UserError(f"{key} is empty")
    for candidate in (name, os.path.join(run_dir_of(cfg), "models", name)):
        if os.path.isfile(candidate):
            return candidate
    raise UserError(f"{key}: checkpoint not found: {name} (also looked in {os.path.join(run_dir_of(cfg), 'models')})")
