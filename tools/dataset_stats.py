"""Print the statistics of an annotation JSON before training (docs/data.md).

With n_c the number of images of class c in the JSON: N = sum n_c, n_max = max n_c,
n_min = min n_c, IF = n_max / n_min. Many / medium / few use the standard rule
(many n > 100, medium 20 <= n <= 100, few n < 20) on the training counts: those of the JSON
itself, or of --train-json when the JSON is a val/test split.

    python tools/dataset_stats.py data/cifar_lt/cifar100_imbalance100/cifar100_imbalance100_train.json --plot counts.png
"""
import json
import os
import sys

from lib.data.annotations import class_counts, read_json, validate_annotations
from lib.data.stats import compute_stats, format_table  # noqa: F401 - also this tool's API
from lib.utils import cli
from lib.utils.atomic import atomic_open
from lib.utils.errors import UserError, exit_on_user_error


def get_parser():
    p = cli.ArgumentParser(
        description="Images, classes, per-class max/min, imbalance factor and many/medium/few class "
        "counts (standard rule: many n>100, medium 20<=n<=100, few n<20) of an annotation JSON.")
    p.add_argument("json_file", metavar="JSON", help="annotation JSON")
    p.add_argument("--train-json", default=None,
                   help="define many/medium/few by this training JSON's counts (use for a val/test JSON)")
    p.add_argument("--plot", default=None, metavar="OUT.png",
                   help="also write the class counts sorted in decreasing order, log scale, to this PNG")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of the table")
    return p


def load_counts(path):
    anns, C = validate_annotations(read_json(path), source=path)
    return class_counts([a["category_id"] for a in anns], C)


def plot_counts(counts, out, title, group_lines=True):
    """Class counts sorted in decreasing order against the class rank, log-scale y axis; dashed
    lines at the many/medium (100) and medium/few (20) boundaries when `group_lines`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ys = sorted(counts, reverse=True)
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(range(len(ys)), ys, lw=1.5)
    ax.set_yscale("log")
    if group_lines:
        for y, text in ((100, "many > 100"), (20, "few < 20")):
            ax.axhline(y, ls="--", lw=0.8, color="gray")
            ax.text(len(ys) - 1, y, text, ha="right", va="bottom", fontsize=8, color="gray")
    ax.set_xlabel("class rank (sorted by count)")
    ax.set_ylabel("images per class (log)")
    ax.set_title(title, fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    with atomic_open(out, "wb") as f:
        fig.savefig(f, format="png")
    plt.close(fig)


@exit_on_user_error
def main(argv=None):
    args = get_parser().parse_args(argv)
    counts = load_counts(args.json_file)
    train_counts = None
    if args.train_json:
        train_counts = load_counts(args.train_json)
        if len(train_counts) != len(counts):
            raise UserError(f"{args.train_json}: num_classes {len(train_counts)} differs from "
                            f"{args.json_file}'s {len(counts)}")
    s = compute_stats(counts, train_counts)
    if args.plot:
        if s["empty_classes"]:  # a log axis cannot show 0: plot only the non-empty classes
            print(f"note: {s['empty_classes']} empty classes are left out of the log-scale plot", file=sys.stderr)
        plot_counts([n for n in counts if n > 0], args.plot,
                    f"{os.path.basename(args.json_file)}: {s['images']:,} images, {s['classes']} classes",
                    group_lines=train_counts is None)
    if args.json:
        print(json.dumps({"file": args.json_file, **s, "class_counts": counts}))
    else:
        print(format_table(args.json_file, s))
        if args.plot:
            print(f"plot: {args.plot}")
    return 0


if __name__ == "__main__":
    main()
