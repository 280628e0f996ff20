"""A trained run for prediction and export: CONFIG or RUN_DIR -> config, weights, class names, preprocessing
and post-hoc settings (TEST.LOGIT_ADJUST.TAU, TEST.TEMPERATURE, TEST.FLIP_TTA, TEST.TAU_NORM)."""
import os

from ..config import build_config
from ..data.annotations import read_json
from ..data.build import DataSplits
from ..data.transforms import build_transforms, normalize_stats
from ..engine.checkpoint import load_trained_method
from ..engine.run_dir import resolve_checkpoint
from ..utils.distributed import choose_device
from ..utils.errors import UserError


def config_of(target):
    """(config file, run folder or None) for CONFIG or RUN_DIR (a training run folder with config.yaml)."""
    if os.path.isdir(target):
        path = os.path.join(target, "config.yaml")
        if not os.path.isfile(path):
            raise UserError(f"{target} is a folder without config.yaml: give a training run folder OUTPUT_DIR/NAME "
                            f"or a config file")
        return path, target
    return target, None


def read_posthoc(path):
    """(tau, T) of the main prediction in a tools/posthoc_tau.py output (its folder or its results.json)."""
    if os.path.isdir(path):
        path = os.path.join(path, "results.json")
    res = read_json(path)
    tau = res.get("tau") if isinstance(res, dict) else None
    if not isinstance(tau, dict) or "main" not in tau:
        raise UserError(f"{path}: not a results.json of tools/posthoc_tau.py (no tau of the main prediction)")
    temps = res.get("temperature") or {}
    return float(tau["main"]), float(temps.get("main", 1.0))


def posthoc_opts(posthoc=None, tau=None, temperature=None):
    """KEY VALUE pairs for a posthoc_tau output and the --logit-adjust-tau / --temperature flags (flags win)."""
    opts = []
    if posthoc:
        t, T = read_posthoc(posthoc)
        opts += ["TEST.LOGIT_ADJUST.TAU", repr(t), "TEST.TEMPERATURE", repr(T)]
    if tau is not None:
        opts += ["TEST.LOGIT_ADJUST.TAU", repr(float(tau))]
    if temperature is not None:
        opts += ["TEST.TEMPERATURE", repr(float(temperature))]
    return opts


def _train_json_only(cfg):
    """The config with VALID_JSON / TEST_JSON emptied: class counts and names come from TRAIN_JSON alone."""
    cfg = cfg.clone()
    cfg.defrost()
    cfg.DATASET.VALID_JSON = ""
    cfg.DATASET.TEST_JSON = ""
    cfg.freeze()
    return cfg


def _checkpoint(cfg, run_dir, name):
    """--checkpoint (or TEST.MODEL_FILE): a path, a file in RUN_DIR/models/, else as valid.py resolves it."""
    key = "--checkpoint" if name else "TEST.MODEL_FILE"
    name = name or cfg.TEST.MODEL_FILE
    if run_dir and not os.path.isfile(name) and os.path.isfile(os.path.join(run_dir, "models", name)):
        return os.path.join(run_dir, "models", name)
    return resolve_checkpoint(cfg, name, key)


class TrainedRun:
    """cfg, method (eval mode, on `device`), counts, class_names, transform (the test pipeline), checkpoint."""

    def __init__(self, target, opts=(), checkpoint=""):
        cfg_path, run_dir = config_of(target)
        self.cfg = cfg = build_config(cfg_path, list(opts))
        if cfg.TEST.TEMPERATURE <= 0:
            raise UserError(f"TEST.TEMPERATURE must be > 0, got {cfg.TEST.TEMPERATURE}")
        self.device = choose_device(cfg)
        data = DataSplits(_train_json_only(cfg), need_train=False)
        self.counts = data.counts
        self.class_names = data.class_names() or [str(c) for c in range(data.num_classes)]
        self.checkpoint = _checkpoint(cfg, run_dir, checkpoint)
        self.method, ckpt = load_trained_method(cfg, data.counts, self.checkpoint, self.device)
        self.method.eval()
        self.epoch = int(ckpt.get("epoch", -1))
        self.transform = build_transforms(cfg)["test"]

    @property
    def tau(self):
        return float(self.cfg.TEST.LOGIT_ADJUST.TAU)

    @property
    def temperature(self):
        return float(self.cfg.TEST.TEMPERATURE)

    def preprocessing(self):
        """What an image goes through before the model (transforms.py), for the export's sidecar."""
        cfg = self.cfg
        stats = normalize_stats(cfg)
        channels = 3 if cfg.COLOR_SPACE == "RGB" else 1
        mean, std = stats if stats else ((0.0,) * channels, (1.0,) * channels)
        return {"input_size": [int(s) for s in cfg.INPUT_SIZE], "color_space": cfg.COLOR_SPACE,
                "channels": channels, "test_transforms": list(cfg.TRANSFORMS.TEST_TRANSFORMS),
                "shorter_resize_ratio": float(cfg.TRANSFORMS.PROCESS_DETAIL.SHORTER_RESIZE_RATIO),
                "normalize": cfg.TRANSFORMS.NORMALIZE, "mean": list(mean), "std": list(std),
                "steps": "decode to color_space; test_transforms; resize to input_size unless they end at it; "
                         "scale to [0, 1]; (x - mean) / std per channel; NCHW float32"}

    def posthoc(self):
        t = self.cfg.TEST
        return {"logit_adjust_tau": self.tau, "temperature": self.temperature, "flip_tta": bool(t.FLIP_TTA),
                "tau_norm": float(t.TAU_NORM.TAU) if t.TAU_NORM.USE_TAU_NORM else None}
