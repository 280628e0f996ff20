"""Helper of benchmarks/gpu_check.sh (the GPU check); not meant to be run by hand.

    python3 benchmarks/gpu_check.py cuda                        one line: the CUDA devices, or an error (exit 2)
    python3 benchmarks/gpu_check.py env cpu|cuda META_JSON      versions, GPU, imports; the machine for the summary
    python3 benchmarks/gpu_check.py discover [--max N]          multi-expert / multi-head configs
    python3 benchmarks/gpu_check.py dry-data SRC_DIR DST_DIR    tiny train/val/test subsets for `--dry`
    python3 benchmarks/gpu_check.py summary STEPS_TSV OUT_DIR   gpu_check.md / gpu_check.json from the step table
"""
import argparse
import glob
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SINGLE_MODEL_METHODS = ("ce", "wb")
FMNIST_DIR = "configs/fashion_mnist_lt"


def relative(text):
    """`text` with this checkout's absolute path removed: result files are committed."""
    return str(text).replace(ROOT + os.sep, "").replace(ROOT, ".")


def cmd_cuda(args):
    import torch

    if not torch.cuda.is_available():
        print(f"error: CUDA is not available here (torch {torch.__version__}, built with CUDA "
              f"{torch.version.cuda or 'none'}): the GPU check needs an NVIDIA GPU; "
              "bash benchmarks/gpu_check.sh --dry rehearses it on the CPU", file=sys.stderr)
        return 2
    names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    print(f"cuda: {torch.cuda.device_count()} device(s): {names}; torch {torch.__version__}, CUDA {torch.version.cuda}")
    return 0


def config_method(path):
    """The YAML's own METHOD when it names one (quick: nothing imported); else METHOD as the framework
    resolves it (an original release config without METHOD is recognised by build_config)."""
    try:
        import yaml

        raw = (yaml.safe_load(open(path)) or {}).get("METHOD")
        if isinstance(raw, str) and raw:
            return raw, ""
    except Exception:
        pass
    try:
        from lib.config import build_config

        return build_config(path).METHOD, ""
    except BaseException as e:  # a config still being written: report it, let its step show the error
        try:
            import yaml

            raw = (yaml.safe_load(open(path)) or {}).get("METHOD", "?")
        except Exception:
            raw = "?"
        return str(raw), f"{type(e).__name__}: {e}"


def cmd_discover(args):
    """One line per config whose METHOD is not a single-model one: PATH<TAB>METHOD<TAB>NOTE."""
    found = []
    for path in sorted(glob.glob(os.path.join(FMNIST_DIR, "*.yaml"))):
        method, err = config_method(path)
        if method.lower() in SINGLE_MODEL_METHODS:
            continue
        found.append((path, method, f"config does not build here: {err}" if err else ""))
    shown = found[:args.max] if args.max > 0 else found
    for path, method, note in shown:
        print(f"{path}\t{method}\t{note}")
    if len(shown) < len(found):
        print(f"# {len(found) - len(shown)} more not run (--max {args.max}): "
              + ", ".join(os.path.basename(p) for p, _, _ in found[len(shown):]), file=sys.stderr)
    return 0


def cmd_dry_data(args):
    """Tiny subsets (train ~4 % per class, at least 1; val 3 and test 5 per class) of a Fashion-MNIST-LT
    build, with absolute image paths, so `run --dry` trains in seconds on the same real data format."""
    jsons = sorted(glob.glob(os.path.join(args.src, "*_train.json")))
    if not jsons:
        print(f"error: no *_train.json in {args.src}", file=sys.stderr)
        return 1
    prefix = jsons[0][:-len("_train.json")]
    os.makedirs(args.dst, exist_ok=True)
    for split, keep in (("train", None), ("val", 3), ("test", 5)):
        src = f"{prefix}_{split}.json"
        data = json.load(open(src))
        per = {}
        for a in data["annotations"]:
            per[a["category_id"]] = per.get(a["category_id"], 0) + 1
        cap = {c: (max(1, round(0.04 * n)) if keep is None else keep) for c, n in per.items()}
        kept, seen = [], {}
        for a in data["annotations"]:
            c = a["category_id"]
            if seen.get(c, 0) < cap[c]:
                seen[c] = seen.get(c, 0) + 1
                b = dict(a)
                if not os.path.isabs(b["fpath"]):
                    b["fpath"] = os.path.abspath(os.path.join(os.path.dirname(src), b["fpath"]))
                kept.append(b)
        out = dict(data, annotations=kept)
        with open(os.path.join(args.dst, f"dry_{split}.json"), "w") as f:
            json.dump(out, f)
        print(f"{split}: {len(kept)} of {len(data['annotations'])} images", file=sys.stderr)
    classes = os.path.join(os.path.dirname(prefix), "classes.json")
    if os.path.isfile(classes):
        with open(classes) as f, open(os.path.join(args.dst, "classes.json"), "w") as g:
            g.write(f.read())
    return 0


