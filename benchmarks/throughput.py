"""What the framework costs over hand-written PyTorch, measured side by side in one process.

    python benchmarks/throughput.py [--device cpu|cuda] [--repeats 7] [--repeat-seconds 3] [--workers 2]
        [--configs FILE ...] [--out benchmarks/results] [--smoke] [--vit-only] [--vit-variants fp32 bf16]

Same model (ResNet-32 of configs/fashion_mnist_lt/ce_res32.yaml), 32x32 inputs, batch 128, the same
precision and memory format on both sides, data already in memory (device memory on CUDA), in three
variants: fp32, fp32 + channels_last, AMP + channels_last (bf16 autocast on CPU, fp16 + GradScaler on CUDA):

(a) framework step / bare step. Framework = the trainer's own epoch loop `train_one_epoch` (prepare_batch,
    forward + loss under autocast, non-finite check, backward + optimizer step, after_optimizer_step, and
    the per-iteration bookkeeping: accuracy, running loss, log line every SHOW_STEP) over the in-memory
    batches; bare = a plain loop written below (forward, F.cross_entropy, zero_grad, backward, step) on a
    copy of the same network with the same SGD settings. Ratio = framework images/s / bare images/s.
(b) data pipeline / model: the JSON dataset + the config's transforms + the trainer's DataLoader
    (TRAIN.NUM_WORKERS = --workers) over 32x32 RGB PNGs, images/s over whole epochs (worker start-up
    included, as the trainer pays it every epoch), against the framework step's images/s. Both are
    measured alone: on a machine with few cores the two compete for the same cores during training.
(c) for every config whose method predicts with K > 1 members (experts / heads): its framework step
    time / (K x the single-model CE step time with the same backbone).
(d) NCL's K experts run one after another (NCL.BATCHED_EXPERTS False) and batched as one wide network
    (True), side by side: framework step time / (K x the single ResNet-32 CE step), the three candidates
    interleaved; targets batched <= 0.9, sequential <= 1.05. --ncl-only measures just this, for every
    --ncl-variants, into <out>/throughput_<device>_ncl.{md,json}; --ncl-profile adds a torch.profiler
    table of one step of each path.
(e) the ViT step (configs/fashion_mnist_lt/ce_vit_tiny.yaml: vit_tiny_p4, AdamW with layer-wise LR decay and no
    weight decay on 1-D parameters, the per-iteration warmup + cosine schedule, drop path 0.1) against a bare
    timm loop: the same weights in timm's own VisionTransformer (classifier included), the optimizer from
    timm.optim.create_optimizer_v2(adamw, layer_decay) (timm's BEiT groups, lr_scale per group), the LR set by hand
    before every step (MAE's per-iteration warmup + half-cycle cosine), forward, F.cross_entropy, zero_grad,
    backward, step. Ratio = framework images/s / bare images/s, at fp32 and AMP (--vit-variants). --vit-only
    measures just this, into <out>/throughput_<device>_vit.{md,json}.

Repeats are interleaved (framework, bare and, for the fastest variant, the pipeline, in rotating order)
so that load from other processes hits all of them alike; every figure is min / median / max over the
repeats. Iterations per repeat are chosen per variant from a timed step after warm-up so that a repeat
lasts about --repeat-seconds (a variant more than 4x slower than the quickest, e.g. bf16 on a CPU
without native bf16, gets 3 repeats). Also prints absolute
images/s and the time for 200 epochs of a 10,847-image (CIFAR-100-LT IF100-sized) training set.
Writes <out>/throughput_<device>.md and .json (with the machine and date); --smoke: a few tiny
iterations, to <out>/throughput_<device>_smoke.*.
"""
import argparse
import contextlib
import copy
import glob
import math
import os
import sys
import tempfile
import time

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's lib/
from lib.config import build_config
from lib.data.build import DataSplits, train_loader
from lib.data.image_folder_writer import write_image_folder_dataset
from lib.data.longtail import exponential_counts
from lib.engine.amp import AmpContext
from lib.engine.optim import LRSchedule, build_optimizer
from lib.engine.trainer import train_one_epoch, wrap_model
from lib.methods import build_method
from lib.models.network import in_channels
from lib.utils.atomic import write_json, write_text
from lib.utils.errors import UserError, exit_on_user_error

from machine_info import describe_machine, machine_line, stats

BASE_CONFIG = "configs/fashion_mnist_lt/ce_res32.yaml"
CONFIG_GLOB = "configs/fashion_mnist_lt/*.yaml"
ESTIMATE_IMAGES, ESTIMATE_EPOCHS = 10847, 200  # CIFAR-100-LT IF100 training set, the usual schedule
FRAMEWORK_TARGET, PIPELINE_TARGET = 0.95, 2.0


def variants(device):
    """{name: (amp enabled, amp dtype, channels_last)}: plain fp32, channels_last (the Fashion-MNIST configs'
    setting), and AMP + channels_last (bf16 autocast on CPU, fp16 + GradScaler on CUDA)."""
    amp = ("fp16_channels_last", "float16") if device == "cuda" else ("bf16_channels_last", "bfloat16")
    return {"fp32": (False, "auto", False), "fp32_channels_last": (False, "auto", True),
            amp[0]: (True, amp[1], True)}


