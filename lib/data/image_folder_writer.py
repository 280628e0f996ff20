"""Write in-memory image splits as an image folder + annotation JSONs (docs/data.md layout).

Layout of one dataset `<out>/<prefix>/`:

    images/<split>/<label>/<split>_<i>.<ext>     i = running index within the split, from 0
    <prefix>_<split>.json                        {"annotations": [{"image_id": i, "fpath": "images/...",
                                                   "category_id": label, "im_height": H, "im_width": W,
                                                   "source_index": position in the source array}],
                                                  "num_classes": C}

fpaths are RELATIVE to the JSON's folder (our loader resolves them against DATASET.ROOT or that folder).
Everything is written into `<out>/.<prefix>.partial/`, validated, and only then renamed to `<out>/<prefix>`,
so a crash never leaves a half-written dataset under the final name.
"""
import contextlib
import json
import multiprocessing
import os
import shutil
import struct
import zlib

import numpy as np
from PIL import Image

from ..utils.atomic import write_json, write_text
from ..utils.errors import UserError
from ..utils.registry import choose
from .annotations import load_annotations

IMAGE_FORMATS = {"png": "PNG", "jpg": "JPEG"}
JPEG_QUALITY = 95  # only for replicating the JPEG-degraded CIFAR of ACE/NCL/old BoT; PNG is lossless
_CHUNK = 1000
PARALLEL_MIN_IMAGES = 4000  # below this a process pool costs more than it saves


def split_json_name(prefix, split):
    return f"{prefix}_{split}.json"


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def encode_png(img):
    """Lossless PNG bytes of a uint8 HxW (grayscale, colour type 0) or HxWx3 (RGB, colour type 2) array.

    A minimal encoder (bit depth 8, filter 0 on every row, zlib level 6, no interlace): for tiny images it
    needs about half the CPU of Pillow's, which matters for tens of thousands of 28x28 / 32x32 files.
    Any PNG reader decodes it to the same pixels (the tests round-trip it through Pillow).
    """
    img = np.ascontiguousarray(img, dtype=np.uint8)
    h, w = img.shape[:2]
    rows = np.zeros((h, 1 + img[0].size), dtype=np.uint8)  # leading 0 = filter type "None"
    rows[:, 1:] = img.reshape(h, -1)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0 if img.ndim == 2 else 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + _png_chunk(b"IEND", b""))


def _save_chunk(task):
    """Worker: encode and write one block of images (uint8 HxW -> grayscale, HxWx3 -> RGB)."""
    paths, images, fmt = task
    for path, img in zip(paths, images):
        if fmt == "png":
            with open(path, "wb") as f:
                f.write(encode_png(img))
        else:
            Image.fromarray(np.ascontiguousarray(img)).save(path, format=IMAGE_FORMATS[fmt], quality=JPEG_QUALITY)
    return len(paths)


def _check_split(name, images, labels, num_classes):
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] != 3):
        raise UserError(f"split '{name}': images must be uint8 [N,H,W] or [N,H,W,3], got {images.dtype} "
                        f"{images.shape}")
    if labels.shape != (images.shape[0],):
        raise UserError(f"split '{name}': {images.shape[0]} images but labels of shape {labels.shape}")
    if images.shape[0] == 0:
        raise UserError(f"split '{name}' is empty")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UserError(f"split '{name}': labels must lie in [0, {num_classes})")
    return images, labels


def write_image_folder_dataset(out_dir, prefix, splits, num_classes, fmt="png", extra_json=None,
                               workers=None, log=print):
    """Write `splits` = {split: (images, labels[, source_indices])} to `<out_dir>/<prefix>` atomically.

    images: uint8 [N,H,W] (grayscale PNG, mode L) or [N,H,W,3] (RGB). source_indices (optional) are
    stored per entry as "source_index" (an extra key the loader ignores) for provenance.
    extra_json: {file name: JSON object} written next to the split JSONs (e.g. classes.json, build_info.json).
    workers: processes for image encoding; None = all CPUs when there are many images, else 1.
    An existing `<out_dir>/<prefix>` is replaced only after the new one is complete.
    Returns the final dataset folder.
    """
    choose(fmt, IMAGE_FORMATS, "image format")
    checked = {}
    for name, split in splits.items():
        images, labels = _check_split(name, split[0], split[1], num_classes)
        src = np.asarray(split[2], dtype=np.int64) if len(split) > 2 and split[2] is not None else None
        checked[name] = (images, labels, src)

    out_dir = os.path.abspath(os.fspath(out_dir))
    final = os.path.join(out_dir, prefix)
    partial = os.path.join(out_dir, f".{prefix}.partial")
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(partial):  # left over from an interrupted run
        shutil.rmtree(partial)
    os.makedirs(partial)
    try:
        tasks, n_total = [], 0
        for name, (images, labels, src) in checked.items():
            anns, rel_paths = [], []
            for c in np.unique(labels):
                os.makedirs(os.path.join(partial, "images", name, str(int(c))), exist_ok=True)
            for i, y in enumerate(labels.tolist()):
                rel = f"images/{name}/{y}/{name}_{i}.{fmt}"
                rel_paths.append(rel)
                ann = {"image_id": i, "fpath": rel, "category_id": y,
                       "im_height": int(images.shape[1]), "im_width": int(images.shape[2])}
                if src is not None:
                    ann["source_index"] = int(src[i])
                anns.append(ann)
            # json.dumps uses the C encoder (json.dump does not): ~5x faster on large splits
            write_text(os.path.join(partial, split_json_name(prefix, name)),
                       json.dumps({"annotations": anns, "num_classes": int(num_classes)}))
            for s in range(0, len(rel_paths), _CHUNK):
                paths = [os.path.join(partial, p) for p in rel_paths[s:s + _CHUNK]]
                tasks.append((paths, images[s:s + _CHUNK], fmt))
            n_total += len(rel_paths)
        _run_tasks(tasks, n_total, workers)
        for fname, obj in (extra_json or {}).items():
            write_json(os.path.join(partial, fname), obj, indent=1)
        for name in checked:  # the output must load through our own loader before it gets its final name
            load_annotations(os.path.join(partial, split_json_name(prefix, name)), check_images=True)
        _replace_dir(partial, final, log)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def _run_tasks(tasks, n_total, workers):
    if workers is None:
        workers = (os.cpu_count() or 1) if n_total >= PARALLEL_MIN_IMAGES else 1
    workers = max(1, min(int(workers), len(tasks)))
    if workers == 1:
        for t in tasks:
            _save_chunk(t)
        return
    with multiprocessing.get_context("fork" if os.name == "posix" else "spawn").Pool(workers) as pool:
        for _ in pool.imap_unordered(_save_chunk, tasks):
            pass


def _replace_dir(partial, final, log):
    """Rename partial -> final; an existing final is moved aside first and deleted afterwards."""
    old = None
    if os.path.exists(final):
        old = os.path.join(os.path.dirname(final), f".{os.path.basename(final)}.old")
        if os.path.exists(old):
            shutil.rmtree(old)
        os.rename(final, old)
    os.rename(partial, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
        log(f"replaced existing {final}")
    with contextlib.suppress(OSError):  # make the rename durable
        fd = os.open(os.path.dirname(final), os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
