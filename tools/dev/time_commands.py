"""Measure the README's two commands and write what they took and printed, so that every number the README
states about them comes from a measurement.

    python tools/dev/time_commands.py [--demo] [--tests] [--quick-tests] [--update-readme] [--out benchmarks/results]

--demo         `bash tools/demo.sh` (set-up, Fashion-MNIST-LT build, 12 epochs of ResNet-32 on the CPU, valid.py):
               wall time and the table the trainer prints at the end
--tests        `bash tools/run_tests.sh -p no:cacheprovider` (what .ci/run runs): wall time and pytest's summary
--quick-tests  `bash tools/run_tests.sh -p no:cacheprovider -m "not slow"`: the quick subset
(none of the three: all of them)

Each result is stored with the machine (CPU model, cores, whether it has native bf16), the date and the
1-minute load average sampled every 10 s during the run (a run whose load average exceeds half the core count
is marked "under load": other jobs shared the cores, so the time is longer than on a quiet machine). Results are kept
per command in <out>/commands.json (a new measurement replaces the old one of the same command) and
rendered in <out>/commands.md; --update-readme also rewrites the README paragraph between
`<!-- commands:start -->` and `<!-- commands:end -->`.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks.machine_info import cpu_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COMMANDS = {
    "demo": ["bash", "tools/demo.sh"],
    "tests": ["bash", "tools/run_tests.sh", "-p", "no:cacheprovider"],
    "quick_tests": ["bash", "tools/run_tests.sh", "-p", "no:cacheprovider", "-m", "not slow"],
}
START, END = "<!-- commands:start -->", "<!-- commands:end -->"


def native_bf16():
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return None
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def machine():
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "native_bf16": native_bf16(),
            "python": sys.version.split()[0], "date": time.strftime("%Y-%m-%d %H:%M %Z")}


def minutes(seconds):
    s = int(round(seconds))
    return f"{s // 60}m{s % 60:02d}s"


def demo_table(stdout):
    """The trainer's final block: 'test split, checkpoint: ...' and the table lines after it."""
    lines = stdout.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("test split, checkpoint:")]
    if not starts:
        return None
    block = [lines[starts[-1]]]
    for ln in lines[starts[-1] + 1:]:
        if not ln.startswith("|"):
            break
        block.append(ln)
    return "\n".join(block)


def pytest_summary(stdout):
    found = re.findall(r"^=*\s*(\d+ (?:passed|failed).*? in [\d.]+s(?: \([\d:]+\))?)\s*=*$", stdout, re.M)
    return found[-1] if found else None


DEMO_PLOT = os.path.join("output", "fmnist_lt_if100_ce_res32", "per_class_accuracy.png")  # what demo.sh's run draws


def run(name, log, out_dir=None):
    cmd = COMMANDS[name]
    load_start = os.getloadavg()[0]
    log(f"running {' '.join(cmd)} (1-min load average {load_start:.2f}) ...")
    t0 = time.time()
    loads = [load_start]
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        p = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=err, text=True)
        while p.poll() is None:  # the 1-min load average every 10 s: how much other work shared the cores
            time.sleep(10)
            loads.append(os.getloadavg()[0])
        seconds = time.time() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    load_end = os.getloadavg()[0]
    result = {"command": " ".join(cmd), "exit_code": p.returncode, "seconds": seconds, "load_start": load_start,
              "load_end": load_end, "load_max": max(loads), "load_mean": sum(loads) / len(loads),
              "machine": machine()}
    if name == "demo":
        result["table"] = demo_table(stdout)
        if out_dir and p.returncode == 0:  # the README's figure comes from this very run
            shutil.copyfile(os.path.join(ROOT, DEMO_PLOT), os.path.join(out_dir, "demo_per_class_accuracy.png"))
    else:
        result["summary"] = pytest_summary(stdout)
    if p.returncode != 0:
        result["tail"] = (stdout + stderr)[-3000:]
    log(f"{name}: exit {p.returncode}, {minutes(seconds)}; " + json.dumps({k: result.get(k) for k in ("table", "summary")}))
    return result