class FileLogger:
    """What `train_one_epoch` needs of the trainer's logger: its lines (one every SHOW_STEP iterations)
    go to a file, as in a non-interactive run; no progress bar."""

    interactive = False

    def __init__(self, path):
        self.file = open(path, "a", buffering=1)

    def info(self, msg, console=True):
        self.file.write(f"[{time.strftime('%Y-%m-%d %H:%M:%S')}] {msg}\n")


def make_cfg(config, device, variant, batch, opts=()):
    amp, dtype, channels_last = variant
    return build_config(config, ["INPUT_SIZE", "(32, 32)", "TRAIN.BATCH_SIZE", str(batch), "DEVICE", device,
                                 "TRAIN.AMP.ENABLE", str(amp), "TRAIN.AMP.DTYPE", dtype,
                                 "TRAIN.CHANNELS_LAST", str(channels_last), "NETWORK.PRETRAINED", "False",
                                 "TRAIN.TENSORBOARD.ENABLE", "False", *opts])


def training_counts(cfg):
    """n_c of the config's training JSON (re-ordered as the trainer would), else an IF-100 profile of 10 classes."""
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
        self.per_step_schedule = per_step_schedule  # (e): the trainer's scheduler.step before every optimizer step
        self.method.on_epoch_start(1)
        self.amp = AmpContext(cfg, self.device)

    def __call__(self, batches):
        synchronize(self.device)
        t0 = time.perf_counter()
        train_one_epoch(self.model, self.method, batches, self.optimizer, self.amp, self.device, 1, self.cfg,
                        self.log, scheduler=self.scheduler if self.per_step_schedule else None)
        synchronize(self.device)
        return time.perf_counter() - t0

    def members(self, batch):
        """K: how many experts/heads (classifiers) the method trains, 0 for a single model; combinations such as
        CADEL's mean of heads are reported members but not networks."""
        k = len(self.method.classifier_heads())
        return k if k > 1 else 0


class BareStep:
    """A hand-written PyTorch training loop on a copy of the same network, with the same SGD settings."""

    def __init__(self, net, cfg):
        self.device = torch.device(cfg.DEVICE)
        self.net = copy.deepcopy(net)
        o = cfg.TRAIN.OPTIMIZER
        self.opt = torch.optim.SGD(self.net.parameters(), lr=o.BASE_LR, momentum=o.MOMENTUM,
                                   weight_decay=o.WEIGHT_DECAY, nesterov=o.NESTEROV and o.MOMENTUM > 0)
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
        """Per-iteration work of the loop before forward (the plain SGD loop has none)."""

    def __call__(self, batches):
        self.net.train()
        synchronize(self.device)
        t0 = time.perf_counter()
        for b in batches:
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
        synchronize(self.device)
        return time.perf_counter() - t0


class PipelineEpoch:
    """One pass of the trainer's DataLoader over a JSON dataset of 32x32 RGB PNGs, nothing else."""

    def __init__(self, folder, n_images, workers, batch, seed=0):
        rng = np.random.default_rng(seed)
        # uniform noise: PNG cannot compress it, so decoding costs at least what a CIFAR photo costs
        images = rng.integers(0, 256, size=(n_images, 32, 32, 3), dtype=np.uint8)
        labels = np.arange(n_images) % 10
        write_image_folder_dataset(folder, "pipe32", {"train": (images, labels)}, 10, fmt="png", workers=1,
                                   log=lambda *a, **k: None)
        json_path = os.path.join(folder, "pipe32", "pipe32_train.json")
        cfg = build_config(BASE_CONFIG, ["INPUT_SIZE", "(32, 32)", "TRAIN.BATCH_SIZE", str(batch),
                                         "TRAIN.NUM_WORKERS", str(workers), "TRANSFORMS.NORMALIZE", "cifar",
                                         "DATASET.TRAIN_JSON", json_path, "DATASET.VALID_JSON", "",
                                         "DATASET.TEST_JSON", ""])
        self.transforms = list(cfg.TRANSFORMS.TRAIN_TRANSFORMS)
        self.loader = train_loader(cfg, DataSplits(cfg).train, 1, 0, cfg.SEED)
        self.epoch = 0

    def __call__(self):
        """Seconds for one epoch (worker start-up included) and the number of images it delivered."""
        self.epoch += 1
        self.loader.sampler.set_epoch(self.epoch)
        t0 = time.perf_counter()
        n = sum(int(b["label"].shape[0]) for b in self.loader)
        return time.perf_counter() - t0, n


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


def config_list(configs):
    return configs if configs else sorted(glob.glob(CONFIG_GLOB))


def iterations_for(step_s, target_s, cap):
    """Iterations per repeat so that one repeat lasts about target_s (at least 1, at most cap)."""
    return max(1, min(cap, int(round(target_s / max(step_s, 1e-6)))))


def calibrate(fn, batches, warmup, target=0.0):
    """Warm up (allocator, oneDNN/cuDNN kernel choice), then time one step; returns seconds per step.
    A variant whose warm-up step already takes longer than `target` is warmed up once only."""
    for _ in range(warmup):
        if fn(batches[:1]) > target > 0:
            break
    t = fn(batches[:1])
    return min(t, fn(batches[:1])) if t < target / 2 else t  # a cheap step is timed twice


