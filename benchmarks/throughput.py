"""What the framework costs over hand-written PyTorch, measured side by side in one process.

    python benchmarks/throughput.py [--device cpu|cuda] [--repeats 7] [--repeat-seconds 3] [--workers 2]
        [--configs FILE ...] [--out benchmarks/results] [--smoke]

Same model (ResNet-32 of configs/fashion_mnist_lt/ce_res32.yaml), 32x32 inputs, batch 128, the same
precision and memory format on both sides, data already in memory (device memory on CUDA), in three
variants: fp32, fp32 + channels_last, AMP + channels_last (bf16 autocast on CPU, fp16 + GradScaler on CUDA):

(a) framework step / bare step. Framework = the trainer's own epoch loop `train_one_epoch` (prepare_batch,
    forward + loss under autocast, non-finite check, backward + optimizer step, after_optimizer_step, and
    the per-iteration bookkeeping: accuracy, running loss, log line every SHOW_STEP) over the in-memory
    batches; bare = a plain loop (benchmarks/timing.py: forward, F.cross_entropy, zero_grad, backward, step)
    on a copy of the same network with the same SGD settings. Ratio = framework images/s / bare images/s.
(b) data pipeline / model: the JSON dataset + the config's transforms + the trainer's DataLoader
    (TRAIN.NUM_WORKERS = --workers) over 32x32 RGB PNGs, images/s over whole epochs (worker start-up
    included, as the trainer pays it every epoch), against the framework step's images/s. Both are
    measured alone: on a machine with few cores the two compete for the same cores during training.
(c) for every config whose method predicts with K > 1 members (experts / heads): its framework step
    time / (K x the single-model CE step time with the same backbone).

Studies of single paths live in benchmarks/studies/: ncl_experts.py (NCL's experts one after another vs
batched), vit_step.py (the ViT step vs a bare timm loop), compile_ratio.py (torch.compile vs eager).

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
import copy
import glob
import os
import sys
import tempfile
import time

import numpy as np
import torch

from lib.config import build_config
from lib.data.build import DataSplits, train_loader
from lib.data.image_folder_writer import write_image_folder_dataset
from lib.utils.atomic import write_json, write_text
from lib.utils.errors import exit_on_user_error

from benchmarks.machine_info import cpu_features, describe_machine, machine_line, stats
from benchmarks.timing import (BASE_CONFIG, BareStep, FrameworkStep, add_timing_args, calibrate, fmt3, interleaved,
                               iterations_for, make_cfg, memory_batches, ratio_stats, setup, timing_sizes,
                               training_counts, variants)

CONFIG_GLOB = "configs/fashion_mnist_lt/*.yaml"
ESTIMATE_IMAGES, ESTIMATE_EPOCHS = 10847, 200  # CIFAR-100-LT IF100 training set, the usual schedule
FRAMEWORK_TARGET, PIPELINE_TARGET = 0.95, 2.0


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


def config_list(configs):
    return configs if configs else sorted(glob.glob(CONFIG_GLOB))


def measure(args):
    device = args.device
    with tempfile.TemporaryDirectory(prefix="ltr_throughput_") as tmp:
        return _measure(args, device, torch.device(device), tmp)


def _measure(args, device, dev, tmp):
    smoke = args.smoke
    batch, repeats, cap, target, warmup = timing_sizes(args, cuda_cap=200)  # target 0: always `cap` iterations
    n_pipe = 16 if smoke else args.pipeline_images
    load_before = os.getloadavg()
    log_path = os.path.join(tmp, "train.log")
    V = variants(device)

    print(f"building the models ({', '.join(V)}) and {n_pipe} PNGs for the pipeline ...", file=sys.stderr)
    base = {name: make_cfg(BASE_CONFIG, device, v, batch) for name, v in V.items()}
    counts = training_counts(base["fp32"])
    batches = memory_batches(base["fp32"], counts, cap, batch, dev)
    fw = {name: FrameworkStep(cfg, counts, log_path) for name, cfg in base.items()}
    bare = {name: BareStep(copy.deepcopy(fw[name].method.net), cfg) for name, cfg in base.items()}
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
            k = step.members()
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
    add_timing_args(p, "benchmarks/results")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers for (b) (default 2)")
    p.add_argument("--pipeline-images", type=int, default=2048, help="PNGs per pipeline epoch (default 2048)")
    p.add_argument("--configs", nargs="*", default=None,
                   help=f"configs scanned for multi-expert methods in (c) (default {CONFIG_GLOB})")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    setup(args)
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
