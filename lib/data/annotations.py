"""The annotation JSON format (docs/data.md), its validator and a compact table of its entries.

    {"annotations": [{"image_id": int, "fpath": str, "category_id": int,
                      "im_height": int?, "im_width": int?}, ...],
     "num_classes": C}

Every tool and dataset goes through `validate_annotations` (dicts) or `read_table` (the datasets' compact
form), so a bad file always gives the same one-line `UserError` naming the file and the first bad entry.

Large files (iNaturalist 2018: 437,513 entries). `read_table` keeps no per-entry Python objects: the
`fpath`s are one UTF-8 byte string plus an int64 offset array, the labels one int64 array (~45 MB for
iNat 2018 where the parsed dicts take ~200 MB, and nothing that DataLoader workers' reference counting
would copy page by page); the parsed dicts are dropped once the columns are built. Image checks:
`peek_image_root` looks at the first few `fpath`s of the raw file before it is parsed (a moved or
unmounted image root is reported at once, naming the missing folder and the first file);
`check_image_files` checks a few entries spread over the file, then lists each image folder once
(`os.listdir`) instead of one `stat` per file, and reads image headers only for sets of up to
HEADER_CHECK_ALL images (larger sets: a sample; any other unreadable file is reported, with its JSON and
entry, when a batch loads it).
"""
import json
import os
import re

import numpy as np

from ..utils.errors import UserError

HEADER_CHECK_ALL = 20_000  # up to this many images, every image header is read at start-up
HEADER_CHECK_SAMPLE = 512  # above it, this many (spread over the file) are, and the rest when loaded
EARLY_SAMPLE = 16  # entries checked before the full scan
_MISSING = object()  # an annotation without "image_id"


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _row(a):
    """The part of an annotation object the loader uses: (fpath, category_id, image_id or _MISSING)."""
    return (a.get("fpath"), a.get("category_id"), a.get("image_id", _MISSING))


def _check_top(obj, source):
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
    return anns, C


def _first_problem(rows, C, source, require_unique_ids):
    """Entry by entry (rows: _row tuples; anything else is not an annotation object); raises at the first."""
    seen = set()
    for i, r in enumerate(rows):
        if isinstance(r, dict):  # an object with neither fpath nor category_id
            r = _row(r)
        if not isinstance(r, tuple):
            raise UserError(f"{source}: annotation {i} is not an object")
        fp, y, iid = r
        if not isinstance(fp, str) or not fp:
            raise UserError(f"{source}: annotation {i} has no 'fpath' string")
        if not _is_int(y):
            raise UserError(f"{source}: annotation {i} ({fp}): 'category_id' must be an integer, got {y!r}")
        if not 0 <= y < C:
            raise UserError(f"{source}: annotation {i} ({fp}): category_id {y} out of range [0, {C})")
        if require_unique_ids and iid is not _MISSING:
            try:
                if iid in seen:
                    raise UserError(f"{source}: annotation {i} ({fp}): duplicate image_id {iid!r}")
                seen.add(iid)
            except TypeError:
                raise UserError(f"{source}: annotation {i} ({fp}): image_id {iid!r} is not a number or string") from None


def _validate_rows(rows, C, source, require_unique_ids=True):
    """Vectorised checks of every row; on any doubt the entry-by-entry pass names the first bad entry.
    Returns (fpaths, category_ids as int64 array)."""
    try:
        if set(map(type, rows)) != {tuple}:
            raise ValueError
        fpaths = [r[0] for r in rows]
        if set(map(type, fpaths)) != {str} or "" in fpaths:
            raise ValueError
        cats = [r[1] for r in rows]
        if set(map(type, cats)) != {int}:
            raise ValueError
        labels = np.array(cats, dtype=np.int64)
        if labels.min() < 0 or labels.max() >= C:
            raise ValueError
        if require_unique_ids:
            ids = [r[2] for r in rows if r[2] is not _MISSING]
            if len(set(ids)) != len(ids):
                raise ValueError
    except (ValueError, TypeError, OverflowError):
        _first_problem(rows, C, source, require_unique_ids)
        raise AssertionError(f"{source}: validation disagreement")  # unreachable: the slow pass raised
    return fpaths, labels


def validate_annotations(obj, source="<json>", require_unique_ids=True):
    """Check structure and labels of a parsed JSON object; return (annotations, num_classes). Raises UserError."""
    anns, C = _check_top(obj, source)
    rows = [_row(a) if isinstance(a, dict) else a for a in anns]
    _validate_rows(rows, C, source, require_unique_ids)
    return anns, C


def read_json(path):
    """Read a JSON file; missing or malformed files are one-line UserErrors."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        return json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: malformed JSON ({e})") from None


def json_base(root, json_path):
    """The folder relative fpaths resolve against: DATASET.ROOT if set, else the JSON's folder."""
    return root if root else os.path.dirname(os.path.abspath(json_path))