def cpu_features():
    """CPU instruction sets that decide whether bf16 autocast is fast (native bf16) or emulated."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    break
    except OSError:
        pass
    return {"torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "avx512f": "avx512f" in flags, "avx512_bf16": "avx512_bf16" in flags, "amx_bf16": "amx_bf16" in flags}


def measure(args):
    device = args.device
    with tempfile.TemporaryDirectory(prefix="ltr_throughput_") as tmp:
        return _measure(args, device, torch.device(device), tmp)


def _measure(args, device, dev, tmp):
    smoke = args.smoke
    batch = args.batch or (4 if smoke else 128)
    repeats = args.repeats or (2 if smoke else 7)
    warmup = 0 if smoke else args.warmup
    n_pipe = 16 if smoke else args.pipeline_images
    cap = args.iters or (1 if smoke else (200 if device == "cuda" else 50))
    target = 0.0 if smoke or args.iters else args.repeat_seconds  # 0: always `cap` iterations
    load_before = os.getloadavg()
    log_path = os.path.join(tmp, "train.log")
    V = variants(device)

    print(f"building the models ({', '.join(V)}) and {n_pipe} PNGs for the pipeline ...", file=sys.stderr)
    base = {name: make_cfg(BASE_CONFIG, device, v, batch) for name, v in V.items()}
    counts = training_counts(base["fp32"])
    batches = memory_batches(base["fp32"], counts, cap, batch, dev)
    fw = {name: FrameworkStep(cfg, counts, log_path) for name, cfg in base.items()}
    bare = {name: BareStep(fw[name].method.net, cfg) for name, cfg in base.items()}
    pipe = PipelineEpoch(tmp, n_pipe, args.workers, batch)
    params = sum(p.numel() for p in fw["fp32"].method.parameters())

    step_s, iters, reps = {}, {}, {}
    for name in V:
        if target:
            step_s[name] = calibrate(fw[name], batches, warmup, target)
            calibrate(bare[name], batches, warmup, target)
            iters[name] = iterations_for(step_s[name], target, cap)
        else:  # fixed iterations (--iters, --smoke): warm-up only
            fw[name](batches[:warmup])
            bare[name](batches[:warmup])
            step_s[name], iters[name] = 0.0, cap
    quickest = min(step_s.values())
    for name in V:
        # a variant > 4x slower than the quickest (bf16 emulated on a CPU without bf16) gets 3 repeats
        reps[name] = min(repeats, 3) if target and step_s[name] > 4 * quickest else repeats
        print(f"  {name}: {step_s[name]:.3f} s/step after warm-up -> {reps[name]} repeats of {iters[name]} "
              "iterations", file=sys.stderr)
    fastest = min(V, key=lambda n: step_s[n])  # the first variant when not calibrated
    pipe()  # warm-up: page cache, worker fork
    pipe_images = []

    def pipeline_run():
        s, n = pipe()
        pipe_images.append(n)
        return s

    t = {}
    for name in V:
        cands = {"framework": lambda name=name: fw[name](batches[:iters[name]]),
                 "bare": lambda name=name: bare[name](batches[:iters[name]])}
        if name == fastest:  # the pipeline is compared with the fastest model, interleaved with it
            cands["pipeline"] = pipeline_run
        print(f"(a){'+(b)' if name == fastest else ''} {name}: {reps[name]} interleaved repeats", file=sys.stderr)
        for k, v in interleaved(cands, reps[name], f"{name}: ").items():
            t[f"{k}/{name}" if k != "pipeline" else k] = v
    ips = {k: [iters[k.split("/")[1]] * batch / s for s in v] for k, v in t.items() if k != "pipeline"}
    ips["pipeline"] = [n / s for n, s in zip(pipe_images, t["pipeline"])]

    result = {
        "machine": dict(describe_machine(dev), **cpu_features()), "smoke": smoke,
        "settings": {"config": BASE_CONFIG, "backbone": base["fp32"].BACKBONE.TYPE, "parameters": params,
                     "input": [3, 32, 32], "batch": batch, "iterations_per_repeat": iters, "repeats": reps,
                     "warmup_iterations": warmup, "pipeline_images": n_pipe, "workers": args.workers,
                     "optimizer": "SGD as in the config (momentum, nesterov, weight decay)"},
        "framework_vs_bare": {}, "multi_expert": {}, "multi_expert_errors": {},
    }
    for name in V:
        f, b = ips[f"framework/{name}"], ips[f"bare/{name}"]
        result["framework_vs_bare"][name] = {"ratio": ratio_stats(f, b), "framework_images_per_s": stats(f),
                                             "bare_images_per_s": stats(b)}
    result["data_pipeline"] = {
        "workers": args.workers, "transforms": pipe.transforms, "images_per_s": stats(ips["pipeline"]),
        "model_variant": fastest, "model_images_per_s": stats(ips[f"framework/{fastest}"]),
        "ratio": ratio_stats(ips["pipeline"], ips[f"framework/{fastest}"]),
        "ratio_of_medians": {n: stats(ips["pipeline"])["median"] / stats(ips[f"framework/{n}"])["median"]
                             for n in V},
    }
    result["estimate_200_epochs"] = {}
    for name in V:
        model_ips = stats(ips[f"framework/{name}"])["median"]
        bound = min(model_ips, stats(ips["pipeline"])["median"])
        result["estimate_200_epochs"][name] = {
            "images": ESTIMATE_IMAGES, "epochs": ESTIMATE_EPOCHS, "images_per_s": bound,
            "bound_by": "model" if bound == model_ips else "data pipeline",
            "hours": ESTIMATE_IMAGES * ESTIMATE_EPOCHS / bound / 3600}

    # (c) multi-expert / multi-head methods, at the fastest setting
    single_cache = {}
    for path in config_list(args.configs):
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            cfg = make_cfg(path, device, V[fastest], batch)
            c_counts = training_counts(cfg)
            step = FrameworkStep(cfg, c_counts, log_path)
            c_batches = memory_batches(cfg, c_counts, cap, batch, dev)
            k = step.members(c_batches[0])
            if k <= 1:
                continue
            backbone = cfg.BACKBONE.TYPE
            if backbone not in single_cache:
                scfg = make_cfg(BASE_CONFIG, device, V[fastest], batch, ["BACKBONE.TYPE", backbone])
                single_cache[backbone] = FrameworkStep(scfg, counts, log_path)
            single = single_cache[backbone]
            s_batches = memory_batches(single.cfg, counts, cap, batch, dev)
            n_it = iterations_for(calibrate(step, c_batches, warmup, target), target, cap) if target else cap
            calibrate(single, s_batches, warmup, target)
            print(f"(c) {stem}: K={k}, {repeats} interleaved repeats of {n_it} iterations", file=sys.stderr)
            tc = interleaved({"method": lambda: step(c_batches[:n_it]), "single": lambda: single(s_batches[:n_it])},
                             repeats, f"{stem}: ")
        except Exception as e:  # a broken method config must not hide the other figures
            result["multi_expert_errors"][stem] = f"{type(e).__name__}: {e}"
            print(f"(c) {stem}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        result["multi_expert"][stem] = {
            "config": path, "method": cfg.METHOD, "K": k, "backbone": backbone, "variant": fastest,
            "iterations_per_repeat": n_it,
            "step_ms": stats([1000 * s / n_it for s in tc["method"]]),
            "single_step_ms": stats([1000 * s / n_it for s in tc["single"]]),
            "ratio_to_K_single": ratio_stats(tc["method"], [k * s for s in tc["single"]]),
        }
    try:  # (d) NCL: sequential vs batched experts, at the fastest setting
        result["ncl_experts"] = [measure_ncl_experts(device, fastest, V[fastest], batch, log_path, warmup, target, cap,
                                                     repeats)]
    except Exception as e:  # a broken method must not hide the other figures
        result["ncl_experts_error"] = f"{type(e).__name__}: {e}"
        print(f"(d) NCL: skipped ({type(e).__name__}: {e})", file=sys.stderr)
    try:  # (e) ViT: framework vs a bare timm loop
        result["vit"] = measure_vit(device, args.vit_variants, batch, log_path, warmup, target, cap, repeats)
    except Exception as e:  # timm missing, or a broken ViT path: the other figures stay
        result["vit_error"] = f"{type(e).__name__}: {e}"
        print(f"(e) ViT: skipped ({type(e).__name__}: {e})", file=sys.stderr)
    fr = result["framework_vs_bare"]
    result["targets"] = {
        "framework_step_ratio": {"target": f">= {FRAMEWORK_TARGET} (median, every variant)", "met": all(
            v["ratio"]["median"] >= FRAMEWORK_TARGET for v in fr.values())},
        "data_pipeline_ratio": {"target": f">= {PIPELINE_TARGET} with {args.workers} workers (median, every variant)",
                                "met": min([result["data_pipeline"]["ratio"]["median"]]
                                           + list(result["data_pipeline"]["ratio_of_medians"].values()))
                                >= PIPELINE_TARGET},
    }
    result["machine"]["load_average_1min"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return result


# ---------------------------------------------------------------- (d) NCL: sequential vs batched experts
NCL_CONFIG = "configs/fashion_mnist_lt/ncl_res32.yaml"
NCL_TARGETS = {"batched": 0.9, "sequential": 1.05}  # step / (K x single-network step), median


def profile_step(step, batches, rows=10):
    """The top `rows` ops of one framework step by self CPU time: [(op, self ms, % of the step)]."""
    from torch.profiler import ProfilerActivity, profile

    step(batches[:1])  # warm
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step(batches[:1])
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events) or 1
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [(e.key, round(e.self_cpu_time_total / 1000, 2), round(100 * e.self_cpu_time_total / total, 1))
            for e in events[:rows]]


def measure_ncl_experts(device, variant_name, variant, batch, log_path, warmup, target, cap, repeats, profile=False):
    """NCL's framework step with the experts one after another and batched, and the single-network CE step (same
    backbone, batch, precision, memory format), interleaved; ratios step / (K x single) per repeat."""
    dev = torch.device(device)
    steps = {}
    for mode in ("sequential", "batched"):
        cfg = make_cfg(NCL_CONFIG, device, variant, batch, ["NCL.BATCHED_EXPERTS", str(mode == "batched")])
        counts = training_counts(cfg)
        steps[mode] = FrameworkStep(cfg, counts, log_path)
    k = len(steps["sequential"].method.experts)
    scfg = make_cfg(BASE_CONFIG, device, variant, batch, ["BACKBONE.TYPE", cfg.BACKBONE.TYPE])
    steps["single"] = FrameworkStep(scfg, counts, log_path)
    batches = memory_batches(cfg, counts, cap, batch, dev)
    s_batches = memory_batches(scfg, counts, cap, batch, dev)
    data = {"sequential": batches, "batched": batches, "single": s_batches}
    timed = {m: calibrate(steps[m], data[m], warmup, target) for m in steps}
    n_it = iterations_for(max(timed.values()), target, cap) if target else cap
    print(f"(d) NCL {variant_name}: K={k}, {repeats} interleaved repeats of {n_it} iterations", file=sys.stderr)
    t = interleaved({m: (lambda m=m: steps[m](data[m][:n_it])) for m in steps}, repeats, f"ncl {variant_name}: ")
    out = {"config": NCL_CONFIG, "K": k, "backbone": cfg.BACKBONE.TYPE, "variant": variant_name,
           "iterations_per_repeat": n_it, "repeats": repeats,
           "step_ms": {m: stats([1000 * x / n_it for x in v]) for m, v in t.items()},
           "ratio_to_K_single": {m: ratio_stats(t[m], [k * x for x in t["single"]]) for m in ("sequential", "batched")}}
    out["targets"] = {m: {"target": f"<= {NCL_TARGETS[m]} (median)",
                          "met": out["ratio_to_K_single"][m]["median"] <= NCL_TARGETS[m]} for m in NCL_TARGETS}
    if profile:
        out["profile"] = {m: profile_step(steps[m], data[m]) for m in steps}
    return out


def ncl_markdown(results, threads):
    """Table lines for (d): one row per variant x path."""
    if not results:
        return []
    lines = [f"**(d) NCL experts, one after another vs batched** (`{NCL_CONFIG}`, NCL.BATCHED_EXPERTS False / True; "
             f"framework steps, K = {results[0]['K']} {results[0]['backbone']} experts, step / (K x the single-network CE "
             f"step), the three interleaved, {threads} torch thread(s); targets: batched <= {NCL_TARGETS['batched']}, "
             f"sequential <= {NCL_TARGETS['sequential']})", "",
             "| variant | path | step ms (median) | single-network step ms (median) | step / (K x single) "
             "(min / median / max) | target |", "|---|---|---|---|---|---|"]
    for r in results:
        for m in ("sequential", "batched"):
            lines.append(f"| {r['variant']} | {m} | {r['step_ms'][m]['median']:.0f} | {r['step_ms']['single']['median']:.0f}"
                         f" | {fmt3(r['ratio_to_K_single'][m], 2)} | {'met' if r['targets'][m]['met'] else 'MISSED'} |")
    for r in results:
        for m, rows in r.get("profile", {}).items():
            lines += ["", f"Profile of one {m} step ({r['variant']}), top ops by self CPU time: "
                      + "; ".join(f"{op} {ms:.0f} ms ({pct}%)" for op, ms, pct in rows)]
    return lines + [""]


def timing_sizes(args):
    """(batch, repeats, iteration cap, seconds per repeat, warm-up iterations) of --ncl-only / --vit-only."""
    return (args.batch or (4 if args.smoke else 128), args.repeats or (2 if args.smoke else 7),
            args.iters or (1 if args.smoke else 50), 0.0 if args.smoke or args.iters else args.repeat_seconds,
            0 if args.smoke else args.warmup)


def measure_ncl_only(args):
    """--ncl-only: section (d) alone, for every --ncl-variants."""
    device = args.device
    load_before = os.getloadavg()
    V = variants(device)
    unknown = [v for v in args.ncl_variants if v not in V]
    if unknown:
        raise UserError(f"--ncl-variants: unknown {unknown}; valid: {', '.join(V)}")
    batch, repeats, cap, target, warmup = timing_sizes(args)
    with tempfile.TemporaryDirectory(prefix="ltr_throughput_") as tmp:
        log_path = os.path.join(tmp, "train.log")
        results = [measure_ncl_experts(device, name, V[name], batch, log_path, warmup, target, cap, repeats,
                                       args.ncl_profile) for name in args.ncl_variants]
    machine = describe_machine(torch.device(device))
    machine["load_average_1min"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return {"machine": machine, "smoke": args.smoke, "batch": batch, "input": [3, 32, 32],
            "threads": torch.get_num_threads(), "ncl_experts": results}


def ncl_only_markdown(r):
    m = r["machine"]
    head = [f"### NCL experts: throughput on {m['device']}{' (smoke run)' if r['smoke'] else ''}", "",
            machine_line(m) + f" 1-min load average before/after: {m['load_average_1min'][0]} / "
            f"{m['load_average_1min'][1]}. Input 32x32, batch {r['batch']}, data in memory; figures are min / median /"
            " max over the interleaved repeats.", ""]
    return "\n".join(head + ncl_markdown(r["ncl_experts"], r["threads"]))


# ---------------------------------------------------------------- (e) ViT: framework vs a bare timm loop
VIT_CONFIG = "configs/fashion_mnist_lt/ce_vit_tiny.yaml"


class BareTimmStep(BareStep):
    """A hand-written timm fine-tuning loop (MAE/BEiT style) on the framework network's weights, moved into timm's own
    VisionTransformer (same architecture, classifier as its `head`): optimizer from timm.optim.create_optimizer_v2
    (AdamW, timm's layer-decay groups with `lr_scale`), the LR of every group set by hand before each step
    (lr_t = BASE_LR * f(t) * lr_scale, f = linear warmup over WARM_EPOCH then half-cycle cosine to ETA_MIN, t in
    epochs), forward, F.cross_entropy, zero_grad, backward, step. Precision as BareStep."""

    def __init__(self, method, cfg, iters_per_epoch=20):
        from lib.models import vit  # timm after the torchvision import fix
        from timm.models.vision_transformer import VisionTransformer
        from timm.optim import create_optimizer_v2

        self.device = torch.device(cfg.DEVICE)
        b, head = method.net.backbone, method.net.head
        dim = b.embed_dim
        net = VisionTransformer(img_size=tuple(b.patch_embed.img_size), patch_size=b.patch_embed.patch_size,
                                in_chans=b.patch_embed.proj.in_channels, num_classes=head.out_features,
                                global_pool="avg", fc_norm=True, embed_dim=dim, depth=len(b.blocks),
                                num_heads=b.blocks[0].attn.num_heads, mlp_ratio=b.blocks[0].mlp.fc1.out_features / dim,
                                qkv_bias=True, norm_layer=vit._LN, drop_path_rate=cfg.BACKBONE.DROP_PATH)
        state = dict(b.state_dict(), **{"head.weight": head.weight, "head.bias": head.bias})
        net.load_state_dict(state)  # strict: every key of the framework network, and nothing else
        self.net = net.to(self.device)
        x = torch.randn(2, b.patch_embed.proj.in_channels, *b.patch_embed.img_size, device=self.device)
        with torch.no_grad():  # the same function as the framework network (eval mode: no drop path)
            method.eval(), self.net.eval()
            if not torch.allclose(self.net(x), head(b(x)), atol=1e-5):
                raise RuntimeError("(e): the timm copy does not compute what the framework network computes")
            method.train()
        o, s = cfg.TRAIN.OPTIMIZER, cfg.TRAIN.LR_SCHEDULER
        self.opt = create_optimizer_v2(self.net, "adamw", lr=o.BASE_LR, weight_decay=o.WEIGHT_DECAY,
                                       layer_decay=o.LAYER_DECAY, betas=tuple(o.BETAS))
        self.base_lr, self.eta, self.warm = o.BASE_LR, s.ETA_MIN, s.WARM_EPOCH
        self.total = cfg.TRAIN.MAX_EPOCH
        self.iters_per_epoch, self.it = iters_per_epoch, 0
        self.set_precision(cfg)

    def lr(self, t):
        if t < self.warm:
            return self.base_lr * t / self.warm
        return self.eta + (self.base_lr - self.eta) * 0.5 * (1 + math.cos(math.pi * (t - self.warm) /
                                                                          (self.total - self.warm)))

    def before_step(self):
        """The LR by hand: linear warmup then half-cycle cosine per iteration, times timm's layer-decay scale."""
        lr = self.lr((self.it % (self.total * self.iters_per_epoch)) / self.iters_per_epoch)
        self.it += 1
        for g in self.opt.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)


