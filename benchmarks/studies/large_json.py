"""Start-up cost on an iNaturalist-2018-sized annotation JSON (issue 15, section 4).

    python benchmarks/studies/large_json.py [--checkout .] [--tag after] [--repeats 3] [--data DIR]
        [--out benchmarks/results/studies] [--n 437513] [--classes 8142] [--val 24426]

Generates (once, cached in --data, default <tmp>/ltr_large_json) an iNat-2018-shaped dataset: N = 437,513
training entries over C = 8,142 classes (a power-law profile, 1000 ... 2 images per class), a 24,426-entry
val JSON, absolute `fpath`s <data>/images/train_val2018/<super>/<class>/<32 hex>.jpg as in
tools/convert_inat.py's output, with `im_height` / `im_width`. The image files are hard links to 16 tiny 32x32 JPEGs (ext4 allows 65,000
links per inode), so the directory tree is real (8,142 class folders) at almost no disk cost. A second
copy of the training JSON points at a root that does not exist (a moved dataset).

Then, with the code of --checkout (its lib/ and main/train.py, each in a fresh interpreter, --repeats
times; the median is reported):

  imports        `import lib.engine.trainer` alone (the floor under every figure below)
  first batch    from interpreter start to the first training batch handed to the train step
                 (config res32_cifar, 32x32, batch 128, 2 workers, DATASET.CHECK_IMAGES True), with the
                 time spent in DataSplits (the three JSONs + the image check) and the process's peak RSS
  missing root   `python main/train.py --cfg CFG DATASET.TRAIN_JSON <moved JSON>`: seconds to the exit,
                 exit code, the error line and the peak RSS
  table          JsonDataset(train JSON) alone: seconds with and without the image check, and the
                 tracemalloc peak / retained memory of building it (no image check)

Writes <out>/large_json.json (one entry per --tag, so `--tag before` on an old checkout and `--tag after`
on this one end up side by side) and <out>/large_json.md (both tables, targets, the machine).
The targets (issue 15): first batch < 5 s, missing root reported < 2 s, table peak < 300 MB.
"""
import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks.machine_info import describe_machine, machine_line

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TARGETS = {"first_batch_s": 5.0, "missing_root_s": 2.0, "table_peak_mb": 300.0}
SUPERS = ["Plantae", "Insecta", "Aves", "Reptilia", "Mammalia", "Fungi", "Amphibia", "Mollusca", "Animalia",
          "Arachnida", "Actinopterygii", "Chromista", "Protozoa", "Bacteria"]
N_SOURCES = 16  # hard links per source image stay < 65,000 (ext4's per-inode limit)

CONFIG = """NAME: large_json
OUTPUT_DIR: {out}
METHOD: ce
INPUT_SIZE: (32, 32)
SHOW_STEP: 0
DATASET:
  TRAIN_JSON: {train}
  VALID_JSON: {val}
  TEST_JSON: ""
  CHECK_IMAGES: True
BACKBONE:
  TYPE: res32_cifar
TRAIN:
  BATCH_SIZE: 128
  MAX_EPOCH: 1
  NUM_WORKERS: 2
  TENSORBOARD:
    ENABLE: False
TEST:
  NUM_WORKERS: 2
TRANSFORMS:
  TRAIN_TRANSFORMS: ("random_resized_crop", "random_horizontal_flip")
  TEST_TRANSFORMS: ("shorter_resize_for_crop", "center_crop")
  NORMALIZE: inat
"""

