"""The annotation JSON format (specs/datasets.md §1) and its validator.

    {"annotations": [{"image_id": int, "fpath": str, "category_id": int,
                      "im_height": int?, "im_width": int?}, ...],
     "num_classes": C}

Every tool and dataset goes through `load_annotations` / `validate_annotations`, so a bad
file always gives the same one-line `UserError` naming the file and the first bad entry.
"""
import json
import os

from ..utils.errors import UserError


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def validate_annotations(obj, source="<json>", require_unique_ids=True):
    """Check structure and labels; return (annotations, num_classes). Raises UserError."""
    if not isinstance(obj, dict):
        raise UserError(f"{source}: top level must be an object with 'annotations' and 'num_classes'")
    for key in ("annotations", "num_classes"):
        if key not in obj:
            raise UserError(f"{source}: missing key '{key}'")
    C = obj["num_classes"]
    if not _is_int(C) or C < 1:
        raise UserError(f"{source}: 'num_classes' must be an integer >= 1, got {C!r}")
    anns = obj["annotations"]
    if not isinstance(anns, list):
        raise UserError(f"{source}: 'annotations' must be a list")
    if not anns:
        raise UserError(f"{source}: 'annotations' is empty")
    seen = set()
    for i, a in enumerate(anns):
        if not isinstance(a, dict):
            raise UserError(f"{source}: annotation {i} is not an object")
        fp = a.get("fpath")
        if not isinstance(fp, str) or not fp:
            raise UserError(f"{source}: annotation {i} has no 'fpath' string")
        y = a.get("category_id")
        if not _is_int(y):
            raise UserError(f"{source}: annotation {i} ({fp}): 'category_id' must be an integer, got {y!r}")
        if not 0 <= y < C:
            raise UserError(f"{source}: annotation {i} ({fp}): category_id {y} out of range [0, {C})")
        if require_unique_ids and "image_id" in a:
            iid = a["image_id"]
            if iid in seen:
                raise UserError(f"{source}: annotation {i} ({fp}): duplicate image_id {iid!r}")
            seen.add(iid)
    return anns, C


def read_json(path):
    """Read a JSON file; missing or malformed files are one-line UserErrors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"annotation file not found: {path}")
    try:
        with open(path, "rb") as f:
            return json.loads(f.read())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: malformed JSON ({e})") from None


def resolve_path(fpath, root, json_path):
    """Absolute paths as is; relative ones against `root`, else against the JSON's folder."""
    if os.path.isabs(fpath):
        return fpath
    base = root if root else os.path.dirname(os.path.abspath(json_path))
    return os.path.join(base, fpath)


def load_annotations(path, root="", check_images=True):
    """Load + validate a JSON. Returns (entries, num_classes) where each entry is a dict with
    the resolved absolute-or-root-relative 'path' and int 'label' added."""
    anns, C = validate_annotations(read_json(path), source=os.fspath(path))
    entries = []
    for a in anns:
        p = resolve_path(a["fpath"], root, path)
        entries.append({**a, "path": p, "label": a["category_id"]})
    if check_images:
        check_image_files(entries, path)
    return entries, C


def check_image_files(entries, source):
    """Every image exists and has a readable header (Pillow reads the header only, no pixels)."""
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    def probe(i):
        p = entries[i]["path"]
        if not os.path.isfile(p):
            return f"{source}: annotation {i}: image not found: {p}"
        try:
            with Image.open(p):
                pass
        except Exception as e:  # noqa: BLE001 - any decoder failure means the file is unusable
            return f"{source}: annotation {i}: cannot read image {p} ({type(e).__name__})"
        return None

    with ThreadPoolExecutor(max_workers=8) as pool:
        for problem in pool.map(probe, range(len(entries)), chunksize=256):
            if problem:
                raise UserError(problem)


def class_counts(labels, num_classes):
    """n_c for c in [0, C): the per-class training counts used by methods, samplers, evaluation."""
    counts = [0] * num_classes
    for y in labels:
        counts[y] += 1
    return counts
