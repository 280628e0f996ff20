"""Evaluation outputs and start-up warnings that must hold what the README says (issue 15 §6):
prediction-changing valid.py options get their own eval folder, the plots carry class names and an
unclipped title, and bf16 autocast on a CPU without native bf16 warns once."""
import importlib.util
import json
import os

import pytest
import torch
from matplotlib.text import Text

from conftest import ROOT
from lib.config import build_config
from lib.config.defaults import get_defaults
from lib.engine import amp as amp_module
from lib.engine.amp import AmpContext, cpu_bf16_warning, cpu_flags
from lib.engine.trainer import train
from lib.evaluation.reports import (MAX_NAMED_CLASSES, confusion_figure, eval_folder_name, per_class_figure,
                                    per_class_rows, plot_confusion)

LONG_TITLE = ("fmnist_lt_if100_ce_res32_with_a_long_name · test · top-1 61.21% · many 78.48 | medium 53.77 | "
              "few 24.40 · checkpoint best_model")


# ---------------------------------------------------------------- eval folder naming
@pytest.mark.parametrize("opts, name", [
    ([], "test_best_model"),
    (["TEST.TAU_NORM.USE_TAU_NORM", "True", "TEST.TAU_NORM.TAU", "1.0"], "test_best_model_taunorm1.0"),
    (["TEST.LOGIT_ADJUST.TAU", "1.5"], "test_best_model_la1.5"),
    (["TEST.FLIP_TTA", "True"], "test_best_model_flip"),
    (["TEST.TAU_NORM.USE_TAU_NORM", "True", "TEST.TAU_NORM.TAU", "1.0", "TEST.LOGIT_ADJUST.TAU", "1.5",
      "TEST.FLIP_TTA", "True"], "test_best_model_taunorm1.0_la1.5_flip"),
    (["TEST.TAU_NORM.TAU", "0.5"], "test_best_model"),  # TAU without USE_TAU_NORM changes nothing
])
def test_eval_folder_has_one_suffix_per_prediction_changing_option(opts, name):
    cfg = get_defaults()
    cfg.merge_from_list(opts)
    assert eval_folder_name("test", "best_model", cfg) == name


@pytest.fixture(scope="module")
def trained(tiny_lt, tmp_path_factory):
    d = tmp_path_factory.mktemp("eval_runs")
    template = open(os.path.join(ROOT, "tests", "tiny_template.yaml")).read()
    cfg_path = d / "cfg.yaml"
    cfg_path.write_text(template.format(out=d / "out", train=tiny_lt["train"], val=tiny_lt["val"], test=tiny_lt["test"]))
    train(build_config(str(cfg_path), ["TRAIN.MAX_EPOCH", "1"]))
    return cfg_path, d / "out" / "tiny"


