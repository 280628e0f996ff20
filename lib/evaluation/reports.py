"""Evaluation outputs: results.json, per-class CSV/JSON, per-class plot, reliability diagram, confusion matrix."""
import csv
import io
import os
import textwrap

from ..utils.atomic import atomic_open, write_json, write_text
from ..utils.shots import shot_group
from .metrics import confusion_matrix, format_groups


def _pyplot():
    """matplotlib.pyplot with the file-only Agg backend, imported on first use: importing it costs about
    half a second, which the trainer would otherwise pay at start-up for plots drawn at the very end."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


MAX_NAMED_CLASSES = 30  # above this many classes, plots label a few class ids and list their names aside
TITLE_FONTSIZE = 9


def fit_title(fig, title, fig_width_in, fontsize=TITLE_FONTSIZE):
    """The figure's title, centred on the figure and wrapped to its width (about 0.55 em per character), so it
    is never clipped whatever the axes' position (tight_layout leaves room for it)."""
    chars = max(20, int(fig_width_in * 72 / (0.55 * fontsize)) - 4)
    fig.suptitle(textwrap.fill(title, width=chars, break_long_words=True), fontsize=fontsize)


def _tick_positions(C, most=12):
    """At most `most` evenly spaced positions in range(C), first and last included."""
    step = max(1, -(-C // most))
    ticks = list(range(0, C, step))
    if ticks[-1] != C - 1:
        ticks.append(C - 1)
    return ticks


def per_class_figure(rows, title):
    """Per-class accuracy (bars) with classes sorted by training count, and the count curve (line, log)."""
    plt = _pyplot()
    rows = sorted(rows, key=lambda r: (-r["train_count"], r["class_id"]))
    x = range(len(rows))
    width = max(6, min(0.12 * len(rows) + 4, 16))
    fig, ax = plt.subplots(figsize=(width, 4))
    colors = {"many": "#4477aa", "medium": "#ddaa33", "few": "#bb5566"}
    ax.bar(x, [r["accuracy"] or 0 for r in rows], color=[colors[r["group"]] for r in rows], width=0.85)
    for i, r in enumerate(rows):  # a bar of height 0 is invisible: write its value (n/a: no test image)
        if not r["accuracy"]:
            ax.text(i, 0.5, "n/a" if r["accuracy"] is None else "0.0", ha="center", va="bottom", fontsize=6,
                    rotation=90, color="#444444")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 100)
    if len(rows) <= MAX_NAMED_CLASSES:
        ax.set_xlabel("classes sorted by training count")
        ax.set_xticks(list(x))
        ax.set_xticklabels([r["name"] for r in rows], rotation=60, ha="right", fontsize=7)
    else:
        ax.set_xlabel("class id, classes sorted by training count (names in per_class.csv)")
        ticks = _tick_positions(len(rows))
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(rows[t]["class_id"]) for t in ticks], fontsize=7)
    ax2 = ax.twinx()
    ax2.plot(list(x), [r["train_count"] for r in rows], color="black", marker=".", lw=1)
    ax2.set_yscale("log")
    ax2.set_ylabel("training images (log)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
    ax.legend(handles, list(colors), loc="upper right", fontsize=8)
    fit_title(fig, title, width)
    fig.tight_layout()
    return fig


def plot_per_class(path, rows, title):
    _save(per_class_figure(rows, title), path)


def reliability_figure(bins, title, ece=None, nll=None):
    """Accuracy against confidence per bin (bars; the diagonal is perfect calibration) above the share of
    images per bin; `bins` as calibration.reliability_bins gives them."""
    plt = _pyplot()
    fig, (ax, hist) = plt.subplots(2, 1, figsize=(5, 5.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    width = bins[0]["hi"] - bins[0]["lo"]
    lo = [b["lo"] for b in bins]
    acc = [(b["accuracy"] or 0) / 100 for b in bins]
    conf = [(b["confidence"] or 0) / 100 for b in bins]
    ax.bar(lo, acc, width=width, align="edge", color="#4477aa", edgecolor="white", label="accuracy")
    ax.bar(lo, [c - a for a, c in zip(acc, conf)], bottom=acc, width=width, align="edge", color="#bb5566",
           alpha=0.35, label="gap to confidence")
    ax.plot([0, 1], [0, 1], ls="--", color="gray", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    note = "" if ece is None else f"ECE {ece:.2f}%" + ("" if nll is None else f", NLL {nll:.3f}")
    ax.legend(loc="upper left", fontsize=8, title=note or None, title_fontsize=8)
    total = max(sum(b["count"] for b in bins), 1)
    hist.bar(lo, [b["count"] / total for b in bins], width=width, align="edge", color="#777777")
    hist.set_ylabel("share of images")
    hist.set_xlabel(f"confidence (max softmax probability, {len(bins)} bins)")
    fit_title(fig, title, 5)
    fig.tight_layout()
    return fig


def plot_reliability(path, report, title):
    _save(reliability_figure(report["reliability"], title, report.get("ece"), report.get("nll")), path)


def confusion_figure(logits, labels, counts, title, class_names=None):
    """Row-normalised confusion matrix, classes sorted by training count. Up to MAX_NAMED_CLASSES classes the
    axes carry the class names (ids when there are none); above, a dozen ticks carry class ids and, with
    names, a legend lists those ids' names."""
    plt = _pyplot()
    C = logits.shape[1]
    cm = confusion_matrix(logits.argmax(1), labels, C).float()
    cm = cm / cm.sum(1, keepdim=True).clamp(min=1)
    order = sorted(range(C), key=lambda c: (-counts[c], c))
    cm = cm[order][:, order]
    named = C <= MAX_NAMED_CLASSES
    side = max(5.5, min(0.32 * C + 3, 14)) if named else 6.5
    fig, ax = plt.subplots(figsize=(side, side * 0.9))
    im = ax.imshow(cm.numpy(), cmap="Blues", vmin=0, vmax=1)
    what = "class" if (named and class_names) else "class id"
    ax.set_xlabel(f"predicted {what} (sorted by training count)")
    ax.set_ylabel(f"true {what} (sorted by training count)")
    ticks = list(range(C)) if named else _tick_positions(C)
    names = [(class_names[order[t]] if class_names and named else str(order[t])) for t in ticks]
    ax.set_xticks(ticks)
    ax.set_xticklabels(names, rotation=60 if named and class_names else 0, ha="right" if named and class_names
                       else "center", fontsize=7)
    ax.set_yticks(ticks)
    ax.set_yticklabels(names, fontsize=7)
    fig.colorbar(im, ax=ax, fraction=0.046)
    if not named and class_names:
        proxies = [plt.Line2D([], [], ls="", marker="") for _ in ticks]
        ax.legend(proxies, [f"{order[t]}: {class_names[order[t]]}" for t in ticks], title="class id: name",
                  loc="upper left", bbox_to_anchor=(1.25, 1.0), fontsize=7, title_fontsize=7, handlelength=0,
                  frameon=False)
    fit_title(fig, title, side)
    fig.tight_layout()
    return fig


def plot_confusion(path, logits, labels, counts, title, class_names=None):
    _save(confusion_figure(logits, labels, counts, title, class_names), path)


def _save(fig, path):
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")  # nothing drawn outside is cut off
    _pyplot().close(fig)


def eval_folder_name(split, checkpoint, cfg):
    """`<split>_<checkpoint>` plus one suffix per option that changes the prediction, so a post-hoc variant
    never overwrites the plain evaluation: _taunorm<tau> (TEST.TAU_NORM), _la<tau> (TEST.LOGIT_ADJUST.TAU),
    _T<T> (TEST.TEMPERATURE), _flip (TEST.FLIP_TTA); e.g. test_best_model_taunorm1.0_la1.5_flip."""
    name = f"{split}_{checkpoint}"
    t = cfg.TEST
    if t.TAU_NORM.USE_TAU_NORM:
        name += f"_taunorm{float(t.TAU_NORM.TAU)}"
    if t.LOGIT_ADJUST.TAU:
        name += f"_la{float(t.LOGIT_ADJUST.TAU)}"
    if float(t.TEMPERATURE) != 1.0:
        name += f"_T{float(t.TEMPERATURE):g}"
    if t.FLIP_TTA:
        name += "_flip"
    return name


def write_evaluation(out_dir, report, logits, labels, counts, meta, rule="standard", class_names=None):
    """Write every evaluation artefact into out_dir; returns the results dict."""
    os.makedirs(out_dir, exist_ok=True)
    rows = per_class_rows(report, counts, rule, class_names)
    write_per_class(out_dir, rows)
    title = f"{meta.get('name', '')} · {meta.get('split', '')} · top-1 {report['top1']:.2f}% · {format_groups(report)}"
    plot_per_class(os.path.join(out_dir, "per_class_accuracy.png"), rows, title)
    plot_reliability(os.path.join(out_dir, "reliability_diagram.png"), report, title)
    plot_confusion(os.path.join(out_dir, "confusion_matrix.png"), logits, labels, counts, title, class_names)
    results = dict(meta)
    results.update({k: v for k, v in report.items() if k not in ("per_class", "per_class_count")})
    results["members"] = {k: {m: v[m] for m in ("top1", "many", "medium", "few", "ece", "nll")}
                          for k, v in report["members"].items()}
    write_json(os.path.join(out_dir, "results.json"), results, indent=2)
    return results


def _f(v, digits=2):
    return "  n/a" if v is None else f"{v:5.{digits}f}"


def summary_table(report, prediction=""):
    """The many/medium/few table printed to the terminal (ECE in %, NLL in nats), then one line with the main
    prediction's ECE / NLL per group. `prediction` says what the main row is (the method's prediction_name)."""
    def row(name, r):
        return (f"| {name} | {_f(r['top1'])} | {_f(r.get('ece'))} | {_f(r.get('nll'), 3)} | {_f(r['many'])} | "
                f"{_f(r['medium'])} | {_f(r['few'])} |")

    lines = ["| prediction | top-1 | ECE | NLL | many | medium | few |", "|---|---|---|---|---|---|---|",
             row(f"main ({prediction})" if prediction else "main", report)]
    lines += [row(k, v) for k, v in report.get("members", {}).items()]
    return "\n".join(lines) + "\n" + calibration_line(report)


def calibration_line(report):
    """ECE (%) / NLL of the main prediction per many/medium/few group (n/a: no image of the group)."""
    if "ece_groups" not in report:
        return ""
    parts = [f"{g} {_f(report['ece_groups'][g]).strip()} / {_f(report['nll_groups'][g], 3).strip()}"
             for g in report["ece_groups"]]
    return "calibration by group (ECE % / NLL): " + ", ".join(parts)
