"""Helper of benchmarks/gpu_check.sh (the one prepared GPU check); not meant to be run by hand.

    python3 benchmarks/gpu_check.py wheels-plan                 which requirements the GPU machine lacks
    python3 benchmarks/gpu_check.py wheel-deps WHEEL_DIR        each wheel's Requires-Dist, checked
    python3 benchmarks/gpu_check.py sizes --carry P [P ...]     what travels, against the 64 MiB limit
    python3 benchmarks/gpu_check.py command                     the device command, carry list, timeout_s
    python3 benchmarks/gpu_check.py discover [--max N]          multi-expert / multi-head configs
    python3 benchmarks/gpu_check.py dry-data SRC_DIR DST_DIR    tiny train/val/test subsets for `run --dry`
    python3 benchmarks/gpu_check.py summary STEPS_TSV OUT_DIR   summary.md / summary.json from the step table
    python3 benchmarks/gpu_check.py env cpu|cuda META_JSON      versions, GPU, imports (after the wheels)

The GPU machine (device kind nvidia-h200, see /work/.library/device/KINDS.md) has Python 3.12, torch 2.11,
torchvision 0.26 and a fixed package list, and no package registry: whatever the project imports that is
not on that list travels as wheels in .whl/ (git-ignored), together with the git-ignored data.
Standard library only, except `env` and `discover` (they run after the wheels are installed).
"""
import argparse
import glob
import json
import math
import os
import re
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KINDS_MD = os.environ.get("GPU_CHECK_KINDS_MD", "/work/.library/device/KINDS.md")
LIMIT_BYTES = 64 * 1024 * 1024  # what travels: tracked + untracked-not-ignored files + carried paths
COMMAND_MAX_CHARS, CARRY_MAX = 2000, 8
WHEEL_DIR = ".whl"
DATA_DIR = "data/fashion_mnist_lt"
CARRY = [WHEEL_DIR, DATA_DIR]
BUDGET_S = 420  # the script's own deadline for all steps on the device (gpu_check.sh run --budget)
TIMEOUT_S = 480  # device call limit (8 min): the budget + bundling and a margin; a warm rerun of some steps
RERUN_BUDGET_S = 200  # (--only) still fits in a session's 15 device minutes after a machine start
SINGLE_MODEL_METHODS = ("ce", "wb")
FMNIST_DIR = "configs/fashion_mnist_lt"

# The device's package list as KINDS.md gave it (read on a machine running the image on 2026-11-17); used
# only when KINDS.md is not readable here.
DEVICE_PACKAGES_SNAPSHOT = """absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings
cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet
filelock flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict
multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas
nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py nvidia-nccl-cu13
nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax
opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy
portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing
pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp"""

# distribution name -> the module it is imported as, where they differ
IMPORT_NAME = {"pillow": "PIL", "pyyaml": "yaml", "opencv-python-headless": "cv2", "opencv-python": "cv2",
               "tensorboardx": "tensorboardX", "protobuf": "google"}
# the code the GPU check runs (tools/ converters are not part of it)
CHECKED_CODE = ["lib", "main", "valid.py", "benchmarks", "data_parallel_train.sh"]


def norm(name):
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def device_packages():
    """(set of normalised names installed on the GPU machine, where the list came from)."""
    text, source = None, f"the snapshot in {os.path.relpath(__file__, ROOT)} (KINDS.md of 2026-11-17)"
    try:
        with open(KINDS_MD) as f:
            md = f.read()
        m = re.search(r"## Python packages already there.*?Packages:\s*(.+?)\.\s*$", md, re.S | re.M)
        if m:
            text, source = m.group(1), KINDS_MD
    except OSError:
        pass
    text = text if text is not None else DEVICE_PACKAGES_SNAPSHOT
    return {norm(p) for p in re.split(r"[,\s]+", text) if p.strip()}, source


def parse_requirements(path):
    """[(name, spec)] of a requirements.txt (comments and options dropped)."""
    out = []
    for line in open(path):
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)", line)
        if m:
            out.append((m.group(1), m.group(2).split(";")[0].strip()))
    return out


