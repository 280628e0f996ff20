"""tools/replace_path.py: atomic in-place root rewrite of annotation fpaths (docs/data.md)."""
import json
import os
from pathlib import Path

import pytest

from conftest import load_tool

REPO = Path(__file__).resolve().parents[2]




tool = load_tool("replace_path")
OLD = "/media/ssd2/user/data/places365_standard"


def _write(path, fpaths, extra=True):
    anns = [{"image_id": i, "fpath": fp, "category_id": i % 3, **({"im_height": 256, "note": "x"} if extra else {})}
            for i, fp in enumerate(fpaths)]
    obj = {"annotations": anns, "num_classes": 3, "source": "ncl"}
    path.write_text(json.dumps(obj))
    return obj


@pytest.fixture
def places_json(tmp_path):
    fpaths = [f"{OLD}/train/a/{i}.jpg" for i in range(4)] + ["/other/root/b/9.jpg"]
    path = tmp_path / "Places_LT_val.json"
    return path, _write(path, fpaths)


def test_replace_changes_only_matching_fpaths_and_keeps_everything_else(places_json, capsys):
    path, before = places_json
    assert tool.main(["--json_file", str(path), "-f", OLD, "-r", "/data/places365"]) == 0
    after = json.loads(path.read_text())
    assert [a["fpath"] for a in after["annotations"]] == (
        [f"/data/places365/train/a/{i}.jpg" for i in range(4)] + ["/other/root/b/9.jpg"])
    for a, b in zip(after["annotations"], before["annotations"]):
        assert list(a) == list(b)  # same keys in the same order
        assert {k: v for k, v in a.items() if k != "fpath"} == {k: v for k, v in b.items() if k != "fpath"}
    assert after["source"] == "ncl" and after["num_classes"] == 3
    assert "in 4 of 5 fpaths" in capsys.readouterr().out


def test_replace_is_plain_substring_replace_of_all_occurrences(tmp_path):
    path = tmp_path / "a.json"
    _write(path, ["/x/data/x/1.jpg"], extra=False)
    tool.main(["--json_file", str(path), "--find_root", "x", "--replaces_to", "yy"])
    assert json.loads(path.read_text())["annotations"][0]["fpath"] == "/yy/data/yy/1.jpg"


def test_backup_holds_the_original_bytes(places_json):
    path, _ = places_json
    original = path.read_bytes()
    tool.main(["--json_file", str(path), "-f", OLD, "-r", "/new", "--backup"])
    assert Path(str(path) + ".bak").read_bytes() == original
    assert path.read_bytes() != original


def test_dry_run_writes_nothing(places_json, capsys):
    path, _ = places_json
    original = path.read_bytes()
    tool.main(["--json_file", str(path), "-f", OLD, "-r", "/new", "--dry-run", "--backup"])
    assert path.read_bytes() == original and not Path(str(path) + ".bak").exists()
    assert "4 of 5 fpaths would change" in capsys.readouterr().out


def test_no_matching_root_exits_nonzero_and_leaves_file_byte_identical(places_json, capsys):
    path, _ = places_json
    original = path.read_bytes()
    with pytest.raises(SystemExit) as e:
        tool.main(["--json_file", str(path), "-f", "/media/ssd1/user", "-r", "/new", "--backup"])
    assert e.value.code == 2
    assert "no fpath contains '/media/ssd1/user'" in capsys.readouterr().err
    assert path.read_bytes() == original
    assert sorted(os.listdir(path.parent)) == [path.name]  # no backup, no temp file


def test_crash_during_write_leaves_original_intact(places_json, monkeypatch):
    path, _ = places_json
    original = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        tool.main(["--json_file", str(path), "-f", OLD, "-r", "/new"])
    assert path.read_bytes() == original
    assert sorted(os.listdir(path.parent)) == [path.name]  # temp file cleaned up


@pytest.mark.parametrize("content, message", [
    ("{not json", "malformed JSON"),
    (json.dumps({"annotations": [{"image_id": 0, "fpath": OLD + "/a.jpg", "category_id": 5}], "num_classes": 3}),
     "out of range"),
    (json.dumps({"annotations": [{"image_id": 0, "fpath": OLD + "/a.jpg", "category_id": 0}]}),
     "missing key 'num_classes'"),
])
def test_invalid_json_is_refused_before_anything_is_written(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(SystemExit) as e:
        tool.main(["--json_file", str(path), "-f", OLD, "-r", "/new", "--backup"])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert path.read_text() == content and sorted(os.listdir(tmp_path)) == ["bad.json"]


def test_all_three_arguments_are_required(places_json):
    path, _ = places_json
    with pytest.raises(SystemExit) as e:
        tool.main(["--json_file", str(path), "-f", OLD])
    assert e.value.code == 2


def test_large_file_with_200k_entries_is_rewritten(tmp_path):
    path = tmp_path / "iNat.json"
    n = 200_000
    _write(path, [f"/media/ssd1/user/inaturalist2018/train_val2018/Plantae/{i}.jpg" for i in range(n)], extra=False)
    tool.main(["--json_file", str(path), "-f", "/media/ssd1/user/inaturalist2018", "-r", "/data/inat"])
    anns = json.loads(path.read_text())["annotations"]
    assert len(anns) == n
    assert anns[-1]["fpath"] == f"/data/inat/train_val2018/Plantae/{n - 1}.jpg"
