"""Build CIFAR-10/100-LT (Cao/LDAM generator, docs/data.md) from the standard python pickles.

    python tools/make_cifar_lt.py --cifar_root DIR --dataset cifar100 --imb_factor 100 --output_path data/cifar_lt
        [--val-per-class K] [--selection shuffle|first] [--seed 0] [--format png|jpg] [--dry-run]

Input: DIR/cifar-10-batches-py/{data_batch_1..5,test_batch} or DIR/cifar-100-python/{train,test}
(DIR may also be that folder itself). Pickles are read with encoding="bytes": b"data" is N x 3072 uint8,
channel-first RGB; labels are b"labels" (CIFAR-10) or b"fine_labels" (CIFAR-100).

Training set: n_max = N_train / C (a float; 5000 or 500 for real CIFAR), n_c = exponential_counts(n_max, IF, C),
selected by `select_long_tail` (seeded legacy shuffle, or WB's "first" in file order). Test set: the full balanced
test set, unmodified. Optional val split: up to K of each class's images not kept for training (the head class
keeps all of its images, so it gets none); the training set is identical with or without it.

Output: <out>/<prefix>/images/<split>/<label>/<split>_<i>.png and <out>/<prefix>/<prefix>_{train,val,test}.json
with fpaths relative to the JSON's folder; prefix = cao_cifar{10|100}_imbalance{IF} ("wb_" instead of "cao_"
for --selection first, "_seed{S}" appended for a seed other than 0, so different subsets never share a name).
"""
import os
import pickle
import time

import numpy as np

from lib.data.image_folder_writer import IMAGE_FORMATS, write_image_folder_dataset
from lib.data.longtail import (SELECTION_MODES, describe_counts, exponential_counts, format_imb_factor,
                               format_validation_report, select_long_tail, validation_from_leftover)
from lib.utils import cli
from lib.utils.errors import UserError, exit_on_user_error

CIFAR = {
    "cifar10": {"folder": "cifar-10-batches-py", "train": [f"data_batch_{i}" for i in range(1, 6)],
                "test": ["test_batch"], "label_key": b"labels", "num_classes": 10},
    "cifar100": {"folder": "cifar-100-python", "train": ["train"], "test": ["test"],
                 "label_key": b"fine_labels", "num_classes": 100},
}
CIFAR_TRAIN_SIZE, CIFAR_TEST_SIZE = 50000, 10000
# the expected training-set sizes (docs/data.md); asserted whenever the input has real CIFAR's shape.
EXPECTED_TRAIN_SIZES = {("cifar10", 100): 12406, ("cifar10", 50): 13996, ("cifar10", 10): 20431,
                        ("cifar100", 100): 10847, ("cifar100", 50): 12608, ("cifar100", 10): 19573}


def find_cifar_folder(root, dataset):
    """DIR/<standard folder> if present, else DIR itself when it holds the pickles."""
    spec = CIFAR[dataset]
    for folder in (os.path.join(root, spec["folder"]), root):
        if all(os.path.isfile(os.path.join(folder, f)) for f in spec["train"] + spec["test"]):
            return folder
    need = ", ".join(spec["train"] + spec["test"])
    raise UserError(f"{dataset} pickles not found: expected {os.path.join(root, spec['folder'])}/ with {need}")


def _get(d, key):
    """Pickle keys are bytes with encoding='bytes' (CIFAR was pickled by Python 2); accept str too."""
    for k in (key, key.decode()):
        if k in d:
            return d[k]
    raise KeyError(key)


