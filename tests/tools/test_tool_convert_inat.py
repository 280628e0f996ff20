"""tools/convert_inat.py: official iNat2018 COCO-like JSON -> annotation JSON (docs/data.md)."""
import copy
import json
import os
from pathlib import Path

import pytest

from conftest import load_tool
from lib.data.annotations import read_json, validate_annotations

REPO = Path(__file__).resolve().parents[2]




tool = load_tool("convert_inat")

OFFICIAL = {
    "info": {"year": 2018},
    "images": [
        {"id": 101, "file_name": "train_val2018/Plantae/2/aaa.jpg", "width": 800, "height": 600, "license": 1},
        {"id": 205, "file_name": "train_val2018/Aves/0/bbb.jpg", "width": 640, "height": 480, "license": 1},
        {"id": 150, "file_name": "train_val2018/Fungi/1/ccc.jpg", "width": 500, "height": 375, "license": 1},
        {"id": 999, "file_name": "train_val2018/Aves/0/ddd.jpg", "width": 300, "height": 200, "license": 1},
    ],
    # deliberately NOT in image order: pairing by position would mislabel every image
    "annotations": [
        {"id": 1, "image_id": 999, "category_id": 0},
        {"id": 2, "image_id": 150, "category_id": 1},
        {"id": 3, "image_id": 101, "category_id": 2},
        {"id": 4, "image_id": 205, "category_id": 0},
    ],
    "categories": [{"id": 2, "name": "c"}, {"id": 0, "name": "a"}, {"id": 1, "name": "b"}],
}


def _convert(tmp_path, data, *extra):
    src = tmp_path / "train2018.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "out" / "iNat18_train.json"
    tool.main(["--input_json", str(src), "--image_root", str(tmp_path / "iNat18"), "--output_json", str(out), *extra])
    return out


def test_annotations_are_joined_to_images_by_image_id_not_position(tmp_path):
    out = _convert(tmp_path, OFFICIAL)
    anns, C = validate_annotations(read_json(out))
    root = tmp_path / "iNat18"
    assert C == 3
    assert anns == [
        {"image_id": 0, "fpath": str(root / "train_val2018/Plantae/2/aaa.jpg"), "category_id": 2,
         "im_height": 600, "im_width": 800},
        {"image_id": 1, "fpath": str(root / "train_val2018/Aves/0/bbb.jpg"), "category_id": 0,
         "im_height": 480, "im_width": 640},
        {"image_id": 2, "fpath": str(root / "train_val2018/Fungi/1/ccc.jpg"), "category_id": 1,
         "im_height": 375, "im_width": 500},
        {"image_id": 3, "fpath": str(root / "train_val2018/Aves/0/ddd.jpg"), "category_id": 0,
         "im_height": 200, "im_width": 300},
    ]


def _expect_error(tmp_path, capsys, data, message, *extra):
    with pytest.raises(SystemExit) as e:
        _convert(tmp_path, data, *extra)
    assert e.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out" / "iNat18_train.json").exists()


def test_annotation_without_image_is_an_error(tmp_path, capsys):
    data = copy.deepcopy(OFFICIAL)
    data["annotations"][2]["image_id"] = 7
    _expect_error(tmp_path, capsys, data, "annotation 2: image_id 7 is not in 'images'")


def test_image_without_annotation_is_an_error(tmp_path, capsys):
    data = copy.deepcopy(OFFICIAL)
    del data["annotations"][0]
    _expect_error(tmp_path, capsys, data, "image 3 (id 999) has no annotation")


def test_category_ids_must_be_exactly_0_to_C_minus_1(tmp_path, capsys):
    data = copy.deepcopy(OFFICIAL)
    for c in data["categories"]:
        c["id"] += 1  # 1-based ids
    _expect_error(tmp_path, capsys, data, "category ids must be exactly 0..2")


def test_annotation_category_out_of_range_is_an_error(tmp_path, capsys):
    data = copy.deepcopy(OFFICIAL)
    data["annotations"][1]["category_id"] = 3
    _expect_error(tmp_path, capsys, data, "annotation 1: category_id 3 out of range [0, 3)")


def test_num_classes_override_is_checked(tmp_path, capsys):
    _expect_error(tmp_path, capsys, OFFICIAL, "3 categories, expected 8142", "--num-classes", "8142")


def test_missing_input_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        tool.main(["--input_json", str(tmp_path / "nope.json"), "--image_root", str(tmp_path),
                   "--output_json", str(tmp_path / "o.json")])
    assert "annotation file not found" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "o.json")
