"""tools/dev/time_commands.py: the README's times and demo output come from a measurement (issue 15 §6)."""
import json
import os

from conftest import ROOT, load_tool

tc = load_tool("dev/time_commands")

DEMO_OUT = """epoch 12/12 train loss 0.2 ...
test split, checkpoint: best top-1 on VALID_JSON (epoch 12)
| prediction | top-1 | many | medium | few |
|---|---|---|---|---|
| main | 61.21 | 78.48 | 53.77 | 24.40 |

== valid.py on the selected checkpoint (reproduces the numbers above) ==
"""


def test_demo_table_is_the_trainers_final_block():
    assert tc.demo_table(DEMO_OUT) == "\n".join(DEMO_OUT.splitlines()[1:5])
    assert tc.demo_table("no table") is None


def test_pytest_summary_line_is_found():
    out = "....\n========== 346 passed, 2 warnings in 342.10s (0:05:42) ==========\n"
    assert tc.pytest_summary(out) == "346 passed, 2 warnings in 342.10s (0:05:42)"
    assert tc.pytest_summary("3 passed in 1.20s\n") == "3 passed in 1.20s"


def result(seconds, load, **extra):
    return {"command": "bash x", "exit_code": 0, "seconds": seconds, "load_start": load, "load_end": load,
            "machine": {"cpu": "AMD EPYC", "cores": 2, "native_bf16": False, "python": "3.11.7",
                        "date": "2026-11-30 23:50 UTC"}, **extra}


def test_readme_block_states_times_machine_load_and_the_demo_table():
    block = tc.readme_block({"demo": result(418.4, 3.2, table=tc.demo_table(DEMO_OUT)),
                             "tests": result(342.1, 0.3, summary="346 passed in 342.10s")})
    assert block.startswith(tc.START) and block.endswith(tc.END)
    assert "`bash tools/demo.sh`: 6m58s" in block and "`bash tools/run_tests.sh`: 5m42s (346 passed in 342.10s)" in block
    assert "AMD EPYC, 2 cores, no native bf16" in block and "2026-11-30 23:50 UTC" in block
    assert "under load (other jobs shared the 2 cores: 1-min load average 3.2 at the start, 3.2 on average" in block
    assert "quiet machine (1-min load average 0.3 at the start, 0.3 on average, 0.3 at most)" in block
    # the command's own workers load the cores: quiet at the start and a mean <= 2 x cores is still quiet
    assert "quiet machine" in tc.load_note(result(60, 0.4, load_mean=3.5, load_max=4.2))
    assert "under load" in tc.load_note(result(60, 0.4, load_mean=4.5, load_max=6))
    assert "| main | 61.21 | 78.48 | 53.77 | 24.40 |" in block


def test_readme_block_matches_the_recorded_measurements():
    """The README's paragraph is exactly what the recorded measurements render to."""
    path = os.path.join(ROOT, "benchmarks", "results", "commands.json")
    readme = open(os.path.join(ROOT, "README.md")).read()
    assert tc.START in readme and tc.END in readme
    with open(path) as f:
        results = json.load(f)
    a, b = readme.index(tc.START), readme.index(tc.END) + len(tc.END)
    assert readme[a:b] == tc.readme_block(results)
