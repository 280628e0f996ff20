"""torch.compile vs eager for the ResNet-32 training step, measured side by side in one process.

    python benchmarks/studies/compile_ratio.py [--device cpu|cuda] [--batch 128] [--backend inductor]
        [--mode default] [--amp | --no-amp] [--no-channels-last] [--repeats 5] [--repeat-seconds 1] [--iters N]
        [--out benchmarks/results/studies]

The network is the framework's own (ResNet-32 of configs/fashion_mnist_lt/ce_res32.yaml, 32x32 inputs), copied
twice from the same initial weights: one copy runs eagerly, the other through torch.compile (forward and, by
AOTAutograd, backward; the SGD step and the GradScaler stay eager). A step is benchmarks/timing.py's bare loop:
forward + cross-entropy under autocast (fp16 + GradScaler on CUDA by default; --amp on CPU means bf16),
backward, SGD step, on batches already in device memory. Reported: the compile time (the first compiled step,
minus an eager step), images/s of both after warm-up, and the ratio compiled / eager over interleaved repeats
(each repeat times both, in alternating order, the same iterations), min / median / max; plus the two
first-step losses (same weights, same batch) as a correctness check. Writes <out>/compile_ratio_<device>.md and .json.
"""
import argparse
import copy
import os
import sys
import time

import torch

from lib.config import build_config
from lib.data.longtail import exponential_counts
from lib.methods import build_method
from lib.utils.atomic import write_json, write_text
from lib.utils.errors import exit_on_user_error

from benchmarks.machine_info import describe_machine, machine_line, stats
from benchmarks.timing import BASE_CONFIG, BareStep, setup, synchronize