def load_note(res):
    """'quiet machine' or 'under load', from the 1-min load averages sampled during the run. The command's
    own processes (the trainer's threads and DataLoader workers, pytest's subprocesses) load the cores up to
    ~2x their count, so the run counts as under load when other work was there at its start (> cores / 2)
    or the mean exceeds 2 x cores."""
    cores = res["machine"]["cores"] or 1
    peak = res.get("load_max", max(res["load_start"], res["load_end"]))
    mean = res.get("load_mean", (res["load_start"] + res["load_end"]) / 2)
    words = f"1-min load average {res['load_start']:.1f} at the start, {mean:.1f} on average, {peak:.1f} at most"
    if res["load_start"] > cores / 2 or mean > 2 * cores:
        return f"under load (other jobs shared the {cores} cores: {words}), so longer than on a quiet machine"
    return f"quiet machine ({words})"


def machine_words(m):
    bf16 = {True: "native bf16", False: "no native bf16 (AVX2/AVX-512 without bf16)", None: "bf16 unknown"}
    return f"{m['cpu']}, {m['cores']} cores, {bf16[m['native_bf16']]}; {m['date']}"


def readme_block(results):
    """The README paragraph (between the markers): times, machines and the demo's table."""
    out = [START, "Generated by `python tools/dev/time_commands.py --update-readme` (numbers from "
           "`benchmarks/results/commands.json`; do not edit by hand):", ""]
    for name, label in (("demo", "`bash tools/demo.sh`"), ("tests", "`bash tools/run_tests.sh`"),
                        ("quick_tests", "`bash tools/run_tests.sh -m \"not slow\"` (quick subset)")):
        res = results.get(name)
        if not res:
            continue
        what = f" ({res['summary']})" if res.get("summary") else ""
        status = "" if res["exit_code"] == 0 else f" **exit code {res['exit_code']}**"
        out.append(f"- {label}: {minutes(res['seconds'])}{what}{status}, set-up included, measured on "
                   f"{machine_words(res['machine'])}; {load_note(res)}.")
    demo = results.get("demo")
    if demo and demo.get("table"):
        out += ["", "What (1) prints at the end (12 epochs, CPU, seed 42; your numbers may differ in the last digit):",
                "", "```", demo["table"], "```"]
    out.append(END)
    return "\n".join(out)


def markdown(results):
    lines = ["# The README's two commands", ""]
    for name, res in results.items():
        lines.append(f"## {name}: `{res['command']}`")
        lines.append("")
        lines.append(f"{minutes(res['seconds'])} ({res['seconds']:.0f} s), exit code {res['exit_code']}; "
                     f"{machine_words(res['machine'])}; {load_note(res)}.")
        if res.get("summary"):
            lines.append(f"pytest: {res['summary']}")
        if res.get("table"):
            lines += ["", "```", res["table"], "```"]
        lines.append("")
    return "\n".join(lines)


def update_readme(block, path=os.path.join(ROOT, "README.md")):
    text = open(path).read()
    if START not in text or END not in text:
        raise SystemExit(f"{path}: no {START} ... {END} block to rewrite")
    a, b = text.index(START), text.index(END) + len(END)
    with open(path, "w") as f:
        f.write(text[:a] + block + text[b:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--demo", action="store_true")
    p.add_argument("--tests", action="store_true")
    p.add_argument("--quick-tests", action="store_true")
    p.add_argument("--update-readme", action="store_true")
    p.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results"))
    args = p.parse_args(argv)
    chosen = [n for n, on in (("demo", args.demo), ("tests", args.tests), ("quick_tests", args.quick_tests)) if on]
    stem = os.path.join(args.out, "commands")
    results = json.load(open(stem + ".json")) if os.path.isfile(stem + ".json") else {}
    for name in chosen or ([] if args.update_readme else list(COMMANDS)):
        results[name] = run(name, lambda m: print(m, flush=True), args.out)
        with open(stem + ".json", "w") as f:
            json.dump(results, f, indent=1)
        if args.update_readme:  # in step with the JSON before the next command (the suite checks the two agree)
            update_readme(readme_block(results))
    with open(stem + ".md", "w") as f:
        f.write(markdown(results))
    if args.update_readme:
        update_readme(readme_block(results))
        print("README.md updated")
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