def valid_main(argv):
    spec = importlib.util.spec_from_file_location("valid_entry", os.path.join(ROOT, "valid.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with torch.no_grad():
        return mod.main(argv)


def test_valid_py_variants_write_their_own_folders_and_keep_the_plain_one(trained):
    cfg_path, run = trained
    plain = valid_main([str(cfg_path)])
    plain_dir = run / "eval" / "test_best_model"
    before = (plain_dir / "results.json").read_text()
    variant = valid_main([str(cfg_path), "TEST.TAU_NORM.USE_TAU_NORM", "True", "TEST.TAU_NORM.TAU", "1.0",
                          "TEST.LOGIT_ADJUST.TAU", "1.5", "TEST.FLIP_TTA", "True"])
    variant_dir = run / "eval" / "test_best_model_taunorm1.0_la1.5_flip"
    assert (plain_dir / "results.json").read_text() == before  # not overwritten
    results = json.loads((variant_dir / "results.json").read_text())
    assert results["tau_norm"] == 1.0 and results["logit_adjust_tau"] == 1.5 and results["flip_tta"] is True
    assert json.loads(before)["top1"] == pytest.approx(plain["top1"])
    assert results["top1"] == pytest.approx(variant["top1"])
    assert sorted(os.listdir(variant_dir)) == ["confusion_matrix.png", "per_class.csv", "per_class.json",
                                               "per_class_accuracy.png", "reliability_diagram.png", "results.json"]


# ---------------------------------------------------------------- plots
def fake_eval(C, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(C).repeat(4)
    logits = torch.randn(len(labels), C, generator=g) + 3 * torch.nn.functional.one_hot(labels, C)
    counts = [max(2, 500 // (c + 1)) for c in range(C)]
    names = [f"class name {c}" for c in range(C)]
    return logits, labels, counts, names


def inside_figure(fig, artist):
    fig.canvas.draw()
    box = artist.get_window_extent(fig.canvas.get_renderer())
    full = fig.bbox
    return box.x0 >= full.x0 - 1 and box.x1 <= full.x1 + 1 and box.y0 >= full.y0 - 1 and box.y1 <= full.y1 + 1


def test_confusion_matrix_axes_carry_the_class_names_in_training_count_order():
    C = 10
    logits, labels, counts, names = fake_eval(C)
    counts = counts[::-1]  # class 9 is the largest: it comes first
    fig = confusion_figure(logits, labels, counts, LONG_TITLE, names)
    ax = fig.axes[0]
    order = sorted(range(C), key=lambda c: (-counts[c], c))
    assert [t.get_text() for t in ax.get_xticklabels()] == [names[c] for c in order]
    assert [t.get_text() for t in ax.get_yticklabels()] == [names[c] for c in order]
    assert ax.get_xlabel().startswith("predicted class") and ax.get_ylabel().startswith("true class")
    assert inside_figure(fig, fig._suptitle) and "\n" in fig.get_suptitle()  # wrapped, within the figure
    assert fig.get_suptitle().replace("\n", " ") == LONG_TITLE


def test_confusion_matrix_without_names_labels_class_ids():
    logits, labels, counts, _ = fake_eval(5)
    ax = confusion_figure(logits, labels, counts, "t").axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3", "4"]
    assert ax.get_xlabel().startswith("predicted class id")


def test_confusion_matrix_of_many_classes_labels_a_few_ids_and_lists_their_names():
    C = MAX_NAMED_CLASSES + 70
    logits, labels, counts, names = fake_eval(C)
    fig = confusion_figure(logits, labels, counts, LONG_TITLE, names)
    ax = fig.axes[0]
    ticks = [t.get_text() for t in ax.get_xticklabels()]
    assert 2 <= len(ticks) <= 13 and ticks[0] == "0" and ticks[-1] == str(C - 1)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [f"{t}: class name {t}" for t in ticks]
    assert inside_figure(fig, fig._suptitle)


def test_per_class_plot_names_classes_and_fits_its_title():
    logits, labels, counts, names = fake_eval(12)
    report = {"per_class": [50.0] * 12, "per_class_count": [4] * 12}
    rows = per_class_rows(report, counts, "standard", names)
    fig = per_class_figure(rows, LONG_TITLE)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == names  # counts decrease with the id here
    assert inside_figure(fig, fig._suptitle)
    texts = {t.get_text() for t in fig.findobj(Text)}
    assert {"test accuracy (%)", "training images (log)"} <= texts


def test_confusion_png_is_written_with_the_title_inside(tmp_path):
    logits, labels, counts, names = fake_eval(10)
    path = tmp_path / "cm.png"
    plot_confusion(str(path), logits, labels, counts, LONG_TITLE, names)
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        gray = np.asarray(im.convert("L"))
    assert gray.shape[0] > 300 and gray.shape[1] > 300
    # saved with a tight bounding box: a white margin on every side, so nothing (title, labels) is cut off
    assert gray[:3].min() > 240 and gray[-3:].min() > 240 and gray[:, :3].min() > 240 and gray[:, -3:].min() > 240


# ---------------------------------------------------------------- bf16 on CPUs without native bf16
@pytest.mark.parametrize("flags, warns", [
    ({"sse4_2", "avx", "avx2", "fma"}, "AVX2"),
    ({"avx2", "avx512f", "avx512bw"}, "AVX512F"),
    ({"avx2", "avx512f", "avx512_bf16"}, None),
    ({"avx2", "amx_bf16", "amx_tile"}, None),
    ({"fp", "asimd", "bf16"}, None),  # Arm with BF16
    (set(), None),  # unknown CPU: no claim
])
def test_bf16_warning_names_the_cpu_capability(flags, warns):
    w = cpu_bf16_warning(flags)
    if warns is None:
        assert w is None
    else:
        assert f"best: {warns}" in w and "no native bf16" in w and "10x slower" in w and "TRAIN.AMP.ENABLE False" in w


class Log:
    def __init__(self):
        self.lines = []

    def info(self, msg):
        self.lines.append(msg)


def test_amp_on_cpu_without_native_bf16_warns_once_at_start_up(monkeypatch):
    monkeypatch.setattr(amp_module, "cpu_flags", lambda: {"avx", "avx2"})
    monkeypatch.setattr(amp_module, "_warned", set())
    cfg = get_defaults()
    cfg.TRAIN.AMP.ENABLE = True
    log = Log()
    AmpContext(cfg, torch.device("cpu"), log)
    AmpContext(cfg, torch.device("cpu"), log)
    assert len(log.lines) == 1 and "best: AVX2" in log.lines[0]
    cfg.TRAIN.AMP.ENABLE = False
    monkeypatch.setattr(amp_module, "_warned", set())
    AmpContext(cfg, torch.device("cpu"), log)  # AMP off: nothing to say
    assert len(log.lines) == 1


def test_amp_on_cpu_with_native_bf16_does_not_warn(monkeypatch, capsys):
    monkeypatch.setattr(amp_module, "cpu_flags", lambda: {"avx2", "avx512_bf16"})
    monkeypatch.setattr(amp_module, "_warned", set())
    cfg = get_defaults()
    cfg.TRAIN.USE_AMP = True
    AmpContext(cfg, torch.device("cpu"))
    assert capsys.readouterr().err == ""


def test_cpu_flags_reads_the_flags_line(tmp_path):
    p = tmp_path / "cpuinfo"
    p.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx2 fma\n\nprocessor\t: 1\n")
    assert cpu_flags(str(p)) == {"fpu", "sse", "avx2", "fma"}
    assert cpu_flags(str(tmp_path / "none")) is None