# Runs in a fresh interpreter with the checkout on PYTHONPATH: argv = t0 (parent's clock just before the
# start), config, overrides. Prints one line "MARKS {json}" and exits at the first training batch.
FIRST_BATCH_CHILD = r"""
import json, os, sys, time
t0 = float(sys.argv[1]); marks = {}
def rss_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
import lib.engine.trainer as T
from lib.config import build_config
marks["imports_s"] = time.time() - t0; marks["imports_cpu_s"] = time.process_time()
Orig = T.DataSplits
class Timed(Orig):
    def __init__(self, *a, **k):
        t, c = time.time(), time.process_time(); super().__init__(*a, **k)
        marks["data_s"] = time.time() - t; marks["data_cpu_s"] = time.process_time() - c
T.DataSplits = Timed
def first_batch(*a, **k):
    marks["first_batch_s"] = time.time() - t0; marks["peak_rss_mb"] = rss_mb("VmHWM")
    marks["first_batch_cpu_s"] = time.process_time()
    print("MARKS " + json.dumps(marks), flush=True); os._exit(0)
T.train_step = first_batch
try:
    T.train(build_config(sys.argv[2], sys.argv[3:]))
except Exception as e:
    marks["error"] = " ".join(str(e).split())[:400]; marks["error_s"] = time.time() - t0
    marks["error_cpu_s"] = time.process_time()
    marks["peak_rss_mb"] = rss_mb("VmHWM")
    print("MARKS " + json.dumps(marks), flush=True); os._exit(3)
"""

# argv = json path, mode (check | nocheck | memory). Prints "TABLE {json}".
TABLE_CHILD = r"""
import json, sys, time, tracemalloc
from lib.data.dataset import JsonDataset
path, mode = sys.argv[1], sys.argv[2]
def rss_mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
out = {"rss_before_mb": rss_mb("VmRSS")}
if mode == "memory":
    tracemalloc.start()
t, c = time.time(), time.process_time()
ds = JsonDataset(path, check_images=(mode == "check"))
out["seconds"], out["cpu_s"] = time.time() - t, time.process_time() - c
out["entries"] = len(ds)
if mode == "memory":
    cur, peak = tracemalloc.get_traced_memory()
    out["retained_mb"], out["peak_mb"] = cur / 2**20, peak / 2**20
out["peak_rss_mb"] = rss_mb("VmHWM")
print("TABLE " + json.dumps(out), flush=True)
"""


def class_profile(n, classes, n_max=1000, n_min=2):
    """Counts n_c = int(n_max (n_min/n_max)^((c/(C-1))^p)), with p chosen so that sum n_c = n (the rest
    added to the head classes): iNat-2018's shape, n_max ... n_min images per class, mean n / C."""
    if classes == 1:
        return [n]
    ratio = n_min / n_max

    def counts_for(p):
        return [max(n_min, int(n_max * ratio ** ((c / (classes - 1)) ** p))) for c in range(classes)]

    lo, hi = 1e-3, 50.0  # the sum grows with p
    for _ in range(60):
        p = (lo + hi) / 2
        lo, hi = (p, hi) if sum(counts_for(p)) < n else (lo, p)
    counts = counts_for(lo)
    c = 0
    while sum(counts) < n:
        if counts[c] < n_max:
            counts[c] += 1
        c = (c + 1) % classes
    return counts


