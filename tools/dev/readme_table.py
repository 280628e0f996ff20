"""The README's headline results: a compact table from one or more compare.py result files.

    python tools/dev/readme_table.py RESULTS.json [MORE.json ...] [--update-readme] [--readme README.md]

Reads the JSON files benchmarks/compare.py writes (accuracy_*.json) and prints, per file, one sentence (the data,
the budget or protocol, the seeds, the split and how the checkpoint was chosen, the command that produced it) and a
table: config, method, epochs, test top-1 (mean ± sample std over the seeds), many / medium / few, seeds and the
checkpoint each seed used. Members of multi-expert methods are left to the full table (the file's .md twin, linked).
--update-readme writes the block between `<!-- headline:start -->` and `<!-- headline:end -->` of the README
instead of printing it. The block names its source files, so tests/tools/test_tool_readme_table.py can check that
the README is exactly what this script makes of them.

The command is the JSON's own `command` when it records one; otherwise (files from before compare.py stored its
command line) it is rebuilt from the settings the JSON records: mode, configs, seeds, budget, sweep, tag, jobs and
threads.
"""
import argparse
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tools/dev/ -> the checkout
START, END = "<!-- headline:start -->", "<!-- headline:end -->"
SCRIPT = "python tools/dev/readme_table.py"
DEFAULT_SEEDS = {"quick": [42], "full": [42, 43, 44]}  # compare.py's defaults (FULL_SEEDS, quick: its first)


def rel(path):
    """A path as the README names it: relative to the checkout, with forward slashes."""
    p = os.path.relpath(os.path.abspath(path), ROOT) if os.path.isabs(path) or os.path.exists(path) else path
    return p.replace(os.sep, "/")


def configs_words(paths):
    """`--configs` arguments; several files of one folder as one brace expansion (bash keeps their order)."""
    if len(paths) > 1:
        folders = {os.path.dirname(p) for p in paths}
        if len(folders) == 1 and all(p.endswith(".yaml") for p in paths):
            names = ",".join(os.path.basename(p)[:-len(".yaml")] for p in paths)
            return [f"{folders.pop()}/{{{names}}}.yaml"]
    return list(paths)


def command_of(report):
    """The compare.py command line that produced `report`: recorded, or rebuilt from its settings."""
    if report.get("command"):
        return report["command"]
    quick = report.get("mode", "").startswith("quick")
    words = ["python", "benchmarks/compare.py"] + (["--quick"] if quick else [])
    paths = []
    for r in report["rows"]:
        if not r.get("added_as_dependency") and r["path"] not in paths:
            paths.append(r["path"])
    words += ["--configs"] + configs_words(paths)
    d = report.get("data", {})
    if "fmnist_lt" in os.path.basename(d.get("train_json", "")) and d.get("imb_factor") not in (None, 100, 100.0):
        words += ["--imb-factor", f"{d['imb_factor']:g}"]
    if report.get("seeds") != DEFAULT_SEEDS["quick" if quick else "full"]:
        words += ["--seeds"] + [str(s) for s in report["seeds"]]
    scale = report.get("epoch_scale") or (0.5 if quick else 1.0)
    protocol = report.get("protocol")
    if report.get("epochs_override"):
        words += ["--epochs", str(report["epochs_override"])]
    elif scale != (0.5 if quick else 1.0):
        words += ["--epoch-scale", f"{scale:g}"]
    elif not quick and protocol in (None, "none"):
        words += ["--protocol", "none"]  # each config's own schedule (full mode's default is now a protocol)
    elif not quick and protocol:
        words += ["--protocol", protocol]
    sweep = report.get("sweep")
    if sweep:
        words += ["--sweep"] + list(sweep)
    default_tag = f"sweep_{sweep[0].rsplit('.', 1)[-1].lower()}" if sweep else ""
    if report.get("tag") and report["tag"] != default_tag:
        words += ["--tag", report["tag"]]
    if report.get("parallel_runs"):
        words += ["--jobs", str(report["parallel_runs"])]
    if report.get("threads_per_run"):
        words += ["--threads", str(report["threads_per_run"])]
    return " ".join(words)


def fmt(x, sd=None):
    if x is None:
        return "n/a"
    return f"{x:.2f} ± {sd:.2f}" if sd is not None else f"{x:.2f}"


def method_label(row):
    """'ce, BalancedSoftmaxCE', 'ncl, NIL_NBOD', 'cadel, cascade softmax': the method and its loss, from the recipe."""
    parts = [p.strip() for p in (row.get("recipe") or "").split(",")]
    loss = re.sub(r"\s*\(.*?\)", "", parts[1]) if len(parts) > 1 else ""
    return f"{row['method']}, {loss}" if loss else row["method"]


