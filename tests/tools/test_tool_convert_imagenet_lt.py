"""tools/convert_imagenet_lt.py: ImageNet-LT / Places-LT split lists -> JSON (docs/data.md)."""
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import load_tool
from lib.data.annotations import read_json, validate_annotations

REPO = Path(__file__).resolve().parents[2]




tool = load_tool("convert_imagenet_lt")

# split -> [(relative path, label, (width, height))]
SPLITS = {
    "train": [("train/n01/a.JPEG", 0, (8, 6)), ("train/n01/b.JPEG", 0, (5, 7)), ("train/n02/c.JPEG", 1, (4, 4)),
              ("train/n03/d.JPEG", 2, (9, 3))],
    "val": [("train/n01/e.JPEG", 0, (6, 6)), ("train/n02/f.JPEG", 1, (3, 5)), ("train/n03/g.JPEG", 2, (7, 2))],
    "test": [("val/ILSVRC2012_val_00000001.JPEG", 2, (10, 4)), ("val/ILSVRC2012_val_00000002.JPEG", 1, (2, 9)),
             ("val/ILSVRC2012_val_00000003.JPEG", 0, (5, 5))],
}


@pytest.fixture
def lists(tmp_path):
    """Real tiny PNG files (with .JPEG names, as PIL reads by content) and the three list files."""
    root, list_dir = tmp_path / "ILSVRC2012", tmp_path / "lists"
    list_dir.mkdir()
    for split, rows in SPLITS.items():
        for rel, _, (w, h) in rows:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(root / rel, format="PNG")
        (list_dir / f"ImageNet_LT_{split}.txt").write_text("".join(f"{rel} {y}\n" for rel, y, _ in rows))
    return root, list_dir


def _run(root, list_dir, out, *extra, dataset="imagenet_lt", num_classes="3"):
    return tool.main(["--dataset", dataset, "--list_dir", str(list_dir), "--image_root", str(root),
                      "--output_path", str(out), "--num-classes", num_classes, *extra])


def test_all_three_splits_convert_and_test_stays_test(lists, tmp_path):
    root, list_dir = lists
    out = tmp_path / "out"
    assert _run(root, list_dir, out) == 0
    assert sorted(os.listdir(out)) == ["ImageNet_LT_test.json", "ImageNet_LT_train.json", "ImageNet_LT_val.json"]
    for split, rows in SPLITS.items():
        obj = read_json(out / f"ImageNet_LT_{split}.json")
        anns, C = validate_annotations(obj)
        assert C == 3
        assert anns == [{"image_id": i, "fpath": str(root / rel), "category_id": y}
                        for i, (rel, y, _) in enumerate(rows)]
    # the test JSON is built from the test list (BoT called it "val")
    assert read_json(out / "ImageNet_LT_test.json")["annotations"][0]["fpath"].endswith(
        "val/ILSVRC2012_val_00000001.JPEG")


def test_places_lt_uses_its_own_file_names(tmp_path):
    list_dir = tmp_path / "lists"
    list_dir.mkdir()
    (list_dir / "Places_LT_val.txt").write_text("a/airfield/1.jpg 0\nb/bar/2.jpg 1\n")
    _run(tmp_path / "places365", list_dir, tmp_path / "out", dataset="places_lt", num_classes="2")
    assert os.listdir(tmp_path / "out") == ["Places_LT_val.json"]


def test_probe_sizes_fills_height_and_width_from_headers(lists, tmp_path):
    root, list_dir = lists
    out = tmp_path / "out"
    _run(root, list_dir, out, "--probe-sizes", "--workers", "2")
    for split, rows in SPLITS.items():
        anns = read_json(out / f"ImageNet_LT_{split}.json")["annotations"]
        assert [(a["im_width"], a["im_height"]) for a in anns] == [size for _, _, size in rows]


def test_probe_sizes_reports_missing_image_with_line_number(lists, tmp_path, capsys):
    root, list_dir = lists
    os.remove(root / SPLITS["val"][1][0])
    with pytest.raises(SystemExit) as e:
        _run(root, list_dir, tmp_path / "out", "--probe-sizes")
    assert e.value.code == 2
    assert "ImageNet_LT_val.txt:2: cannot read image" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written when any split fails


