"""torch.compile vs eager for the ResNet-32 training step, measured side by side in one process.

    python benchmarks/compile_ratio.py [--device cpu|cuda] [--batch 128] [--backend inductor] [--mode default]
        [--amp | --no-amp] [--no-channels-last] [--repeats 5] [--repeat-seconds 1] [--iters N] [--out DIR]

The network is the framework's own (ResNet-32 of configs/fashion_mnist_lt/ce_res32.yaml, 32x32 inputs), copied
twice from the same initial weights: one copy runs eagerly, the other through torch.compile (forward and, by
AOTAutograd, backward; the SGD step and the GradScaler stay eager). A step is forward + cross-entropy under
autocast (fp16 + GradScaler on CUDA by default; --amp on CPU means bf16), backward, SGD step, on batches already
in device memory. Reported: the compile time (the first compiled step, minus an eager step), images/s of both
after warm-up, and the ratio compiled / eager over interleaved repeats (each repeat times both, in alternating
order, the same iterations), min / median / max; plus the two first-step losses (same weights, same batch) as a
correctness check. Writes <out>/compile_ratio_<device>.md and .json.
"""
import argparse
import copy
import os
import sys
import time

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # this checkout's lib/
from lib.config import build_config
from lib.data.longtail import exponential_counts
from lib.methods import build_method
from lib.utils.atomic import write_json, write_text
from lib.utils.errors import UserError, exit_on_user_error

from machine_info import describe_machine, machine_line, stats

BASE_CONFIG = "configs/fashion_mnist_lt/ce_res32.yaml"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Step:
    """One training step of `net` (eager or compiled) with its own SGD optimizer and GradScaler."""

    def __init__(self, net, cfg, device, amp, dtype, channels_last):
        self.net, self.device, self.amp, self.dtype, self.channels_last = net, device, amp, dtype, channels_last
        o = cfg.TRAIN.OPTIMIZER
        self.opt = torch.optim.SGD(net.parameters(), lr=o.BASE_LR, momentum=o.MOMENTUM, weight_decay=o.WEIGHT_DECAY,
                                   nesterov=bool(o.NESTEROV and o.MOMENTUM > 0))
        use_scaler = amp and device.type == "cuda" and dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None

    def one(self, x, y):
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.amp):
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
        sync(self.device)
        t0 = time.perf_counter()
        for x, y in batches:
            self.one(x, y)
        sync(self.device)
        return time.perf_counter() - t0


def measure(args):
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: CUDA is not available on this machine")
    if args.threads:
        torch.set_num_threads(args.threads)
    amp = args.amp if args.amp is not None else device.type == "cuda"
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    cfg = build_config(BASE_CONFIG, ["INPUT_SIZE", "(32, 32)", "DEVICE", device.type, "NETWORK.PRETRAINED", "False",
                                     "TRAIN.TENSORBOARD.ENABLE", "False"])
    torch.manual_seed(0)
    net = build_method(cfg, exponential_counts(1000, 100, 10)).net.to(device)
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    net = net.to(memory_format=fmt)
    eager = Step(copy.deepcopy(net), cfg, device, amp, dtype, args.channels_last)
    compiled_net = torch.compile(copy.deepcopy(net), backend=args.backend, mode=None if args.mode == "default" else args.mode)
    compiled = Step(compiled_net, cfg, device, amp, dtype, args.channels_last)

    g = torch.Generator().manual_seed(0)
    cap = args.iters or (200 if device.type == "cuda" else 50)
    batches = [(torch.randn(args.batch, 3, 32, 32, generator=g).to(device).contiguous(memory_format=fmt),
                torch.randint(0, 10, (args.batch,), generator=g).to(device)) for _ in range(cap)]

    # first step from identical weights on the same batch: the losses must agree (fp16/bf16 tolerance)
    sync(device)
    t0 = time.perf_counter()
    loss_e = float(eager.one(*batches[0]).detach())
    sync(device)
    eager_first = time.perf_counter() - t0
    t0 = time.perf_counter()
    loss_c = float(compiled.one(*batches[0]).detach())
    sync(device)
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
    p.add_argument("--out", default="benchmarks/results", help="folder for compile_ratio_<device>.md/.json")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    if not os.path.isfile(BASE_CONFIG):
        raise UserError(f"{BASE_CONFIG} not found: run from the repository root")
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
