"""One command-line rule for every entry point (lib/utils/cli.py): flags before or after the config,
`--cfg CONFIG` or a bare CONFIG, then KEY VALUE pairs; what cannot be parsed is one line with the accepted
form; the shell scripts split their arguments with the same parser and run ${PYTHON:-python3}."""
import importlib.util
import json
import os
import re
import stat
import sys

import pytest

from conftest import ROOT, load_tool, run_cli
from lib.config import build_config
from lib.utils.cli import SCRIPTS, TRAIN_FLAGS, parse_command_line, shell_assignments
from lib.utils.errors import UserError


def _load(rel, name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, rel))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def entry():
    return {"train": _load("main/train.py", "train_entry_cli"), "valid": _load("valid.py", "valid_entry_cli")}


# ---------------------------------------------------------------- python entry points
VALID_FORMS = [  # the README's form, BoT/NCL's --cfg form, flags first, flags between the pairs, --flag=value
    "c.yaml --checkpoint m/best.pth --split valid NAME x TRAIN.MAX_EPOCH 3",
    "--cfg c.yaml NAME x TRAIN.MAX_EPOCH 3 --checkpoint m/best.pth --split valid",
    "--checkpoint m/best.pth --split valid c.yaml NAME x TRAIN.MAX_EPOCH 3",
    "c.yaml NAME x --split=valid TRAIN.MAX_EPOCH 3 --checkpoint=m/best.pth",
    "NAME x --cfg=c.yaml TRAIN.MAX_EPOCH 3 --split valid --checkpoint m/best.pth",
]


@pytest.mark.parametrize("form", VALID_FORMS)
def test_valid_py_reads_flags_before_or_after_the_config_and_cfg_or_bare_config(entry, form):
    args = entry["valid"].parse_args(form.split())
    assert (args.cfg, args.opts, args.checkpoint, args.split) == (
        "c.yaml", ["NAME", "x", "TRAIN.MAX_EPOCH", "3"], "m/best.pth", "valid")


TRAIN_FORMS = [
    ("c.yaml --ar TRAIN.MAX_EPOCH 3", True, None),
    ("--cfg c.yaml TRAIN.MAX_EPOCH 3 --ar", True, None),
    ("--ar --cfg c.yaml TRAIN.MAX_EPOCH 3", True, None),
    ("TRAIN.MAX_EPOCH 3 --auto-resume --cfg c.yaml", True, None),
    ("c.yaml TRAIN.MAX_EPOCH 3 --resume run/models/latest.pth", False, "run/models/latest.pth"),
    ("--resume=run/models/latest.pth c.yaml TRAIN.MAX_EPOCH 3 --local_rank=0", False, "run/models/latest.pth"),
]


@pytest.mark.parametrize("form,ar,resume", TRAIN_FORMS)
def test_train_py_reads_flags_before_or_after_the_config(entry, form, ar, resume):
    args = entry["train"].parse_args(form.split())
    assert (args.cfg, args.opts, args.ar, args.resume) == ("c.yaml", ["TRAIN.MAX_EPOCH", "3"], ar, resume)


def test_a_value_may_start_with_a_dash_and_overrides_keep_their_order():
    args = parse_command_line(["c.yaml", "SEED", "-1", "TRAIN.OPTIMIZER.BASE_LR", "-0.5", "NAME", "a"], "p", TRAIN_FLAGS)
    assert args.opts == ["SEED", "-1", "TRAIN.OPTIMIZER.BASE_LR", "-0.5", "NAME", "a"]


BAD = [  # argv -> what the one line must say (besides the accepted form)
    (["c.yaml", "--chekpoint", "m.pth"], "unknown option '--chekpoint'"),
    (["c.yaml", "{PATH_FLAG}"], "needs a value (PATH)"),
    (["--cfg", "", "NAME", "x"], "option '--cfg' is empty"),
    (["", "NAME", "x"], "CONFIG is empty"),
    ([], "no CONFIG given"),
    (["NAME", "x"], "no CONFIG given ('NAME' looks like a config KEY"),
    (["c.yaml", "NAME", "x", "TRAIN.MAX_EPOCH"], "overrides must be KEY VALUE pairs; 'TRAIN.MAX_EPOCH' has no value"),
    (["c.yaml", "best_model.pth"], "overrides must be KEY VALUE pairs"),
    (["c.yaml", "-x", "1"], "'-x' stands where a config KEY is expected"),
    (["--cfg", "a.yaml", "--cfg", "b.yaml"], "--cfg given more than 1 time"),
]