def generate(data, n, classes, n_val):
    """Write the images (hard links), the train/val JSONs and the moved-root copy; cached by a stamp file."""
    stamp = os.path.join(data, f"stamp_{n}_{classes}_{n_val}.json")
    if os.path.isfile(stamp):
        return json.load(open(stamp))
    import numpy as np
    from PIL import Image

    t = time.time()
    root = os.path.join(data, "images")
    src_dir = os.path.join(data, "sources")
    os.makedirs(src_dir, exist_ok=True)
    rng = np.random.default_rng(0)
    sources = []
    for k in range(N_SOURCES):
        p = os.path.join(src_dir, f"{k}.jpg")
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(p, quality=90)
        sources.append(p)
    counts = class_profile(n, classes)
    val_counts = [n_val // classes + (c < n_val % classes) for c in range(classes)]  # 3 per class in iNat
    train, val, i = [], [], 0
    for c in range(classes):
        folder = os.path.join(root, "train_val2018", SUPERS[c % len(SUPERS)], str(c))
        os.makedirs(folder, exist_ok=True)
        for k in range(counts[c] + val_counts[c]):
            name = hashlib.md5(f"{c}/{k}".encode()).hexdigest() + ".jpg"
            path = os.path.join(folder, name)
            if not os.path.exists(path):
                os.link(sources[i % N_SOURCES], path)
            entry = {"image_id": i, "fpath": path, "category_id": c, "im_height": 32, "im_width": 32}
            (train if k < counts[c] else val).append(entry)
            i += 1
    files = {"train": os.path.join(data, "iNat18_train.json"), "val": os.path.join(data, "iNat18_val.json"),
             "moved": os.path.join(data, "iNat18_train_moved.json")}
    text = json.dumps({"annotations": train, "num_classes": classes})
    open(files["train"], "w").write(text)
    open(files["moved"], "w").write(text.replace(json.dumps(root)[1:-1], "/nonexistent/iNat18"))
    open(files["val"], "w").write(json.dumps({"annotations": val, "num_classes": classes}))
    info = {"files": files, "train_entries": len(train), "val_entries": len(val), "classes": classes,
            "class_folders": classes, "max_per_class": max(counts), "min_per_class": min(counts),
            "train_json_mb": os.path.getsize(files["train"]) / 2**20, "generated_s": time.time() - t}
    json.dump(info, open(stamp, "w"), indent=1)
    return info


def child_env(checkout):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (checkout, env.get("PYTHONPATH", "")) if p)
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def run_child(code, args, checkout, marker, timeout=600):
    t0 = time.time()
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=checkout, env=child_env(checkout),
                       capture_output=True, text=True, timeout=timeout)
    wall = time.time() - t0
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(marker + " ")]
    if not lines:
        raise RuntimeError(f"child failed (exit {r.returncode}): {r.stderr[-2000:]}")
    out = json.loads(lines[-1][len(marker) + 1:])
    out["wall_s"] = wall
    return out


def time_imports(checkout):
    """Wall and CPU seconds (user + sys) of a fresh interpreter that imports the trainer."""
    t0 = time.time()
    p = subprocess.Popen([sys.executable, "-c", "import lib.engine.trainer"], cwd=checkout, env=child_env(checkout))
    _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError("import lib.engine.trainer failed")
    return {"seconds": time.time() - t0, "cpu_s": usage.ru_utime + usage.ru_stime}


