"""What the framework costs over hand-written PyTorch, measured side by side in one process.

    python benchmarks/throughput.py [--device cpu|cuda] [--repeats 7] [--iters N] [--workers 2]
        [--configs FILE ...] [--out benchmarks/results] [--smoke]

Same model (ResNet-32 of configs/fashion_mnist_lt/ce_res32.yaml), 32x32 inputs, batch 128, the same
precision and memory format on both sides, data already in memory (device memory on CUDA):

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

Repeats of all candidates are interleaved (rotating order) so that load from other processes hits all
of them alike; every figure is reported as min / median / max over the repeats. Also prints absolute
images/s and the time for 200 epochs of a 10,847-image (CIFAR-100-LT IF100-sized) training set.
Writes <out>/throughput_<device>.md and .json (with the machine and date); --smoke: a few tiny
iterations, to <out>/throughput_<device>_smoke.*.
"""
import argparse
import contextlib
import copy
import glob
import os
import sys
import tempfile
import time

import numpy as np
import torch
from torch.nn import functional as F

from lib.config import build_config
from lib.data.build import DataSplits, train_loader
from lib.data.image_folder_writer import write_image_folder_dataset
from lib.data.longtail import exponential_counts
from lib.engine.amp import AmpContext
from lib.engine.optim import EpochLR, build_optimizer
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
    """{name: (amp enabled, amp dtype, channels_last)}: plain fp32, and the fast setting of the device."""
    fast = ("fp16_channels_last", "float16") if device == "cuda" else ("bf16_channels_last", "bfloat16")
    return {"fp32": (False, "auto", False), fast[0]: (True, fast[1], True)}


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

    def __init__(self, cfg, counts, log_path):
        self.cfg = cfg
        self.device = torch.device(cfg.DEVICE)
        self.log = FileLogger(log_path)
        self.method = build_method(cfg, counts).to(self.device)
        if cfg.TRAIN.CHANNELS_LAST:
            self.method.to(memory_format=torch.channels_last)
        self.model = wrap_model(cfg, self.method, self.device, self.log)
        self.optimizer = build_optimizer(cfg, self.method)
        EpochLR(cfg, self.optimizer).set_epoch(1)
        self.method.on_epoch_start(1)
        self.amp = AmpContext(cfg, self.device)

    def __call__(self, batches):
        synchronize(self.device)
        t0 = time.perf_counter()
        train_one_epoch(self.model, self.method, batches, self.optimizer, self.amp, self.device, 1, self.cfg,
                        self.log)
        synchronize(self.device)
        return time.perf_counter() - t0

    def members(self, batch):
        """K: how many experts/heads the method's prediction is made of (0 for a single model)."""
        self.method.train()
        with torch.no_grad(), self.amp.autocast():
            out = self.model(self.method.prepare_batch(dict(batch), 1))
            return len(self.method.predict(out)["members"])


class BareStep:
    """A hand-written PyTorch training loop on a copy of the same network, with the same SGD settings."""

    def __init__(self, net, cfg):
        self.device = torch.device(cfg.DEVICE)
        self.net = copy.deepcopy(net)
        o = cfg.TRAIN.OPTIMIZER
        self.opt = torch.optim.SGD(self.net.parameters(), lr=o.BASE_LR, momentum=o.MOMENTUM,
                                   weight_decay=o.WEIGHT_DECAY, nesterov=o.NESTEROV and o.MOMENTUM > 0)
        amp = cfg.TRAIN.AMP
        self.dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}.get(
            amp.DTYPE, torch.float16 if self.device.type == "cuda" else torch.bfloat16)
        self.amp = amp.ENABLE
        self.scaler = (torch.amp.GradScaler("cuda") if self.amp and self.device.type == "cuda"
                       and self.dtype == torch.float16 else None)
        self.channels_last = cfg.TRAIN.CHANNELS_LAST

    def __call__(self, batches):
        self.net.train()
        synchronize(self.device)
        t0 = time.perf_counter()
        for b in batches:
            x, y = b["image"].to(self.device, non_blocking=True), b["label"].to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
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


def measure(args):
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine")
    dev = torch.device(device)
    smoke = args.smoke
    batch = args.batch or (8 if smoke else 128)
    iters = args.iters or (2 if smoke else (50 if device == "cuda" else 8))
    repeats = args.repeats or (2 if smoke else 7)
    warmup = 1 if smoke else args.warmup
    n_pipe = 32 if smoke else args.pipeline_images
    with tempfile.TemporaryDirectory(prefix="ltr_throughput_") as tmp:
        return _measure(args, device, dev, smoke, batch, iters, repeats, warmup, n_pipe, tmp)


