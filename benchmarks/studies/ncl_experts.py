"""NCL's K experts one after another (NCL.BATCHED_EXPERTS False) vs batched as one wide network (True).

    python benchmarks/studies/ncl_experts.py [--device cpu|cuda] [--variants fp32 fp32_channels_last] [--profile]
        [--repeats 7] [--repeat-seconds 3] [--threads N] [--out benchmarks/results/studies] [--smoke]

Framework steps (benchmarks/timing.py) of configs/fashion_mnist_lt/ncl_res32.yaml both ways and of the
single-network CE step (same backbone, batch, precision, memory format), the three interleaved; reported per
repeat: step / (K x single). Targets: batched <= 0.9, sequential <= 1.05 (median). --profile adds a
torch.profiler table of one step of each path. Writes <out>/ncl_experts_<device>[_smoke].{md,json}.
"""
import argparse
import os
import sys
import tempfile

import torch

from lib.utils.atomic import write_json, write_text
from lib.utils.errors import UserError, exit_on_user_error

from benchmarks.machine_info import describe_machine, machine_line, stats
from benchmarks.timing import (BASE_CONFIG, FrameworkStep, add_timing_args, calibrate, fmt3, interleaved,
                               iterations_for, make_cfg, memory_batches, ratio_stats, setup, timing_sizes,
                               training_counts, variants)

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


def measure_variant(device, variant_name, variant, batch, log_path, warmup, target, cap, repeats, profile=False):
    """Both NCL paths and the single-network CE step, interleaved; ratios step / (K x single) per repeat."""
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
    print(f"NCL {variant_name}: K={k}, {repeats} interleaved repeats of {n_it} iterations", file=sys.stderr)
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


def measure(args):
    """Every --variants, one after another."""
    device = args.device
    load_before = os.getloadavg()
    V = variants(device)
    unknown = [v for v in args.variants if v not in V]
    if unknown:
        raise UserError(f"--variants: unknown {unknown}; valid: {', '.join(V)}")
    batch, repeats, cap, target, warmup = timing_sizes(args)
    with tempfile.TemporaryDirectory(prefix="ltr_ncl_experts_") as tmp:
        log_path = os.path.join(tmp, "train.log")
        results = [measure_variant(device, name, V[name], batch, log_path, warmup, target, cap, repeats, args.profile)
                   for name in args.variants]
    machine = describe_machine(torch.device(device))
    machine["load_average_1min"] = [round(load_before[0], 2), round(os.getloadavg()[0], 2)]
    return {"machine": machine, "smoke": args.smoke, "batch": batch, "input": [3, 32, 32],
            "threads": torch.get_num_threads(), "ncl_experts": results}


def to_markdown(r):
    m, results = r["machine"], r["ncl_experts"]
    lines = [f"### NCL experts: throughput on {m['device']}{' (smoke run)' if r['smoke'] else ''}", "",
             machine_line(m) + f" 1-min load average before/after: {m['load_average_1min'][0]} / "
             f"{m['load_average_1min'][1]}. Input 32x32, batch {r['batch']}, data in memory; figures are min / median /"
             " max over the interleaved repeats.", "",
             f"**NCL experts, one after another vs batched** (`{NCL_CONFIG}`, NCL.BATCHED_EXPERTS False / True; "
             f"framework steps, K = {results[0]['K']} {results[0]['backbone']} experts, step / (K x the single-network "
             f"CE step), the three interleaved, {r['threads']} torch thread(s); targets: batched <= "
             f"{NCL_TARGETS['batched']}, sequential <= {NCL_TARGETS['sequential']})", "",
             "| variant | path | step ms (median) | single-network step ms (median) | step / (K x single) "
             "(min / median / max) | target |", "|---|---|---|---|---|---|"]
    for x in results:
        for p in ("sequential", "batched"):
            lines.append(f"| {x['variant']} | {p} | {x['step_ms'][p]['median']:.0f} | "
                         f"{x['step_ms']['single']['median']:.0f} | {fmt3(x['ratio_to_K_single'][p], 2)} | "
                         f"{'met' if x['targets'][p]['met'] else 'MISSED'} |")
    for x in results:
        for p, rows in x.get("profile", {}).items():
            lines += ["", f"Profile of one {p} step ({x['variant']}), top ops by self CPU time: "
                      + "; ".join(f"{op} {ms:.0f} ms ({pct}%)" for op, ms, pct in rows)]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_timing_args(p, "benchmarks/results/studies")
    p.add_argument("--variants", nargs="+", default=["fp32", "fp32_channels_last"],
                   help="precision/memory-format variants (default: fp32 fp32_channels_last)")
    p.add_argument("--profile", action="store_true", help="add a torch.profiler table per path")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    setup(args)
    result = measure(args)
    md = to_markdown(result)
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, f"ncl_experts_{args.device}{'_smoke' if args.smoke else ''}")
    write_json(stem + ".json", result, indent=2)
    write_text(stem + ".md", md)
    print(md)
    print(f"wrote {stem}.md and {stem}.json")
    return result


if __name__ == "__main__":
    main()
