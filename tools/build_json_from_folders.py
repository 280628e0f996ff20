"""Build train / val / test annotation JSONs from a folder of class folders (torchvision ImageFolder layout).

    python tools/build_json_from_folders.py ROOT --output-dir DIR [--val-fraction 0.1] [--test-fraction 0.1]
        [--seed 0] [--imb-factor IF [--n-max N]] [--min-per-class K] [--rank-by-count] [--workers 8]

Input: ROOT/<class>/<image> (images may sit in sub-folders of a class folder), or ROOT/train/<class>/...
with optional ROOT/val/ and ROOT/test/ trees of the same form. A split without its own tree is drawn from
train, stratified (lib/data/folder_splits.py): per class floor(n x fraction) images; a class too small to
give every requested split one image (n < 1 / fraction) keeps all its images in train, and the tool says
which. --imb-factor draws a long-tailed training set from a balanced tree (Cao et al.'s profile, class 0 =
the first by name gets --n-max, default the smallest class). --min-per-class K leaves out classes with fewer
than K training images.

Bad input (lib/data/folders.py): empty class folders, unreadable or non-image files (corrupt, truncated, zero
bytes), symbolic link loops, duplicate files (same bytes: the first is kept) and val/test classes without
training images are left out with one `skip (...)` line each and counted at the end; a tree with no usable
class is an error. Output, written only when everything succeeded (a hidden folder renamed at the end):
DIR/{train,val,test}.json (absolute fpaths; an empty split is not written), DIR/classes.json (the class
folder names in id order: by name, or by training count with --rank-by-count) and DIR/build_info.json
(parameters, counts and everything left out). It prints the counts per split and the many / medium / few
groups, as tools/dataset_stats.py does.
"""
import os
import time

from lib.data.folder_splits import annotation_file, carve, class_order, long_tail_subset, write_outputs
from lib.data.folders import Skips, scan_trees
from lib.data.stats import compute_stats, format_table
from lib.utils import cli
from lib.utils.errors import UserError, exit_on_user_error

SPLITS = ("train", "val", "test")
MAX_CLASS_ROWS = 30  # above this many classes the per-class table is left to build_info.json


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("root", metavar="ROOT", help="ImageFolder tree ROOT/<class>/<image>, or ROOT/{train,val,test}/")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", required=True, help="folder for the JSONs")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of each class for val (default 0.1)")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of each class for test (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the long-tail draw (default 0)")
    p.add_argument("--imb-factor", type=float, default=None, help="draw a long-tailed train set: IF = n_max / n_min")
    p.add_argument("--n-max", type=int, default=None, help="with --imb-factor: images of the first class")
    p.add_argument("--min-per-class", type=int, default=1, help="leave out classes with fewer training images")
    p.add_argument("--rank-by-count", action="store_true", help="class ids by training count, largest first")
    p.add_argument("--workers", type=int, default=8, help="threads reading the images (default 8)")
    args = p.parse_args(argv)
    for name in ("val_fraction", "test_fraction"):
        if not 0 <= getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(args, name)}")
    if args.val_fraction + args.test_fraction >= 1:
        raise UserError("--val-fraction + --test-fraction must be < 1: train needs images")
    if args.imb_factor is not None and args.imb_factor < 1 or args.n_max is not None and args.n_max < 1:
        raise UserError("--imb-factor must be >= 1 and --n-max >= 1")
    if args.n_max is not None and args.imb_factor is None:
        raise UserError("--n-max goes with --imb-factor")
    if args.min_per_class < 1 or args.workers < 1:
        raise UserError("--min-per-class and --workers must be >= 1")
    return args


def make_splits(args, usable, skips):
    """{split: {class: [(path, size)]}} and the notes to print."""
    pool = usable.get("train", usable.get("all"))
    for cls in [c for c in sorted(pool) if len(pool[c]) < args.min_per_class]:
        skips.add("small", cls, f"{len(pool[cls])} images < --min-per-class {args.min_per_class}: class left out")
        for split in usable.values():
            split.pop(cls, None)
    if not pool:
        raise UserError(f"{args.root}: no class has --min-per-class {args.min_per_class} images")
    fractions = {s: f for s, f in (("val", args.val_fraction), ("test", args.test_fraction)) if s not in usable}
    splits, too_small = carve(pool, fractions, args.seed)
    splits.update({s: usable[s] for s in ("val", "test") if s in usable})
    notes = []
    if too_small:
        wanted = " and ".join(f"{s} {f:g}" for s, f in fractions.items() if f > 0)
        notes.append(f"note: {len(too_small)} classes have too few images for one {wanted} image each: all their "
                     f"images stay in train: " + ", ".join(f"{c} ({n})" for c, n in too_small))
    if args.imb_factor:
        splits["train"], counts = long_tail_subset(splits["train"], args.imb_factor, args.n_max, args.seed)
        notes.append(f"note: long-tailed train set, IF {args.imb_factor:g}: {' '.join(map(str, counts))} images "
                     f"per class (classes in name order)")
    return splits, notes


def counts_of(splits, names):
    return {s: [len(splits[s].get(c, [])) for c in names] for s in SPLITS if s in splits}


def report(counts, names, out_dir):
    lines = []
    for split, n in counts.items():
        if sum(n):
            path = os.path.join(out_dir, f"{split}.json")
            stats = compute_stats(n, None if split == "train" else counts["train"])
            lines += [format_table(path, stats, train_source="train.json"), ""]
    if len(names) <= MAX_CLASS_ROWS:
        width = max(len(c) for c in names)
        lines.append(f"{'id':>3}  {'class':<{width}}  " + "  ".join(f"{s:>5}" for s in counts))
        for i, c in enumerate(names):
            lines.append(f"{i:>3}  {c:<{width}}  " + "  ".join(f"{counts[s][i]:>5}" for s in counts))
    return "\n".join(lines)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    t0 = time.time()
    skips = Skips()
    usable = scan_trees(os.path.abspath(args.root), skips, args.workers)
    splits, notes = make_splits(args, usable, skips)
    names = class_order(splits["train"], args.rank_by_count)
    files = {f"{s}.json": annotation_file(splits[s], names) for s in SPLITS if any(splits.get(s, {}).values())}
    counts = counts_of(splits, names)
    files["classes.json"] = names
    files["build_info.json"] = {"root": os.path.abspath(args.root), "params": vars(args), "counts": counts,
                                "skipped": skips.items, "notes": notes}
    for line in notes:
        print(line)
    out = write_outputs(args.output_dir, files)
    print(report(counts, names, out))
    sizes = ", ".join(f"{s} {sum(n)}" for s, n in counts.items() if sum(n))
    print(f"wrote {out}: {', '.join(n for n in files)}; {len(names)} classes ({sizes} images) in "
          f"{time.time() - t0:.1f}s; left out: {skips.summary()} ({skips.files()} files)")
    return out


if __name__ == "__main__":
    main()