def resolve_path(fpath, root, json_path):
    """Absolute paths as is; relative ones against `root`, else against the JSON's folder."""
    if os.path.isabs(fpath):
        return fpath
    return os.path.join(json_base(root, json_path), fpath)


class AnnotationTable:
    """The entries of one annotation JSON as columns.

    `category_ids`: int64 array (N,); `fpath(i)` / `path(i)`: the stored and the resolved path of entry i
    (relative fpaths against `base`: DATASET.ROOT, else the JSON's folder). The N fpaths live in one
    UTF-8 `bytes` object, entry i at blob[starts[i] : starts[i + 1] - 1] (each followed by a NUL byte).
    """

    def __init__(self, source, fpaths, category_ids, num_classes, base):
        self.source = os.fspath(source)
        self.num_classes = int(num_classes)
        self.base = base
        self.category_ids = np.asarray(category_ids, dtype=np.int64)
        text = "\0".join(fpaths) + "\0"
        self._blob = text.encode("utf-8")
        if len(self._blob) == len(text):  # ASCII: one byte per character
            lengths = np.fromiter(map(len, fpaths), dtype=np.int64, count=len(fpaths))
        else:
            lengths = np.fromiter((len(f.encode("utf-8")) for f in fpaths), dtype=np.int64, count=len(fpaths))
        self._starts = np.zeros(len(fpaths) + 1, dtype=np.int64)
        np.cumsum(lengths + 1, out=self._starts[1:])
        if os.sep == "/":  # every path starts with "/": the byte at every start
            self._all_absolute = bool((np.frombuffer(self._blob, np.uint8)[self._starts[:-1]] == ord("/")).all())
        else:
            self._all_absolute = all(map(os.path.isabs, fpaths))

    def __len__(self):
        return len(self.category_ids)

    def fpath(self, i):
        s = self._starts
        return self._blob[s[i]:s[i + 1] - 1].decode("utf-8")

    def path(self, i):
        fp = self.fpath(i)
        return fp if os.path.isabs(fp) else os.path.join(self.base, fp)

    def fpaths(self):
        """All stored fpaths (a new list of N strings: for scans, not to keep)."""
        return self._blob[:-1].decode("utf-8").split("\0")

    def paths(self):
        """All resolved paths (a new list of N strings: for scans, not to keep)."""
        fps = self.fpaths()
        if self._all_absolute:
            return fps
        base, isabs, join = self.base, os.path.isabs, os.path.join
        return [fp if isabs(fp) else join(base, fp) for fp in fps]

    def entry(self, i):
        """Entry i as the dict `load_annotations` gives (fpath, category_id, path, label)."""
        y = int(self.category_ids[i])
        return {"fpath": self.fpath(i), "category_id": y, "path": self.path(i), "label": y}


def _columns(anns):
    """(fpaths, category_ids, image_ids) lists of a list of annotation dicts; KeyError/TypeError if any entry
    is not a dict with fpath and category_id (the validator then names it)."""
    fpaths = [a["fpath"] for a in anns]
    cats = [a["category_id"] for a in anns]
    ids = [a["image_id"] for a in anns if "image_id" in a]
    return fpaths, cats, ids


def read_table(path, root=""):
    """Parse + validate an annotation JSON into an AnnotationTable (no image check).

    Peak memory is the parsed file (about 230 MB for iNat 2018's 437,513 entries, 2/3 of it the dicts);
    the table that remains is ~45 MB."""
    source = os.fspath(path)
    anns, C = _check_top(read_json(source), source)
    try:
        fpaths, cats, ids = _columns(anns)
        if set(map(type, fpaths)) != {str} or "" in fpaths or set(map(type, cats)) != {int}:
            raise ValueError
        labels = np.array(cats, dtype=np.int64)
        if labels.min() < 0 or labels.max() >= C or len(set(ids)) != len(ids):
            raise ValueError
    except (KeyError, TypeError, ValueError, OverflowError):  # name the first bad entry
        _first_problem([_row(a) if isinstance(a, dict) else a for a in anns], C, source, True)
        raise AssertionError(f"{source}: validation disagreement") from None  # unreachable
    del anns, cats, ids
    return AnnotationTable(source, fpaths, labels, C, json_base(root, source))


def load_annotations(path, root="", check_images=True):
    """Load + validate a JSON. Returns (entries, num_classes) where each entry is the annotation's dict with
    the resolved 'path' and int 'label' added (tools and small files; datasets use `read_table`)."""
    anns, C = validate_annotations(read_json(path), source=os.fspath(path))
    entries = [{**a, "path": resolve_path(a["fpath"], root, path), "label": a["category_id"]} for a in anns]
    if check_images:
        check_image_files([e["path"] for e in entries], path, root)
    return entries, C