def vit_variants(device, names):
    """{name: (amp enabled, amp dtype, channels_last)} for (e): fp32 and AMP (bf16 on CPU, fp16 on CUDA); no
    channels_last (a ViT has one convolution)."""
    amp = ("fp16", "float16") if device == "cuda" else ("bf16", "bfloat16")
    V = {"fp32": (False, "auto", False), amp[0]: (True, amp[1], False)}
    unknown = [n for n in names if n not in V]
    if unknown:
        raise UserError(f"--vit-variants: unknown {unknown}; valid: {', '.join(V)}")
    return {n: V[n] for n in names}


def measure_vit(device, names, batch, log_path, warmup, target, cap, repeats):
    """(e): the framework's ViT step and the bare timm loop, interleaved, per precision variant."""
    dev = torch.device(device)
    out = {"config": VIT_CONFIG, "variants": {}}
    for name, variant in vit_variants(device, names).items():
        cfg = make_cfg(VIT_CONFIG, device, variant, batch)
        counts = training_counts(cfg)
        fw = FrameworkStep(cfg, counts, log_path, per_step_schedule=True)
        bare = BareTimmStep(fw.method, cfg)
        ours = sorted(round(g["lr_scale"], 6) for g in fw.optimizer.param_groups for _ in g["params"])
        theirs = sorted(round(g.get("lr_scale", 1.0), 6) for g in bare.opt.param_groups for _ in g["params"])
        batches = memory_batches(cfg, counts, cap, batch, dev)
        timed = {"framework": calibrate(fw, batches, warmup, target), "bare": calibrate(bare, batches, warmup, target)}
        n_it = iterations_for(max(timed.values()), target, cap) if target else cap
        print(f"(e) ViT {name}: {repeats} interleaved repeats of {n_it} iterations", file=sys.stderr)
        t = interleaved({"framework": lambda: fw(batches[:n_it]), "bare": lambda: bare(batches[:n_it])}, repeats,
                        f"vit {name}: ")
        f = [n_it * batch / x for x in t["framework"]]
        b = [n_it * batch / x for x in t["bare"]]
        out["backbone"] = cfg.BACKBONE.TYPE
        out["parameters"] = sum(p.numel() for p in fw.method.parameters())
        out["input"] = [in_channels(cfg), *[int(v) for v in cfg.INPUT_SIZE]]
        out["variants"][name] = {"iterations_per_repeat": n_it, "repeats": repeats, "ratio": ratio_stats(f, b),
                                 "framework_images_per_s": stats(f), "bare_images_per_s": stats(b),
                                 "same_lr_scales_as_timm": ours == theirs}
    out["target"] = {"target": f">= {FRAMEWORK_TARGET} (median, every variant)", "met": all(
        v["ratio"]["median"] >= FRAMEWORK_TARGET for v in out["variants"].values())}
    return out


