"""Accuracy of every method config on Fashion-MNIST-LT under one budget: a Markdown table, a JSON, a plot.

    python benchmarks/compare.py [--quick] [--configs FILE ...] [--imb-factor 10|50|100] [--seeds 42 43 44]
        [--epochs N | --epoch-scale F] [--device auto|cpu|cuda] [--out benchmarks/results]
        [--output-dir output/benchmarks] [--reuse] [--baseline ce_res32] [--jobs N]
        [--tag NAME] [--sweep KEY V1 V2 ...] [--opts KEY VALUE ...]

Runs each config (default: every configs/fashion_mnist_lt/*.yaml, so a new method appears when its
config lands) for each seed with `lib.engine.trainer.train`, in-process, and writes
<out>/accuracy_if<IF>[_quick].{md,json,png}:
- the table: test-split top-1 and many/medium/few accuracy (%), mean ± std over the seeds (sample std),
  the difference to the CE baseline, the checkpoint each number comes from (best top-1 on the val split,
  or the last epoch when a config has no val split), and the wall time per run;
- the JSON: the same plus every run, its per-class accuracies, the machine and the date;
- the plot: per-class test accuracy of every method (classes sorted by training count) over the
  training-count curve.
Outputs are rewritten after every finished run, so an interrupted benchmark leaves the runs so far.

Each run is a `main/train.py` process (its log: <output-dir>/<IF>_<mode>/seed<S>/<NAME>.benchmark.log);
--jobs N runs N at once with cores // N torch threads each (quick mode on a CPU: 2 at a time, 1 thread
each, which on a 2-core CPU finishes the list ~1.5x sooner than one run with 2 threads). A wall time
per run is then measured while another run shares the CPU.

Budget. Full mode keeps every config's own schedule (`--epoch-scale 1`, seeds 42 43 44) and runs every
config. --quick (< 15 min on 2 CPU cores) runs, unless --configs is given, the QUICK_CONFIGS subset (CE,
balanced softmax, Weight Balancing's two stages, ACE, NCL, CADEL: the mission's methods, each at its own
recipe; the other baselines and the tiny-ViT configs only in full mode), one seed, with the schedule scaled by 0.5: TRAIN.MAX_EPOCH, the LR schedule keys its TYPE uses (LR_STEP,
COSINE_DECAY_END), TWO_STAGE.START_EPOCH under DRW/DRS, and every other positive integer key named
*EPOCH* (a method's own switch epochs) are multiplied and rounded half up, at least 1; LR warm-up
(WARM_EPOCH) keeps its length. The JSON lists what was scaled. --epochs N sets every
config's MAX_EPOCH to N and scales the rest by N / its own MAX_EPOCH.

Two-stage configs (NETWORK.PRETRAINED True, e.g. Weight Balancing stage two) run after the config whose
NAME their NETWORK.PRETRAINED_MODEL names (added from the same folder if it was not selected), with the
same seed and OUTPUT_DIR, and the stage-two path pointed at that run's checkpoint.
Data. --imb-factor N builds Fashion-MNIST-LT at IF N (tools/build_fashion_mnist_lt.py) if needed and
points every config at it; without it the configs' own JSONs are used (they must agree).
"""
import argparse
import contextlib
import glob
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from lib.config import build_config  # noqa: E402
from lib.data.annotations import class_counts, load_annotations  # noqa: E402
from lib.data.longtail import format_imb_factor  # noqa: E402
from lib.utils.shots import shot_groups  # noqa: E402
from lib.methods import METHODS  # noqa: E402
from lib.utils.atomic import atomic_open, write_json, write_text  # noqa: E402
from lib.utils.errors import UserError, exit_on_user_error  # noqa: E402

from benchmarks.machine_info import describe_machine, machine_line  # noqa: E402

CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # stripped from stored error messages
CONFIG_GLOB = "configs/fashion_mnist_lt/*.yaml"
DATA_ROOT = "data/fashion_mnist_lt"
FULL_SEEDS = (42, 43, 44)
QUICK_SCALE = 0.5
# Named full-mode protocols: one budget for every config. fmnist30 was chosen by measurement on Fashion-MNIST-LT
# IF 100 so that CE's seed-to-seed std of test top-1 is <= 1 point (benchmarks/results/README.md: 30 epochs,
# batch 64, per-iteration warm-up (2 epochs) + cosine: 77.32 +- 0.78; batch 128 / LR 0.1: 75.18 +- 3.14).
PROTOCOLS = {
    "fmnist30": {
        "epochs": 30,  # every run trains 30 epochs in all (the config's own switch epochs scaled with it)
        "batch": 64,  # TRAIN.BATCH_SIZE; BASE_LR scaled linearly with it (x 64 / the config's batch)
        "opts": {"TRAIN.LR_SCHEDULER.TYPE": "warmup_cosine", "TRAIN.LR_SCHEDULER.WARM_EPOCH": 2,
                 "TRAIN.LR_SCHEDULER.COSINE_DECAY_END": 0},
    },
}
# --quick's default list, the longest run first so that 2 jobs finish together (NCL: ~3 CE runs)
QUICK_CONFIGS = ("ncl_res32", "ace_res32", "cadel_res32", "ce_res32", "balanced_softmax_res32",
                 "wb_stage1_wd_res32", "wb_stage2_maxnorm_res32")
METRICS = ("top1", "many", "medium", "few")
EPOCH_KEY = re.compile(r"(^|_)EPOCHS?($|_)")


