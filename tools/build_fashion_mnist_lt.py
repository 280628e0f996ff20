"""Build Fashion-MNIST-LT, the project's embedded real long-tailed demo dataset.

    python tools/build_fashion_mnist_lt.py [--source /usr/share/datasets/fashion-mnist]
        [--output_path data/fashion_mnist_lt] [--n_max 1000] [--imb_factor 100] [--val-per-class 100]
        [--seed 0] [--force]

Input: the four standard IDX gzip files {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (Debian package
`dataset-fashion-mnist`); 60,000 training and 10,000 test images, 28x28 grayscale, 10 classes.

Training set: the CIFAR-LT recipe (docs/data.md) applied to Fashion-MNIST's training images:
n_c = exponential_counts(n_max, IF, 10), selected with the seeded legacy shuffle (`select_long_tail`).
n_max=1000, IF=100 gives 2,478 images (1000 ... 10; many/medium/few = 5/3/2); n_max=5000 gives 12,406.
Val: a balanced split of K images per class taken from the training images NOT selected (each class has
>= 6000 - n_max of them). Test: the full balanced 10,000-image test set.

Output: <out>/fmnist_lt_if{IF}/{images/..., fmnist_lt_if{IF}_{train,val,test}.json, classes.json,
build_info.json}; grayscale PNGs (mode L) and fpaths relative to the JSON folder. Re-running with the same
parameters is a no-op (build_info.json records them); --force rebuilds.
"""
import gzip
import json
import os
import time

import numpy as np

from lib.data.image_folder_writer import write_image_folder_dataset
from lib.data.longtail import (describe_counts, exponential_counts, format_imb_factor, format_validation_report,
                               select_long_tail, validation_from_leftover)
from lib.utils import cli
from lib.utils.errors import UserError, exit_on_user_error

DEFAULT_SOURCE = "/usr/share/datasets/fashion-mnist"
APT_HINT = "apt-get install -y dataset-fashion-mnist"
FILES = {"train_images": "train-images-idx3-ubyte.gz", "train_labels": "train-labels-idx1-ubyte.gz",
         "test_images": "t10k-images-idx3-ubyte.gz", "test_labels": "t10k-labels-idx1-ubyte.gz"}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
NUM_CLASSES = len(CLASS_NAMES)
BUILD_VERSION = 1  # bump when the output layout changes, so old builds are not taken as complete


def read_idx(path, expected_ndim):
    """uint8 array from a gzipped IDX file: magic = 0x0000 08 <ndim> (2051 images, 2049 labels),
    then ndim big-endian uint32 dims, then the data."""
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"{path}: cannot read gzip IDX file ({e})") from None
    if len(raw) < 4 or raw[0:3] != b"\x00\x00\x08" or raw[3] != expected_ndim:
        magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
        raise UserError(f"{path}: not a uint8 IDX file with {expected_ndim} dims "
                        f"(magic {magic}, expected {0x800 + expected_ndim})")
    header = 4 + 4 * expected_ndim
    dims = tuple(int(d) for d in np.frombuffer(raw[4:header], dtype=">u4"))
    if len(raw) != header + int(np.prod(dims)):
        raise UserError(f"{path}: truncated or oversized IDX file (dims {dims}, {len(raw) - header} data bytes)")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_fashion_mnist(source):
    """{"train": (images uint8 [N,28,28], labels int64 [N]), "test": (...)} from the four IDX files."""
    missing = [f for f in FILES.values() if not os.path.isfile(os.path.join(source, f))]
    if missing:
        raise UserError(f"Fashion-MNIST not found in {source} (missing {', '.join(missing)}); install it with "
                        f"`{APT_HINT}` or pass --source DIR")
    out = {}
    for split in ("train", "test"):
        x = read_idx(os.path.join(source, FILES[f"{split}_images"]), 3)
        y = read_idx(os.path.join(source, FILES[f"{split}_labels"]), 1).astype(np.int64)
        if x.shape[0] != y.shape[0]:
            raise UserError(f"{source}: {split} has {x.shape[0]} images but {y.shape[0]} labels")
        if y.size and y.max() >= NUM_CLASSES:
            raise UserError(f"{source}: {split} labels must lie in [0, {NUM_CLASSES})")
        out[split] = (x, y)
    return out


