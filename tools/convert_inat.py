"""Convert an official iNaturalist 2018 JSON (train2018.json / val2018.json) to an annotation JSON
(docs/data.md).

The input is COCO-like: images [{id, file_name, width, height}], annotations [{image_id,
category_id}], categories [{id}] (8,142 for iNat18). Each image is joined to its annotation by
image_id (the original converter paired annotations[k] with images[k] by position):

    fpath = <image_root>/<file_name>   (absolute)
    category_id = annotation.category_id,  im_height/im_width = image height/width
    image_id = running index in the order of `images`,  num_classes = C = len(categories)

Category ids must be exactly 0..C-1. Run once for train2018.json and once for val2018.json
(iNat18 has no public test labels: val is the test split).

    python tools/convert_inat.py --input_json data/iNat18/train2018.json --image_root data/iNat18 \
        --output_json data/iNat18/iNat18_train.json
"""
import json
import os

from lib.data.annotations import read_json, validate_annotations
from lib.utils import cli
from lib.utils.atomic import atomic_open
from lib.utils.errors import UserError, exit_on_user_error

INAT18_CLASSES = 8142


def get_parser():
    p = cli.ArgumentParser(
        description="Convert the official iNaturalist 2018 train2018.json / val2018.json into our "
        "annotation JSON, joining annotations to images by image_id.")
    p.add_argument("--input_json", required=True, help="official train2018.json or val2018.json")
    p.add_argument("--image_root", required=True,
                   help="folder the images' file_name is relative to (the one holding train_val2018/)")
    p.add_argument("--output_json", required=True, help="JSON file to write")
    p.add_argument("--num-classes", type=int, default=None,
                   help="expected number of categories (default: whatever the file lists; iNat18 has 8142)")
    return p


def _get(obj, key, where, src):
    if not isinstance(obj, dict) or key not in obj:
        raise UserError(f"{src}: {where} has no '{key}'")
    return obj[key]


def _int(v, what, src):
    if not isinstance(v, int) or isinstance(v, bool):
        raise UserError(f"{src}: {what} must be an integer, got {v!r}")
    return v


def convert(data, image_root, src, expected_classes=None):
    """Our annotation object from the parsed official JSON `data` (read from `src`)."""
    for key in ("images", "annotations", "categories"):
        if not isinstance(_get(data, key, "the top level", src), list):
            raise UserError(f"{src}: '{key}' must be a list")
    categories = data["categories"]
    C = len(categories)
    if expected_classes is not None and C != expected_classes:
        raise UserError(f"{src}: {C} categories, expected {expected_classes}")
    cat_ids = sorted(_int(_get(c, "id", f"category {k}", src), f"category {k} id", src)
                     for k, c in enumerate(categories))
    if cat_ids != list(range(C)):
        raise UserError(f"{src}: category ids must be exactly 0..{C - 1}, got {len(set(cat_ids))} distinct "
                        f"ids from {cat_ids[0] if cat_ids else None} to {cat_ids[-1] if cat_ids else None}")

    image_ids = set()
    for k, im in enumerate(data["images"]):
        iid = _get(im, "id", f"image {k}", src)
        if iid in image_ids:
            raise UserError(f"{src}: image {k}: duplicate id {iid!r}")
        image_ids.add(iid)

    label_of_image = {}  # the join: image id -> category id
    for k, a in enumerate(data["annotations"]):
        iid = _get(a, "image_id", f"annotation {k}", src)
        y = _int(_get(a, "category_id", f"annotation {k}", src), f"annotation {k} category_id", src)
        if iid not in image_ids:
            raise UserError(f"{src}: annotation {k}: image_id {iid!r} is not in 'images'")
        if iid in label_of_image:
            raise UserError(f"{src}: annotation {k}: image_id {iid!r} has more than one annotation")
        if not 0 <= y < C:
            raise UserError(f"{src}: annotation {k}: category_id {y} out of range [0, {C})")
        label_of_image[iid] = y

    anns = []
    for k, im in enumerate(data["images"]):
        if im["id"] not in label_of_image:
            raise UserError(f"{src}: image {k} (id {im['id']!r}) has no annotation")
        name = _get(im, "file_name", f"image {k}", src)
        if not isinstance(name, str) or not name:
            raise UserError(f"{src}: image {k}: 'file_name' must be a non-empty string, got {name!r}")
        entry = {"image_id": k, "fpath": os.path.join(image_root, name.lstrip("/")),
                 "category_id": label_of_image[im["id"]]}
        if "height" in im and "width" in im:
            entry["im_height"] = _int(im["height"], f"image {k} height", src)
            entry["im_width"] = _int(im["width"], f"image {k} width", src)
        anns.append(entry)
    obj = {"annotations": anns, "num_classes": C}
    validate_annotations(obj, source=src)
    return obj


@exit_on_user_error
def main(argv=None):
    args = get_parser().parse_args(argv)
    data = read_json(args.input_json)
    obj = convert(data, os.path.abspath(args.image_root), args.input_json, args.num_classes)
    folder = os.path.dirname(os.path.abspath(args.output_json))
    os.makedirs(folder, exist_ok=True)
    text = json.dumps(obj)  # json.dumps uses the C encoder; json.dump is several times slower
    with atomic_open(args.output_json, "w") as f:
        f.write(text)
    C = obj["num_classes"]
    note = f" (note: iNaturalist 2018 has {INAT18_CLASSES})" if C != INAT18_CLASSES else ""
    print(f"{args.input_json} -> {args.output_json}: {len(obj['annotations']):,} images, {C} classes{note}")
    return 0


if __name__ == "__main__":
    main()