def missing_root(checkout, cfg, moved, out_dir):
    """The real entry point on the moved-root JSON: seconds to the exit, code, error line, peak RSS."""
    t0 = time.time()
    p = subprocess.Popen([sys.executable, "main/train.py", "--cfg", cfg, "DATASET.TRAIN_JSON", moved,
                          "OUTPUT_DIR", out_dir], cwd=checkout, env=child_env(checkout),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    seconds = time.time() - t0
    err = p.stderr.read().strip().splitlines()
    p.stdout.read()
    return {"seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime,
            "exit_code": os.waitstatus_to_exitcode(status), "peak_rss_mb": usage.ru_maxrss / 1024,
            "error": err[-1] if err else ""}


def median_of(runs, key):
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def measure(checkout, info, data, repeats, log):
    cfg = os.path.join(data, "large_json.yaml")
    out_dir = os.path.join(data, "runs")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(out=out_dir, train=info["files"]["train"], val=info["files"]["val"]))
    res = {"runs": {}}
    plan = [
        ("imports", lambda: time_imports(checkout)),
        ("first_batch", lambda: run_child(FIRST_BATCH_CHILD, [repr(time.time()), cfg], checkout, "MARKS")),
        ("missing_root", lambda: missing_root(checkout, cfg, info["files"]["moved"], out_dir)),
        ("table_nocheck", lambda: run_child(TABLE_CHILD, [info["files"]["train"], "nocheck"], checkout, "TABLE")),
        ("table_check", lambda: run_child(TABLE_CHILD, [info["files"]["train"], "check"], checkout, "TABLE")),
        ("table_memory", lambda: run_child(TABLE_CHILD, [info["files"]["train"], "memory"], checkout, "TABLE")),
    ]
    for r in range(repeats):  # interleaved, so load from other processes hits every measurement alike
        for name, fn in plan:
            if name == "table_memory" and r > 0:
                continue  # deterministic
            m = fn()
            res["runs"].setdefault(name, []).append(m)
            log(f"repeat {r + 1}/{repeats} {name}: " + json.dumps({k: (round(v, 3) if isinstance(v, float) else v)
                                                                  for k, v in m.items()}))
    runs = res["runs"]
    fb = runs["first_batch"]
    res["summary"] = {
        "imports_s": median_of(runs["imports"], "seconds"),
        "imports_cpu_s": median_of(runs["imports"], "cpu_s"),
        "first_batch_s": median_of(fb, "first_batch_s"),
        "first_batch_cpu_s": median_of(fb, "first_batch_cpu_s"),
        "first_batch_data_s": median_of(fb, "data_s"),
        "first_batch_data_cpu_s": median_of(fb, "data_cpu_s"),
        "first_batch_peak_rss_mb": median_of(fb, "peak_rss_mb"),
        "first_batch_error": next((r["error"] for r in fb if r.get("error")), None),
        "missing_root_s": median_of(runs["missing_root"], "seconds"),
        "missing_root_cpu_s": median_of(runs["missing_root"], "cpu_s"),
        "missing_root_exit_code": runs["missing_root"][0]["exit_code"],
        "missing_root_error": runs["missing_root"][0]["error"],
        "missing_root_peak_rss_mb": median_of(runs["missing_root"], "peak_rss_mb"),
        "table_nocheck_s": median_of(runs["table_nocheck"], "seconds"),
        "table_nocheck_cpu_s": median_of(runs["table_nocheck"], "cpu_s"),
        "table_check_s": median_of(runs["table_check"], "seconds"),
        "table_check_cpu_s": median_of(runs["table_check"], "cpu_s"),
        "table_peak_mb": runs["table_memory"][0]["peak_mb"],
        "table_retained_mb": runs["table_memory"][0]["retained_mb"],
    }
    return res


def fmt(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.2f}{unit}" if v < 100 else f"{v:.0f}{unit}"
    return f"{v}{unit}"


ROWS = [  # (label, wall key, CPU key, unit, target key)
    ("`import lib.engine.trainer` (floor under every time below)", "imports_s", "imports_cpu_s", " s", None),
    ("start → first training batch (images exist)", "first_batch_s", "first_batch_cpu_s", " s", "first_batch_s"),
    ("  of which DataSplits (train + val JSON, image check)", "first_batch_data_s", "first_batch_data_cpu_s", " s",
     None),
    ("  peak RSS of the process", "first_batch_peak_rss_mb", None, " MB", None),
    ("missing image root: `main/train.py` start → one-line error", "missing_root_s", "missing_root_cpu_s", " s",
     "missing_root_s"),
    ("  peak RSS of the process", "missing_root_peak_rss_mb", None, " MB", None),
    ("JsonDataset(train JSON) without the image check", "table_nocheck_s", "table_nocheck_cpu_s", " s", None),
    ("JsonDataset(train JSON) with the image check", "table_check_s", "table_check_cpu_s", " s", None),
    ("annotation table: tracemalloc peak while building", "table_peak_mb", None, " MB", "table_peak_mb"),
    ("annotation table: retained after building", "table_retained_mb", None, " MB", None),
]