# ---------------------------------------------------------------- planning
def stem_of(path):
    return os.path.splitext(os.path.basename(path))[0]


def _walk(node, prefix=""):
    for k, v in node.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            yield from _walk(v, key + ".")
        else:
            yield key, v


def schedule_overrides(cfg, factor):
    """KEY VALUE overrides that scale the schedule by `factor` ({} for 1); epochs are 1-based, at least 1."""
    if factor == 1:
        return {}

    def s(e):  # round half up, at least epoch 1
        return max(1, int(math.floor(e * factor + 0.5)))

    out = {"TRAIN.MAX_EPOCH": s(cfg.TRAIN.MAX_EPOCH)}
    sch = cfg.TRAIN.LR_SCHEDULER
    # WARM_EPOCH is not scaled: warm-up protects the first updates of a fresh network whatever the budget
    # (halving W = 2 would remove it: the factor applies to epochs e < W)
    if sch.TYPE in ("multistep", "warmup"):
        out["TRAIN.LR_SCHEDULER.LR_STEP"] = [s(m) for m in sch.LR_STEP]
    if sch.TYPE == "cosine" and sch.COSINE_DECAY_END:
        out["TRAIN.LR_SCHEDULER.COSINE_DECAY_END"] = s(sch.COSINE_DECAY_END)
    if cfg.TRAIN.TWO_STAGE.DRW or cfg.TRAIN.TWO_STAGE.DRS:
        out["TRAIN.TWO_STAGE.START_EPOCH"] = s(cfg.TRAIN.TWO_STAGE.START_EPOCH)
    skip = {"TRAIN.LR_SCHEDULER.WARM_EPOCH", "TRAIN.TWO_STAGE.START_EPOCH"}  # decided above
    for key, v in _walk(cfg):  # a method's own switch epochs (e.g. ACE's TRAIN.UNMIX_EPOCH)
        name = key.rsplit(".", 1)[-1]
        if key in out or key in skip or not EPOCH_KEY.search(name):
            continue
        if isinstance(v, int) and not isinstance(v, bool) and v > 0:
            out[key] = s(v)
    return {k: v for k, v in out.items() if v != cfg_value(cfg, k)}


def protocol_overrides(cfg, protocol):
    """KEY VALUE overrides that put `cfg` on a named protocol's batch and schedule (its LR scaled with the batch)."""
    out = dict(protocol["opts"])
    out["TRAIN.BATCH_SIZE"] = protocol["batch"]
    out["TRAIN.OPTIMIZER.BASE_LR"] = cfg.TRAIN.OPTIMIZER.BASE_LR * protocol["batch"] / cfg.TRAIN.BATCH_SIZE
    if cfg.TRAIN.LR_SCHEDULER.ETA_MIN:
        out["TRAIN.LR_SCHEDULER.ETA_MIN"] = cfg.TRAIN.LR_SCHEDULER.ETA_MIN * protocol["batch"] / cfg.TRAIN.BATCH_SIZE
    return out


def cfg_value(cfg, key):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return list(node) if isinstance(node, (list, tuple)) else node


def flat_opts(overrides):
    opts = []
    for k, v in overrides.items():
        opts += [k, repr(v) if not isinstance(v, str) else v]
    return opts


def pretrained_parts(cfg):
    """NETWORK.PRETRAINED_MODEL split into path components, e.g. ['wb_stage1', 'models', 'best_model.pth']."""
    return [p for p in re.split(r"[\\/]+", cfg.NETWORK.PRETRAINED_MODEL) if p not in ("", ".")]


def configs_by_name(paths):
    """NAME -> config path for every YAML in the folders of `paths` (where stage-one configs are found)."""
    pool = {}
    for folder in sorted({os.path.dirname(os.path.abspath(p)) for p in paths}):
        for p in sorted(glob.glob(os.path.join(folder, "*.yaml"))):
            try:
                pool.setdefault(build_config(p).NAME, p)
            except UserError:
                pass
    return pool