@pytest.mark.parametrize("script", ["train", "valid"])
@pytest.mark.parametrize("argv,says", BAD, ids=[" ".join(a) or "(nothing)" for a, _ in BAD])
def test_what_cannot_be_parsed_is_one_line_with_the_accepted_form(entry, script, argv, says, capsys, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written, in particular no ./output/default
    argv = [{"train": "--resume", "valid": "--checkpoint"}[script] if a == "{PATH_FLAG}" else a for a in argv]
    with pytest.raises(SystemExit) as e:
        entry[script].main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and err.startswith("error: "), err
    assert says in err, err
    prog = "python3 main/train.py" if script == "train" else "python3 valid.py"
    assert f"usage: {prog} [--cfg] CONFIG " in err and "[KEY VALUE ...]" in err
    assert os.listdir(tmp_path) == []


def test_valid_py_rejects_a_split_outside_its_choices_and_takes_bots_gpus_flag(entry, capsys):
    with pytest.raises(SystemExit):
        entry["valid"].main(["c.yaml", "--split", "train"])
    assert "option '--split' must be one of test, valid, got 'train'" in capsys.readouterr().err
    args = entry["valid"].parse_args(["--cfg", "c.yaml", "--gpus", "0,1", "NAME", "x"])
    assert args.opts == ["NAME", "x", "DEVICE", "cuda", "GPUS", "[0,1]"]


def test_help_prints_the_accepted_form_and_every_flag(entry, capsys):
    with pytest.raises(SystemExit) as e:
        entry["valid"].main(["-h"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert out.startswith("usage: python3 valid.py [--cfg] CONFIG [--checkpoint PATH] [--split test|valid]")
    assert all(f in out for f in ("--checkpoint", "--split", "--out", "--gpus", "KEY VALUE"))


@pytest.mark.parametrize("cmd", [[sys.executable, "valid.py"], [sys.executable, "main/train.py"],
                                 [sys.executable, "tools/posthoc_tau.py"], ["bash", "data_parallel_train.sh"],
                                 ["bash", "distributed_data_parallel_train.sh"], ["bash", "tools/two_stage.sh"],
                                 ["bash", "tools/demo.sh"]])
def test_every_entry_point_states_the_flag_rule_once_in_its_help(cmd):
    r = run_cli(cmd + ["-h"])
    text = r.stdout + r.stderr
    assert r.returncode == 0 and text.startswith("usage: "), text
    assert text.lower().count("flags may come") == 1, text
    assert "command not found" not in text  # a script's -h is not evaluated as shell code


def test_posthoc_tau_tool_follows_the_same_rule_with_a_list_flag():
    tool = load_tool("posthoc_tau")
    args = tool.parse_args(["--taus", "0.5", "1", "--cfg", "c.yaml", "NAME", "x", "--checkpoint", "m.pth"])
    assert (args.cfg, args.taus, args.opts, args.checkpoint) == ("c.yaml", [0.5, 1.0], ["NAME", "x"], "m.pth")
    with pytest.raises(UserError, match="'--taus' needs one or more values"):
        tool.parse_args(["c.yaml", "--taus", "NAME", "x"])


def test_tools_without_a_config_give_one_line_argparse_errors_with_their_usage(capsys):
    tool = load_tool("dataset_stats")
    with pytest.raises(SystemExit) as e:
        tool.main(["x.json", "--bogus"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err
    assert err.startswith("error: ") and "unrecognized arguments: --bogus" in err and "usage: " in err


# ---------------------------------------------------------------- config files with foreign keys
def test_a_config_with_another_codebases_keys_reports_all_unknown_keys_at_once(tmp_path):
    f = tmp_path / "detectron2_like.yaml"
    f.write_text("NAME: x\nSOLVER:\n  BASE_LR: 0.1\n  MAX_ITER: 90000\nMODEL:\n  RESNETS:\n    DEPTH: 50\n"
                 "TRAIN:\n  BATCH_SIZ: 4\n  MAX_EPOCH: 3\n  OPTIMIZER:\n    LR: 0.1\n")
    with pytest.raises(UserError) as err:
        build_config(str(f), ["TRAIN.NOPE", "1", "NAME", "y"])
    msg = str(err.value)
    assert "\n" not in msg
    for key in ("'SOLVER'", "'MODEL'", "'TRAIN.BATCH_SIZ'", "'TRAIN.OPTIMIZER.LR'"):
        assert key in msg.split("command line")[0], key  # every key of the file, in the file's part
    assert "command line: unknown config key 'TRAIN.NOPE'" in msg
    assert "'TRAIN.BATCH_SIZ' (did you mean 'TRAIN.BATCH_SIZE'?)" in msg


# ---------------------------------------------------------------- shell scripts
FAKE = """#!/usr/bin/env bash
# stands in for the interpreter: the argument splitter runs for real, every other call is recorded
if [ "$1" = "-m" ] && [ "$2" = "lib.utils.cli" ]; then exec {real} "$@"; fi
{real} -c 'import json, os, sys; open(os.environ["FAKE_LOG"], "a").write(json.dumps([os.getcwd()] + sys.argv[1:]) + "\\n")' "$@"
"""


@pytest.fixture
def fake_python(tmp_path):
    """A directory holding `python3` (only): the scripts must find it through ${PYTHON:-python3}."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "python3"
    exe.write_text(FAKE.format(real=sys.executable))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "calls.jsonl"

    def run(*args, cwd=ROOT):
        if log.exists():
            log.unlink()
        env = {"PATH": f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin", "FAKE_LOG": str(log),
               "PYTHON": "", "HOME": str(tmp_path)}
        env = {k: v for k, v in env.items() if k != "PYTHON"}  # unset: the default python3 must be used
        r = run_cli(["bash", *args], cwd=cwd, env=env)
        calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return r, calls

    return run


def _train_calls(calls):
    return [c[1:] for c in calls if "main/train.py" in c]


DP_FORMS = [
    ("c.yaml cpu --ar NAME x", ["--ar"]),
    ("--ar c.yaml cpu NAME x", ["--ar"]),
    ("--cfg c.yaml cpu NAME x --ar", ["--ar"]),
    ("c.yaml cpu NAME x", []),
    ("c.yaml --resume r/latest.pth cpu NAME x", ["--resume", "r/latest.pth"]),
]


@pytest.mark.parametrize("form,flags", DP_FORMS)
def test_data_parallel_launcher_reads_flags_anywhere_and_runs_python3(fake_python, form, flags):
    r, calls = fake_python("data_parallel_train.sh", *form.split())
    assert r.returncode == 0, r.stderr
    assert _train_calls(calls) == [["main/train.py", "--cfg", "c.yaml", *flags, "NAME", "x", "DEVICE", "cpu"]]
    r, calls = fake_python("data_parallel_train.sh", *form.replace("cpu", "0,1").split())
    assert _train_calls(calls) == [["main/train.py", "--cfg", "c.yaml", *flags, "NAME", "x", "DEVICE", "cuda",
                                    "GPUS", "[0,1]"]]


@pytest.mark.parametrize("form", ["c.yaml 2 cpu --ar NAME x", "--ar --cfg c.yaml 2 cpu NAME x",
                                  "c.yaml 2 cpu NAME x --ar"])
def test_distributed_launcher_reads_flags_anywhere(fake_python, form):
    r, calls = fake_python("distributed_data_parallel_train.sh", *form.split())
    assert r.returncode == 0, r.stderr
    (call,) = calls
    assert call[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node" in call
    assert call[call.index("main/train.py"):] == ["main/train.py", "--cfg", "c.yaml", "--ar", "NAME", "x",
                                                  "DEVICE", "cpu"]


@pytest.mark.parametrize("form", ["a.yaml b.yaml --ar SEED 1", "--cfg a.yaml --cfg b.yaml SEED 1 --ar",
                                  "--ar a.yaml b.yaml SEED 1"])
def test_two_stage_script_runs_both_stages_with_the_same_flags_and_overrides(fake_python, tmp_path, form):
    for n in ("a", "b"):
        (tmp_path / f"{n}.yaml").write_text("NAME: x\n")
    r, calls = fake_python(os.path.join(ROOT, "tools", "two_stage.sh"), *form.split(), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert _train_calls(calls) == [["main/train.py", "--cfg", str(tmp_path / n) + ".yaml", "--ar", "SEED", "1"]
                                   for n in ("a", "b")]


@pytest.mark.parametrize("form,cfg,flags", [
    ("TRAIN.MAX_EPOCH 4", "configs/fashion_mnist_lt/ce_res32.yaml", []),
    ("configs/fashion_mnist_lt/wb_stage1_wd_res32.yaml --ar TRAIN.MAX_EPOCH 4",
     "configs/fashion_mnist_lt/wb_stage1_wd_res32.yaml", ["--ar"]),
    ("--cfg configs/fashion_mnist_lt/ce_res32.yaml TRAIN.MAX_EPOCH 4", "configs/fashion_mnist_lt/ce_res32.yaml", []),
])
def test_demo_script_takes_an_optional_config_and_passes_flags_to_training_only(fake_python, form, cfg, flags):
    r, calls = fake_python("tools/demo.sh", *form.split())
    assert r.returncode == 0, r.stderr
    assert _train_calls(calls) == [["main/train.py", "--cfg", cfg, *flags, "TRAIN.MAX_EPOCH", "4"]]
    assert [c[1:] for c in calls if "valid.py" in c] == [["valid.py", cfg, "TRAIN.MAX_EPOCH", "4"]]


@pytest.mark.parametrize("script,args,says", [
    ("data_parallel_train.sh", [], "no CONFIG given"),
    ("data_parallel_train.sh", ["c.yaml"], "no GPU_IDS given"),
    ("data_parallel_train.sh", ["", "cpu"], "CONFIG is empty"),
    ("data_parallel_train.sh", ["c.yaml", "cpu", "--bogus"], "unknown option '--bogus'"),
    ("distributed_data_parallel_train.sh", ["c.yaml", "2", "cpu", "NAME"], "'NAME' has no value"),
    ("tools/two_stage.sh", ["a.yaml"], "no STAGE2_CFG given"),
    ("tools/two_stage.sh", ["--cfg", "a.yaml", "b.yaml"], "with --cfg, or all as bare words"),
    ("tools/demo.sh", ["TRAIN.MAX_EPOCH"], "'TRAIN.MAX_EPOCH' has no value"),
    ("tools/demo.sh", ["--checkpoint", "x"], "unknown option '--checkpoint'"),
])
def test_a_script_argument_error_is_one_line_with_the_accepted_form_before_anything_runs(fake_python, script, args,
                                                                                         says):
    r, calls = fake_python(script, *args)
    err = r.stderr.strip()
    assert r.returncode == 2 and "\n" not in err and err.startswith("error: "), err
    assert says in err and "usage: bash " in err, err
    assert calls == []  # not even tools/setup.sh's interpreter calls (demo.sh)


def test_script_splitter_quotes_values_for_bash():
    text = shell_assignments("data_parallel_train.sh", ["c d.yaml", "cpu", "NAME", "it's", "--resume", "a b"])
    assert text.splitlines() == ["CONFIG='c d.yaml'", "GPU_IDS=cpu", "FLAGS=(--resume 'a b')",
                                 "OPTS=(NAME 'it'\"'\"'s')"]


def test_every_script_that_runs_python_uses_one_interpreter_rule():
    """${PYTHON:-python3}: a fresh Debian/Ubuntu has python3 but no `python`."""
    scripts = [f for f in os.listdir(ROOT) if f.endswith(".sh")]
    scripts += [os.path.join("tools", f) for f in os.listdir(os.path.join(ROOT, "tools")) if f.endswith(".sh")]
    assert {"data_parallel_train.sh", "distributed_data_parallel_train.sh", "tools/two_stage.sh",
            "tools/demo.sh", "tools/setup.sh"} <= set(scripts)
    bare = re.compile(r"(^|[\s;&|(])(exec\s+)?python[0-9.]*(\s|$)")
    for rel in scripts:
        text = open(os.path.join(ROOT, rel)).read()
        code = [ln.split(" #")[0] for ln in text.splitlines() if not ln.lstrip().startswith(("#", "echo"))]
        offending = [ln for ln in code if bare.search(ln)]
        assert not offending, (rel, offending)
        if "$PY" in text:
            assert "PY=${PYTHON:-python3}" in text, rel


def test_every_script_in_the_splitter_table_exists_and_documents_its_form():
    for name, spec in SCRIPTS.items():
        path = os.path.join(ROOT, name) if os.path.isfile(os.path.join(ROOT, name)) else os.path.join(ROOT, "tools", name)
        text = open(path).read()
        assert f"-m lib.utils.cli {name}" in text, name
        assert spec["prog"] in text or spec["prog"].replace("bash ", "bash ") in text, name