def measure(args):
    device = torch.device(args.device)
    amp = args.amp if args.amp is not None else device.type == "cuda"
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    cfg = build_config(BASE_CONFIG, ["INPUT_SIZE", "(32, 32)", "DEVICE", device.type, "NETWORK.PRETRAINED", "False",
                                     "TRAIN.TENSORBOARD.ENABLE", "False", "TRAIN.AMP.ENABLE", str(amp),
                                     "TRAIN.AMP.DTYPE", str(dtype).replace("torch.", ""),
                                     "TRAIN.CHANNELS_LAST", str(args.channels_last)])
    torch.manual_seed(0)
    net = build_method(cfg, exponential_counts(1000, 100, 10)).net.to(device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    eager = BareStep(copy.deepcopy(net), cfg)
    compiled_net = torch.compile(copy.deepcopy(net), backend=args.backend, mode=None if args.mode == "default" else args.mode)
    compiled = BareStep(compiled_net, cfg)

    g = torch.Generator().manual_seed(0)
    cap = args.iters or (200 if device.type == "cuda" else 50)
    batches = [{"image": torch.randn(args.batch, 3, 32, 32, generator=g).to(device).contiguous(memory_format=fmt),
                "label": torch.randint(0, 10, (args.batch,), generator=g).to(device)} for _ in range(cap)]

    # first step from identical weights on the same batch: the losses must agree (fp16/bf16 tolerance)
    synchronize(device)
    t0 = time.perf_counter()
    loss_e = float(eager.step(batches[0]).detach())
    synchronize(device)
    eager_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss_c = float(compiled.step(batches[0]).detach())
    synchronize(device)
    compile_s = time.perf_counter() - t0 - eager_first
    print(f"compile ({args.backend}, mode {args.mode}): {compile_s:.1f} s; first-step loss eager {loss_e:.5f}, "
          f"compiled {loss_c:.5f}", file=sys.stderr, flush=True)
    for _ in range(args.warmup):  # a recompilation (e.g. for the second step's optimizer state) lands here
        eager(batches[:1])
        compiled(batches[:1])
    if args.iters:
        iters = args.iters
    else:
        t = min(eager(batches[:2]), eager(batches[:2])) / 2
        iters = max(1, min(cap, int(round(args.repeat_seconds / max(t, 1e-6)))))
    print(f"{args.repeats} interleaved repeats of {iters} iterations (batch {args.batch})", file=sys.stderr, flush=True)
    times = {"eager": [], "compiled": []}
    for r in range(args.repeats):
        order = ("eager", "compiled") if r % 2 == 0 else ("compiled", "eager")
        for name in order:
            times[name].append((eager if name == "eager" else compiled)(batches[:iters]))
    ips = {k: [iters * args.batch / s for s in v] for k, v in times.items()}
    machine = describe_machine(device)
    return {
        "machine": machine, "config": BASE_CONFIG, "backbone": cfg.BACKBONE.TYPE,
        "settings": {"batch": args.batch, "input": [3, 32, 32], "amp": amp,
                     "dtype": str(dtype).replace("torch.", "") if amp else "float32",
                     "channels_last": args.channels_last, "backend": args.backend, "mode": args.mode,
                     "repeats": args.repeats, "iterations_per_repeat": iters, "warmup": args.warmup,
                     "compiled": ("model forward + backward (AOTAutograd); SGD step and GradScaler eager"
                                  if args.backend != "eager" else
                                  "Dynamo graph capture only (backend eager: no AOTAutograd, no code generation)")},
        "compile_seconds": compile_s, "first_step_loss": {"eager": loss_e, "compiled": loss_c,
                                                         "abs_diff": abs(loss_e - loss_c)},
        "eager_images_per_s": stats(ips["eager"]), "compiled_images_per_s": stats(ips["compiled"]),
        "ratio_compiled_to_eager": stats([c / e for c, e in zip(ips["compiled"], ips["eager"])]),
    }


def to_markdown(r):
    s = r["settings"]
    q = r["ratio_compiled_to_eager"]
    prec = f"{s['dtype']} autocast" + (" + GradScaler" if s["dtype"] == "float16" else "") if s["amp"] else "fp32"
    return "\n".join([
        f"### torch.compile vs eager, ResNet-32 training step on {r['machine']['device']}", "",
        machine_line(r["machine"]),
        f"Model {r['backbone']} from `{r['config']}`, input 32x32, batch {s['batch']}, {prec}, "
        f"{'channels_last' if s['channels_last'] else 'contiguous'}; torch.compile backend {s['backend']}, mode "
        f"{s['mode']} ({s['compiled']}); {s['repeats']} interleaved repeats x {s['iterations_per_repeat']} "
        f"iterations after {s['warmup']} warm-up steps.", "",
        "| eager img/s (median) | compiled img/s (median) | ratio compiled / eager (min / median / max) | "
        "compile time | first-step loss eager / compiled |", "|---|---|---|---|---|",
        f"| {r['eager_images_per_s']['median']:.0f} | {r['compiled_images_per_s']['median']:.0f} | "
        f"{q['min']:.3f} / {q['median']:.3f} / {q['max']:.3f} | {r['compile_seconds']:.1f} s | "
        f"{r['first_step_loss']['eager']:.4f} / {r['first_step_loss']['compiled']:.4f} |", ""])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--backend", default="inductor", help="torch.compile backend (aot_eager: tracing only, quick)")
    p.add_argument("--mode", default="default", help="torch.compile mode (default, reduce-overhead, max-autotune)")
    p.add_argument("--amp", dest="amp", action="store_true", default=None,
                   help="autocast (default on CUDA: fp16 + GradScaler; on CPU off, bf16 when given)")
    p.add_argument("--no-amp", dest="amp", action="store_false")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--repeat-seconds", type=float, default=1.0, help="target length of one repeat per variant")
    p.add_argument("--iters", type=int, default=0, help="fixed iterations per repeat (default: from --repeat-seconds)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (default: torch's)")
    p.add_argument("--out", default="benchmarks/results/studies", help="folder for compile_ratio_<device>.md/.json")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    setup(args)
    r = measure(args)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"compile_ratio_{args.device}")
    write_json(stem + ".json", r, indent=2)
    md = to_markdown(r)
    write_text(stem + ".md", md)
    print(md)
    print(f"wrote {stem}.md and {stem}.json")
    return r


if __name__ == "__main__":
    main()
