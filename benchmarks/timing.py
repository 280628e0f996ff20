"""Timing a training step: the framework's own loop, a bare PyTorch loop, and interleaved repeats.

Shared by benchmarks/throughput.py and the studies in benchmarks/studies/.
"""
import contextlib
import os
import sys
import time

import torch
from torch.nn import functional as F

from lib.config import build_config
from lib.data.build import DataSplits
from lib.data.longtail import exponential_counts
from lib.engine.amp import AmpContext
from lib.engine.optim import LRSchedule, build_optimizer
from lib.engine.trainer import train_one_epoch, wrap_model
from lib.methods import build_method
from lib.models.network import in_channels
from lib.utils.errors import UserError

from benchmarks.machine_info import stats

BASE_CONFIG = "configs/fashion_mnist_lt/ce_res32.yaml"


def variants(device):
    """{name: (amp enabled, amp dtype, channels_last)}: fp32, fp32 + channels_last, and AMP + channels_last
    (bf16 autocast on CPU, fp16 + GradScaler on CUDA)."""
    amp = ("fp16_channels_last", "float16") if device == "cuda" else ("bf16_channels_last", "bfloat16")
    return {"fp32": (False, "auto", False), "fp32_channels_last": (False, "auto", True),
            amp[0]: (True, amp[1], True)}


def make_cfg(config, device, variant, batch, opts=()):
    """The config at 32x32, this batch, device and precision variant, no TensorBoard, no pretrained weights."""
    amp, dtype, channels_last = variant
    return build_config(config, ["INPUT_SIZE", "(32, 32)", "TRAIN.BATCH_SIZE", str(batch), "DEVICE", device,
                                 "TRAIN.AMP.ENABLE", str(amp), "TRAIN.AMP.DTYPE", dtype,
                                 "TRAIN.CHANNELS_LAST", str(channels_last), "NETWORK.PRETRAINED", "False",
                                 "TRAIN.TENSORBOARD.ENABLE", "False", *opts])


def require_root():
    """The scripts read configs/ relative to the working directory."""
    if not os.path.isfile(BASE_CONFIG):
        raise UserError(f"{BASE_CONFIG} not found: run from the repository root")


def training_counts(cfg):
    """n_c of the config's training JSON (as the trainer orders it), else an IF-100 profile of 10 classes."""
    if cfg.DATASET.TRAIN_JSON and os.path.isfile(cfg.DATASET.TRAIN_JSON):
        c = cfg.clone()
        c.defrost()
        c.DATASET.VALID_JSON, c.DATASET.TEST_JSON = "", ""
        return DataSplits(c, need_train=False).counts
    return exponential_counts(1000, 100, 10)


def memory_batches(cfg, counts, n, batch, device, seed=0):
    """n batch dicts in memory: N(0,1) images of the config's shape, labels drawn from the class counts."""
    g = torch.Generator().manual_seed(seed)
    h, w = (int(s) for s in cfg.INPUT_SIZE)
    prior = torch.tensor(counts, dtype=torch.float)
    out = []
    for _ in range(n):
        b = {"image": torch.randn(batch, in_channels(cfg), h, w, generator=g),
             "label": torch.multinomial(prior, batch, replacement=True, generator=g),
             "index": torch.arange(batch)}
        if len(cfg.TRANSFORMS.SECOND_VIEW_TRANSFORMS):
            b["image2"] = torch.randn(batch, in_channels(cfg), h, w, generator=g)
        out.append({k: v.to(device) for k, v in b.items()})
    return out


def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FileLogger:
    """The trainer's logger as `train_one_epoch` uses it: lines to a file, no progress bar."""

    interactive = False

    def __init__(self, path):
        self.file = open(path, "a", buffering=1)

    def info(self, msg, console=True):
        self.file.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}\n")


class FrameworkStep:
    """The trainer's set-up (as in `train`) and its own loop `train_one_epoch` over in-memory batches."""

    def __init__(self, cfg, counts, log_path, per_step_schedule=False):
        self.cfg = cfg
        self.device = torch.device(cfg.DEVICE)
        self.log = FileLogger(log_path)
        self.method = build_method(cfg, counts).to(self.device)
        if cfg.TRAIN.CHANNELS_LAST:
            self.method.to(memory_format=torch.channels_last)
        self.model = wrap_model(cfg, self.method, self.device, self.log)
        self.optimizer = build_optimizer(cfg, self.method)
        self.scheduler = LRSchedule(cfg, self.optimizer)
        self.scheduler.set_epoch(1)
        self.per_step_schedule = per_step_schedule  # the trainer's scheduler.step before every optimizer step
        self.method.on_epoch_start(1)
        self.amp = AmpContext(cfg, self.device)

    def __call__(self, batches):
        synchronize(self.device)
        t0 = time.perf_counter()
        train_one_epoch(self.model, self.method, batches, self.optimizer, self.amp, self.device, 1, self.cfg,
                        self.log, scheduler=self.scheduler if self.per_step_schedule else None)
        synchronize(self.device)
        return time.perf_counter() - t0

    def members(self):
        """K: the experts/heads the method trains (0 for a single model); combinations are not networks."""
        k = len(self.method.classifier_heads())
        return k if k > 1 else 0


