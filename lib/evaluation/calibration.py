"""Calibration of predicted probabilities: ECE, NLL, reliability bins, temperature scaling.

p = softmax(z / T) for logits z (after any post-hoc logit adjustment); confidence = max_c p_c.
  ECE  = sum_b |B_b| / N * |acc(B_b) - conf(B_b)| over NUM_BINS equal-width confidence bins
         ((0, 1/15], (1/15, 2/15], ...), in percent like the accuracies
  NLL  = mean_i -log p_{y_i} (nats), the cross-entropy of the reported prediction
Temperature scaling (Guo et al. 2017): one T > 0 fitted on the validation split by minimising the NLL.
Dividing every logit by the same T > 0 never changes the arg max, so accuracies stay the same.
"""
import math

import torch
from torch.nn import functional as F

from ..utils.shots import shot_groups

NUM_BINS = 15
T_RANGE = (0.05, 20.0)  # temperatures searched by fit_temperature


def reliability_bins(logits, labels, bins=NUM_BINS):
    """[{"lo", "hi", "count", "confidence", "accuracy"}] per equal-width bin of max softmax probability;
    confidence / accuracy are in percent, None for an empty bin."""
    probs = logits.float().softmax(dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    # bin b holds (b/bins, (b+1)/bins]; conf > 0 always, conf = 1 goes to the last bin
    idx = (conf * bins).ceil().long().clamp(1, bins) - 1
    count = torch.zeros(bins).index_add_(0, idx, torch.ones_like(conf))
    conf_sum = torch.zeros(bins).index_add_(0, idx, conf)
    acc_sum = torch.zeros(bins).index_add_(0, idx, correct)
    out = []
    for b in range(bins):
        n = int(count[b])
        out.append({"lo": round(b / bins, 6), "hi": round((b + 1) / bins, 6), "count": n,
                    "confidence": round(conf_sum[b].item() / n * 100, 4) if n else None,
                    "accuracy": round(acc_sum[b].item() / n * 100, 4) if n else None})
    return out


def ece_from_bins(bins):
    n = sum(b["count"] for b in bins)
    if not n:
        return None
    gap = sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins if b["count"])
    return gap / n


def expected_calibration_error(logits, labels, bins=NUM_BINS):
    """ECE in percent (None without samples)."""
    return ece_from_bins(reliability_bins(logits, labels, bins))


def nll(logits, labels):
    """Mean negative log-likelihood (nats) of the true labels; None without samples."""
    if not len(labels):
        return None
    return F.cross_entropy(logits.float(), labels).item()


def _r(v):
    return None if v is None else round(v, 4)


def calibration_report(logits, labels, counts, rule="standard"):
    """{"ece", "nll", "ece_groups": {many, medium, few}, "nll_groups": {...}, "reliability": bins}; a group is
    the samples whose true class is in it (None when the split has none)."""
    out = {"ece": _r(expected_calibration_error(logits, labels)), "nll": _r(nll(logits, labels)),
           "ece_groups": {}, "nll_groups": {}, "reliability": reliability_bins(logits, labels)}
    member = torch.zeros(logits.shape[1], dtype=torch.bool)
    for name, ids in shot_groups(counts, rule).items():
        member.zero_()
        member[ids] = True
        keep = member[labels]
        out["ece_groups"][name] = _r(expected_calibration_error(logits[keep], labels[keep]))
        out["nll_groups"][name] = _r(nll(logits[keep], labels[keep]))
    return out


def scale(logits, temperature):
    """z / T (T = 1: unchanged)."""
    t = float(temperature)
    return logits if t == 1.0 else logits / t


def fit_temperature(logits, labels, lo=T_RANGE[0], hi=T_RANGE[1], steps=80):
    """The T in [lo, hi] minimising NLL(z / T): golden-section search on the inverse temperature b = 1/T, in
    float64 (NLL(b z) is convex in b, so the search finds the minimum); deterministic."""
    if not len(labels):
        raise ValueError("no samples to fit a temperature on")
    z, y = logits.double(), labels

    def loss(b):
        return F.cross_entropy(z * b, y).item()

    a, c = 1.0 / hi, 1.0 / lo
    g = (math.sqrt(5) - 1) / 2
    x1, x2 = c - g * (c - a), a + g * (c - a)
    f1, f2 = loss(x1), loss(x2)
    for _ in range(steps):
        if f1 <= f2:
            c, x2, f2 = x2, x1, f1
            x1 = c - g * (c - a)
            f1 = loss(x1)
        else:
            a, x1, f1 = x1, x2, f2
            x2 = a + g * (c - a)
            f2 = loss(x2)
    return round(1.0 / ((a + c) / 2), 6)
