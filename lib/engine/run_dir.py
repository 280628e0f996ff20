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
    """A checkpoint named by a config key: a path as is, else a file in OUTPUT_DIR/NAME/models/, else a
    path under OUTPUT_DIR (so stage two can name `stage1_run/models/best_model.pth` and follow OUTPUT_DIR)."""
    if not name:
        raise UserError(f"{key} is empty")
    candidates = (name, os.path.join(run_dir_of(cfg), "models", name), os.path.join(cfg.OUTPUT_DIR, name))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise UserError(f"{key}: checkpoint not found: {name} (looked in ., {candidates[1]!r}, {candidates[2]!r})")
