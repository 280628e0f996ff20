"""Calibration in every evaluation (ECE with 15 bins, NLL, per many/medium/few group, reliability diagram) and
temperature scaling fitted on the validation split; zero-accuracy bars are labelled in the per-class plot."""
import json
import math

import pytest
import torch
from matplotlib.text import Text
from torch.nn import functional as F

from lib.config.defaults import get_defaults
from lib.evaluation import calibration, tau_search
from lib.evaluation.metrics import classification_report
from lib.evaluation.reports import eval_folder_name, per_class_figure, per_class_rows, summary_table, write_evaluation

COUNTS = [200, 50, 5]  # one many, one medium, one few class


def two_class_logits(p, n):
    """n samples whose softmax is (p, 1 - p)."""
    return torch.tensor([[math.log(p), math.log(1 - p)]] * n)


def test_ece_is_the_count_weighted_gap_between_accuracy_and_confidence():
    logits = torch.cat([two_class_logits(0.9, 4), two_class_logits(0.6, 2)])
    labels = torch.tensor([0, 0, 0, 1, 0, 1])  # confidence 0.9: 3 of 4 right; 0.6: 1 of 2 right
    bins = calibration.reliability_bins(logits, labels)
    assert len(bins) == 15 and sum(b["count"] for b in bins) == 6
    full = [b for b in bins if b["count"]]
    assert [(b["lo"], b["count"]) for b in full] == [(round(8 / 15, 6), 2), (round(13 / 15, 6), 4)]
    expected = (4 * abs(75 - 90) + 2 * abs(50 - 60)) / 6  # percent
    assert calibration.expected_calibration_error(logits, labels) == pytest.approx(expected, abs=1e-4)
    assert calibration.nll(logits, labels) == pytest.approx(F.cross_entropy(logits, labels).item())


def test_bin_edges_are_right_closed_and_confidence_one_is_in_the_last_bin():
    logits = torch.tensor([[0.0, 0.0], [100.0, -100.0]])  # confidence 0.5 and 1.0
    bins = calibration.reliability_bins(logits, torch.tensor([0, 0]))
    assert bins[7]["count"] == 1 and bins[7]["lo"] < 0.5 <= bins[7]["hi"]  # (7/15, 8/15]
    assert bins[14]["count"] == 1 and bins[14]["confidence"] == pytest.approx(100.0)


def test_report_has_ece_and_nll_overall_and_per_group_with_none_for_an_empty_group():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0] * 30 + [1] * 10)  # no image of the few class
    logits = torch.randn(40, 3, generator=g) + 2 * F.one_hot(labels, 3)
    r = classification_report(logits, labels, COUNTS)
    assert r["ece"] == pytest.approx(calibration.expected_calibration_error(logits, labels), abs=1e-4)
    assert r["nll"] == pytest.approx(F.cross_entropy(logits, labels).item(), abs=1e-4)
    many = labels == 0
    assert r["ece_groups"]["many"] == pytest.approx(
        calibration.expected_calibration_error(logits[many], labels[many]), abs=1e-4)
    assert r["nll_groups"]["medium"] == pytest.approx(F.cross_entropy(logits[~many], labels[~many]).item(), abs=1e-4)
    assert r["ece_groups"]["few"] is None and r["nll_groups"]["few"] is None
    table = summary_table(dict(r, members={}))
    assert "| prediction | top-1 | ECE | NLL |" in table and f"{r['ece']:5.2f}" in table
    assert "few n/a / n/a" in table.splitlines()[-1]


def test_temperature_fit_recovers_the_temperature_that_generated_the_labels():
    g = torch.Generator().manual_seed(1)
    z = 3 * torch.randn(8000, 5, generator=g)
    labels = torch.multinomial((z / 2.0).softmax(1), 1, generator=g).squeeze(1)  # calibrated at T = 2
    t = calibration.fit_temperature(z, labels)
    assert t == pytest.approx(2.0, rel=0.08) and t == calibration.fit_temperature(z, labels)  # deterministic
    assert calibration.nll(z / t, labels) <= min(calibration.nll(z / s, labels) for s in (1.5, 1.9, 2.1, 2.5))
    assert torch.equal(calibration.scale(z, t).argmax(1), z.argmax(1))  # the classes never change


def test_posthoc_temperature_changes_calibration_not_accuracy():
    g = torch.Generator().manual_seed(2)
    labels = torch.arange(3).repeat(50)
    val = {"main": 4 * torch.randn(150, 3, generator=g) + 3 * F.one_hot(labels, 3)}
    taus = {"main": 0.0}
    temps = tau_search.choose_temperatures(val, labels, COUNTS, taus)
    plain = tau_search.report_with_taus(val, labels, COUNTS, taus)
    scaled = tau_search.report_with_taus(val, labels, COUNTS, taus, temps_by_name=temps)
    assert temps["main"] > 1 and scaled["top1"] == plain["top1"] and scaled["nll"] < plain["nll"]


def test_write_evaluation_adds_the_reliability_diagram_and_calibration_to_results(tmp_path):
    g = torch.Generator().manual_seed(3)
    labels = torch.arange(3).repeat(10)
    logits = torch.randn(30, 3, generator=g) + 2 * F.one_hot(labels, 3)
    report = classification_report(logits, labels, COUNTS)
    report["members"] = {"expert1": classification_report(logits * 2, labels, COUNTS)}
    write_evaluation(str(tmp_path), report, logits, labels, COUNTS, {"name": "t", "split": "test"})
    png = (tmp_path / "reliability_diagram.png").read_bytes()
    assert png.startswith(b"\x89PNG") and (tmp_path / "per_class_accuracy.png").exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["ece"] == report["ece"] and saved["nll"] == report["nll"] and len(saved["reliability"]) == 15
    assert set(saved["ece_groups"]) == {"many", "medium", "few"} and "ece" in saved["members"]["expert1"]


def test_zero_accuracy_bars_are_labelled_and_missing_ones_say_na():
    report = {"per_class": [80.0, 0.0, None], "per_class_count": [4, 4, 0]}
    fig = per_class_figure(per_class_rows(report, COUNTS, "standard", ["a", "b", "c"]), "t")
    texts = [t.get_text() for t in fig.findobj(Text)]
    assert texts.count("0.0") == 1 and texts.count("n/a") == 1


def test_temperature_gets_its_own_eval_folder():
    cfg = get_defaults()
    cfg.merge_from_list(["TEST.TEMPERATURE", "1.5"])
    assert eval_folder_name("test", "best_model", cfg) == "test_best_model_T1.5"
