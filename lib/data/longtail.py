"""The exponential long-tail profile of Cao et al. and the seeded image selection (docs/data.md).

Notation: C classes, n_c images kept for class c, n_max = the largest class, IF = n_max / n_min.
"""
import numpy as np

from ..utils.errors import UserError
from ..utils.registry import choose
from ..utils.shots import shot_groups

SELECTION_MODES = ("shuffle", "first")


def exponential_counts(n_max, imb_factor, num_classes):
    """n_i = int(n_max * (1/IF)^(i/(C-1))), float64, truncated; class 0 is the largest."""
    if num_classes == 1:
        return [int(n_max)]
    rho = 1.0 / float(imb_factor)
    return [int(float(n_max) * rho ** (i / (num_classes - 1.0))) for i in range(num_classes)]


def select_long_tail(labels, counts, seed=0, mode="shuffle"):
    """Pick n_c images of each class c from a (balanced) training array; return (kept, leftover).

    mode="shuffle" (Cao/LDAM, the default):
      1. one legacy MT19937 generator seeded once with `seed` (a private ``np.random.RandomState(seed)``;
         it yields the same stream as ``np.random.seed(seed)`` + ``np.random.shuffle``, without touching
         NumPy's global state);
      2. for c = 0 .. C-1: the positions of class c in ascending (file) order are shuffled in place with
         ``RandomState.shuffle`` and the first n_c are kept; no other draws are made in between;
      3. the training set is kept[0] + kept[1] + ... (class 0 first).
    mode="first" (Weight Balancing): the first n_c positions of class c in file order, no shuffle.

    `labels`: int array of length N with values in [0, C), C = len(counts). Returns two lists of C int64
    arrays of positions into `labels`: kept[c] (length n_c) and leftover[c] (the other images of class c,
    in the shuffled order in "shuffle" mode, in file order in "first" mode). Raises UserError when a
    label is out of range or a class has fewer than n_c images.
    """
    choose(mode, SELECTION_MODES, "long-tail selection")
    labels = np.asarray(labels)
    counts = [int(n) for n in counts]
    C = len(counts)
    if labels.ndim != 1:
        raise UserError(f"labels must be a 1-D array, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= C):
        raise UserError(f"labels must lie in [0, {C}) for {C} class counts, got range "
                        f"[{labels.min()}, {labels.max()}]")
    rng = np.random.RandomState(seed) if mode == "shuffle" else None
    kept, leftover = [], []
    for c, n_c in enumerate(counts):
        idx = np.flatnonzero(labels == c).astype(np.int64)  # ascending file order
        if n_c < 0 or n_c > idx.size:
            raise UserError(f"class {c} has {idx.size} images but the long-tail profile asks for {n_c}")
        if rng is not None:
            rng.shuffle(idx)
        kept.append(idx[:n_c].copy())
        leftover.append(idx[n_c:].copy())
    return kept, leftover


def validation_from_leftover(leftover_per_class, k, seed=None):
    """A validation split of up to k images per class from the images the selection did NOT keep.

    Takes the first k images of each class's leftover pool. In "shuffle" mode the pools are already in
    random (legacy-shuffle) order, so pass seed=None. With an int `seed` each pool is first permuted by a
    private ``np.random.RandomState(seed)`` (classes in order 0..C-1), e.g. for "first" mode whose pools
    are in file order; the global generator and the inputs are never modified.

    The training set is unchanged: it is whatever `select_long_tail` kept, with or without a val split.
    A class whose pool has fewer than k images gets what is there, possibly 0. Under CIFAR's profile
    the head class keeps all its images (n_0 = n_max), so its pool is empty and it gets no validation images.

    Returns (val_per_class: list of C int64 arrays, report: list of C dicts
    {"class", "requested", "available", "taken"}).
    """
    k = int(k)
    if k < 0:
        raise UserError(f"validation images per class must be >= 0, got {k}")
    rng = np.random.RandomState(seed) if seed is not None else None
    val, report = [], []
    for c, pool in enumerate(leftover_per_class):
        pool = np.asarray(pool, dtype=np.int64).copy()
        if rng is not None:
            rng.shuffle(pool)
        take = pool[:k].copy()
        val.append(take)
        report.append({"class": c, "requested": k, "available": int(pool.size), "taken": int(take.size)})
    return val, report


def format_validation_report(report):
    """One line: total, and the classes that got fewer than requested (e.g. the head class)."""
    total = sum(r["taken"] for r in report)
    short = [f"{r['class']}:{r['taken']}/{r['requested']}" for r in report if r["taken"] < r["requested"]]
    line = f"val: {total} images, {len(report)} classes"
    if short:
        line += f"; classes with too few unused images (class:taken/requested): {' '.join(short)}"
    return line


def describe_counts(counts):
    """A short summary of per-class counts: N, C, max/min, IF, many/medium/few (standard rule)."""
    counts = [int(n) for n in counts]
    g = shot_groups(counts)
    lo, hi = min(counts), max(counts)
    imb = f"{hi / lo:g}" if lo > 0 else "inf"
    return (f"N={sum(counts)}, C={len(counts)}, max/min={hi}/{lo} (IF {imb}), "
            f"many/medium/few={len(g['many'])}/{len(g['medium'])}/{len(g['few'])}")


def format_imb_factor(imb_factor):
    """IF for file names: '100' for 100.0, '12.5' otherwise."""
    f = float(imb_factor)
    return str(int(f)) if f.is_integer() else f"{f:g}"