# ---------------------------------------------------------------- image checks
_FPATH = re.compile(r'"fpath"\s*:\s*("(?:[^"\\]|\\.)*")')


def peek_image_root(path, root="", n=EARLY_SAMPLE, head_bytes=1 << 16):
    """Before parsing a (large) JSON: the first `n` fpaths in its first `head_bytes`; if none of them exists
    and the folder of the first is missing, raise the one-line error naming that folder and the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(head_bytes).decode("utf-8", errors="ignore")
    except OSError:
        return  # read_json reports it
    found = []
    for m in _FPATH.finditer(head):
        try:
            fp = json.loads(m.group(1))
        except ValueError:
            continue
        if isinstance(fp, str) and fp:
            found.append(resolve_path(fp, root, path))
        if len(found) >= n:
            break
    if not found or any(os.path.isfile(p) for p in found):
        return
    if _missing_folder(found[0]):
        raise _not_found(path, None, found[0], root)


def _missing_folder(path):
    """The outermost ancestor folder of `path` that does not exist (None if the folder exists)."""
    folder = os.path.dirname(path)
    missing = None
    while folder and not os.path.isdir(folder):
        missing = folder
        parent = os.path.dirname(folder)
        if parent == folder:
            break
        folder = parent
    return missing


def _not_found(source, i, path, root):
    """One line: the entry (i None: the first fpath of the raw file), the file and, when its folder is
    missing, which folder and how to point the paths elsewhere."""
    notes = []
    if i is None:
        msg = f"{source}: image not found: {path}"
        notes.append("the first fpath in the file")
    else:
        msg = f"{source}: annotation {i}: image not found: {path}"
    missing = _missing_folder(path)
    if missing:
        notes.append(f"the folder {missing} does not exist")
        if root:
            notes.append(f"relative fpaths resolve against DATASET.ROOT {root}")
        notes.append("if the images moved, set DATASET.ROOT or rewrite the paths with tools/replace_path.py")
    return UserError(msg + (f" ({'; '.join(notes)})" if notes else ""))


def _header_problem(source, i, path):
    from PIL import Image

    try:
        with Image.open(path):
            return None
    except FileNotFoundError:
        return f"{source}: annotation {i}: image not found: {path}"
    except Exception as e:  # noqa: BLE001 - any decoder failure means the file is unusable
        return f"{source}: annotation {i}: cannot read image {path} ({type(e).__name__})"


def _check_headers(paths, indices, source, workers=8):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for problem in pool.map(lambda i: _header_problem(source, i, paths[i]), indices, chunksize=64):
            if problem:
                pool.shutdown(wait=False, cancel_futures=True)
                raise UserError(problem)


def _spread(n, k):
    """About k indices spread evenly over range(n), the first ones included, in increasing order."""
    if n <= k:
        return list(range(n))
    return sorted(set([0, 1, 2, 3] + np.linspace(0, n - 1, k - 4).astype(int).tolist()))


def check_image_files(paths, source, root="", listing=None):
    """Every image exists (and its header is readable, for up to HEADER_CHECK_ALL images; above that for a
    sample). `paths`: the resolved paths, a list or an AnnotationTable. Raises a one-line UserError naming
    the JSON, the first bad entry and the file; a missing folder is named too. `listing`: a dict of folder
    listings to share between the splits of one run (their images often sit in the same folders)."""
    if isinstance(paths, AnnotationTable):
        early = _spread(len(paths), EARLY_SAMPLE)
        for i in early:  # a moved / unmounted root: reported before the full scan
            p = paths.path(i)
            if not os.path.isfile(p):
                raise _not_found(source, i, p, root)
        paths = paths.paths()
    else:
        paths = list(paths)
        for i in _spread(len(paths), EARLY_SAMPLE):
            if not os.path.isfile(paths[i]):
                raise _not_found(source, i, paths[i], root)
    listing = {} if listing is None else listing  # folder -> set of its names (None: not a readable folder)
    for i, p in enumerate(paths):
        folder, _, name = p.rpartition(os.sep)
        names = listing.get(folder, False)
        if names is False:
            try:
                names = set(os.listdir(folder or os.sep))  # names only: no stat per entry
            except (FileNotFoundError, NotADirectoryError, PermissionError):
                names = None
            listing[folder] = names
        if names is None or name not in names:
            if not os.path.isfile(p):  # e.g. a path with "..", or a listing we may not read
                raise _not_found(source, i, p, root)
    n = len(paths)
    _check_headers(paths, range(n) if n <= HEADER_CHECK_ALL else _spread(n, HEADER_CHECK_SAMPLE), source)


def class_counts(labels, num_classes):
    """n_c for c in [0, C): the per-class training counts used by methods, samplers, evaluation."""
    labels = np.asarray(labels, dtype=np.int64)
    return np.bincount(labels, minlength=num_classes)[:num_classes].tolist()