def vit_markdown(r):
    if not r:
        return []
    lines = [f"**(e) ViT step: framework vs a bare timm loop** (`{r['config']}`: {r['backbone']}, "
             f"{r['parameters'] / 1e6:.2f} M parameters, input {r['input'][1]}x{r['input'][2]}; AdamW, layer decay, "
             "no weight decay on 1-D parameters, per-iteration warmup + cosine, drop path; bare = the same weights in "
             "timm's VisionTransformer with timm.optim.create_optimizer_v2(adamw, layer_decay) and the LR set by hand "
             f"each step; target: ratio >= {FRAMEWORK_TARGET})", "",
             "| precision | framework img/s (median) | bare timm img/s (median) | ratio framework / bare "
             "(min / median / max) | repeats x iterations | LR scales = timm's |", "|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        lines.append(f"| {name} | {v['framework_images_per_s']['median']:.0f} | {v['bare_images_per_s']['median']:.0f}"
                     f" | {fmt3(v['ratio'])} | {v['repeats']} x {v['iterations_per_repeat']} | "
                     f"{'yes' if v['same_lr_scales_as_timm'] else 'NO'} |")
    return lines + ["", "Target (e): " + ("met" if r["target"]["met"] else "MISSED") + f" ({r['target']['target']}).",
                    ""]


