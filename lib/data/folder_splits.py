"""From scanned class folders (folders.py) to train / val / test annotation files.

Stratified split rule, per class with n usable images: val gets floor(n * VAL_FRACTION), test floor(n *
TEST_FRACTION), train the rest, drawn by one seeded NumPy RandomState (classes in name order). A class too small
to give each requested held-out split at least one image (n < 1 / fraction) keeps ALL its images in train.
Long-tailed subset (--imb-factor): after the split, train keeps n_c = exponential_counts(n_max, IF, C) images of
the c-th class in name order (Cao et al.'s profile; longtail.select_long_tail with the same seed).
"""
import math
import os
import shutil

import numpy as np

from ..utils.atomic import write_json
from ..utils.errors import UserError
from .annotations import read_table
from .image_folder_writer import _replace_dir
from .longtail import exponential_counts, select_long_tail

OUTPUT_FILES = ("train.json", "val.json", "test.json", "classes.json", "build_info.json")


def carve(classes, fractions, seed):
    """Split {class: [items]} into {"train": ..., <split>: ...} for {split: fraction}; returns (splits, too small
    [(class, n)])."""
    rng = np.random.RandomState(seed)
    splits = {"train": {}, **{s: {} for s in fractions}}
    too_small = []
    for name in sorted(classes):
        items = classes[name]
        order = rng.permutation(len(items))
        sizes = {s: math.floor(len(items) * f) for s, f in fractions.items()}
        if any(f > 0 and sizes[s] == 0 for s, f in fractions.items()):
            too_small.append((name, len(items)))
            sizes = {s: 0 for s in fractions}
        start = 0
        for s, k in sizes.items():
            splits[s][name] = sorted(items[i] for i in order[start:start + k])
            start += k
        splits["train"][name] = sorted(items[i] for i in order[start:])
    return splits, too_small


def long_tail_subset(train, imb_factor, n_max, seed):
    """Train keeps exponential_counts(n_max, IF, C) images per class (classes in name order); n_max defaults to
    the smallest class, so every class can give its share."""
    names = sorted(train)
    n_max = n_max or min(len(train[c]) for c in names)
    counts = exponential_counts(n_max, imb_factor, len(names))
    if min(counts) < 1:
        raise UserError(f"--imb-factor {imb_factor:g} with n_max {n_max} leaves class '{names[counts.index(0)]}' "
                        f"without training images: lower --imb-factor or raise --n-max")
    for name, n in zip(names, counts):
        if len(train[name]) < n:
            raise UserError(f"--imb-factor: class '{name}' has {len(train[name])} training images but the profile "
                            f"asks for {n} (lower --n-max, now {n_max})")
    labels = np.concatenate([np.full(len(train[c]), i) for i, c in enumerate(names)])
    flat = [item for c in names for item in train[c]]
    kept, _ = select_long_tail(labels, counts, seed=seed, mode="shuffle")
    return {c: sorted(flat[i] for i in kept[k]) for k, c in enumerate(names)}, counts


def class_order(train, rank_by_count):
    """Class names in id order: by name, or by training count (largest first, then by name)."""
    if rank_by_count:
        return sorted(train, key=lambda c: (-len(train[c]), c))
    return sorted(train)


def annotation_file(split, names):
    """The annotation JSON object of one split ({class: [(path, (w, h))]}), absolute fpaths."""
    ids = {c: i for i, c in enumerate(names)}
    anns = []
    for c in names:
        for path, (w, h) in split.get(c, []):
            anns.append({"image_id": len(anns), "fpath": os.path.abspath(path), "category_id": ids[c],
                         "im_height": int(h), "im_width": int(w)})
    return {"annotations": anns, "num_classes": len(names)}


def write_outputs(out_dir, files, log=print):
    """Write {file name: JSON object} as the folder `out_dir`, atomically: into a hidden sibling folder, every
    annotation file loaded back through read_table, then renamed. An existing `out_dir` is replaced only when it
    holds nothing but this tool's files."""
    out_dir = os.path.abspath(out_dir)
    if os.path.isdir(out_dir):
        foreign = sorted(set(os.listdir(out_dir)) - set(OUTPUT_FILES))
        if foreign:
            raise UserError(f"--output-dir {out_dir} holds other files ({', '.join(foreign[:3])}"
                            f"{' ...' if len(foreign) > 3 else ''}): give a new or empty folder")
    elif os.path.exists(out_dir):
        raise UserError(f"--output-dir {out_dir} is a file")
    partial = os.path.join(os.path.dirname(out_dir), f".{os.path.basename(out_dir)}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    try:
        for name, obj in files.items():
            write_json(os.path.join(partial, name), obj, indent=1)
        for name in files:
            if name in OUTPUT_FILES[:3]:
                read_table(os.path.join(partial, name))
        _replace_dir(partial, out_dir, log)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out_dir