def imported_modules(paths):
    """Top-level module names imported anywhere in these files/folders (any indentation: lazy imports too)."""
    mods = set()
    files = []
    for p in paths:
        full = os.path.join(ROOT, p)
        if os.path.isdir(full):
            files += glob.glob(os.path.join(full, "**", "*.py"), recursive=True)
        elif full.endswith(".py") and os.path.isfile(full):
            files.append(full)
    for f in files:
        try:
            src = open(f, encoding="utf-8").read()
        except (OSError, UnicodeDecodeError):
            continue
        for m in re.finditer(r"^\s*(?:from|import)\s+([A-Za-z_][A-Za-z0-9_]*)", src, re.M):
            mods.add(m.group(1))
    return mods


def wheels_plan():
    """[{name, spec, needed, reason}] for every requirement the GPU machine lacks."""
    have, source = device_packages()
    used = imported_modules(CHECKED_CODE)
    plan = []
    reqs = parse_requirements(os.path.join(ROOT, "requirements.txt"))
    for name, spec in reqs:
        n = norm(name)
        if n in have:
            continue
        module = IMPORT_NAME.get(n, name.replace("-", "_"))
        needed = module in used
        plan.append({"name": name, "spec": spec, "module": module, "needed": needed,
                     "reason": (f"imported as `{module}` by the checked code" if needed else
                                f"`{module}` is not imported by {', '.join(CHECKED_CODE)} (optional for the check)")})
    return plan, source, [n for n, _ in reqs]


def cmd_wheels_plan(args):
    plan, source, reqs = wheels_plan()
    print(f"# device package list: {source}")
    print(f"# requirements.txt: {', '.join(reqs)}")
    present = [r for r in reqs if norm(r) not in {norm(p['name']) for p in plan}]
    print(f"# already on the GPU machine: {', '.join(present)}")
    for p in plan:
        # one line per missing package: NEEDED(1/0) NAME SPEC  (SPEC may be empty)
        print(f"{int(p['needed'])}\t{p['name']}\t{p['spec']}\t{p['reason']}")


def wheel_metadata(path):
    with zipfile.ZipFile(path) as z:
        meta = [n for n in z.namelist() if re.match(r"[^/]+\.dist-info/METADATA$", n)]
        if not meta:
            raise ValueError(f"{path}: no METADATA")
        return z.read(meta[0]).decode("utf-8", "replace")


def marker_applies(marker):
    """Whether a Requires-Dist marker holds on the device (Linux x86-64, CPython 3.12); extras never."""
    if not marker:
        return True
    if "extra" in marker:
        return False
    try:
        from packaging.markers import Marker

        env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
               "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
        return Marker(marker).evaluate(env)
    except Exception:
        return True  # unknown: count it as needed, to be safe


def cmd_wheel_deps(args):
    have, source = device_packages()
    wheels = sorted(glob.glob(os.path.join(args.wheel_dir, "*.whl")))
    carried = {}
    for w in wheels:
        m = re.search(r"^Name:\s*(\S+)", wheel_metadata(w), re.M)
        carried[norm(m.group(1)) if m else norm(os.path.basename(w).split("-")[0])] = w
    missing, lines = [], []
    names = [norm(os.path.basename(w).split("-")[0]) for w in wheels]
    twice = sorted({n for n in names if names.count(n) > 1})
    for n, w in sorted(carried.items()):
        reqs = []
        for line in wheel_metadata(w).splitlines():
            if not line.startswith("Requires-Dist:"):
                continue
            req = line.split(":", 1)[1].strip()
            req, _, marker = req.partition(";")
            if not marker_applies(marker.strip()):
                continue
            dn = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1)
            where = "carried" if norm(dn) in carried else ("on the GPU machine" if norm(dn) in have else "MISSING")
            reqs.append(f"{req.strip()} ({where})")
            if where == "MISSING":
                missing.append(f"{dn} (needed by {os.path.basename(w)})")
        lines.append(f"  {os.path.basename(w)}: Requires-Dist: {'; '.join(reqs) or 'none'}")
    print(f"wheels in {args.wheel_dir} and their dependencies (device list: {source}):")
    print("\n".join(lines) or "  (no wheels)")
    if twice:
        print(f"error: two versions of {', '.join(twice)} in {args.wheel_dir}: pip's install would stop; "
              "delete all but one", file=sys.stderr)
        return 1
    if missing:
        print("error: dependencies neither carried nor on the GPU machine: " + ", ".join(missing)
              + f": download their wheels into {args.wheel_dir} too", file=sys.stderr)
        return 1
    print("  every dependency is carried or already on the GPU machine (versions there: `pip show` in the run log)")
    return 0


