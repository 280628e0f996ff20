"""Convert the ImageNet-LT / Places-LT split lists to annotation JSONs (docs/data.md).

Input: the OLTR / classifier-balancing lists <Name>_{train,val,test}.txt in --list_dir (whichever
are present), one `relative/path label` per line with a 0-based label. Output, one file per split:
<output_path>/<Name>_{train,val,test}.json with

    fpath = <image_root>/<relative/path>    (absolute)
    image_id = index of the entry in the list (running from 0)
    category_id = label
    num_classes = C = max label + 1, which must equal 1000 (ImageNet-LT) / 365 (Places-LT)

"test" stays "test": unlike BoT's converter, whose "val" JSON was built from the test list.
`--probe-sizes` also records im_height/im_width, reading only image headers, in parallel.

    python tools/convert_imagenet_lt.py --dataset imagenet_lt --list_dir data/ImageNet_LT_lists \
        --image_root /data/ILSVRC2012 --output_path data/ImageNet_LT
"""
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor

from lib.data.annotations import validate_annotations
from lib.utils import cli
from lib.utils.atomic import atomic_open
from lib.utils.errors import UserError, exit_on_user_error

# dataset -> (file name stem, expected C, {split: standard size} from docs/data.md)
DATASETS = {
    "imagenet_lt": ("ImageNet_LT", 1000, {"train": 115846, "val": 20000, "test": 50000}),
    "places_lt": ("Places_LT", 365, {"train": 62500, "val": 7300, "test": 36500}),
}
SPLITS = ("train", "val", "test")


def get_parser():
    p = cli.ArgumentParser(
        description="Convert ImageNet-LT / Places-LT split lists (<Name>_{train,val,test}.txt, lines "
        "'relative/path label') into <Name>_{train,val,test}.json annotation files.")
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS),
                   help="imagenet_lt (ImageNet_LT_*.txt, 1000 classes) or places_lt (Places_LT_*.txt, 365 classes)")
    p.add_argument("--list_dir", required=True, help="folder holding the split .txt lists")
    p.add_argument("--image_root", required=True,
                   help="folder the list paths are relative to (ImageNet: the ILSVRC-2012 folder holding "
                   "train/ and val/; Places-LT: the Places365 folder the list paths start from)")
    p.add_argument("--output_path", required=True, help="folder to write the JSON files into")
    p.add_argument("--num-classes", type=int, default=None,
                   help="expected number of classes (default: 1000 for imagenet_lt, 365 for places_lt)")
    p.add_argument("--probe-sizes", action="store_true",
                   help="also write im_height/im_width, read from each image header (slow on big sets)")
    p.add_argument("--workers", type=int, default=8, help="threads for --probe-sizes (default 8)")
    return p


def parse_list(path, num_classes):
    """Return [(relative_path, label, line_number)]; malformed lines and bad labels are UserErrors."""
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.rsplit(None, 1)
            if len(parts) != 2 or not parts[0].strip():
                raise UserError(f"{path}:{lineno}: malformed line {line.strip()!r}; expected 'relative/path label'")
            rel, label = parts[0].strip(), parts[1]
            try:
                y = int(label)
            except ValueError:
                raise UserError(f"{path}:{lineno}: label {label!r} is not an integer") from None
            if not 0 <= y < num_classes:
                raise UserError(f"{path}:{lineno}: label {y} out of range [0, {num_classes})")
            entries.append((rel, y, lineno))
    if not entries:
        raise UserError(f"{path}: the list is empty")
    return entries


def _header_size(fpath):
    """(width, height) from the image header (PIL does not decode pixels here), or the exception."""
    from PIL import Image

    try:
        with Image.open(fpath) as im:
            return im.size
    except Exception as e:  # reported with the list line by the caller
        return e


def probe_sizes(paths, workers):
    """[(width, height) or exception] per path, read by `workers` threads (the work is mostly I/O)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as ex:
        return list(ex.map(_header_size, paths))


def convert_split(list_path, image_root, num_classes, probe, workers):
    """Annotation object for one list file."""
    entries = parse_list(list_path, num_classes)
    max_label = max(y for _, y, _ in entries)
    if max_label + 1 != num_classes:
        raise UserError(f"{list_path}: max label + 1 = {max_label + 1} classes, expected {num_classes} "
                        f"(use --num-classes to override)")
    # lstrip: a list path written with a leading "/" would make os.path.join drop image_root
    anns = [{"image_id": i, "fpath": os.path.join(image_root, rel.lstrip("/")), "category_id": y}
            for i, (rel, y, _) in enumerate(entries)]
    if probe:
        sizes = probe_sizes([a["fpath"] for a in anns], workers)
        for a, size, (_, _, lineno) in zip(anns, sizes, entries):
            if isinstance(size, Exception):
                raise UserError(f"{list_path}:{lineno}: cannot read image {a['fpath']} "
                                f"({type(size).__name__}: {size})")
            a["im_height"], a["im_width"] = size[1], size[0]
    elif not os.path.exists(anns[0]["fpath"]):
        print(f"warning: {list_path}: first image {anns[0]['fpath']} not found; check --image_root "
              f"(the lists hold paths only: the images come from the original dataset)", file=sys.stderr)
    obj = {"annotations": anns, "num_classes": num_classes}
    validate_annotations(obj, source=list_path)
    return obj


@exit_on_user_error
def main(argv=None):
    args = get_parser().parse_args(argv)
    name, default_classes, standard_sizes = DATASETS[args.dataset]
    num_classes = args.num_classes if args.num_classes is not None else default_classes
    if num_classes < 1:
        raise UserError(f"--num-classes must be >= 1, got {num_classes}")
    if not os.path.isdir(args.list_dir):
        raise UserError(f"--list_dir {args.list_dir} is not a folder")
    candidates = {s: os.path.join(args.list_dir, f"{name}_{s}.txt") for s in SPLITS}
    lists = {s: p for s, p in candidates.items() if os.path.isfile(p)}
    skipped = [s for s in SPLITS if s not in lists]
    if not lists:
        raise UserError(f"{args.list_dir}: none of {', '.join(f'{name}_{s}.txt' for s in SPLITS)} found")
    print(f"{args.list_dir}: found {', '.join(os.path.basename(lists[s]) for s in lists)}"
          + (f"; skipped (not found): {', '.join(f'{name}_{s}.txt' for s in skipped)}" if skipped else ""))
    for s in skipped:
        print(f"warning: {candidates[s]} not found: no {name}_{s}.json is written", file=sys.stderr)
    image_root = os.path.abspath(args.image_root)
    # parse and check every list before writing anything
    results = {s: convert_split(p, image_root, num_classes, args.probe_sizes, args.workers)
               for s, p in lists.items()}
    os.makedirs(args.output_path, exist_ok=True)
    for split, obj in results.items():
        out = os.path.join(args.output_path, f"{name}_{split}.json")
        text = json.dumps(obj)  # json.dumps uses the C encoder; json.dump (write_json) does not
        with atomic_open(out, "w") as f:
            f.write(text)
        n = len(obj["annotations"])
        note = ""
        if args.num_classes is None and n != standard_sizes[split]:
            note = f" (note: the standard {name} {split} split has {standard_sizes[split]:,})"
        print(f"{lists[split]} -> {out}: {n:,} images, {num_classes} classes{note}")
    return 0


if __name__ == "__main__":
    main()
