"""Evaluation outputs: results.json, per-class CSV/JSON, per-class plot, confusion matrix."""
import csv
import io
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..utils.atomic import atomic_open, write_json, write_text  # noqa: E402
from .groups import shot_group  # noqa: E402
from .metrics import confusion_matrix, format_groups  # noqa: E402


def per_class_rows(report, counts, rule, class_names=None):
    rows = []
    for c, acc in enumerate(report["per_class"]):
        rows.append({"class_id": c, "name": class_names[c] if class_names else str(c), "train_count": counts[c],
                     "group": shot_group(counts[c], rule), "test_count": report["per_class_count"][c],
                     "accuracy": acc})
    return rows


def write_per_class(out_dir, rows):
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_text(os.path.join(out_dir, "per_class.csv"), buf.getvalue())
    write_json(os.path.join(out_dir, "per_class.json"), rows, indent=1)


def plot_per_class(path, rows, title):
    """Per-class accuracy (bars) with classes sorted by training count, and the count curve (line, log)."""
    rows = sorted(rows, key=lambda r: (-r["train_count"], r["class_id"]))
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6, min(0.12 * len(rows) + 4, 16)), 4))
    colors = {"many": "#4477aa", "medium": "#ddaa33", "few": "#bb5566"}
    ax.bar(x, [r["accuracy"] or 0 for r in rows], color=[colors[r["group"]] for r in rows], width=0.85)
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_xlabel("classes sorted by training count")
    if len(rows) <= 30:
        ax.set_xticks(list(x))
        ax.set_xticklabels([r["name"] for r in rows], rotation=60, ha="right", fontsize=7)
    ax2 = ax.twinx()
    ax2.plot(list(x), [r["train_count"] for r in rows], color="black", marker=".", lw=1)
    ax2.set_yscale("log")
    ax2.set_ylabel("training images (log)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    ax.legend(handles, list(colors), loc="upper right", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    _save(fig, path)


def plot_confusion(path, logits, labels, counts, title):
    C = logits.shape[1]
    cm = confusion_matrix(logits.argmax(1), labels, C).float()
    cm = cm / cm.sum(1, keepdim=True).clamp(min=1)
    order = sorted(range(C), key=lambda c: (-counts[c], c))
    cm = cm[order][:, order]
    fig, ax = plt.subplots(figsize=(5.5, 5))
    im = ax.imshow(cm.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xlabel("predicted class (sorted by training count)")
    ax.set_ylabel("true class (sorted by training count)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path):
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_evaluation(out_dir, report, logits, labels, counts, meta, rule="standard", class_names=None):
    """Write every evaluation artefact into out_dir; returns the results dict."""
    os.makedirs(out_dir, exist_ok=True)
    rows = per_class_rows(report, counts, rule, class_names)
    write_per_class(out_dir, rows)
    title = f"{meta.get('name', '')} · {meta.get('split', '')} · top-1 {report['top1']:.2f}% · {format_groups(report)}"
    plot_per_class(os.path.join(out_dir, "per_class_accuracy.png"), rows, title)
    plot_confusion(os.path.join(out_dir, "confusion_matrix.png"), logits, labels, counts, title)
    results = dict(meta)
    results.update({k: v for k, v in report.items() if k not in ("per_class", "per_class_count")})
    results["members"] = {k: {m: v[m] for m in ("top1", "many", "medium", "few")} for k, v in report["members"].items()}
    write_json(os.path.join(out_dir, "results.json"), results, indent=2)
    return results


def summary_table(report):
    """The many/medium/few table printed to the terminal."""
    def f(v):
        return "  n/a" if v is None else f"{v:5.2f}"

    lines = ["| prediction | top-1 | many | medium | few |", "|---|---|---|---|---|"]
    lines.append(f"| main | {f(report['top1'])} | {f(report['many'])} | {f(report['medium'])} | {f(report['few'])} |")
    for k, v in report.get("members", {}).items():
        lines.append(f"| {k} | {f(v['top1'])} | {f(v['many'])} | {f(v['medium'])} | {f(v['few'])} |")
    return "\n".join(lines)