def _files_under(path):
    if os.path.isfile(path) or os.path.islink(path):
        yield path
        return
    for d, _, files in os.walk(path):
        for f in files:
            yield os.path.join(d, f)


def travel_sizes(carry):
    """Bytes of what a device call sends: git's tracked + untracked-not-ignored files, shared/ and the
    carried paths. Also a tar-like estimate (512-byte header per file, content padded to 512)."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, check=True).stdout.decode("utf-8", "surrogateescape")
    tree = [p for p in out.split("\0") if p]
    if os.path.isdir(os.path.join(ROOT, "shared")):
        tree += [os.path.relpath(f, ROOT) for f in _files_under(os.path.join(ROOT, "shared"))]
    parts = {"working tree (tracked + untracked, not ignored)": sorted(set(tree))}
    for c in carry:
        full = os.path.join(ROOT, c)
        parts[c] = [os.path.relpath(f, ROOT) for f in _files_under(full)] if os.path.exists(full) else None
    res = {}
    for k, files in parts.items():
        if files is None:
            res[k] = None
            continue
        b = t = n = 0
        for f in files:
            try:
                s = os.lstat(os.path.join(ROOT, f)).st_size
            except OSError:  # tracked but deleted here: does not travel
                continue
            b += s
            t += 512 + 512 * math.ceil(s / 512)
            n += 1
        res[k] = {"files": n, "bytes": b, "tar_bytes": t}
    return res


def mib(b):
    return b / 1024 / 1024


def cmd_sizes(args):
    res = travel_sizes(args.carry)
    total = tar_total = 0
    bad = False
    print(f"what a device call sends (limit {mib(LIMIT_BYTES):.0f} MiB in all):")
    for k, v in res.items():
        if v is None:
            print(f"  {k}: MISSING (run `bash benchmarks/gpu_check.sh prepare`)")
            bad = True
            continue
        total += v["bytes"]
        tar_total += v["tar_bytes"]
        print(f"  {k}: {v['files']} files, {mib(v['bytes']):.2f} MiB ({mib(v['tar_bytes']):.2f} MiB as a tar)")
    print(f"  total: {mib(total):.2f} MiB ({mib(tar_total):.2f} MiB as a tar, the conservative figure)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"parts": res, "bytes": total, "tar_bytes": tar_total, "limit_bytes": LIMIT_BYTES}, f, indent=2)
    if bad:
        return 1
    if total > LIMIT_BYTES:
        print(f"error: {mib(total):.2f} MiB would travel, over the device tool's {mib(LIMIT_BYTES):.0f} MiB: "
              "ignore (or delete) large untracked files, or carry less", file=sys.stderr)
        return 1
    if tar_total > LIMIT_BYTES:
        print(f"warning: the file contents fit ({mib(total):.2f} MiB) but with per-file tar overhead it is "
              f"{mib(tar_total):.2f} MiB: the call may be refused", file=sys.stderr)
    return 0


def device_command(budget=BUDGET_S, only=""):
    """The one line for the device tool's `run` (it starts in the repository root)."""
    extra = f" --only {only}" if only else ""
    return f"PYTHONUNBUFFERED=1 bash benchmarks/gpu_check.sh run --budget {budget}{extra} 2>&1"