class Plan:
    """The configs to run, stage one before stage two, each with its overrides (the same for every seed).

    --opts are applied to each config before its schedule is scaled. With --sweep KEY V1 V2 ..., every
    config runs once per value, as '<stem> [KEY=V]' with NAME '<NAME>_<key>V' (its stage one swept alike)."""

    def __init__(self, paths, args):
        self.entries = {}  # stem -> {path, cfg, opts, depends, rest, added, scaled, epochs}; insertion = run order
        self.errors = {}
        self.base_opts = ["DEVICE", args.device] if args.device != "auto" else []
        if args.imb_factor:
            d = ensure_dataset(args.imb_factor, args.data_root)
            self.base_opts += ["DATASET.TRAIN_JSON", d["train"], "DATASET.VALID_JSON", d["val"],
                               "DATASET.TEST_JSON", d["test"]]
        self.base_opts += list(args.opts)
        self.pool = configs_by_name(paths)
        sweep = getattr(args, "sweep", None)
        variants = [(sweep[0], v) for v in sweep[1:]] if sweep else [None]
        for path in paths:
            for variant in variants:
                self._add(path, variant, added=False, visiting=set())
        protocol = PROTOCOLS.get(getattr(args, "protocol", None) or "")
        for e in self.entries.values():
            if protocol:
                e["opts"] += flat_opts(protocol_overrides(e["cfg"], protocol))
                e["cfg"] = build_config(e["path"], self.base_opts + e["opts"])
            epochs = protocol["epochs"] if protocol else args.epochs
            total = METHODS.get(e["cfg"].METHOD).total_epochs(e["cfg"])
            factor = epochs / total if epochs else args.epoch_scale
            e["scaled"] = schedule_overrides(e["cfg"], factor)
            if e["scaled"]:  # the config as it runs (recipes show the scaled switch epochs)
                e["cfg"] = build_config(e["path"], self.base_opts + e["opts"] + flat_opts(e["scaled"]))
            e["epochs"] = METHODS.get(e["cfg"].METHOD).total_epochs(e["cfg"])

    def _add(self, path, variant, added, visiting):
        key = variant[0].rsplit(".", 1)[-1] if variant else ""
        label = f" [{key}={variant[1]}]" if variant else ""
        stem = stem_of(path) + label
        if stem in self.entries or stem in self.errors:
            return
        if stem in visiting:
            self.errors[stem] = "NETWORK.PRETRAINED_MODEL dependencies form a cycle"
            return
        try:
            opts = list(variant) if variant else []
            cfg = build_config(path, self.base_opts + opts)
            if variant:  # its own run folder
                opts += ["NAME", f"{cfg.NAME}_{key.lower()}{re.sub(r'[^A-Za-z0-9.+-]', '', variant[1])}"]
                cfg = build_config(path, self.base_opts + opts)
        except UserError as err:
            self.errors[stem] = f"config error: {err}"
            return
        e = {"path": path, "cfg": cfg, "opts": opts, "depends": None, "rest": None, "added": added}
        if cfg.NETWORK.PRETRAINED:
            parts = pretrained_parts(cfg)
            hit = next((i for i, p in enumerate(parts) if p in self.pool), None)
            if hit is not None:  # stage two: train the stage-one config first, into the same OUTPUT_DIR
                dep = self.pool[parts[hit]]
                dep_stem = stem_of(dep) + label
                self._add(dep, variant, added=True, visiting=visiting | {stem})
                if dep_stem not in self.entries:
                    self.errors[stem] = f"its stage one {dep_stem} cannot run ({self.errors.get(dep_stem)})"
                    return
                e["depends"], e["rest"] = dep_stem, parts[hit + 1:]
            elif not os.path.isabs(cfg.NETWORK.PRETRAINED_MODEL):
                self.errors[stem] = (f"NETWORK.PRETRAINED_MODEL {cfg.NETWORK.PRETRAINED_MODEL!r}: no config next to "
                                     f"{path} has the NAME {parts[0] if parts else ''!r} to train stage one")
                return
        self.entries[stem] = e

    def run_opts(self, stem, seed, output_dir):
        """The KEY VALUE list a run of `stem` with `seed` gets on top of its YAML."""
        e = self.entries[stem]
        opts = (self.base_opts + e["opts"] + flat_opts(e["scaled"])
                + ["SEED", str(seed), "OUTPUT_DIR", output_dir])
        if e["depends"]:
            one = self.entries[e["depends"]]["cfg"].NAME
            opts += ["NETWORK.PRETRAINED_MODEL", os.path.join(output_dir, one, *e["rest"])]
        return opts

    def run_cfg(self, stem, seed, output_dir):
        return build_config(self.entries[stem]["path"], self.run_opts(stem, seed, output_dir))

    def total_epochs(self, stem):
        e = self.entries[stem]
        return e["epochs"] + (self.total_epochs(e["depends"]) if e["depends"] else 0)


def ensure_dataset(imb_factor, data_root):
    """Paths of Fashion-MNIST-LT at IF `imb_factor` under data_root, built first when missing."""
    prefix = f"fmnist_lt_if{format_imb_factor(imb_factor)}"
    folder = os.path.join(data_root, prefix)
    paths = {s: os.path.join(folder, f"{prefix}_{s}.json") for s in ("train", "val", "test")}
    if not all(os.path.isfile(p) for p in paths.values()):
        print(f"building {folder} (tools/build_fashion_mnist_lt.py --imb_factor {imb_factor:g}) ...", file=sys.stderr)
        proc = subprocess.run([sys.executable, "tools/build_fashion_mnist_lt.py", "--imb_factor", f"{imb_factor:g}",
                               "--output_path", data_root], capture_output=True, text=True)
        if proc.returncode != 0 or not all(os.path.isfile(p) for p in paths.values()):
            msg = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise UserError(f"--imb-factor {imb_factor:g}: building {folder} failed: {msg}")
    return paths


def fmt_num(x):
    """2e-4 for 0.0002, 0.1 for 0.1."""
    return f"{x:.0e}".replace("e-0", "e-") if 0 < abs(x) < 1e-2 else f"{x:g}"


def recipe(cfg, depends=None, batch=None):
    """What a config does, e.g. 'ce, LDAMLoss, FCNorm head, DRW@8, res32_cifar, wd 2e-4'."""
    t = cfg.TRAIN
    parts = [cfg.METHOD, METHODS.get(cfg.METHOD).loss_name(cfg)]
    if cfg.CLASSIFIER.TYPE != "FC":
        parts.append(f"{cfg.CLASSIFIER.TYPE} head")
    if t.SAMPLER.TYPE != "default":
        parts.append(f"{t.SAMPLER.WEIGHTED_SAMPLER.TYPE} sampling")
    for k in ("DRW", "DRS"):
        if t.TWO_STAGE[k]:
            parts.append(f"{k}@{t.TWO_STAGE.START_EPOCH}")
    if t.COMBINER.TYPE != "default":
        parts.append(t.COMBINER.TYPE)
    if depends:
        parts.append(f"on {depends}")
    if cfg.BACKBONE.FREEZE:
        parts.append("frozen backbone")
    if cfg.CLASSIFIER.REINIT:
        parts.append("new classifier")
    parts.append(f"{cfg.BACKBONE.TYPE}, wd {fmt_num(t.OPTIMIZER.WEIGHT_DECAY)}")
    if batch is not None and t.BATCH_SIZE != batch:
        parts.append(f"batch {t.BATCH_SIZE}")
    if cfg.TEST.LOGIT_ADJUST.TAU:
        parts.append(f"logit adj. tau {cfg.TEST.LOGIT_ADJUST.TAU:g}")
    if cfg.TEST.FLIP_TTA:
        parts.append("flip TTA")
    return ", ".join(parts)


