"""Accuracy metrics from logits: top-1/top-5, per-class, many/medium/few (docs/evaluation.md), and the
calibration of the probabilities (ECE, NLL: calibration.py)."""
import torch

from .calibration import calibration_report
from ..utils.shots import GROUP_NAMES, shot_groups


def per_class_accuracy(pred, labels, num_classes):
    """acc_c = correct_c / total_c for each class; NaN for classes absent from the split."""
    correct = torch.zeros(num_classes).index_add_(0, labels, (pred == labels).float())
    total = torch.zeros(num_classes).index_add_(0, labels, torch.ones_like(labels, dtype=torch.float))
    acc = correct / total.clamp(min=1)
    acc[total == 0] = float("nan")
    return acc, total


def topk_accuracy(logits, labels, k):
    k = min(k, logits.shape[1])
    top = logits.topk(k, dim=1).indices
    return (top == labels[:, None]).any(dim=1).float().mean().item() * 100


def group_accuracy(class_acc, counts, rule="standard"):
    """Mean per-class accuracy (%) over the classes of each shot group; None ("n/a") when empty."""
    out = {}
    for name, ids in shot_groups(counts, rule).items():
        vals = class_acc[ids] if ids else torch.tensor([])
        vals = vals[~torch.isnan(vals)]
        out[name] = round(vals.mean().item() * 100, 4) if len(vals) else None
    return out


def classification_report(logits, labels, counts, rule="standard"):
    """Everything we publish for one prediction: top1, top5, mean per-class, many/medium/few, per-class, and
    ece / nll (overall and per group: ece_groups, nll_groups) with the reliability bins."""
    logits = logits.float()
    pred = logits.argmax(dim=1)
    C = logits.shape[1]
    class_acc, total = per_class_accuracy(pred, labels, C)
    valid = ~torch.isnan(class_acc)
    report = {
        "top1": round((pred == labels).float().mean().item() * 100, 4),
        "top5": round(topk_accuracy(logits, labels, 5), 4),
        "mean_class_acc": round(class_acc[valid].mean().item() * 100, 4),
        "num_images": int(labels.numel()),
        "per_class": [None if torch.isnan(a) else round(a.item() * 100, 4) for a in class_acc],
        "per_class_count": [int(t) for t in total],
    }
    report.update(group_accuracy(class_acc, counts, rule))
    report.update(calibration_report(logits, labels, counts, rule))
    return report


def confusion_matrix(pred, labels, num_classes):
    cm = torch.zeros(num_classes, num_classes, dtype=torch.long)
    cm.index_put_((labels, pred), torch.ones_like(labels), accumulate=True)
    return cm


def format_groups(report):
    def f(v):
        return "n/a" if v is None else f"{v:.2f}"

    return " ".join(f"{g}={f(report[g])}" for g in GROUP_NAMES)
