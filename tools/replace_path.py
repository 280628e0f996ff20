"""Rewrite the image root of every `fpath` in an annotation JSON, in place and atomically
(docs/data.md; same CLI and semantics as NCL's tools/replace_path.py).

    fpath' = fpath.replace(find_root, replaces_to)     (plain substring, all occurrences)

Unlike NCL's original: every argument is required, the JSON is validated before anything is
written, the file is replaced atomically (temp file + fsync + os.replace), `--backup` keeps a copy,
the number of changed fpaths is printed, and a find_root that matches no fpath is an error.

    python tools/replace_path.py --json_file data/Places_LT_val.json \
        -f /media/ssd2/user/data/places365_standard -r /data/places365_standard --backup
"""
import json
import os
import shutil

from lib.data.annotations import read_json, validate_annotations
from lib.utils import cli
from lib.utils.atomic import atomic_open
from lib.utils.errors import UserError, exit_on_user_error


def get_parser():
    p = cli.ArgumentParser(
        description="Replace a substring (usually the image root) in every annotation 'fpath' of a "
        "JSON, overwriting the file atomically. Other fields and the annotation order are kept.")
    p.add_argument("--json_file", required=True, help="annotation JSON to rewrite in place")
    p.add_argument("--find_root", "-f", required=True, help="substring to find in each fpath, e.g. the old root")
    p.add_argument("--replaces_to", "-r", required=True, help="replacement, e.g. the new root")
    p.add_argument("--backup", action="store_true", help="first copy the untouched file to <json_file>.bak")
    p.add_argument("--dry-run", action="store_true", help="only print how many fpaths would change")
    return p


def replace_fpaths(annotations, find_root, replaces_to):
    """Apply str.replace to every fpath in place; return (n_matching, n_changed)."""
    matching = changed = 0
    for a in annotations:
        fp = a["fpath"]
        if find_root in fp:
            matching += 1
            new = fp.replace(find_root, replaces_to)
            if new != fp:
                a["fpath"] = new
                changed += 1
    return matching, changed


@exit_on_user_error
def main(argv=None):
    args = get_parser().parse_args(argv)
    path = args.json_file
    if not args.find_root:
        raise UserError("--find_root must not be empty")
    obj = read_json(path)
    annotations, _ = validate_annotations(obj, source=path)
    total = len(annotations)
    matching, changed = replace_fpaths(annotations, args.find_root, args.replaces_to)
    if matching == 0:
        example = annotations[0]["fpath"]
        raise UserError(f"{path}: no fpath contains {args.find_root!r} (first fpath: {example!r}); "
                        f"nothing was written")
    if args.dry_run:
        print(f"{path}: {changed} of {total} fpaths would change (dry run, nothing written)")
        return 0
    if args.backup:
        with open(path, "rb") as src, atomic_open(path + ".bak", "wb") as dst:
            shutil.copyfileobj(src, dst)
        shutil.copymode(path, path + ".bak")
    text = json.dumps(obj)  # one C-level encode: ~3x faster than json.dump's chunked writes
    mode = os.stat(path).st_mode
    with atomic_open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode & 0o7777)  # keep the permissions (the temp file is created 0600)
    print(f"{path}: replaced {args.find_root!r} -> {args.replaces_to!r} in {changed} of {total} fpaths"
          + (f" (backup: {path}.bak)" if args.backup else ""))
    return 0


if __name__ == "__main__":
    main()