def describe_data(cfg):
    entries, C = load_annotations(cfg.DATASET.TRAIN_JSON, cfg.DATASET.ROOT, check_images=False)
    counts = class_counts([e["label"] for e in entries], C)
    g = shot_groups(counts, cfg.TEST.SHOT_RULE)
    sizes = {}
    for split, key in (("val", "VALID_JSON"), ("test", "TEST_JSON")):
        p = cfg.DATASET[key]
        sizes[split] = len(load_annotations(p, cfg.DATASET.ROOT, check_images=False)[0]) if p else 0
    return {"train_json": cfg.DATASET.TRAIN_JSON, "num_classes": C, "train_images": sum(counts),
            "counts": counts, "imb_factor": max(counts) / max(min(counts), 1),
            "groups": {k: len(v) for k, v in g.items()}, "shot_rule": cfg.TEST.SHOT_RULE,
            "val_images": sizes["val"], "test_images": sizes["test"]}


# ---------------------------------------------------------------- running
def read_json_file(path):
    with open(path) as f:
        return json.load(f)


def reused_run(cfg):
    """The record of a finished run of exactly this config (--reuse), else None."""
    run_dir = os.path.join(cfg.OUTPUT_DIR, cfg.NAME)
    done = os.path.join(run_dir, "benchmark_run.json")
    if os.path.isfile(done) and os.path.isfile(os.path.join(run_dir, "per_class.json")):
        rec = read_json_file(done)
        if rec.get("config") == cfg.dump():
            rec["reused"] = True
            return rec
    return None


