"""Large annotation JSONs (issue 15 §4): the compact table gives the same items as the plain dicts, the
JSON is read once, and a missing image root or file is found early and named. The speed and memory
targets are measured by benchmarks/studies/large_json.py (benchmarks/results/studies/large_json.md), not here."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import lib.data.annotations as annotations
from lib.config.defaults import get_defaults
from lib.data.annotations import (AnnotationTable, check_image_files, load_annotations, peek_image_root,
                                  read_table)
from lib.data.build import DataSplits
from lib.data.dataset import JsonDataset
from lib.utils.errors import UserError
from test_annotations import BAD_JSONS


def make_set(tmp_path, n=300, classes=7, absolute=False, names=None):
    """n entries over `classes` class folders, hard links to 3 tiny PNGs; some non-ASCII file names."""
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for k in range(3):
        Image.new("L", (6, 6), 40 * k).save(src / f"{k}.png")
    anns = []
    for i in range(n):
        c = (i * 5) % classes
        name = (names or (lambda i: f"img_{i}{'é' if i % 11 == 0 else ''}.png"))(i)
        rel = os.path.join("images", f"class_{c}", name)
        os.makedirs(tmp_path / "images" / f"class_{c}", exist_ok=True)
        if not (tmp_path / rel).exists():
            os.link(src / f"{i % 3}.png", tmp_path / rel)
        anns.append({"image_id": 1000 + i, "fpath": str(tmp_path / rel) if absolute else rel, "category_id": c,
                     "im_height": 6, "im_width": 6})
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"annotations": anns, "num_classes": classes}))
    return path, anns


@pytest.mark.parametrize("absolute", [False, True])
def test_compact_table_gives_the_same_entries_and_dataset_items_as_the_dicts(tmp_path, absolute):
    path, anns = make_set(tmp_path, absolute=absolute)
    entries, C = load_annotations(path)
    table = read_table(path)
    assert len(table) == len(entries) == 300 and table.num_classes == C == 7
    for i in (0, 1, 11, 150, 299):
        e = table.entry(i)
        assert e == {k: entries[i][k] for k in ("fpath", "category_id", "path", "label")}
        assert table.fpath(i) == anns[i]["fpath"] and table.path(i) == entries[i]["path"]
    assert table.paths() == [e["path"] for e in entries]
    assert table.category_ids.dtype == np.int64 and table.category_ids.tolist() == [a["category_id"] for a in anns]
    ds = JsonDataset(str(path))
    assert ds.labels.tolist() == [e["label"] for e in entries]
    assert ds.class_counts() == [sum(e["label"] == c for e in entries) for c in range(7)]
    for i in (0, 11, 299):
        item = ds[i]
        assert item["label"] == entries[i]["label"] and item["index"] == i
        assert np.array_equal(np.asarray(item["image"]), np.asarray(Image.open(entries[i]["path"]).convert("RGB")))


def test_table_keeps_no_per_entry_python_objects(tmp_path):
    """Paths live in one bytes object + an offset array; labels in one int64 array."""
    path, _ = make_set(tmp_path, n=200)
    table = read_table(path)
    kinds = {k: type(v) for k, v in vars(table).items()}
    assert not any(t in (list, dict, tuple, set) for t in kinds.values()), kinds
    assert isinstance(table._blob, bytes) and table._starts.shape == (201,)


def test_relative_paths_resolve_against_root_in_the_table(tmp_path):
    path, anns = make_set(tmp_path, n=20)
    moved = tmp_path / "elsewhere.json"
    moved.write_text(path.read_text())
    (tmp_path / "sub").mkdir()
    os.replace(moved, tmp_path / "sub" / "elsewhere.json")
    table = read_table(tmp_path / "sub" / "elsewhere.json", root=str(tmp_path))
    assert table.path(3) == os.path.join(str(tmp_path), anns[3]["fpath"])


@pytest.mark.parametrize("obj, message", BAD_JSONS)
def test_table_reports_bad_json_like_the_dict_validator(tmp_path, obj, message):
    p = tmp_path / "bad.json"
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    with pytest.raises(UserError, match=message):
        read_table(p)


@pytest.mark.parametrize("bad", [
    [{"image_id": 0, "fpath": "a.png", "category_id": 0}, "not an object"],
    [{"image_id": 0, "fpath": "a.png", "category_id": 0}, {"image_id": 1, "fpath": "", "category_id": 0}],
    [{"image_id": 0, "fpath": "a.png", "category_id": 0}, {"image_id": 1, "fpath": 3, "category_id": 0}],
    [{"image_id": 0, "fpath": "a.png", "category_id": 0}, {"image_id": 1, "fpath": "b.png", "category_id": True}],
    [{"image_id": 0, "fpath": "a.png", "category_id": 0}, {"image_id": [1], "fpath": "b.png", "category_id": 0}],
])
def test_first_bad_entry_is_named_by_index(tmp_path, bad):
    p = tmp_path / "bad.json"
    p.write_text(json.dumps({"annotations": bad, "num_classes": 2}))
    with pytest.raises(UserError, match=r"annotation 1\b"):
        read_table(p)


def test_missing_root_is_found_by_the_early_sample_and_names_root_and_first_file(tmp_path, monkeypatch):
    """A moved image root: no folder listing happens (the sample finds it), and the message names the
    first missing file and the outermost missing folder."""
    anns = [{"image_id": i, "fpath": f"/nonexistent_ltr_root/iNat18/train_val2018/{i % 50}/{i}.jpg",
             "category_id": i % 5} for i in range(5000)]
    path = tmp_path / "moved.json"
    path.write_text(json.dumps({"annotations": anns, "num_classes": 5}))
    table = read_table(path)
    monkeypatch.setattr(annotations.os, "listdir", lambda *a: pytest.fail("the full scan ran"))
    with pytest.raises(UserError) as e:
        check_image_files(table, str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}: annotation 0: image not found: /nonexistent_ltr_root/iNat18/train_val2018/0/0.jpg")
    assert "the folder /nonexistent_ltr_root does not exist" in msg and "\n" not in msg


def test_missing_root_is_reported_before_the_json_is_parsed(tmp_path, monkeypatch):
    anns = [{"image_id": i, "fpath": f"imgs/{i}.png", "category_id": 0} for i in range(100)]
    path = tmp_path / "set.json"
    path.write_text(json.dumps({"annotations": anns, "num_classes": 1}))
    monkeypatch.setattr(annotations, "read_json", lambda *a, **k: pytest.fail("the JSON was parsed"))
    with pytest.raises(UserError) as e:
        peek_image_root(path, root=str(tmp_path / "no_root"))
    msg = str(e.value)
    assert f"image not found: {tmp_path / 'no_root' / 'imgs' / '0.png'} (the first fpath in the file" in msg
    assert f"the folder {tmp_path / 'no_root'} does not exist" in msg and "DATASET.ROOT" in msg


def test_peek_stays_quiet_when_some_images_exist(tmp_path):
    path, _ = make_set(tmp_path, n=30)
    assert peek_image_root(path) is None


def test_data_splits_report_a_moved_valid_root_before_parsing_train(tmp_path, monkeypatch):
    path, _ = make_set(tmp_path, n=30)
    moved = tmp_path / "moved.json"
    moved.write_text(path.read_text().replace('"images/', '"gone/'))
    cfg = get_defaults()
    cfg.DATASET.TRAIN_JSON, cfg.DATASET.VALID_JSON = str(path), str(moved)
    monkeypatch.setattr(annotations, "read_json", lambda *a, **k: pytest.fail("a JSON was parsed"))
    with pytest.raises(UserError, match=rf"{moved}: image not found: .*gone/class_0/img_0é.png .*the folder "
                                        rf"{tmp_path / 'gone'} does not exist"):
        DataSplits(cfg)


@pytest.mark.parametrize("where", ["file", "folder"])
def test_one_missing_file_or_folder_outside_the_sample_is_found_by_the_folder_scan(tmp_path, where):
    path, anns = make_set(tmp_path, n=400, absolute=True)
    sample = set(annotations._spread(400, annotations.EARLY_SAMPLE))
    i = next(k for k in range(200, 400) if k not in sample)
    if where == "file":
        os.remove(anns[i]["fpath"])
        expected = rf"annotation {i}: image not found: {anns[i]['fpath']}$"
    else:
        anns[i]["fpath"] = str(tmp_path / "images" / "no_such_class" / "x.png")
        path.write_text(json.dumps({"annotations": anns, "num_classes": 7}))
        expected = (rf"annotation {i}: image not found: .*no_such_class/x.png \(the folder "
                    rf"{tmp_path / 'images' / 'no_such_class'} does not exist")
    with pytest.raises(UserError, match=expected):
        JsonDataset(str(path))


def test_large_sets_read_a_sample_of_headers_and_name_a_corrupt_image_when_it_loads(tmp_path, monkeypatch):
    path, anns = make_set(tmp_path, n=120)
    sample = set(annotations._spread(120, 8))
    bad = next(k for k in range(60, 120) if k not in sample)
    bad_path = tmp_path / anns[bad]["fpath"]
    os.remove(bad_path)
    bad_path.write_bytes(b"not an image")
    with pytest.raises(UserError, match=rf"annotation {bad}: cannot read image"):  # small set: every header
        JsonDataset(str(path))
    monkeypatch.setattr(annotations, "HEADER_CHECK_ALL", 50)
    monkeypatch.setattr(annotations, "HEADER_CHECK_SAMPLE", 8)
    ds = JsonDataset(str(path))  # the corrupt file is not in the sample: start-up passes
    with pytest.raises(UserError, match=rf"^{path}: annotation {bad}: cannot read image {bad_path}"):
        ds[bad]


def test_data_splits_read_the_train_json_once(tmp_path, monkeypatch):
    path, _ = make_set(tmp_path, n=50)
    calls = []
    real = annotations.read_table

    def counting(p, root=""):
        calls.append(os.fspath(p))
        return real(p, root)

    import lib.data.build as build
    import lib.data.dataset as dataset

    monkeypatch.setattr(build, "read_table", counting)
    monkeypatch.setattr(dataset, "read_table", counting)
    cfg = get_defaults()
    cfg.DATASET.TRAIN_JSON = cfg.DATASET.VALID_JSON = str(path)
    data = DataSplits(cfg)
    assert calls == [str(path), str(path)]  # train once, valid once
    assert data.counts == data.train.class_counts() and len(data.valid) == 50


def test_class_counts_of_an_array_and_a_list_agree():
    labels = np.array([0, 2, 2, 5], dtype=np.int64)
    assert annotations.class_counts(labels, 6) == annotations.class_counts(labels.tolist(), 6) == [1, 0, 2, 0, 0, 1]


def test_table_of_unicode_paths_round_trips(tmp_path):
    fps = ["a/é.png", "b/日本.png", "/abs/ü/x.png", "c.png"]
    t = AnnotationTable("x.json", fps, [0, 1, 0, 1], 2, str(tmp_path))
    assert [t.fpath(i) for i in range(4)] == fps and t.fpaths() == fps
    assert t.paths() == [os.path.join(str(tmp_path), fps[0]), os.path.join(str(tmp_path), fps[1]), fps[2],
                         os.path.join(str(tmp_path), fps[3])]


def test_splits_share_one_listing_per_image_folder(tmp_path, monkeypatch):
    path, _ = make_set(tmp_path, n=60, classes=4)
    listed = []
    real = os.listdir
    monkeypatch.setattr(annotations.os, "listdir", lambda p: listed.append(p) or real(p))
    cfg = get_defaults()
    cfg.DATASET.TRAIN_JSON = cfg.DATASET.VALID_JSON = cfg.DATASET.TEST_JSON = str(path)
    DataSplits(cfg)
    assert sorted(listed) == sorted(str(tmp_path / "images" / f"class_{c}") for c in range(4))