def checkpoint_cell(runs):
    """'val, ep 10, 12, 8' (the epoch of best val top-1, per seed) and/or 'last' (no val split: the last epoch)."""
    val = [str(r["checkpoint_epoch"]) for r in runs if (r.get("checkpoint_selection") or "").startswith("best")]
    n_last = len(runs) - len(val)
    parts = ([f"val, ep {', '.join(val)}"] if val else []) + ([f"last{f' x{n_last}' if n_last > 1 else ''}"]
                                                              if n_last else [])
    return "; ".join(parts)


def dataset_words(d):
    name = "Fashion-MNIST-LT" if "fmnist_lt" in os.path.basename(d["train_json"]) else rel(d["train_json"])
    g = d.get("groups", {})
    groups = f": {g['many']} many / {g['medium']} medium / {g['few']} few" if g else ""
    return (f"{name}, imbalance factor {d['imb_factor']:g} ({d['train_images']:,} training images in "
            f"{d['num_classes']} classes{groups}; val {d['val_images']:,}, test {d['test_images']:,} images)")


def file_section(path):
    """One source file: its sentence and its table."""
    with open(path) as f:
        report = json.load(f)
    name = rel(path)
    seeds = report["seeds"]
    seed_words = (f"seeds {', '.join(map(str, seeds))} (mean ± sample std of top-1 over the seeds; the other "
                  "columns are means)" if len(seeds) > 1 else f"one seed ({seeds[0]}, no std)")
    md = name[:-len(".json")] + ".md" if name.endswith(".json") else None
    full = (f" Full table, with every expert and head: [{os.path.basename(md)}]({md})."
            if md and os.path.isfile(os.path.join(ROOT, md)) else "")
    lines = [f"{dataset_words(report['data'])}; {report['mode']}, {report['budget']}; {seed_words}. "
             f"Accuracy (%) on the {report.get('split', 'test')} split, checkpoint chosen on val "
             f"({report.get('model_selection', 'best top-1 on the val split, else the last epoch')}). "
             f"Produced by `{command_of(report)}`; source: `{name}`.{full}", "",
             "| config | method | epochs | top-1 | many | medium | few | seeds | checkpoint |",
             "|---|---|---|---|---|---|---|---|---|"]
    rows = sorted((r for r in report["rows"] if r.get("runs")), key=lambda r: r["config"] != report.get("baseline"))
    for r in rows:
        ep = f"{r['total_epochs'] - r['epochs']}+{r['epochs']}" if r.get("depends_on") else str(r["epochs"])
        lines.append(f"| {r['config']} | {method_label(r)} | {ep} | {fmt(r['top1'], r.get('top1_std'))} | "
                     f"{fmt(r['many'])} | {fmt(r['medium'])} | {fmt(r['few'])} | "
                     f"{', '.join(map(str, r['seeds']))} | {checkpoint_cell(r['runs'])} |")
    for fail in report.get("failures") or []:
        seed = f" (seed {fail['seed']})" if fail.get("seed") is not None else ""
        lines.append(f"\nFailed or skipped: {fail['config']}{seed}: {fail['error']}")
    return "\n".join(lines)


def block(paths):
    """The README block, markers included."""
    names = [rel(p) for p in paths]
    head = (f"Generated by `{SCRIPT} {' '.join(names)} --update-readme` from the committed results "
            "(do not edit by hand).")
    return "\n\n".join([START + "\n" + head] + [file_section(p) for p in paths]) + "\n" + END


def sources(text):
    """The result files a README's headline block names (in its 'Generated by' line); [] without a block."""
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        return []
    m = re.search(re.escape(SCRIPT) + r" (.+?) --update-readme`", text[i:j])
    return m.group(1).split() if m else []


def update_readme(new, readme):
    text = open(readme).read()
    i, j = text.find(START), text.find(END)
    if i < 0 or j < i:
        raise SystemExit(f"error: {readme} has no {START} ... {END} block to rewrite")
    out = text[:i] + new + text[j + len(END):]
    tmp = readme + ".tmp"
    with open(tmp, "w") as f:
        f.write(out)
    os.replace(tmp, readme)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", nargs="+", help="compare.py JSON files (benchmarks/results/accuracy_*.json)")
    p.add_argument("--update-readme", action="store_true", help="rewrite the README's headline block")
    p.add_argument("--readme", default=os.path.join(ROOT, "README.md"))
    args = p.parse_args(argv)
    for path in args.results:
        if not os.path.isfile(path):
            raise SystemExit(f"error: {path}: no such file")
    new = block(args.results)
    if args.update_readme:
        update_readme(new, args.readme)
        print(f"updated the headline block of {args.readme} from {', '.join(rel(p) for p in args.results)}")
    else:
        print(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
