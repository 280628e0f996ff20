"""The framework's ViT training step vs a bare timm loop on the same weights, side by side in one process.

    python benchmarks/studies/vit_step.py [--device cpu|cuda] [--variants fp32 bf16] [--repeats 7]
        [--repeat-seconds 3] [--threads N] [--out benchmarks/results/studies] [--smoke]

configs/fashion_mnist_lt/ce_vit_tiny.yaml: vit_tiny_p4, AdamW with layer-wise LR decay and no weight decay on 1-D
parameters, the per-iteration warmup + cosine schedule, drop path 0.1. Bare: the same weights in timm's own
VisionTransformer (classifier included), the optimizer from timm.optim.create_optimizer_v2(adamw, layer_decay)
(timm's BEiT groups, lr_scale per group), the LR set by hand before every step (MAE's per-iteration warmup +
half-cycle cosine), forward, F.cross_entropy, zero_grad, backward, step. Ratio = framework images/s / bare
images/s, interleaved repeats, at fp32 and AMP (bf16 on CPU, fp16 on CUDA); target >= 0.95.
Writes <out>/vit_step_<device>[_smoke].{md,json}.
"""
import argparse
import math
import os
import sys
import tempfile

import torch

from lib.models import vit  # imports timm after the torchvision fix (lib/utils/tv.py)
from timm.optim import create_optimizer_v2  # after lib.models.vit
from lib.models.network import in_channels
from lib.utils.atomic import write_json, write_text
from lib.utils.errors import UserError, exit_on_user_error

from benchmarks.machine_info import cpu_features, describe_machine, machine_line, stats
from benchmarks.timing import (BareStep, FrameworkStep, add_timing_args, calibrate, fmt3, interleaved, iterations_for,
                               make_cfg, memory_batches, ratio_stats, setup, timing_sizes, training_counts)

VIT_CONFIG = "configs/fashion_mnist_lt/ce_vit_tiny.yaml"
TARGET = 0.95


class BareTimmStep(BareStep):
    """A hand-written timm fine-tuning loop (MAE/BEiT style) on the framework network's weights, moved into timm's
    VisionTransformer (classifier as its `head`): AdamW from timm.optim.create_optimizer_v2 with timm's layer-decay
    groups (`lr_scale`), the LR of every group set by hand before each step (BASE_LR * f(t) * lr_scale, f = linear
    warmup over WARM_EPOCH then half-cycle cosine to ETA_MIN, t in epochs). Loop and precision as BareStep."""

    def __init__(self, method, cfg, iters_per_epoch=20):
        self.device = torch.device(cfg.DEVICE)
        b, head = method.net.backbone, method.net.head
        dim = b.embed_dim
        net = vit.VisionTransformer(
            img_size=tuple(b.patch_embed.img_size), patch_size=b.patch_embed.patch_size,
            in_chans=b.patch_embed.proj.in_channels, num_classes=head.out_features, global_pool="avg", fc_norm=True,
            embed_dim=dim, depth=len(b.blocks), num_heads=b.blocks[0].attn.num_heads,
            mlp_ratio=b.blocks[0].mlp.fc1.out_features / dim, qkv_bias=True, norm_layer=vit._LN,
            drop_path_rate=cfg.BACKBONE.DROP_PATH)
        state = dict(b.state_dict(), **{"head.weight": head.weight, "head.bias": head.bias})
        net.load_state_dict(state)  # strict: every key of the framework network, and nothing else
        self.net = net.to(self.device)
        x = torch.randn(2, b.patch_embed.proj.in_channels, *b.patch_embed.img_size, device=self.device)
        with torch.no_grad():  # the same function as the framework network (eval mode: no drop path)
            method.eval(), self.net.eval()
            if not torch.allclose(self.net(x), head(b(x)), atol=1e-5):
                raise RuntimeError("the timm copy does not compute what the framework network computes")
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
    """{name: (amp enabled, amp dtype, channels_last)}: fp32 and AMP (bf16 on CPU, fp16 on CUDA); no channels_last
    (a ViT has one convolution)."""
    amp = ("fp16", "float16") if device == "cuda" else ("bf16", "bfloat16")
    V = {"fp32": (False, "auto", False), amp[0]: (True, amp[1], False)}
    unknown = [n for n in names if n not in V]
    if unknown:
        raise UserError(f"--variants: unknown {unknown}; valid: {', '.join(V)}")
    return {n: V[n] for n in names}