def _measure(args, device, dev, smoke, batch, iters, repeats, warmup, n_pipe, tmp):
    log_path = os.path.join(tmp, "train.log")
    V = variants(device)
    fast = [k for k in V if k != "fp32"][0]

    print(f"building the models ({', '.join(V)}) and {n_pipe} PNGs for the pipeline ...", file=sys.stderr)
    base = {name: make_cfg(BASE_CONFIG, device, v, batch) for name, v in V.items()}
    counts = training_counts(base["fp32"])
    batches = memory_batches(base["fp32"], counts, iters, batch, dev)
    fw = {name: FrameworkStep(cfg, counts, log_path) for name, cfg in base.items()}
    bare = {name: BareStep(fw[name].method.net, cfg) for name, cfg in base.items()}
    pipe = PipelineEpoch(tmp, n_pipe, args.workers, batch)
    params = sum(p.numel() for p in fw["fp32"].method.parameters())

    for name in V:  # warm-up (allocator, oneDNN/cuDNN kernel choice)
        fw[name](batches[:warmup])
        bare[name](batches[:warmup])
    pipe()
    pipe_images = []

    def pipeline_run():
        s, n = pipe()
        pipe_images.append(n)
        return s

    cands = {}
    for name in V:
        cands[f"framework/{name}"] = lambda name=name: fw[name](batches)
        cands[f"bare/{name}"] = lambda name=name: bare[name](batches)
    cands["pipeline"] = pipeline_run
    print(f"(a)+(b): {repeats} interleaved repeats of {iters} iterations x batch {batch}", file=sys.stderr)
    t = interleaved(cands, repeats)
    ips = {k: [iters * batch / s for s in v] for k, v in t.items() if k != "pipeline"}
    ips["pipeline"] = [n / s for n, s in zip(pipe_images, t["pipeline"])]

    result = {
        "machine": describe_machine(dev), "smoke": smoke,
        "settings": {"config": BASE_CONFIG, "backbone": base["fp32"].BACKBONE.TYPE, "parameters": params,
                     "input": [3, 32, 32], "batch": batch, "iterations_per_repeat": iters, "repeats": repeats,
                     "warmup_iterations": warmup, "pipeline_images": n_pipe, "workers": args.workers,
                     "optimizer": "SGD momentum 0.9, nesterov, weight decay (as the config)"},
        "framework_vs_bare": {}, "multi_expert": {}, "multi_expert_errors": {},
    }
    for name in V:
        f, b = ips[f"framework/{name}"], ips[f"bare/{name}"]
        result["framework_vs_bare"][name] = {"ratio": ratio_stats(f, b), "framework_images_per_s": stats(f),
                                             "bare_images_per_s": stats(b)}
    result["data_pipeline"] = {
        "workers": args.workers, "transforms": pipe.transforms, "images_per_s": stats(ips["pipeline"]),
        "model_variant": fast, "model_images_per_s": stats(ips[f"framework/{fast}"]),
        "ratio": ratio_stats(ips["pipeline"], ips[f"framework/{fast}"]),
        "ratio_vs_fp32_model": ratio_stats(ips["pipeline"], ips["framework/fp32"]),
    }
    result["estimate_200_epochs"] = {}
    for name in V:
        model_ips = stats(ips[f"framework/{name}"])["median"]
        bound = min(model_ips, stats(ips["pipeline"])["median"])
        result["estimate_200_epochs"][name] = {
            "images": ESTIMATE_IMAGES, "epochs": ESTIMATE_EPOCHS, "images_per_s": bound,
            "bound_by": "model" if bound == model_ips else "data pipeline",
            "hours": ESTIMATE_IMAGES * ESTIMATE_EPOCHS / bound / 3600}

    # (c) multi-expert / multi-head methods, at the fast setting
    single_cache = {}
    for path in config_list(args.configs):
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            cfg = make_cfg(path, device, V[fast], batch)
            c_counts = training_counts(cfg)
            step = FrameworkStep(cfg, c_counts, log_path)
            c_batches = memory_batches(cfg, c_counts, iters, batch, dev)
            k = step.members(c_batches[0])
            if k <= 1:
                continue
            backbone = cfg.BACKBONE.TYPE
            if backbone not in single_cache:
                scfg = make_cfg(BASE_CONFIG, device, V[fast], batch, ["BACKBONE.TYPE", backbone])
                single_cache[backbone] = FrameworkStep(scfg, counts, log_path)
            single = single_cache[backbone]
            s_batches = memory_batches(single.cfg, counts, iters, batch, dev)
            step(c_batches[:warmup])
            single(s_batches[:warmup])
            print(f"(c) {stem}: K={k}", file=sys.stderr)
            tc = interleaved({"method": lambda: step(c_batches), "single": lambda: single(s_batches)}, repeats,
                             f"{stem}: ")
        except Exception as e:  # a broken method config must not hide the other figures
            result["multi_expert_errors"][stem] = f"{type(e).__name__}: {e}"
            print(f"(c) {stem}: skipped ({type(e).__name__}: {e})", file=sys.stderr)
            continue
        result["multi_expert"][stem] = {
            "config": path, "method": cfg.METHOD, "K": k, "backbone": backbone,
            "step_ms": stats([1000 * s / iters for s in tc["method"]]),
            "single_step_ms": stats([1000 * s / iters for s in tc["single"]]),
            "ratio_to_K_single": ratio_stats(tc["method"], [k * s for s in tc["single"]]),
        }
    fr = result["framework_vs_bare"]
    result["targets"] = {
        "framework_step_ratio": {"target": f">= {FRAMEWORK_TARGET}", "met": all(
            v["ratio"]["median"] >= FRAMEWORK_TARGET for v in fr.values())},
        "data_pipeline_ratio": {"target": f">= {PIPELINE_TARGET} with {args.workers} workers",
                                "met": result["data_pipeline"]["ratio"]["median"] >= PIPELINE_TARGET},
    }
    return result