def cmd_command(args):
    cmd = device_command()
    rerun = device_command(RERUN_BUDGET_S, "STEPS")
    assert len(cmd) <= COMMAND_MAX_CHARS and len(CARRY) <= CARRY_MAX
    print("device run (tool `run`):")
    print(f"  command:   {cmd}")
    print(f"  carry:     {json.dumps(CARRY)}")
    print(f"  timeout_s: {TIMEOUT_S}")
    print(f"  ({len(cmd)} characters; the script stops starting steps after {BUDGET_S} s and bundles what it has;"
          f" files come back from $OUT: gpu_check.log, summary.md/.json, the throughput and compile tables and"
          f" gpu_check_files.tar.gz with every step's log)")
    print(f"rerun of failed steps only (e.g. STEPS=3,5), if device time is left: {rerun}, "
          f"timeout_s {RERUN_BUDGET_S + 50}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": cmd, "carry": CARRY, "timeout_s": TIMEOUT_S, "budget_s": BUDGET_S,
                       "rerun_command": rerun, "rerun_timeout_s": RERUN_BUDGET_S + 50}, f, indent=2)
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
        sys.path.insert(0, ROOT)
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
    """STEPS_TSV lines: step, status (ok | FAILED | TIMEOUT | skipped), seconds, detail, log."""
    steps = []
    for line in open(args.tsv):
        if not line.strip():
            continue
        f = line.rstrip("\n").split("\t") + [""] * 5
        steps.append({"step": f[0], "status": f[1], "seconds": float(f[2] or 0), "detail": f[3], "log": f[4]})
    meta = {}
    if args.meta and os.path.isfile(args.meta):
        meta = json.load(open(args.meta))
    n_ok = sum(s["status"] == "ok" for s in steps)
    bad = [s for s in steps if s["status"] in ("FAILED", "TIMEOUT")]
    result = dict(meta, steps=steps, ok=n_ok, failed=len(bad), all_ok=not bad and n_ok > 0)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(result, f, indent=2)
    lines = [f"## GPU check summary ({meta.get('mode', '?')}, {meta.get('date', '')})", ""]
    if meta.get("machine"):
        lines += [meta["machine"], ""]
    lines += ["| step | status | seconds | detail |", "|---|---|---|---|"]
    for s in steps:
        lines.append(f"| {s['step']} | {s['status']} | {s['seconds']:.1f} | {s['detail']} |")
    lines += ["", f"{n_ok} ok, {len(bad)} failed or timed out, "
              f"{sum(s['status'].startswith('skipped') for s in steps)} skipped; "
              f"total {meta.get('total_seconds', sum(s['seconds'] for s in steps)):.0f} s."]
    md = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "summary.md"), "w") as f:
        f.write(md)
    print(md)
    return 0


def cmd_env(args):
    """Versions, the GPU, and the imports the runs need; writes the machine line for the summary."""
    import importlib.metadata as md
    import platform
    import time

    import torch

    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    from machine_info import describe_machine, machine_line

    print(f"python {platform.python_version()} at {sys.executable}")
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
    sys.path.insert(0, ROOT)
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
    sub.add_parser("wheels-plan")
    s = sub.add_parser("wheel-deps")
    s.add_argument("wheel_dir")
    s = sub.add_parser("sizes")
    s.add_argument("--carry", nargs="*", default=CARRY)
    s.add_argument("--json", default="")
    s = sub.add_parser("command")
    s.add_argument("--json", default="")
    s = sub.add_parser("discover")
    s.add_argument("--max", type=int, default=0, help="at most N configs (0: all)")
    s = sub.add_parser("dry-data")
    s.add_argument("src")
    s.add_argument("dst")
    s = sub.add_parser("summary")
    s.add_argument("tsv")
    s.add_argument("out")
    s.add_argument("--meta", default="")
    s = sub.add_parser("env")
    s.add_argument("device", choices=("cpu", "cuda"))
    s.add_argument("meta")
    args = p.parse_args(argv)
    return {"env": cmd_env, "wheels-plan": cmd_wheels_plan, "wheel-deps": cmd_wheel_deps, "sizes": cmd_sizes,
            "command": cmd_command, "discover": cmd_discover, "dry-data": cmd_dry_data,
            "summary": cmd_summary}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