def plan_fashion_mnist_lt(train_labels, n_max=1000, imb_factor=100, val_per_class=100, seed=0):
    """{"counts", "train" (positions, class 0 first), "val" (positions or None), "val_report"}.
    The val split must be balanced: K unused images in every class, else UserError."""
    counts = exponential_counts(n_max, imb_factor, NUM_CLASSES)
    kept, leftover = select_long_tail(train_labels, counts, seed=seed, mode="shuffle")
    plan = {"counts": counts, "train": np.concatenate(kept), "val": None, "val_report": None}
    if val_per_class:
        val, report = validation_from_leftover(leftover, val_per_class)  # pools are already shuffled
        short = [r for r in report if r["taken"] < val_per_class]
        if short:
            raise UserError(f"--val-per-class {val_per_class}: class {short[0]['class']} has only "
                            f"{short[0]['available']} unused training images (lower --n_max or K)")
        plan["val"], plan["val_report"] = np.concatenate(val), report
    return plan


def _params(args):
    return {"dataset": "fashion-mnist", "n_max": args.n_max, "imb_factor": float(args.imb_factor),
            "val_per_class": args.val_per_class, "seed": args.seed, "selection": "shuffle", "format": "png",
            "version": BUILD_VERSION}


def is_built(folder, prefix, params):
    """True when `folder` holds a complete build made with `params` (the folder only ever appears complete)."""
    try:
        with open(os.path.join(folder, "build_info.json")) as f:
            if json.load(f).get("params") != params:
                return False
    except (OSError, ValueError, AttributeError):
        return False
    splits = ["train", "test"] + (["val"] if params["val_per_class"] else [])
    names = [f"{prefix}_{s}.json" for s in splits] + ["classes.json"]
    return all(os.path.isfile(os.path.join(folder, n)) for n in names)


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--source", default=DEFAULT_SOURCE, help=f"folder with the IDX .gz files (default {DEFAULT_SOURCE})")
    p.add_argument("--output_path", "--output-path", default="data/fashion_mnist_lt")
    p.add_argument("--n_max", "--n-max", type=int, default=1000, help="images of the largest class (default 1000)")
    p.add_argument("--imb_factor", "--imb-factor", type=float, default=100, help="IF = n_max / n_min (default 100)")
    p.add_argument("--val-per-class", "--val_per_class", type=int, default=100,
                   help="balanced val split from unused training images (default 100; 0 = none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the legacy NumPy shuffle (default 0)")
    p.add_argument("--workers", type=int, default=None, help="processes writing PNGs (default: all CPUs)")
    p.add_argument("--force", action="store_true", help="rebuild even if the same build exists")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    if args.n_max < 1 or args.imb_factor < 1 or args.val_per_class < 0:
        raise UserError("--n_max must be >= 1, --imb_factor >= 1 and --val-per-class >= 0")
    t0 = time.time()
    prefix = f"fmnist_lt_if{format_imb_factor(args.imb_factor)}"
    folder = os.path.join(os.path.abspath(args.output_path), prefix)
    params = _params(args)
    if not args.force and is_built(folder, prefix, params):
        print(f"{folder} is already built with the same parameters; nothing to do (--force rebuilds)")
        return 0

    data = read_fashion_mnist(args.source)
    plan = plan_fashion_mnist_lt(data["train"][1], args.n_max, args.imb_factor, args.val_per_class, args.seed)
    print(f"{prefix}: n_max={args.n_max} IF={args.imb_factor:g} seed={args.seed}")
    print(f"train counts: {' '.join(map(str, plan['counts']))}")
    print(f"train: {describe_counts(plan['counts'])}")
    if plan["val"] is not None:
        print(format_validation_report(plan["val_report"]))
    print(f"test: {data['test'][1].size} images")

    train_x, train_y = data["train"]
    splits = {"train": (train_x[plan["train"]], train_y[plan["train"]], plan["train"])}
    if plan["val"] is not None:
        splits["val"] = (train_x[plan["val"]], train_y[plan["val"]], plan["val"])
    test_x, test_y = data["test"]
    splits["test"] = (test_x, test_y, np.arange(test_y.size))
    info = {"params": params, "train_counts": plan["counts"],
            "sizes": {k: int(v[1].size) for k, v in splits.items()}, "source": os.path.abspath(args.source),
            "note": "source_index = position in the IDX training (or test) file"}
    write_image_folder_dataset(args.output_path, prefix, splits, NUM_CLASSES, fmt="png", workers=args.workers,
                               extra_json={"classes.json": CLASS_NAMES, "build_info.json": info})
    sizes = ", ".join(f"{k} {v[1].size}" for k, v in splits.items())
    print(f"wrote {folder} ({sizes}) in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    main()