def to_markdown(r):
    s = r["settings"]
    lines = [f"### Throughput on {r['machine']['device']}{' (smoke run)' if r['smoke'] else ''}", "",
             machine_line(r["machine"]),
             f"Model {s['backbone']} ({s['parameters'] / 1e6:.2f} M parameters) from `{s['config']}`, input "
             f"{s['input'][1]}x{s['input'][2]}, batch {s['batch']}, data in memory; {s['repeats']} interleaved "
             f"repeats of {s['iterations_per_repeat']} iterations after {s['warmup_iterations']} warm-up; "
             "figures are min / median / max over the repeats.", "",
             "**(a) Framework training step vs a bare PyTorch loop** (same model, batch, precision and memory "
             f"format; target: ratio >= {FRAMEWORK_TARGET})", "",
             "| precision, memory format | framework img/s (median) | bare img/s (median) | "
             "ratio framework / bare (min / median / max) |", "|---|---|---|---|"]
    for name, v in r["framework_vs_bare"].items():
        lines.append(f"| {name} | {v['framework_images_per_s']['median']:.0f} | "
                     f"{v['bare_images_per_s']['median']:.0f} | {fmt3(v['ratio'])} |")
    d = r["data_pipeline"]
    lines += ["", f"**(b) Data pipeline vs model** (JSON dataset of 32x32 PNGs + transforms "
              f"{', '.join(d['transforms']) or 'none'} + normalize, DataLoader with {d['workers']} workers, whole "
              f"epochs of {s['pipeline_images']} images with worker start-up; each measured alone; target: ratio "
              f">= {PIPELINE_TARGET})", "",
              "| pipeline img/s (median) | model img/s (median, framework step) | ratio pipeline / model "
              "(min / median / max) |", "|---|---|---|",
              f"| {d['images_per_s']['median']:.0f} | {d['model_images_per_s']['median']:.0f} ({d['model_variant']}) "
              f"| {fmt3(d['ratio'], 2)} |",
              f"| {d['images_per_s']['median']:.0f} | "
              f"{r['framework_vs_bare']['fp32']['framework_images_per_s']['median']:.0f} (fp32) | "
              f"{fmt3(d['ratio_vs_fp32_model'], 2)} |", ""]
    lines += ["**(c) Multi-expert / multi-head methods: step time vs K x the single-model step** (framework "
              f"steps at {d['model_variant']})", ""]
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
    lines += ["", "**Absolute** (framework step; 200 epochs of a 10,847-image CIFAR-100-LT-sized set, training "
              "steps only, at the slower of model and data pipeline)", "",
              "| precision, memory format | framework img/s | 200 epochs x 10,847 images |", "|---|---|---|"]
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
    p.add_argument("--iters", type=int, default=0, help="iterations per repeat (default 8 on CPU, 50 on CUDA)")
    p.add_argument("--warmup", type=int, default=3, help="warm-up iterations per candidate (default 3)")
    p.add_argument("--batch", type=int, default=0, help="batch size (default 128; smoke 8)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for (b) (default 2)")
    p.add_argument("--pipeline-images", type=int, default=2048, help="PNGs per pipeline epoch (default 2048)")
    p.add_argument("--configs", nargs="*", default=None,
                   help=f"configs scanned for multi-expert methods in (c) (default {CONFIG_GLOB})")
    p.add_argument("--out", default="benchmarks/results", help="folder for throughput_<device>.md/.json")
    p.add_argument("--smoke", action="store_true", help="a few tiny iterations (checks the harness, not speed)")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(BASE_CONFIG):
        raise UserError(f"{BASE_CONFIG} not found: run from the repository root")
    result = measure(args)
    md = to_markdown(result)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"throughput_{args.device}{'_smoke' if args.smoke else ''}")
    write_json(stem + ".json", result, indent=2)
    write_text(stem + ".md", md)
    print(md)
    print(f"wrote {stem}.md and {stem}.json")
    return result


if __name__ == "__main__":
    main()