class BareStep:
    """A hand-written training loop on `net` itself: forward, F.cross_entropy, zero_grad, backward, SGD step
    (the config's settings), under the config's AMP and memory format."""

    def __init__(self, net, cfg):
        self.device = torch.device(cfg.DEVICE)
        self.net = net
        o = cfg.TRAIN.OPTIMIZER
        self.opt = torch.optim.SGD(net.parameters(), lr=o.BASE_LR, momentum=o.MOMENTUM,
                                   weight_decay=o.WEIGHT_DECAY, nesterov=bool(o.NESTEROV and o.MOMENTUM > 0))
        self.set_precision(cfg)

    def set_precision(self, cfg):
        """AMP dtype, GradScaler (fp16 on CUDA only) and memory format, as the config says."""
        amp = cfg.TRAIN.AMP
        self.dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(
            amp.DTYPE, torch.float16 if self.device.type == "cuda" else torch.bfloat16)
        self.amp = amp.ENABLE
        self.scaler = (torch.amp.GradScaler("cuda") if self.amp and self.device.type == "cuda"
                       and self.dtype == torch.float16 else None)
        self.channels_last = cfg.TRAIN.CHANNELS_LAST

    def before_step(self):
        """Per-iteration work before forward (none in the plain SGD loop)."""

    def step(self, b):
        """One training step on batch dict `b`; returns the loss."""
        x, y = b["image"].to(self.device, non_blocking=True), b["label"].to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.before_step()
        ctx = torch.autocast(self.device.type, dtype=self.dtype) if self.amp else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(self.net(x), y)
        self.opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            loss.backward()
            self.opt.step()
        return loss

    def __call__(self, batches):
        """Seconds for these batches (synchronised)."""
        self.net.train()
        synchronize(self.device)
        t0 = time.perf_counter()
        for b in batches:
            self.step(b)
        synchronize(self.device)
        return time.perf_counter() - t0


def interleaved(candidates, repeats, progress=""):
    """{name: [seconds per repeat]}; repeat r runs the candidates in an order rotated by r."""
    names = list(candidates)
    out = {k: [] for k in names}
    for r in range(repeats):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out[name].append(candidates[name]())
        print(f"  {progress}repeat {r + 1}/{repeats} done", file=sys.stderr, flush=True)
    return out


def ratio_stats(num, den):
    return stats([a / b for a, b in zip(num, den)])


def fmt3(s, digits=3):
    return " / ".join(f"{s[k]:.{digits}f}" for k in ("min", "median", "max"))


def iterations_for(step_s, target_s, cap):
    """Iterations per repeat so that one repeat lasts about target_s (at least 1, at most cap)."""
    return max(1, min(cap, int(round(target_s / max(step_s, 1e-6)))))


def calibrate(fn, batches, warmup, target=0.0):
    """Warm up (allocator, kernel choice), then time one step; returns seconds per step.
    A variant whose warm-up step already takes longer than `target` is warmed up once only."""
    for _ in range(warmup):
        if fn(batches[:1]) > target > 0:
            break
    t = fn(batches[:1])
    return min(t, fn(batches[:1])) if t < target / 2 else t  # a cheap step is timed twice


def add_timing_args(p, out):
    """The options every timing script takes."""
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=0, help="interleaved repeats (default 7; smoke 2)")
    p.add_argument("--iters", type=int, default=0,
                   help="fixed iterations per repeat (default: chosen so a repeat lasts --repeat-seconds)")
    p.add_argument("--repeat-seconds", type=float, default=3.0, help="target length of one repeat (default 3 s)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up iterations per candidate (default 3)")
    p.add_argument("--batch", type=int, default=0, help="batch size (default 128; smoke 4)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default: torch's, = cores); 1 avoids spinning threads on a busy CPU")
    p.add_argument("--out", default=out, help=f"folder for the result files (default {out})")
    p.add_argument("--smoke", action="store_true", help="a few tiny iterations (checks the harness, not speed)")


def setup(args):
    """Checks and settings before timing: the checkout root, CUDA, torch threads."""
    require_root()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine")
    if args.threads:
        torch.set_num_threads(args.threads)


def timing_sizes(args, cuda_cap=50):
    """(batch, repeats, iteration cap, seconds per repeat (0: always the cap), warm-up iterations)."""
    cap = cuda_cap if args.device == "cuda" else 50
    return (args.batch or (4 if args.smoke else 128), args.repeats or (2 if args.smoke else 7),
            args.iters or (1 if args.smoke else cap), 0.0 if args.smoke or args.iters else args.repeat_seconds,
            0 if args.smoke else args.warmup)