class Run:
    """One training run as a `main/train.py` subprocess (its own session: signals reach it only through us)."""

    def __init__(self, seed, stem, path, opts, cfg, threads):
        self.seed, self.stem, self.cfg = seed, stem, cfg
        self.run_dir = os.path.join(cfg.OUTPUT_DIR, cfg.NAME)
        if os.path.isdir(self.run_dir):
            shutil.rmtree(self.run_dir)  # a fresh run folder: no stale best_model.pth from an earlier benchmark
        os.makedirs(cfg.OUTPUT_DIR, exist_ok=True)
        self.log_path = os.path.join(cfg.OUTPUT_DIR, f"{cfg.NAME}.benchmark.log")  # the run's stdout + stderr
        env = dict(os.environ, OMP_NUM_THREADS=str(threads),
                   PYTHONPATH=os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p))
        self.t0 = time.perf_counter()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen([sys.executable, "main/train.py", "--cfg", path, *opts], stdout=log,
                                         stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def record(self):
        """The run record (metrics, selection, per-class, wall time); raises RuntimeError if the run failed."""
        wall = time.perf_counter() - self.t0
        results = os.path.join(self.run_dir, "results.json")
        if self.proc.returncode != 0 or not os.path.isfile(results):
            with open(self.log_path, errors="replace") as f:
                tail = [line.strip() for line in f if line.strip()]
            raise RuntimeError(f"exit {self.proc.returncode}: {tail[-1] if tail else 'no output'} (log: "
                               f"{os.path.relpath(self.log_path)})")
        results = read_json_file(results)
        rows = read_json_file(os.path.join(self.run_dir, "per_class.json"))
        rec = {"seed": self.seed, "wall_s": wall, "run_dir": os.path.relpath(self.run_dir),
               "config": self.cfg.dump(), "split": results.get("split"),
               "checkpoint_selection": results.get("checkpoint_selection"),
               "checkpoint_epoch": results.get("checkpoint_epoch"),
               "epochs": results.get("epochs", self.cfg.TRAIN.MAX_EPOCH),  # the method's (ACE adds un-mixed epochs)
               "members": results.get("members", {}),  # each expert's / head's own top1, many, medium, few
               "per_class": [{"name": r["name"], "train_count": r["train_count"], "group": r["group"],
                              "accuracy": r["accuracy"]} for r in rows]}
        rec.update({k: results.get(k) for k in METRICS})
        val = {m: v for m, v in (results.get("valid_members_top1") or {}).items() if m in rec["members"]}
        rec["best_member"] = max(val, key=val.get) if val else None  # the member with the best val top-1
        write_json(os.path.join(self.run_dir, "benchmark_run.json"), rec, indent=1)
        return rec


def mean_std(values):
    v = [x for x in values if x is not None]
    if not v:
        return None, None
    m = sum(v) / len(v)
    sd = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return m, sd


def summarize(plan, runs, baseline):
    """Per config: mean/std of each metric over seeds, per-class means, selection, wall time."""
    rows = []
    ref = plan.entries.get(baseline) or next(iter(plan.entries.values()))
    for stem, e in plan.entries.items():
        rs = runs.get(stem, [])
        row = {"config": stem, "path": e["path"], "name": e["cfg"].NAME, "method": e["cfg"].METHOD,
               "recipe": recipe(e["cfg"], e["depends"], ref["cfg"].TRAIN.BATCH_SIZE), "depends_on": e["depends"],
               "added_as_dependency": e["added"],
               "epochs": e["epochs"], "total_epochs": plan.total_epochs(stem), "batch": e["cfg"].TRAIN.BATCH_SIZE,
               "scaled_keys": e["scaled"], "seeds": [r["seed"] for r in rs],
               "runs": [{k: v for k, v in r.items() if k != "config"} for r in rs]}  # the dump stays in run_dir
        for k in METRICS:
            row[k], row[k + "_std"] = mean_std([r[k] for r in rs])
        row["wall_s"] = mean_std([r["wall_s"] for r in rs])[0]
        if e["depends"] and runs.get(e["depends"]):
            one = mean_std([r["wall_s"] for r in runs[e["depends"]]])[0]
            row["wall_s_with_stage_one"] = (row["wall_s"] or 0) + one
        names = [c["name"] for c in rs[0]["per_class"]] if rs else []
        row["per_class"] = {n: mean_std([next(c["accuracy"] for c in r["per_class"] if c["name"] == n)
                                         for r in rs])[0] for n in names}
        row["train_counts"] = {c["name"]: c["train_count"] for c in rs[0]["per_class"]} if rs else {}
        row["selection"] = sorted({r["checkpoint_selection"] for r in rs})
        if rs:
            row["epochs"] = rs[0]["epochs"]
        member_names = list(rs[0].get("members", {})) if rs else []
        row["members"] = {m: {k: mean_std([r["members"][m][k] for r in rs if m in r.get("members", {})])[0]
                              for k in METRICS} for m in member_names}
        if rs and all(r.get("best_member") for r in rs):  # test metrics of the member each run chose on val
            chosen = [r["members"][r["best_member"]] for r in rs]
            row["best_member"] = {"chosen": [r["best_member"] for r in rs],
                                  **{k: mean_std([c[k] for c in chosen])[0] for k in METRICS},
                                  "top1_std": mean_std([c["top1"] for c in chosen])[1]}
        rows.append(row)
    base = next((r for r in rows if r["config"] == baseline and r["runs"]), None)
    for r in rows:
        for k in ("top1", "few"):
            r[f"delta_{k}"] = (r[k] - base[k]) if base and r[k] is not None and base[k] is not None else None
    return rows


# ---------------------------------------------------------------- outputs
def dataset_label(train_json):
    """'Fashion-MNIST-LT' for our embedded set, else the training JSON's folder (e.g. 'cifar100_lt_if100')."""
    if "fmnist_lt" in os.path.basename(train_json):
        return "Fashion-MNIST-LT"
    return os.path.basename(os.path.dirname(os.path.abspath(train_json))) or train_json


def fmt_ms(m, sd):
    if m is None:
        return "n/a"
    return f"{m:.2f} ± {sd:.2f}" if sd is not None else f"{m:.2f}"


def fmt_time(s):
    if s is None:
        return "–"
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s"


def selection_cell(runs):
    """'val, ep 6' / 'val, ep 5, 6, 6' (best val top-1 at those epochs, one per seed) / 'last' / a mix."""
    val = [str(r["checkpoint_epoch"]) for r in runs if (r.get("checkpoint_selection") or "").startswith("best")]
    n_last = len(runs) - len(val)
    parts = ([f"val, ep {', '.join(val)}"] if val else []) + ([f"last{f' x{n_last}' if n_last > 1 else ''}"]
                                                              if n_last else [])
    return "; ".join(parts)


def to_markdown(report):
    d, rows = report["data"], report["rows"]
    g = d["groups"]
    n_runs = sum(len(r["runs"]) for r in rows)
    sum_wall = sum(x["wall_s"] for r in rows for x in r["runs"])  # reused runs count with their own time
    load = " / ".join(map(str, report["machine"].get("load_average_1min", [])))
    study = f", {report['tag'].replace('_', ' ')}" if report.get("tag") else ""
    lines = [f"### Accuracy on {dataset_label(d['train_json'])} IF {format_imb_factor(round(d['imb_factor'], 2))} "
             f"({report['mode']}{study})", "",
             machine_line(report["machine"]),
             f"Data: `{d['train_json']}`: {d['train_images']:,} training images, {d['num_classes']} classes "
             f"({g['many']} many / {g['medium']} medium / {g['few']} few, {d['shot_rule']} rule: many > 100, "
             f"few < 20 training images), val {d['val_images']:,}, test {d['test_images']:,} images. "
             f"Seeds {', '.join(map(str, report['seeds']))}; {report['budget']}; "
             f"{n_runs} run{'s' if n_runs != 1 else ''} took {fmt_time(report.get('total_wall_s'))} "
             f"wall-clock, {report.get('parallel_runs', 1)} at a time with {report.get('threads_per_run', '?')} "
             f"torch thread(s) each ({fmt_time(sum_wall)} summed over runs; 1-min load average at start / end: "
             f"{load}).",
             "Numbers are **test-split** accuracies (%), "
             + ("mean ± sample std over seeds" if len(report["seeds"]) > 1 else "one seed (no std)")
             + "; each run is evaluated with "
             "the checkpoint of its best top-1 on the **val split** (\"val, ep e\") or its last epoch (\"last\"). "
             f"Δ = difference to `{report['baseline']}`."
             + (f" Sweep: every config once per value of `{report['sweep'][0]}` "
                f"({', '.join(report['sweep'][1:])})." if report.get("sweep") else ""), "",
             "| config | recipe | epochs | top-1 | many | medium | few | Δ top-1 | Δ few | checkpoint | wall / run |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r["config"] != report["baseline"]):  # the baseline first
        if not r["runs"]:
            continue
        ep = f"{r['total_epochs'] - r['epochs']}+{r['epochs']}" if r["depends_on"] else str(r["epochs"])
        wall = fmt_time(r["wall_s"])
        if r.get("wall_s_with_stage_one"):
            wall += f" ({fmt_time(r['wall_s_with_stage_one'])} with stage one)"
        delta = [f"{r[k]:+.2f}" if r[k] is not None else "–" for k in ("delta_top1", "delta_few")]
        lines.append(f"| {r['config']} | {r['recipe']} | {ep} | " + " | ".join(
            fmt_ms(r[k], r[k + "_std"]) for k in METRICS) + f" | {delta[0]} | {delta[1]} | "
            + selection_cell(r["runs"]) + f" | {wall} |")
        base = next((b for b in rows if b["config"] == report["baseline"] and b["runs"]), None)
        for m, v in r.get("members", {}).items():  # each expert / head of a multi-member method, same checkpoint
            d = [f"{v[k] - base[k]:+.2f}" if base and v[k] is not None and base[k] is not None else "–"
                 for k in ("top1", "few")]
            lines.append(f"| ↳ {m} | member of {r['config']} | {ep} | "
                         + " | ".join(fmt_ms(v[k], None) for k in METRICS) + f" | {d[0]} | {d[1]} | same | |")
        if r.get("best_member"):
            v = r["best_member"]
            d = [f"{v[k] - base[k]:+.2f}" if base and v[k] is not None and base[k] is not None else "–"
                 for k in ("top1", "few")]
            lines.append(f"| ↳ best member, chosen on val ({', '.join(v['chosen'])}) | member of {r['config']} | {ep} | "
                         + " | ".join(fmt_ms(v[k], v["top1_std"] if k == "top1" else None) for k in METRICS)
                         + f" | {d[0]} | {d[1]} | same | |")
    if report["failures"]:
        lines += ["", "Failed or skipped:"]
        lines += [f"- {f['config']}" + (f" (seed {f['seed']})" if f.get("seed") is not None else "")
                  + f": {f['error']}" for f in report["failures"]]
    lines += per_class_table(report)
    lines += ["", f"Per-class accuracy of every method: `{os.path.basename(report['plot'])}`."]
    return "\n".join(lines) + "\n"


def per_class_table(report, max_classes=20):
    """Test accuracy per class (mean over seeds), classes by training count: a 2-class group read with its size."""
    rows = sorted((r for r in report["rows"] if r["runs"]), key=lambda r: r["config"] != report["baseline"])
    if not rows or len(rows[0]["train_counts"]) > max_classes:
        return []
    counts = rows[0]["train_counts"]
    names = sorted(counts, key=lambda n: -counts[n])
    lines = ["", "Per-class test accuracy (%, mean over seeds); classes by training count (n):", "",
             "| config | " + " | ".join(f"{n} ({counts[n]})" for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for r in rows:
        lines.append(f"| {r['config']} | " + " | ".join(fmt_ms(r["per_class"].get(n), None) for n in names) + " |")
    return lines


def plot(report, path):
    rows = [r for r in report["rows"] if r["runs"]]
    if not rows:
        return
    counts = rows[0]["train_counts"]
    names = sorted(counts, key=lambda n: -counts[n])
    x = list(range(len(names)))
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(names) + 5), 4.8))
    ax2 = ax.twinx()
    ax2.bar(x, [counts[n] for n in names], color="#cccccc", width=0.8, zorder=0, label="training images")
    ax2.set_yscale("log")
    ax2.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax2.set_ylabel("training images per class (log, grey bars)")
    ax.set_zorder(ax2.get_zorder() + 1)
    ax.patch.set_visible(False)
    cmap = plt.get_cmap("tab10" if len(rows) <= 10 else "tab20")
    markers = "os^vD<>ph*"
    rows = sorted(rows, key=lambda r: r["config"] != report["baseline"])  # the baseline first, in black
    for i, r in enumerate(rows):
        base = r["config"] == report["baseline"]
        ax.plot(x, [r["per_class"].get(n) for n in names], marker=markers[i % len(markers)], ms=4,
                lw=2.4 if base else 1.3, color="black" if base else cmap(i % cmap.N), zorder=3 if base else 2,
                label=f"{r['config']} ({r['top1']:.1f})" + (" baseline" if base else ""))
    ax.set_ylim(0, 100)
    ax.set_ylabel("test accuracy per class (%)")
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=45, ha="right", fontsize=8)
    ax.set_xlabel("classes sorted by training count")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.12, 0.5), title="config (top-1)", title_fontsize=7)
    d = report["data"]
    ax.set_title(f"{dataset_label(d['train_json'])} IF {format_imb_factor(round(d['imb_factor'], 2))}, {report['mode']}: "
                 "per-class test accuracy (mean over seeds)", fontsize=9)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_outputs(report, stem):
    report["plot"] = os.path.basename(stem) + ".png"  # beside the .md and .json
    write_json(stem + ".json", report, indent=1)
    write_text(stem + ".md", to_markdown(report))
    plot(report, stem + ".png")