def measure_vit_only(args):
    """--vit-only: section (e) alone, for every --vit-variants."""
    device = args.device
    load_before = os.getloadavg()
    batch, repeats, cap, target, warmup = timing_sizes(args)
    with tempfile.TemporaryDirectory(prefix="ltr_throughput_") as tmp:
        vit = measure_vit(device, args.vit_variants, batch, os.path.join(tmp, "train.log"), warmup, target, cap,
                          repeats)
    machine = dict(describe_machine(torch.device(device)), **cpu_features())
    machine["load_average_1min"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return {"machine": machine, "smoke": args.smoke, "batch": batch, "threads": torch.get_num_threads(),
            "vit": vit}


def vit_only_markdown(r):
    m = r["machine"]
    head = [f"### ViT step: throughput on {m['device']}{' (smoke run)' if r['smoke'] else ''}", "",
            machine_line(m) + f" 1-min load average before/after: {m['load_average_1min'][0]} / "
            f"{m['load_average_1min'][1]}. Batch {r['batch']}, data in memory, {r['threads']} torch thread(s); figures"
            " are min / median / max over the interleaved repeats.", ""]
    return "\n".join(head + vit_markdown(r["vit"]))


def to_markdown(r):
    s, m = r["settings"], r["machine"]
    runs = ", ".join(f"{n}: {s['repeats'][n]} x {s['iterations_per_repeat'][n]}" for n in s["repeats"])
    bf16 = ("native bf16 (AVX512_BF16/AMX)" if m.get("avx512_bf16") or m.get("amx_bf16") else
            f"no native bf16 instructions ({m.get('torch_cpu_capability')}): bf16 autocast is emulated")
    lines = [f"### Throughput on {m['device']}{' (smoke run)' if r['smoke'] else ''}", "",
             machine_line(m) + (f" CPU: {bf16}." if m["device"] == "cpu" else "")
             + f" 1-min load average before/after: {m['load_average_1min'][0]} / {m['load_average_1min'][1]}.",
             f"Model {s['backbone']} ({s['parameters'] / 1e6:.2f} M parameters) from `{s['config']}`, input "
             f"{s['input'][1]}x{s['input'][2]}, batch {s['batch']}, data in memory; interleaved repeats x "
             f"iterations per repeat ({runs}) after {s['warmup_iterations']} warm-up iterations; "
             "figures are min / median / max over the repeats.", "",
             "**(a) Framework training step vs a bare PyTorch loop** (same model, batch, precision and memory "
             f"format; target: ratio >= {FRAMEWORK_TARGET})", "",
             "| precision, memory format | framework img/s (median) | bare img/s (median) | "
             "ratio framework / bare (min / median / max) |", "|---|---|---|---|"]
    for name, v in r["framework_vs_bare"].items():
        lines.append(f"| {name} | {v['framework_images_per_s']['median']:.0f} | "
                     f"{v['bare_images_per_s']['median']:.0f} | {fmt3(v['ratio'])} |")
    d = r["data_pipeline"]
    lines += ["", f"**(b) Data pipeline vs model** (JSON dataset of 32x32 RGB PNGs + transforms "
              f"{', '.join(d['transforms']) or 'none'} + normalize, the trainer's DataLoader with {d['workers']} "
              f"workers, whole epochs of {s['pipeline_images']} images including worker start-up, vs the framework "
              "step: interleaved with the variant quickest at calibration, ratio of medians for the others; each "
              f"measured alone; target: ratio >= {PIPELINE_TARGET})", "",
              "| pipeline img/s (median) | model img/s (median) | ratio pipeline / model (min / median / max) |",
              "|---|---|---|",
              f"| {d['images_per_s']['median']:.0f} | {d['model_images_per_s']['median']:.0f} ({d['model_variant']}) "
              f"| {fmt3(d['ratio'], 2)} |"]
    for n, q in d.get("ratio_of_medians", {}).items():
        if n != d["model_variant"]:
            lines.append(f"| {d['images_per_s']['median']:.0f} | "
                         f"{r['framework_vs_bare'][n]['framework_images_per_s']['median']:.0f} ({n}) | "
                         f"{q:.2f} (ratio of medians, not interleaved) |")
    lines.append("")
    lines += ["**(c) Multi-expert / multi-head methods: step time vs K x the single-model step** (framework "
              f"steps at {d['model_variant']}, the single model = CE with the same backbone)", ""]
    if r["multi_expert"]:
        lines += ["| config | method | K | step ms (median) | single-model step ms (median) | "
                  "step / (K x single) (min / median / max) |", "|---|---|---|---|---|---|"]
        for stem, v in r["multi_expert"].items():
            lines.append(f"| {stem} | {v['method']} | {v['K']} | {v['step_ms']['median']:.1f} | "
                         f"{v['single_step_ms']['median']:.1f} | {fmt3(v['ratio_to_K_single'], 2)} |")
    else:
        lines.append("No config of a multi-expert or multi-head method exists yet.")
    for stem, err in r["multi_expert_errors"].items():
        lines.append(f"- {stem}: not measured ({err})")
    lines += [""] + ncl_markdown(r.get("ncl_experts", []), torch.get_num_threads())
    if r.get("ncl_experts_error"):
        lines.append(f"(d) NCL: not measured ({r['ncl_experts_error']})")
    lines += vit_markdown(r.get("vit"))
    if r.get("vit_error"):
        lines.append(f"(e) ViT: not measured ({r['vit_error']})")
    lines += ["", "**Absolute** (framework step; 200 epochs of a 10,847-image CIFAR-100-LT-sized training set, "
              "training steps only, at the slower of model and data pipeline)", "",
              "| precision, memory format | framework img/s (median) | 200 epochs x 10,847 images |", "|---|---|---|"]
    for name, e in r["estimate_200_epochs"].items():
        v = r["framework_vs_bare"][name]
        lines.append(f"| {name} | {v['framework_images_per_s']['median']:.0f} | {e['hours']:.2f} h "
                     f"(bound by the {e['bound_by']}) |")
    t = r["targets"]
    lines += ["", "Targets: framework step " + ("met" if t["framework_step_ratio"]["met"] else "MISSED")
              + f" ({t['framework_step_ratio']['target']}); data pipeline "
              + ("met" if t["data_pipeline_ratio"]["met"] else "MISSED")
              + f" ({t['data_pipeline_ratio']['target']})."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=0, help="interleaved repeats (default 7; smoke 2)")
    p.add_argument("--iters", type=int, default=0,
                   help="fixed iterations per repeat (default: chosen per variant so a repeat lasts --repeat-seconds)")
    p.add_argument("--repeat-seconds", type=float, default=3.0, help="target length of one repeat (default 3 s)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up iterations per candidate (default 3)")
    p.add_argument("--batch", type=int, default=0, help="batch size (default 128; smoke 4)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for (b) (default 2)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default: torch's, = cores); 1 avoids spinning threads on a busy CPU")
    p.add_argument("--pipeline-images", type=int, default=2048, help="PNGs per pipeline epoch (default 2048)")
    p.add_argument("--configs", nargs="*", default=None,
                   help=f"configs scanned for multi-expert methods in (c) (default {CONFIG_GLOB})")
    p.add_argument("--out", default="benchmarks/results", help="folder for throughput_<device>.md/.json")
    p.add_argument("--smoke", action="store_true", help="a few tiny iterations (checks the harness, not speed)")
    p.add_argument("--ncl-only", action="store_true",
                   help="only (d), NCL's experts one after another vs batched -> throughput_<device>_ncl.{md,json}")
    p.add_argument("--ncl-variants", nargs="+", default=["fp32", "fp32_channels_last"],
                   help="precision/memory-format variants for --ncl-only (default: fp32 fp32_channels_last)")
    p.add_argument("--ncl-profile", action="store_true", help="--ncl-only: add a torch.profiler table per path")
    p.add_argument("--vit-only", action="store_true",
                   help="only (e), the ViT step vs a bare timm loop -> throughput_<device>_vit.{md,json}")
    p.add_argument("--vit-variants", nargs="+", default=["fp32", "bf16"],
                   help="precision variants for (e) (default: fp32 bf16; on CUDA use fp32 fp16)")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(BASE_CONFIG):
        raise UserError(f"{BASE_CONFIG} not found: run from the repository root")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and args.vit_variants == ["fp32", "bf16"]:
        args.vit_variants = ["fp32", "fp16"]
    if args.ncl_only:
        result = measure_ncl_only(args)
        md = ncl_only_markdown(result)
    elif args.vit_only:
        result = measure_vit_only(args)
        md = vit_only_markdown(result)
    else:
        result = measure(args)
        md = to_markdown(result)
    os.makedirs(args.out, exist_ok=True)
    part = "_ncl" if args.ncl_only else "_vit" if args.vit_only else ""
    stem = os.path.join(args.out, f"throughput_{args.device}{part}{'_smoke' if args.smoke else ''}")
    write_json(stem + ".json", result, indent=2)
    write_text(stem + ".md", md)
    print(md)
    print(f"wrote {stem}.md and {stem}.json")
    return result


if __name__ == "__main__":
    main()