@pytest.mark.parametrize("bad_line, message", [
    ("train/n01/x.JPEG\n", "ImageNet_LT_train.txt:3: malformed line"),
    ("train/n01/x.JPEG zero\n", "ImageNet_LT_train.txt:3: label 'zero' is not an integer"),
    ("train/n01/x.JPEG 3\n", "ImageNet_LT_train.txt:3: label 3 out of range [0, 3)"),
    ("train/n01/x.JPEG -1\n", "ImageNet_LT_train.txt:3: label -1 out of range [0, 3)"),
])
def test_bad_line_is_reported_with_file_and_line_number(tmp_path, capsys, bad_line, message):
    list_dir = tmp_path / "lists"
    list_dir.mkdir()
    (list_dir / "ImageNet_LT_train.txt").write_text("a 0\nb 1\n" + bad_line + "c 2\n")
    with pytest.raises(SystemExit) as e:
        _run(tmp_path, list_dir, tmp_path / "out")
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_class_count_must_match_expected(tmp_path, capsys):
    list_dir = tmp_path / "lists"
    list_dir.mkdir()
    (list_dir / "ImageNet_LT_train.txt").write_text("a 0\nb 1\n")
    with pytest.raises(SystemExit):
        _run(tmp_path, list_dir, tmp_path / "out")  # expects 3 classes, list has 2
    assert "max label + 1 = 2 classes, expected 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # default expectation for ImageNet-LT is 1000
        tool.main(["--dataset", "imagenet_lt", "--list_dir", str(list_dir), "--image_root", str(tmp_path),
                   "--output_path", str(tmp_path / "out")])
    assert "expected 1000" in capsys.readouterr().err


def test_missing_lists_are_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        _run(tmp_path, tmp_path, tmp_path / "out")
    assert "none of ImageNet_LT_train.txt" in capsys.readouterr().err


def test_100k_line_list_converts(tmp_path):
    list_dir = tmp_path / "lists"
    list_dir.mkdir()
    n = 100_000
    (list_dir / "ImageNet_LT_train.txt").write_text(
        "".join(f"train/n{i % 1000:04d}/{i}.JPEG {i % 1000}\n" for i in range(n)))
    _run(tmp_path / "root", list_dir, tmp_path / "out", num_classes="1000")
    obj = json.loads((tmp_path / "out" / "ImageNet_LT_train.json").read_text())
    assert len(obj["annotations"]) == n and obj["num_classes"] == 1000
    assert obj["annotations"][-1] == {"image_id": n - 1, "fpath": str(tmp_path / "root" / "train/n0999/99999.JPEG"),
                                      "category_id": 999}


def test_found_and_skipped_lists_are_reported_and_warnings_go_to_stderr(lists, tmp_path, capsys):
    root, list_dir = lists
    os.remove(list_dir / "ImageNet_LT_val.txt")
    _run(tmp_path / "moved_root", list_dir, tmp_path / "out")  # images not under this root
    out, err = capsys.readouterr()
    assert f"{list_dir}: found ImageNet_LT_train.txt, ImageNet_LT_test.txt; skipped (not found): " \
           "ImageNet_LT_val.txt" in out
    assert f"warning: {list_dir / 'ImageNet_LT_val.txt'} not found: no ImageNet_LT_val.json is written" in err
    assert "warning: " in err and "first image" in err and "check --image_root" in err
    assert "warning" not in out
    assert sorted(os.listdir(tmp_path / "out")) == ["ImageNet_LT_test.json", "ImageNet_LT_train.json"]


def test_all_lists_found_reports_no_skipped_split(lists, tmp_path, capsys):
    root, list_dir = lists
    _run(root, list_dir, tmp_path / "out")
    out, err = capsys.readouterr()
    assert f"{list_dir}: found ImageNet_LT_train.txt, ImageNet_LT_val.txt, ImageNet_LT_test.txt\n" in out
    assert "skipped" not in out and err == ""
