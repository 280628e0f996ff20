"""The run folder OUTPUT_DIR/NAME/ with models/ logs/ tensorboard/ config.yaml; never prompts. A fresh run never
writes into an earlier run's folder: that one is moved aside first (archive_previous_run)."""
import os
import time

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


def archive_previous_run(cfg):
    """A fresh (not resumed) run whose folder already holds an earlier run's files (anything but config.yaml):
    the earlier run is moved, untouched, to OUTPUT_DIR/NAME.<date-time> so that nothing of it is overwritten
    or mixed into the new run. Returns the `notice:` text, or None when the folder is new or empty."""
    run_dir = run_dir_of(cfg)
    held = [os.path.join(d, f) for d, _, files in os.walk(run_dir) for f in files]
    if not [f for f in held if f != os.path.join(run_dir, "config.yaml")]:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dest, k = f"{run_dir}.{stamp}", 1
    while os.path.exists(dest):
        k += 1
        dest = f"{run_dir}.{stamp}_{k}"
    try:
        os.rename(run_dir, dest)
    except OSError as e:
        raise UserError(f"output folder {run_dir} holds an earlier run and cannot be moved aside ({e.strerror}); "
                        "resume it with --ar, or set another NAME") from None
    return (f"{run_dir} held an earlier run: moved it, unchanged, to {dest}; this run starts in a fresh {run_dir} "
            "(--ar resumes a run instead)")


def resolve_checkpoint(cfg, name, key):
    """A checkpoint named by a config key: a path as is, else a file in OUTPUT_DIR/NAME/models/, else a
    path under OUTPUT_DIR (so stage two can name `stage1_run/models/best_model.pth` and follow OUTPUT_DIR)."""
    if not name:
        raise UserError(f"{key} is empty")
    models = os.path.join(run_dir_of(cfg), "models")
    candidates = (name, os.path.join(models, name), os.path.join(cfg.OUTPUT_DIR, name))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    if key == "TEST.MODEL_FILE" and os.path.basename(name) == name:  # the run's own checkpoint (valid.py)
        raise UserError(f"no checkpoint {name} in {models}{os.sep} (TEST.MODEL_FILE): train first "
                        "(python main/train.py CONFIG) or pass --checkpoint PATH")
    tried = ", ".join(dict.fromkeys(os.path.normpath(c) for c in candidates))
    raise UserError(f"{key}: checkpoint not found: {name} (looked for {tried})")