def read_cifar_pickle(path, label_key):
    """(data uint8 [N, 3072], labels int64 [N]) from one CIFAR python pickle."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        data, labels = _get(d, b"data"), _get(d, label_key)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, KeyError) as e:
        raise UserError(f"{path}: not a CIFAR python pickle with keys b'data' and {label_key!r} ({e!r})") from None
    data, labels = np.asarray(data), np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (data.shape[0],):
        raise UserError(f"{path}: expected uint8 data of shape N x 3072 and N labels, got {data.dtype} "
                        f"{data.shape} and {labels.shape} labels")
    return data, labels


def read_cifar(root, dataset):
    """{"train": (images uint8 [N,32,32,3] RGB, labels), "test": (...)}; CIFAR-10 batches concatenated 1..5."""
    spec, folder = CIFAR[dataset], find_cifar_folder(root, dataset)
    out = {}
    for split in ("train", "test"):
        parts = [read_cifar_pickle(os.path.join(folder, f), spec["label_key"]) for f in spec[split]]
        data = np.concatenate([p[0] for p in parts]) if len(parts) > 1 else parts[0][0]
        labels = np.concatenate([p[1] for p in parts])
        if labels.size and (labels.min() < 0 or labels.max() >= spec["num_classes"]):
            raise UserError(f"{folder}: {split} labels must lie in [0, {spec['num_classes']})")
        out[split] = (data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)
    return out


def is_cifar_shaped(labels, size, num_classes):
    """True for real CIFAR: `size` images, size / C of each class."""
    return labels.size == size and np.all(np.bincount(labels, minlength=num_classes) == size // num_classes)


def dataset_prefix(dataset, imb_factor, selection="shuffle", seed=0):
    head = "cao" if selection == "shuffle" else "wb"
    tail = "" if seed == 0 else f"_seed{seed}"
    return f"{head}_{dataset}_imbalance{format_imb_factor(imb_factor)}{tail}"


def plan_cifar_lt(train_labels, num_classes, imb_factor, seed=0, selection="shuffle", val_per_class=None):
    """Counts and selected positions: {"n_max", "counts", "train" (positions, class 0 first), "val" or None,
    "val_report"}. n_max = N / C as a float (= 50000 / C for real CIFAR)."""
    n_max = train_labels.size / float(num_classes)
    counts = exponential_counts(n_max, imb_factor, num_classes)
    kept, leftover = select_long_tail(train_labels, counts, seed=seed, mode=selection)
    plan = {"n_max": n_max, "counts": counts, "train": np.concatenate(kept), "val": None, "val_report": None}
    if val_per_class:
        # "shuffle" pools are already in random order; "first" pools are in file order, so permute them.
        val, report = validation_from_leftover(leftover, val_per_class,
                                               seed=None if selection == "shuffle" else seed)
        plan["val"], plan["val_report"] = np.concatenate(val), report
    return plan


def check_expected_sizes(dataset, imb_factor, data, plan):
    """Assert the standard training-set sizes when the input is real-CIFAR-shaped; return a note for the log."""
    C = CIFAR[dataset]["num_classes"]
    if not is_cifar_shaped(data["train"][1], CIFAR_TRAIN_SIZE, C):
        return f"input is not CIFAR-shaped ({data['train'][1].size} training images); size check skipped"
    if not is_cifar_shaped(data["test"][1], CIFAR_TEST_SIZE, C):
        raise AssertionError("a CIFAR-shaped training set needs the 10,000-image balanced test set")
    expected = EXPECTED_TRAIN_SIZES.get((dataset, float(imb_factor)))
    if expected is None:
        return f"no reference size for IF {format_imb_factor(imb_factor)}; size check skipped"
    if plan["train"].size != expected:  # explicit, so python -O cannot skip it
        raise AssertionError(f"{dataset} IF{imb_factor:g}: {plan['train'].size} training images, expected {expected}")
    return f"size check passed: {expected} training images, as in docs/data.md"


def parse_args(argv=None):
    p = cli.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cifar_root", "--cifar-root", required=True, help="folder holding cifar-10-batches-py/ or cifar-100-python/")
    p.add_argument("--dataset", required=True, choices=sorted(CIFAR))
    p.add_argument("--imb_factor", "--imb-factor", type=float, required=True, help="IF = n_max / n_min, e.g. 100")
    p.add_argument("--output_path", "--output-path", required=True)
    p.add_argument("--val-per-class", "--val_per_class", type=int, default=0,
                   help="also write a val split with up to K unused training images per class (default: none)")
    p.add_argument("--selection", choices=SELECTION_MODES, default="shuffle",
                   help="shuffle = Cao/LDAM (default), first = Weight Balancing (first n_c in file order)")
    p.add_argument("--seed", type=int, default=0, help="seed of the legacy NumPy shuffle (default 0, the standard)")
    p.add_argument("--format", choices=sorted(IMAGE_FORMATS), default="png",
                   help="png (lossless, default); jpg = quality 95, lossy, only to replicate ACE/NCL/old BoT")
    p.add_argument("--workers", type=int, default=None, help="processes writing images (default: all CPUs)")
    p.add_argument("--dry-run", action="store_true", help="print counts and check sizes; write nothing")
    return p.parse_args(argv)


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    if args.imb_factor < 1:
        raise UserError(f"--imb_factor must be >= 1, got {args.imb_factor}")
    if args.val_per_class < 0:
        raise UserError(f"--val-per-class must be >= 0, got {args.val_per_class}")
    t0 = time.time()
    C = CIFAR[args.dataset]["num_classes"]
    data = read_cifar(args.cifar_root, args.dataset)
    plan = plan_cifar_lt(data["train"][1], C, args.imb_factor, args.seed, args.selection, args.val_per_class)
    prefix = dataset_prefix(args.dataset, args.imb_factor, args.selection, args.seed)
    print(f"{prefix}: selection={args.selection} seed={args.seed} n_max={plan['n_max']:g}")
    print(f"train counts: {' '.join(map(str, plan['counts']))}")
    print(f"train: {describe_counts(plan['counts'])}")
    test_counts = np.bincount(data["test"][1], minlength=C).tolist()
    per_class = f"{test_counts[0]} per class" if len(set(test_counts)) == 1 else " ".join(map(str, test_counts))
    print(f"test: {data['test'][1].size} images, {per_class}")
    if plan["val"] is not None:
        print(format_validation_report(plan["val_report"]))
        if plan["val"].size == 0:
            raise UserError("--val-per-class: no class has unused training images (IF 1 keeps everything)")
    print(check_expected_sizes(args.dataset, args.imb_factor, data, plan))
    if args.dry_run:
        return 0

    train_x, train_y = data["train"]
    splits = {"train": (train_x[plan["train"]], train_y[plan["train"]], plan["train"])}
    if plan["val"] is not None:
        splits["val"] = (train_x[plan["val"]], train_y[plan["val"]], plan["val"])
    test_x, test_y = data["test"]
    splits["test"] = (test_x, test_y, np.arange(test_y.size))
    info = {"generator": "Cao/LDAM (docs/data.md)", "dataset": args.dataset,
            "imb_factor": args.imb_factor, "selection": args.selection, "seed": args.seed,
            "n_max": plan["n_max"], "val_per_class": args.val_per_class, "format": args.format,
            "train_counts": plan["counts"], "sizes": {k: int(v[1].size) for k, v in splits.items()},
            "source": os.path.abspath(args.cifar_root),
            "note": "source_index = position in the concatenated training (or test) pickles"}
    final = write_image_folder_dataset(args.output_path, prefix, splits, C, fmt=args.format,
                                       extra_json={"build_info.json": info}, workers=args.workers)
    sizes = ", ".join(f"{k} {v[1].size}" for k, v in splits.items())
    print(f"wrote {final} ({sizes}) in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    main()