# ---------------------------------------------------------------- main
def runs_root(args, name):
    """<output-dir>/<name>; with --opts (which change what runs under the configs' NAMEs) a folder of their own,
    named by --tag or the overrides, so that no run of the plain configs is overwritten."""
    if args.opts:
        name += "_" + (args.tag or re.sub(r"[^A-Za-z0-9._+-]", "", "_".join(args.opts)))[:60]
    return os.path.abspath(os.path.join(args.output_dir, name))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help=f"one seed, schedules scaled by {QUICK_SCALE} (< 15 min on a 2-core CPU)")
    p.add_argument("--configs", nargs="+", default=None, help=f"config files (default: {CONFIG_GLOB}; --quick: {', '.join(QUICK_CONFIGS)})")
    p.add_argument("--imb-factor", type=float, default=None,
                   help="Fashion-MNIST-LT at this IF (10, 50, 100; built if missing); default: the configs' data")
    p.add_argument("--data-root", default=DATA_ROOT, help=f"where --imb-factor datasets live (default {DATA_ROOT})")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="default 42 43 44 (quick: 42)")
    p.add_argument("--protocol", default=None, choices=sorted(PROTOCOLS) + ["none"],
                   help="full mode's named budget (default fmnist30; none: each config's own schedule)")
    p.add_argument("--epochs", type=int, default=None, help="set every config's total epochs, schedule scaled with it")
    p.add_argument("--epoch-scale", type=float, default=None, help="multiply every schedule (default 1; quick 0.5)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--jobs", type=int, default=None,
                   help="training runs at once, each a main/train.py process (default 1; quick on a CPU: 2)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch threads per run (default: cores // jobs); 1 avoids spinning threads on a busy CPU")
    p.add_argument("--baseline", default="ce_res32", help="config the Δ columns compare with (default ce_res32)")
    p.add_argument("--out", default="benchmarks/results", help="folder for accuracy_if<IF>[_quick].md/.json/.png")
    p.add_argument("--output-dir", default="output/benchmarks", help="OUTPUT_DIR root of the training runs")
    p.add_argument("--reuse", action="store_true", help="reuse finished runs with an identical config")
    p.add_argument("--opts", nargs="*", default=[], help="KEY VALUE overrides for every config")
    p.add_argument("--tag", default="", help="name of a study: outputs accuracy_<IF>[_quick]_<tag>.* "
                   "(default: none; with --sweep: sweep_<key>)")
    p.add_argument("--sweep", nargs="+", default=None, metavar=("KEY", "V"),
                   help="run every config once per value of KEY, e.g. --sweep TRAIN.OPTIMIZER.WEIGHT_DECAY 0 5e-3 2e-2")
    args = p.parse_args(argv)
    if args.protocol is None:
        args.protocol = "none" if (args.quick or args.epochs or args.epoch_scale) else "fmnist30"
    if args.protocol != "none" and (args.quick or args.epochs or args.epoch_scale):
        p.error("--protocol fixes the budget: no --quick, --epochs or --epoch-scale with it")
    if args.epoch_scale is None:
        args.epoch_scale = QUICK_SCALE if args.quick else 1.0
    if args.sweep is not None and len(args.sweep) < 2:
        p.error("--sweep needs a KEY and at least one value")
    if args.jobs is None:
        args.jobs = 2 if args.quick and args.device != "cuda" and not torch.cuda.is_available() else 1
    if args.seeds is None:
        args.seeds = list(FULL_SEEDS[:1] if args.quick else FULL_SEEDS)
    if args.epoch_scale <= 0 or (args.epochs is not None and args.epochs < 1) or args.jobs < 1:
        p.error("--epoch-scale must be > 0, --epochs >= 1 and --jobs >= 1")
    return args


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    paths = args.configs or sorted(glob.glob(CONFIG_GLOB))
    if args.quick and not args.configs:
        paths = [p for q in QUICK_CONFIGS for p in paths if stem_of(p) == q]
    if not paths:
        raise UserError(f"no configs: none match {CONFIG_GLOB} (run from the repository root) and no --configs")
    for p in paths:
        if not os.path.isfile(p):
            raise UserError(f"--configs: config file not found: {p}")
    plan = Plan(paths, args)
    if not plan.entries:
        raise UserError("no config could be built: " + "; ".join(f"{k}: {v}" for k, v in plan.errors.items()))
    trains = {e["cfg"].DATASET.TRAIN_JSON for e in plan.entries.values()}
    if len(trains) > 1:
        raise UserError(f"the configs train on different data ({', '.join(sorted(trains))}); pick one with "
                        "--imb-factor or choose --configs")
    first = next(iter(plan.entries.values()))["cfg"]
    data = describe_data(first)
    tag = f"if{format_imb_factor(round(data['imb_factor'], 2))}"
    mode = "quick" if args.quick else "full"
    pr = PROTOCOLS.get(args.protocol)
    budget = (f"protocol {args.protocol}: {pr['epochs']} epochs in all, batch {pr['batch']} (BASE_LR scaled by batch / "
              f"the config's), per-iteration warm-up {pr['opts']['TRAIN.LR_SCHEDULER.WARM_EPOCH']} epochs + cosine"
              if pr else
              f"every config's total epochs set to {args.epochs} (schedule scaled with it)" if args.epochs else
              "each config's own schedule" if args.epoch_scale == 1 else
              f"each config's schedule scaled by {args.epoch_scale:g}")
    device = "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    report = {"machine": describe_machine(device), "mode": f"{mode} mode", "budget": budget, "seeds": args.seeds,
              "protocol": args.protocol, "epoch_scale": args.epoch_scale, "epochs_override": args.epochs,
              "baseline": args.baseline,
              "split": "test", "model_selection": "best top-1 on the val split, else the last epoch",
              "data": data, "sweep": args.sweep, "rows": [], "failures": [{"config": k, "error": v} for k, v in plan.errors.items()]}
    study = args.tag or (f"sweep_{args.sweep[0].rsplit('.', 1)[-1].lower()}" if args.sweep else "")
    report["tag"] = study
    stem = os.path.join(args.out, f"accuracy_{tag}{'_quick' if args.quick else ''}{'_' + study if study else ''}")
    os.makedirs(args.out, exist_ok=True)
    out_root = runs_root(args, f"{tag}_{mode}")

    # stage ones first (their stage twos wait for them), so no stage two is left running alone at the end
    needed = {e["depends"] for e in plan.entries.values()}
    todo = [(seed, s) for seed in args.seeds for s in sorted(plan.entries, key=lambda s: s not in needed)]
    n_jobs = len(todo)
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    report["parallel_runs"], report["threads_per_run"] = args.jobs, threads
    report["machine"]["torch_threads"] = threads
    load_before, t_start = round(os.getloadavg()[0], 2), time.perf_counter()
    runs, done, failed, running = {}, set(), set(), []
    stop = []  # the signal that stops the benchmark
    bar = tqdm(total=sum(plan.entries[s]["epochs"] for _, s in todo), unit="epoch", dynamic_ncols=True,
               desc="benchmark", file=sys.stderr)

    def on_signal(signum, frame):
        if not stop:
            stop.append(signum)
        for r in running:  # each run checkpoints and exits (a second signal forces it)
            with contextlib.suppress(ProcessLookupError):
                r.proc.send_signal(signum)

    old_handlers = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

    def finish(seed, s, rec=None, error=None):
        i = n_jobs - len(todo) - len(running)
        if error is not None:  # results are committed: paths relative to the checkout, never this machine's
            error = error.replace(CHECKOUT + os.sep, "")
        if error is None:
            runs.setdefault(s, []).append(rec)
            done.add((s, seed))
            tqdm.write(f"[{i}/{n_jobs}] {s} seed {seed}: top-1 {rec['top1']:.2f} few {fmt_ms(rec['few'], None)} "
                       f"({fmt_time(rec['wall_s'])}{', reused' if rec.get('reused') else ''})", file=sys.stderr)
        else:
            failed.add((s, seed))
            report["failures"].append({"config": s, "seed": seed, "error": error})
            tqdm.write(f"[{i}/{n_jobs}] {s} seed {seed}: FAILED ({error})", file=sys.stderr)
        bar.update(plan.entries[s]["epochs"])
        report["rows"] = summarize(plan, runs, args.baseline)
        report["machine"]["load_average_1min"] = [load_before, round(os.getloadavg()[0], 2)]
        report["total_wall_s"] = time.perf_counter() - t_start
        write_outputs(report, stem)

    try:
        while (todo or running) and not stop:
            for seed, s in list(todo):  # start what is ready, in order, up to --jobs at once
                dep = plan.entries[s]["depends"]
                if dep and (dep, seed) in failed:
                    todo.remove((seed, s))
                    finish(seed, s, error=f"stage one {dep} failed")
                    continue
                if len(running) >= args.jobs or (dep and (dep, seed) not in done):
                    continue
                todo.remove((seed, s))
                try:
                    seed_dir = os.path.join(out_root, f"seed{seed}")
                    opts, cfg = plan.run_opts(s, seed, seed_dir), plan.run_cfg(s, seed, seed_dir)
                    rec = reused_run(cfg) if args.reuse else None
                    if rec:
                        finish(seed, s, rec)
                        continue
                    running.append(Run(seed, s, plan.entries[s]["path"], opts, cfg, threads))
                except (UserError, OSError) as err:
                    finish(seed, s, error=" ".join(f"{type(err).__name__}: {err}".split()))
                bar.set_description(f"{n_jobs - len(todo)}/{n_jobs} started; running: "
                                    + ", ".join(f"{r.stem} s{r.seed}" for r in running))
            time.sleep(0.2)
            for r in [r for r in running if r.proc.poll() is not None and not stop]:
                running.remove(r)
                try:
                    finish(r.seed, r.stem, r.record())
                except RuntimeError as err:  # one broken config must not stop the others; it is reported
                    finish(r.seed, r.stem, error=" ".join(str(err).split()))
    finally:
        if stop:  # SIGTERM / Ctrl-C: the runs checkpoint and stop; the finished ones are kept
            for r in running:
                r.proc.wait()
                report["failures"].append({"config": r.stem, "seed": r.seed,
                                           "error": "interrupted (benchmark stopped)"})
            report["rows"] = summarize(plan, runs, args.baseline)
            write_outputs(report, stem)
        for sig, h in old_handlers.items():
            signal.signal(sig, h)
    if stop:
        bar.close()
        print(f"benchmark stopped; finished runs are in {stem}.md (rerun with --reuse to skip them)",
              file=sys.stderr)
        sys.exit(128 + stop[0])
    bar.close()
    md = to_markdown(report)
    print(md)
    print(f"wrote {stem}.md, {stem}.json and {stem}.png")
    return report


if __name__ == "__main__":
    main()
