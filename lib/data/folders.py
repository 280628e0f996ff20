"""Image folder trees (ROOT/<class>/<image>, as torchvision's ImageFolder reads them) and their bad input.

`scan_trees` lists ROOT, or its train/ val/ test/ trees, reads every file once (bytes hashed, image fully
decoded) and returns the usable images per split and class. What it leaves out is one `Skips` line each:
  stray      a file directly in ROOT (or a split folder), outside any class folder
  loop       a symbolic link back to a folder already listed (a loop, or a second link to it)
  unreadable a file that is not a readable image: corrupt, truncated, zero bytes, not an image, broken link
  duplicate  the same bytes as an image listed before it (train, val, test; classes and files by name):
             the first is kept, so no image is both in train and in a held-out split
  empty      a class folder with no usable image: the class is left out
  unknown    a class folder in val/ or test/ without usable images in train/: its images are left out
Hidden files and folders (names starting with ".") are ignored. Nothing is written here.
"""
import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, UnidentifiedImageError

from ..utils.errors import UserError

SPLIT_FOLDERS = ("train", "val", "test")


class Skips:
    """What was left out: one line each (printed as found) and counts by kind."""

    def __init__(self, log=print):
        self.items, self.log = [], log

    def add(self, kind, path, why):
        self.items.append({"kind": kind, "path": path, "why": why})
        self.log(f"skip ({kind}): {path}: {why}")

    def files(self):
        return sum(1 for s in self.items if s["kind"] not in ("empty", "unknown", "loop"))

    def summary(self):
        kinds = {}
        for s in self.items:
            kinds[s["kind"]] = kinds.get(s["kind"], 0) + 1
        return ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or "nothing"


def walk_files(folder, warn):
    """Files below `folder`, sorted, following symbolic links; a link to a folder above it (a loop) or to a folder
    already listed is not entered: `warn(path, why)`."""
    out, seen = [], {os.path.realpath(folder)}
    for here, dirs, files in os.walk(folder, followlinks=True):
        real_here, keep = os.path.realpath(here), []
        for d in sorted(d for d in dirs if not d.startswith(".")):
            full = os.path.join(here, d)
            real = os.path.realpath(full)
            if real == real_here or real_here.startswith(real + os.sep):
                warn(full, f"symbolic link loop (to {real}, a folder above it): not entered")
            elif real in seen:
                warn(full, f"symbolic link to a folder already listed ({real}): not entered again")
            else:
                seen.add(real)
                keep.append(d)
        dirs[:] = keep
        out += [os.path.join(here, f) for f in sorted(files) if not f.startswith(".")]
    return out


def _entries(folder):
    return sorted(e for e in os.listdir(folder) if not e.startswith("."))


def split_trees(root):
    """{split: folder}: ROOT's train/ val/ test/ when it has train/ and nothing else but those; else {"all": ROOT}."""
    if not os.path.isdir(root):
        raise UserError(f"{root}: not a folder (give an ImageFolder tree ROOT/<class>/<image> or ROOT/train/...)")
    names = _entries(root)
    dirs = [n for n in names if os.path.isdir(os.path.join(root, n))]
    if "train" in dirs and set(dirs) <= set(SPLIT_FOLDERS):
        return {s: os.path.join(root, s) for s in SPLIT_FOLDERS if s in dirs}
    return {"all": root}


def class_files(tree, skips):
    """{class folder name: [files below it]} of one ImageFolder tree (stray files and loops go to `skips`)."""
    out = {}
    for name in _entries(tree):
        path = os.path.join(tree, name)
        if os.path.isdir(path):
            out[name] = walk_files(path, lambda p, why: skips.add("loop", p, why))
        else:
            skips.add("stray", path, "a file outside any class folder")
    return out


def inspect_image(path):
    """(sha1 of the bytes, (width, height)) of a readable image, or (None, why)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        return None, f"cannot read ({e.strerror or e})"
    if not data:
        return None, "empty file (0 bytes)"
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a full decode: truncated files fail here
            size = im.size
    except UnidentifiedImageError:
        return None, "not an image file (no image format recognised)"
    except Exception as e:  # noqa: BLE001 - any decoder failure means the file is unusable
        return None, f"not a readable image ({type(e).__name__}: {str(e)[:80]})"
    return hashlib.sha1(data).hexdigest(), size


def scan_trees(root, skips, workers=8):
    """{split ("all" or train/val/test): {class: [(path, (width, height))]}} of the usable images under ROOT."""
    trees = split_trees(root)
    listed = {split: class_files(folder, skips) for split, folder in trees.items()}
    jobs = [(s, c, p) for s, classes in listed.items() for c, files in classes.items() for p in files]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        found = list(pool.map(lambda job: inspect_image(job[2]), jobs, chunksize=16))
    usable = {s: {c: [] for c in classes} for s, classes in listed.items()}
    first = {}  # sha1 -> (split, class, path) of the first copy
    for (split, cls, path), (digest, info) in zip(jobs, found):
        if digest is None:
            skips.add("unreadable", path, info)
        elif digest in first:
            s0, c0, p0 = first[digest]
            where = "" if (s0, c0) == (split, cls) else f" ({s0}/{c0}, not {split}/{cls})"
            skips.add("duplicate", path, f"same bytes as {p0}{where}: the first is kept")
        else:
            first[digest] = (split, cls, path)
            usable[split][cls].append((path, info))
    return _drop_empty_and_unknown(usable, trees, skips)


def _drop_empty_and_unknown(usable, trees, skips):
    train = usable.get("train", usable.get("all"))
    for split, classes in usable.items():
        for cls in list(classes):
            folder = os.path.join(trees[split], cls)
            if split in ("val", "test") and cls not in train:  # train comes first: its empty classes are gone
                skips.add("unknown", folder, f"class '{cls}' has no usable image in train/: its "
                                             f"{len(classes[cls])} images are left out")
                del classes[cls]
            elif not classes[cls]:
                skips.add("empty", folder, "no usable image: the class is left out")
                del classes[cls]
    if not train:
        raise UserError(f"{trees.get('train', trees.get('all'))}: no class folder with a readable image")
    return usable
