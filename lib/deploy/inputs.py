"""Images to predict: files, folders (recursive) and JSON / CSV lists, loaded so that a bad file is a warning.

Folders: every file below, in sorted order, following symbolic links (a folder reached twice, e.g. through a
link loop, is a warning); hidden files and folders (names starting with ".") are left out. A JSON list is a list of paths, a list of objects
with "fpath" (or "path"), or an annotation file ({"annotations": [...]}); a CSV list has a column "path" or
"fpath", else its first column holds the paths. Relative paths in a list resolve against the list's folder.
"""
import csv
import os

import torch

from ..data.annotations import read_json, resolve_path
from ..data.dataset import decode_image
from ..data.folders import walk_files
from ..utils.errors import UserError

PATH_COLUMNS = ("path", "fpath")


def _json_list(path):
    obj = read_json(path)
    items = obj.get("annotations") if isinstance(obj, dict) else obj
    if not isinstance(items, list):
        raise UserError(f"{path}: a JSON list of images must be a list or hold 'annotations'")
    out = []
    for i, item in enumerate(items):
        p = item if isinstance(item, str) else (item.get("fpath") or item.get("path")) if isinstance(item, dict) else None
        if not isinstance(p, str) or not p:
            raise UserError(f"{path}: entry {i} is neither a path nor an object with 'fpath'")
        out.append(resolve_path(p, "", path))
    return out


def _csv_list(path):
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r]
    if not rows:
        return []
    header = [c.strip().lower() for c in rows[0]]
    col = next((header.index(c) for c in PATH_COLUMNS if c in header), None)
    if col is None:
        col, body = 0, rows
    else:
        body = rows[1:]
    return [resolve_path(r[col], "", path) for r in body if len(r) > col and r[col]]


def list_inputs(inputs, warn=print):
    """The image paths named by `inputs` (files, folders, .json / .csv lists), in order; a missing input is
    a warning."""
    paths = []
    for item in inputs:
        if os.path.isdir(item):
            paths += walk_files(item, lambda p, why: warn(f"{p}: {why}"))
        elif not os.path.exists(item):
            warn(f"{item}: not found, skipped")
        elif item.lower().endswith(".json"):
            paths += _json_list(item)
        elif item.lower().endswith(".csv"):
            paths += _csv_list(item)
        else:
            paths.append(item)
    return paths


class ImageList(torch.utils.data.Dataset):
    """Decoded, transformed images of `paths`; an unreadable one gives {"index", "error"} instead of failing."""

    def __init__(self, paths, transform, color_space="RGB", exif_transpose=False):
        self.paths, self.transform = list(paths), transform
        self.color_space, self.exif_transpose = color_space, exif_transpose

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            image = self.transform(decode_image(self.paths[i], self.color_space, self.exif_transpose))
        except UserError as e:
            return {"index": i, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - a transform failing on one odd image must not stop the run
            return {"index": i, "error": f"cannot transform image {self.paths[i]}: {type(e).__name__}: {e}"}
        return {"index": i, "image": image}


def collate_good_and_bad(items):
    """{"image": stacked images or None, "index": their indices, "errors": [(index, message)]}."""
    good = [it for it in items if "image" in it]
    return {"image": torch.stack([it["image"] for it in good]) if good else None,
            "index": torch.tensor([it["index"] for it in good], dtype=torch.long),
            "errors": [(it["index"], it["error"]) for it in items if "error" in it]}


def image_loader(dataset, batch_size, workers, pin_memory=False):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                       collate_fn=collate_good_and_bad, pin_memory=pin_memory)
