"""Stage two of a benchmark: post-hoc logit adjustment (tools/posthoc_tau.py) on every seed's run of a config
from a compare.py result, and a table of the method with and without tau beside the baseline.

    python benchmarks/posthoc_table.py --results benchmarks/results/accuracy_if100_cadel.json \
        --config cadel_res32 [--baseline ce_res32] [--taus 0.9 1.0 ...] [--rerun] \
        [--out benchmarks/results/accuracy_if100_cadel_posthoc.md]

For each run (its folder and resolved config.yaml are recorded in the compare.py JSON) it runs
`python tools/posthoc_tau.py <run>/config.yaml` unless <run>/posthoc_tau/results.json exists (--rerun forces
it): tau is chosen on the val split for every prediction (main, each member), the test split is reported. The
baseline's runs get the same treatment with the same grid ("baseline + tau"), so the table shows how much of a
gain is the logit adjustment alone. Numbers: test-split top-1 / many / medium / few (%), mean ± sample std over
the seeds, the checkpoint each run selected on the val split during training.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("top1", "many", "medium", "few")


def find_row(results, name):
    for row in results["rows"]:
        if name in (row["name"], row.get("config"), os.path.splitext(os.path.basename(row.get("path", "")))[0]):
            return row
    raise SystemExit(f"error: no row {name!r} in the results JSON (rows: {', '.join(r['name'] for r in results['rows'])})")


def posthoc(run_dir, taus, rerun, subdir="posthoc_tau"):
    folder = os.path.join(run_dir, subdir)
    out = os.path.join(folder, "results.json")
    if rerun or not os.path.isfile(out):
        cmd = [sys.executable, os.path.join(ROOT, "tools", "posthoc_tau.py"), os.path.join(run_dir, "config.yaml"),
               "--out", folder]
        if taus:
            cmd += ["--taus"] + [str(t) for t in taus]
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(f"error: {' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
    with open(out) as f:
        return json.load(f)


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else None)


def cell(values):
    m, s = stats(values)
    if m is None:
        return "n/a"
    return f"{m:.2f}" + (f" ± {s:.2f}" if s is not None else "")


def collect(row, taus, rerun, members, subdir):
    """{label: {metric: [per seed]}, "tau": {label: [per seed]}} for one compare.py row."""
    out = {}
    for run in row["runs"]:
        res = posthoc(run["run_dir"], taus, rerun, subdir)
        for m in members:
            adj = res if m == "main" else res["members"].get(m)
            if adj is None:
                continue
            raw = res["unadjusted"][m]
            for label, rep in ((f"{m}", raw), (f"{m} + tau", adj)):
                d = out.setdefault(label, {k: [] for k in KEYS})
                for k in KEYS:
                    d[k].append(rep[k])
            out.setdefault("tau", {}).setdefault(m, []).append(res["tau"][m])
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", required=True, help="compare.py JSON holding the method's and the baseline's runs")
    p.add_argument("--config", required=True, help="the method's row (config stem or NAME)")
    p.add_argument("--baseline", default="ce_res32", help="the baseline's row (default ce_res32)")
    p.add_argument("--taus", type=float, nargs="+", default=None,
                   help="tau grid (default: the method's own; the baseline gets the method's grid)")
    p.add_argument("--members", nargs="+", default=["main", "mean_of_heads"], help="predictions to tabulate")
    p.add_argument("--subdir", default="posthoc_tau",
                   help="tau-search output folder inside each run (default posthoc_tau; another grid: another name)")
    p.add_argument("--rerun", action="store_true", help="rerun the tau search even if its results exist")
    p.add_argument("--out", default="", help="Markdown output (and .json beside it); default: print")
    args = p.parse_args(argv)
    with open(args.results) as f:
        results = json.load(f)
    row, base = find_row(results, args.config), find_row(results, args.baseline)
    method = collect(row, args.taus, args.rerun, args.members, args.subdir)
    grid = args.taus or posthoc(row["runs"][0]["run_dir"], args.taus, False, args.subdir)["tau_grid"]
    baseline = collect(base, grid, args.rerun, ["main"], args.subdir)
    ref = {k: stats(baseline["main"][k])[0] for k in KEYS}
    seeds = [r["seed"] for r in row["runs"]]
    lines = [f"### {row['name']}: post-hoc logit adjustment (stage two) vs {base['name']}", "",
             f"Fashion-MNIST-LT from `{args.results}` ({str(results.get('mode', '')).replace(' mode', '')} mode, seeds "
             f"{', '.join(str(s) for s in seeds)}; {row['epochs']} epochs each). Test-split accuracy (%), mean ± sample "
             "std over the seeds, each run's checkpoint chosen on the val split during training. tau (z - tau log pi) "
             "is chosen per run and per prediction on the **val split only** (`tools/posthoc_tau.py`, grid "
             f"{', '.join(f'{t:g}' for t in grid)}); \"main\" is the method's prediction "
             "(CADEL: the last head). Δ = difference to the baseline without tau.", "",
             "| prediction | tau chosen per seed | top-1 | many | medium | few | Δ top-1 | Δ few |",
             "|---|---|---|---|---|---|---|---|"]

    def add(name, data, taus_seen):
        m = {k: stats(data[k])[0] for k in KEYS}
        d1 = "n/a" if m["top1"] is None else f"{m['top1'] - ref['top1']:+.2f}"
        df = "n/a" if m["few"] is None or ref["few"] is None else f"{m['few'] - ref['few']:+.2f}"
        lines.append(f"| {name} | {taus_seen} | " + " | ".join(cell(data[k]) for k in KEYS) + f" | {d1} | {df} |")

    add(f"{base['name']} (main)", baseline["main"], "–")
    add(f"{base['name']} (main) + tau", baseline["main + tau"],
        ", ".join(f"{t:g}" for t in baseline["tau"]["main"]))
    for m in args.members:
        if m not in method:
            continue
        add(f"{row['name']} ({m})", method[m], "–")
        add(f"{row['name']} ({m}) + tau", method[f"{m} + tau"], ", ".join(f"{t:g}" for t in method["tau"][m]))
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump({"results": args.results, "config": row["name"], "baseline": base["name"], "tau_grid": grid,
                       "seeds": seeds, "method": method, "baseline_runs": baseline}, f, indent=1)
        print(f"wrote {args.out}")
    print(text, end="")


if __name__ == "__main__":
    main()
