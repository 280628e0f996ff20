import json

import pytest

from lib.data.annotations import class_counts, load_annotations
from lib.data.dataset import JsonDataset, decode_image
from lib.utils.errors import UserError


def dump(tmp_path, obj, name="a.json"):
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def ann(i, y, fpath=None):
    return {"image_id": i, "fpath": fpath or f"img{i}.png", "category_id": y}


BAD_JSONS = [  # (file content, expected message): also run through read_table (tests/data/test_large_json.py)
    ("{not json", "malformed JSON"),
    ({"num_classes": 2}, "missing key 'annotations'"),
    ({"annotations": [ann(0, 0)]}, "missing key 'num_classes'"),
    ({"annotations": [], "num_classes": 2}, "'annotations' is empty"),
    ({"annotations": [ann(0, 0), ann(1, 2)], "num_classes": 2}, r"annotation 1 \(img1.png\): category_id 2 out of range \[0, 2\)"),
    ({"annotations": [ann(0, -1)], "num_classes": 2}, "category_id -1 out of range"),
    ({"annotations": [ann(0, "1")], "num_classes": 2}, "'category_id' must be an integer"),
    ({"annotations": [ann(0, 1.0)], "num_classes": 2}, "'category_id' must be an integer"),
    ({"annotations": [ann(0, 0), ann(0, 1)], "num_classes": 2}, "duplicate image_id 0"),
    ({"annotations": [{"image_id": 0, "category_id": 0}], "num_classes": 2}, "annotation 0 has no 'fpath'"),
    ({"annotations": [ann(0, 0)], "num_classes": 0}, "'num_classes' must be an integer >= 1"),
]


@pytest.mark.parametrize("obj, message", BAD_JSONS)
def test_bad_json_is_reported_with_the_first_bad_entry(tmp_path, obj, message):
    with pytest.raises(UserError, match=message):
        load_annotations(dump(tmp_path, obj), check_images=False)


def test_missing_json_file(tmp_path):
    with pytest.raises(UserError, match="annotation file not found"):
        load_annotations(str(tmp_path / "nope.json"))


def test_missing_image_names_the_file(tmp_path):
    with pytest.raises(UserError, match=r"annotation 0: image not found: .*img0\.png"):
        load_annotations(dump(tmp_path, {"annotations": [ann(0, 0)], "num_classes": 1}))


def test_relative_paths_resolve_against_root_or_json_folder(tmp_path):
    from PIL import Image

    (tmp_path / "sub").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "sub" / "img0.png")
    p = dump(tmp_path / "sub", {"annotations": [ann(0, 0)], "num_classes": 1})
    entries, _ = load_annotations(p)  # against the JSON's folder
    assert entries[0]["path"] == str(tmp_path / "sub" / "img0.png")
    p2 = dump(tmp_path, {"annotations": [ann(0, 0, "sub/img0.png")], "num_classes": 1}, "b.json")
    entries, _ = load_annotations(p2, root=str(tmp_path))
    assert entries[0]["path"] == str(tmp_path / "sub" / "img0.png")


def test_grayscale_rgba_and_16bit_images_load_as_rgb(tmp_path):
    import numpy as np
    from PIL import Image

    Image.new("L", (5, 4), 200).save(tmp_path / "g.png")
    Image.new("RGBA", (5, 4), (10, 20, 30, 255)).save(tmp_path / "a.png")
    Image.fromarray(np.full((4, 5), 65535, dtype=np.uint16)).save(tmp_path / "w.png")
    for name, value in (("g.png", (200, 200, 200)), ("a.png", (10, 20, 30)), ("w.png", (255, 255, 255))):
        im = decode_image(str(tmp_path / name), "RGB")
        assert im.mode == "RGB" and im.size == (5, 4)
        assert im.getpixel((0, 0)) == value


def test_corrupt_image_is_a_clear_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    with pytest.raises(UserError, match=r"cannot read image .*bad\.png"):
        decode_image(str(tmp_path / "bad.png"))


def test_dataset_items_and_counts(tiny_lt):
    ds = JsonDataset(str(tiny_lt["train"]))
    item = ds[0]
    assert set(item) == {"image", "label", "index"}
    counts = ds.class_counts()
    assert counts == class_counts(ds.labels, 10)
    assert counts[0] == 60 and counts[-1] == 6