def measure_variants(device, names, batch, log_path, warmup, target, cap, repeats):
    """The framework's ViT step and the bare timm loop, interleaved, per precision variant."""
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
        print(f"ViT {name}: {repeats} interleaved repeats of {n_it} iterations", file=sys.stderr)
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
    out["target"] = {"target": f">= {TARGET} (median, every variant)", "met": all(
        v["ratio"]["median"] >= TARGET for v in out["variants"].values())}
    return out


def measure(args):
    load_before = os.getloadavg()
    batch, repeats, cap, target, warmup = timing_sizes(args)
    with tempfile.TemporaryDirectory(prefix="ltr_vit_step_") as tmp:
        vit_r = measure_variants(args.device, args.variants, batch, os.path.join(tmp, "train.log"), warmup, target,
                                 cap, repeats)
    machine = dict(describe_machine(torch.device(args.device)), **cpu_features())
    machine["load_average_1min"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return {"machine": machine, "smoke": args.smoke, "batch": batch, "threads": torch.get_num_threads(),
            "vit": vit_r}


def to_markdown(r):
    m, v = r["machine"], r["vit"]
    lines = [f"### ViT step: throughput on {m['device']}{' (smoke run)' if r['smoke'] else ''}", "",
             machine_line(m) + f" 1-min load average before/after: {m['load_average_1min'][0]} / "
             f"{m['load_average_1min'][1]}. Batch {r['batch']}, data in memory, {r['threads']} torch thread(s); "
             "figures are min / median / max over the interleaved repeats.", "",
             f"**ViT step: framework vs a bare timm loop** (`{v['config']}`: {v['backbone']}, "
             f"{v['parameters'] / 1e6:.2f} M parameters, input {v['input'][1]}x{v['input'][2]}; AdamW, layer decay, "
             "no weight decay on 1-D parameters, per-iteration warmup + cosine, drop path; bare = the same weights in "
             "timm's VisionTransformer with timm.optim.create_optimizer_v2(adamw, layer_decay) and the LR set by hand "
             f"each step; target: ratio >= {TARGET})", "",
             "| precision | framework img/s (median) | bare timm img/s (median) | ratio framework / bare "
             "(min / median / max) | repeats x iterations | LR scales = timm's |", "|---|---|---|---|---|---|"]
    for name, x in v["variants"].items():
        lines.append(f"| {name} | {x['framework_images_per_s']['median']:.0f} | {x['bare_images_per_s']['median']:.0f}"
                     f" | {fmt3(x['ratio'])} | {x['repeats']} x {x['iterations_per_repeat']} | "
                     f"{'yes' if x['same_lr_scales_as_timm'] else 'NO'} |")
    lines += ["", "Target: " + ("met" if v["target"]["met"] else "MISSED") + f" ({v['target']['target']})."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_timing_args(p, "benchmarks/results/studies")
    p.add_argument("--variants", nargs="+", default=None,
                   help="precision variants (default: fp32 bf16 on the CPU, fp32 fp16 on CUDA)")
    args = p.parse_args(argv)
    args.variants = args.variants or ["fp32", "fp16" if args.device == "cuda" else "bf16"]
    return args


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    setup(args)
    result = measure(args)
    md = to_markdown(result)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"vit_step_{args.device}{'_smoke' if args.smoke else ''}")
    write_json(stem + ".json", result, indent=2)
    write_text(stem + ".md", md)
    print(md)
    print(f"wrote {stem}.md and {stem}.json")
    return result


if __name__ == "__main__":
    main()
