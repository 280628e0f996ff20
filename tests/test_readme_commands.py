"""The README's and the docs' usage lines (README.md, docs/training.md, docs/evaluation.md) run as printed.

Every `python main/train.py`, `python valid.py`, launcher, `tools/two_stage.sh` and `tools/posthoc_tau.py` command in the README
(fenced bash blocks and inline code) is taken from README.md, its placeholders are filled in (CONFIG: a
1-epoch config on the tiny Fashion-MNIST-LT set; GPU_IDS cpu; NUM_GPUS 1; PATH: a checkpoint of that run;
optional `[--flag ...]`: given; `[KEY VALUE ...]`: the tiny data paths, a temporary OUTPUT_DIR and 1 epoch)
and the line is run through bash from the checkout's root, in README order. `python` / `python3` on PATH are
this test's interpreter. A placeholder the test does not know fails the test, so the README cannot
document a form that is not run here."""
import os
import re
import sys

import pytest

from conftest import ROOT, run_cli

COMMANDS = ("python main/train.py", "python valid.py", "bash data_parallel_train.sh",
            "bash distributed_data_parallel_train.sh", "bash tools/two_stage.sh", "python tools/posthoc_tau.py")


DOCUMENTS = ("README.md", "docs/training.md", "docs/evaluation.md")  # where the usage lines are printed


def readme_commands():
    """Commands in document order (README, then the docs pages of DOCUMENTS), each once: fenced ```bash lines
    (continuations joined, comments dropped) and inline `code` that starts with one of COMMANDS."""
    text = "\n".join(open(os.path.join(ROOT, d)).read() for d in DOCUMENTS if os.path.isfile(os.path.join(ROOT, d)))
    found = []  # in document order
    for m in re.finditer(r"```bash\n(.*?)```|`([^`\n]+(?:\n[^`\n]+)?)`", text, re.S):
        if m.group(1) is not None:
            joined = re.sub(r"\\\n\s*", " ", m.group(1))
            lines = [re.sub(r"\s+#.*$", "", ln).strip() for ln in joined.splitlines()]
        else:  # inline code that is a whole command (not a mere mention such as `python valid.py`)
            lines = [" ".join(m.group(2).split())]
            lines = [ln for ln in lines if ln not in COMMANDS]
        found += [ln for ln in lines if ln.startswith(COMMANDS) and ln not in found]
    return found


def fill(line, config, overrides, checkpoint):
    """Placeholders -> values; everything else stays as printed."""
    subs = [("[--checkpoint PATH]", f"--checkpoint {checkpoint}"), ("[--split test|valid]", "--split valid"),
            ("[--ar]", "--ar"), ("[KEY VALUE ...]", "@OVERRIDES@")]
    for old, new in subs:
        line = line.replace(old, new)
    words = [{"CONFIG": config, "GPU_IDS": "cpu", "NUM_GPUS": "1"}.get(w, w) for w in line.split(" ")]
    left = [w for w in words if re.fullmatch(r"\[.*|.*\]|[A-Z][A-Z_]+", w)]
    assert not left, f"README line with a placeholder this test does not fill: {line!r} ({left})"
    return " ".join(words).replace("@OVERRIDES@", overrides)


def test_readme_lists_every_entry_point():
    cmds = readme_commands()
    for c in COMMANDS:
        assert any(x.startswith(c) for x in cmds), c
    assert any(x.startswith("python valid.py") and "--checkpoint" in x for x in cmds)


@pytest.mark.slow
def test_readme_usage_lines_run_as_printed(tiny_lt, tmp_path):
    out = tmp_path / "out"
    template = open(os.path.join(ROOT, "tests", "tiny_template.yaml")).read()
    config = tmp_path / "tiny.yaml"
    config.write_text(template.format(out=out, train=tiny_lt["train"], val=tiny_lt["val"], test=tiny_lt["test"])
                      .replace("MAX_EPOCH: 2", "MAX_EPOCH: 1"))
    overrides = (f"OUTPUT_DIR {out} DATASET.TRAIN_JSON {tiny_lt['train']} DATASET.VALID_JSON {tiny_lt['val']} "
                 f"DATASET.TEST_JSON {tiny_lt['test']} TRAIN.MAX_EPOCH 1 TRAIN.NUM_WORKERS 0 TEST.NUM_WORKERS 0")
    checkpoint = out / "tiny" / "models" / "latest.pth"
    shim = tmp_path / "bin"
    shim.mkdir()
    for name in ("python", "python3"):
        os.symlink(sys.executable, shim / name)
    env = {"PATH": f"{shim}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1", "MASTER_PORT": "29577"}
    ran = []
    for line in readme_commands():
        cmd = fill(line, str(config), overrides, checkpoint)
        r = run_cli(["bash", "-c", cmd], env=env, timeout=600)
        assert r.returncode == 0, f"README line failed: {line}\n{cmd}\n{r.stderr[-3000:]}"
        ran.append(line)
        if line.startswith("python valid.py"):
            assert "top-5" in r.stdout, r.stdout[-2000:]
        if "--checkpoint" in cmd:
            assert str(checkpoint) in r.stdout
    assert len(ran) >= 6
    assert (out / "fmnist_lt_if100_ce_res32" / "models" / "best_model.pth").is_file()  # the train line
    assert (out / "fmnist_lt_if100_wb_stage2_maxnorm_res32" / "results.json").is_file()  # tools/two_stage.sh


def test_a_tensorboard_suggestion_says_how_to_install_the_viewer():
    """Set-up installs tensorboardX (which writes the event files), not the `tensorboard` viewer: every place that
    suggests `tensorboard --logdir` (the scripts, docs/) also says `pip install tensorboard`."""
    reqs = open(os.path.join(ROOT, "requirements.txt")).read().split()
    if any(r.split("=")[0].strip().lower() == "tensorboard" for r in reqs):
        return
    places = [os.path.join("tools", f) for f in os.listdir(os.path.join(ROOT, "tools")) if f.endswith(".sh")]
    places += [os.path.relpath(os.path.join(d, f), ROOT) for d, _, fs in os.walk(os.path.join(ROOT, "docs"))
               for f in fs if f.endswith(".md")]
    for rel in places:
        text = open(os.path.join(ROOT, rel)).read()
        for line in text.splitlines():
            if "tensorboard --logdir" in line:
                assert "pip install tensorboard" in line, (rel, line)