def markdown(result):
    tags = sorted(result["tags"], key=lambda t: (t != "before", t))  # before | after | others
    info = result["data"]
    lines = ["# Start-up on an iNaturalist-2018-sized JSON", "",
             f"Data: {info['train_entries']:,} training entries ({info['train_json_mb']:.0f} MB JSON), "
             f"{info['val_entries']:,} val entries, {info['classes']:,} classes ({info['max_per_class']} … "
             f"{info['min_per_class']} per class), one folder per class, absolute `fpath`s, 32x32 JPEGs as hard "
             "links. Config: res32_cifar, 32x32, batch 128, 2 workers, `DATASET.CHECK_IMAGES True`. "
             "Generated and measured by `python benchmarks/studies/large_json.py` (medians over the repeats; "
             "each figure in a fresh interpreter).", ""]
    for tag in tags:
        t = result["tags"][tag]
        lines.append(f"- **{tag}** (checkout `{t['checkout_commit']}`{', ' + t['note'] if t.get('note') else ''}): "
                     f"{machine_line(t['machine'])} 1-min load average at start / end: "
                     f"{t['load_start']:.2f} / {t['load_end']:.2f}; {t['repeats']} repeats.")
    lines += ["", "Times are wall-clock seconds and, in brackets, the CPU seconds (user + sys) of the process: with "
              "other jobs on the cores the wall time grows with the load, the CPU time much less; on a quiet "
              "machine the two are close (the first batch also waits for the DataLoader workers).", ""]
    lines += ["| measurement | " + " | ".join(tags) + " | target |", "|---|" + "---|" * len(tags) + "---|"]
    for label, key, cpu_key, unit, target in ROWS:
        cells = []
        for tag in tags:
            s = result["tags"][tag]["summary"]
            cell = fmt(s.get(key), unit)
            if cpu_key and s.get(cpu_key) is not None:
                cell += f" ({fmt(s[cpu_key], ' s')} CPU)"
            cells.append(cell)
        tgt = f"< {TARGETS[target]:g}{unit}" if target else ""
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {tgt} |")
    lines.append("")
    for tag in tags:
        s = result["tags"][tag]["summary"]
        lines.append(f"Missing-root error ({tag}, exit code {s['missing_root_exit_code']}): `{s['missing_root_error']}`")
        lines.append("")
        if s.get("first_batch_error"):
            lines.append(f"First-batch run failed ({tag}): `{s['first_batch_error']}`")
            lines.append("")
    return "\n".join(lines)


def commit_of(checkout):
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
    if r.returncode == 0:
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "lib", "main"], cwd=checkout,
                               capture_output=True, text=True).stdout.strip()
        return r.stdout.strip() + ("+uncommitted" if dirty else "")
    stamp = os.path.join(checkout, "COMMIT")
    return open(stamp).read().strip() if os.path.isfile(stamp) else "unknown"


def get_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkout", default=ROOT, help="checkout whose lib/ and main/ are measured")
    p.add_argument("--tag", default="after", help="column name in the result files (e.g. before / after)")
    p.add_argument("--note", default="", help="a few words stored with the tag")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--data", default=os.path.join(tempfile.gettempdir(), "ltr_large_json"),
                   help="where the generated dataset is cached")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "studies"))
    p.add_argument("--n", type=int, default=437513, help="training entries (iNat 2018: 437,513)")
    p.add_argument("--classes", type=int, default=8142)
    p.add_argument("--val", type=int, default=24426)
    return p


def main(argv=None):
    args = get_parser().parse_args(argv)
    checkout = os.path.abspath(args.checkout)
    os.makedirs(args.data, exist_ok=True)

    def log(msg):
        print(msg, flush=True)

    log(f"generating / reusing the dataset in {args.data} ...")
    info = generate(args.data, args.n, args.classes, args.val)
    log(json.dumps({k: v for k, v in info.items() if k != "files"}))
    load_start = os.getloadavg()[0]
    res = measure(checkout, info, args.data, args.repeats, log)
    res.update(machine=describe_machine("cpu"), checkout_commit=commit_of(checkout), note=args.note,
               repeats=args.repeats, load_start=load_start, load_end=os.getloadavg()[0])
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, "large_json")
    result = json.load(open(stem + ".json")) if os.path.isfile(stem + ".json") else {"tags": {}}
    result["data"] = {k: v for k, v in info.items() if k not in ("files", "generated_s")}
    result["targets"] = TARGETS
    result["tags"][args.tag] = res
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(markdown(result) + "\n")
    log(markdown(result))
    log(f"wrote {stem}.md and {stem}.json")


if __name__ == "__main__":
    main()