def cmd_summary(args):
    """STEPS_TSV lines: step, status (ok | FAILED | TIMEOUT | skipped), seconds, detail, log. Writes
    OUT_DIR/gpu_check.json and gpu_check.md, with paths relative to the checkout."""
    steps = []
    for line in open(args.tsv):
        if not line.strip():
            continue
        f = line.rstrip("\n").split("\t") + [""] * 5
        steps.append({"step": f[0], "status": f[1], "seconds": float(f[2] or 0), "detail": relative(f[3]),
                      "log": f[4]})
    meta = json.load(open(args.meta)) if args.meta and os.path.isfile(args.meta) else {}
    meta.update(mode=args.mode, total_seconds=args.seconds)
    n_ok = sum(s["status"] == "ok" for s in steps)
    bad = [s for s in steps if s["status"] in ("FAILED", "TIMEOUT")]
    result = dict(meta, steps=steps, ok=n_ok, failed=len(bad), all_ok=not bad and n_ok > 0)
    with open(os.path.join(args.out, "gpu_check.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = [f"## GPU check ({args.mode}, {meta.get('date', '')})", "",
             f"Written by `bash benchmarks/gpu_check.sh`; each step's log: {args.logs}/<step>.log.", ""]
    if meta.get("machine"):
        lines += [meta["machine"], ""]
    lines += ["| step | status | seconds | detail |", "|---|---|---|---|"]
    for s in steps:
        lines.append(f"| {s['step']} | {s['status']} | {s['seconds']:.1f} | {s['detail']} |")
    lines += ["", f"{n_ok} ok, {len(bad)} failed or timed out, "
              f"{sum(s['status'].startswith('skipped') for s in steps)} skipped; total {args.seconds:.0f} s."]
    md = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "gpu_check.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


def cmd_env(args):
    """Versions, the GPU, and the imports the runs need; writes the machine line for the summary."""
    import importlib.metadata as md
    import platform
    import time

    import torch

    from benchmarks.machine_info import describe_machine, machine_line

    print(f"python {platform.python_version()}")
    vers = {}
    for name in ("torch", "torchvision", "numpy", "pillow", "matplotlib", "opencv-python-headless", "pyyaml",
                 "protobuf", "packaging", "tqdm", "yacs", "tensorboardX", "timm", "triton"):
        try:
            vers[name] = md.version(name)
        except md.PackageNotFoundError:
            vers[name] = None
    print("versions: " + ", ".join(f"{k} {v or 'MISSING'}" for k, v in vers.items()))
    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}, "
          f"cuda available {cuda}, devices {torch.cuda.device_count()}, "
          f"NCCL {'.'.join(map(str, torch.cuda.nccl.version())) if cuda else None}")
    if cuda:
        p = torch.cuda.get_device_properties(0)
        print(f"GPU 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs, "
              f"compute capability {p.major}.{p.minor}")
    from lib.utils.tv import torchvision
    import tensorboardX
    import yacs  # noqa: F401

    print(f"imports ok: torchvision {torchvision.__version__} (through lib.utils.tv), yacs, "
          f"tensorboardX {tensorboardX.__version__}")
    info = describe_machine("cuda:0" if args.device == "cuda" and cuda else "cpu")
    with open(args.meta, "w") as f:
        json.dump({"machine": machine_line(info), "machine_info": info, "versions": vers,
                   "date": time.strftime("%Y-%m-%d %H:%M %Z")}, f, indent=2)
    if args.device == "cuda" and not cuda:
        print("error: CUDA is not available", file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("cuda")
    s = sub.add_parser("discover")
    s.add_argument("--max", type=int, default=0, help="at most N configs (0: all)")
    s = sub.add_parser("dry-data")
    s.add_argument("src")
    s.add_argument("dst")
    s = sub.add_parser("summary")
    s.add_argument("tsv")
    s.add_argument("out")
    s.add_argument("--meta", default="")
    s.add_argument("--mode", default="GPU run")
    s.add_argument("--seconds", type=float, default=0.0)
    s.add_argument("--logs", default="output/gpu_check/work/logs", help="the logs folder, relative to the checkout")
    s = sub.add_parser("env")
    s.add_argument("device", choices=("cpu", "cuda"))
    s.add_argument("meta")
    args = p.parse_args(argv)
    return {"cuda": cmd_cuda, "env": cmd_env, "discover": cmd_discover, "dry-data": cmd_dry_data,
            "summary": cmd_summary}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
