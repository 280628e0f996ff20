"""Long-tailed dataset builders: seeded selection (docs/data.md), val-from-leftover,
tools/make_cifar_lt.py and tools/build_fashion_mnist_lt.py on fixtures in the real file formats."""
import gzip
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import load_tool
from lib.data.annotations import class_counts, load_annotations
from lib.data.image_folder_writer import encode_png
from lib.data.longtail import (exponential_counts, format_imb_factor, select_long_tail,
                               validation_from_leftover)
from lib.utils.shots import shot_groups
from lib.utils.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
REAL_FMNIST = Path("/usr/share/datasets/fashion-mnist")




cifar_tool = load_tool("make_cifar_lt")
fmnist_tool = load_tool("build_fashion_mnist_lt")


# ---------------------------------------------------------------- fixtures in the real file formats
def _balanced_labels(n, num_classes, seed):
    return np.random.RandomState(seed).permutation(np.repeat(np.arange(num_classes), n // num_classes))


def write_cifar_pickles(root, dataset, n_train, n_test, data_fn=np.zeros, seed=123):
    """CIFAR's python-pickle layout: dicts with bytes keys, b'data' N x 3072 uint8, protocol 2."""
    C = 10 if dataset == "cifar10" else 100
    ytr, yte = _balanced_labels(n_train, C, seed), _balanced_labels(n_test, C, seed + 1)
    xtr, xte = data_fn((n_train, 3072), dtype=np.uint8), data_fn((n_test, 3072), dtype=np.uint8)

    def dump(path, x, y, key):
        d = {b"batch_label": b"fixture", key: y.tolist(), b"data": x, b"filenames": [b"f.png"] * len(y)}
        if key == b"fine_labels":
            d[b"coarse_labels"] = (y // 5).tolist()
        with open(path, "wb") as f:
            pickle.dump(d, f, protocol=2)

    if dataset == "cifar10":
        folder = Path(root) / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        step = n_train // 5
        for b in range(5):
            dump(folder / f"data_batch_{b + 1}", xtr[b * step:(b + 1) * step], ytr[b * step:(b + 1) * step], b"labels")
        dump(folder / "test_batch", xte, yte, b"labels")
    else:
        folder = Path(root) / "cifar-100-python"
        folder.mkdir(parents=True)
        dump(folder / "train", xtr, ytr, b"fine_labels")
        dump(folder / "test", xte, yte, b"fine_labels")
    return xtr, ytr, xte, yte


@pytest.fixture(scope="module", params=["cifar10", "cifar100"])
def real_shaped_cifar(request, tmp_path_factory):
    """50,000 + 10,000 zero images with CIFAR's real shapes and balanced random labels, read by the tool."""
    root = tmp_path_factory.mktemp(f"real_{request.param}")
    write_cifar_pickles(root, request.param, 50000, 10000)
    data = cifar_tool.read_cifar(str(root), request.param)
    shutil.rmtree(root)  # ~180 MB
    assert data["train"][0].shape == (50000, 32, 32, 3) and data["test"][0].shape == (10000, 32, 32, 3)
    # keep only the labels in memory; the size check needs nothing else
    yield request.param, {"train": (None, data["train"][1]), "test": (None, data["test"][1])}


def write_idx(path, arr):
    """IDX format, gzipped: magic 0x0000 08 <ndim> (2051 images / 2049 labels), big-endian dims, data."""
    arr = np.asarray(arr, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + np.asarray(arr.shape, dtype=">u4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


@pytest.fixture
def fake_fmnist(tmp_path):
    src = tmp_path / "fmnist"
    src.mkdir()
    rs = np.random.RandomState(5)
    ytr, yte = _balanced_labels(300, 10, 1), _balanced_labels(30, 10, 2)  # 30 / 3 per class
    xtr = rs.randint(0, 256, (300, 28, 28)).astype(np.uint8)
    xte = rs.randint(0, 256, (30, 28, 28)).astype(np.uint8)
    write_idx(src / "train-images-idx3-ubyte.gz", xtr)
    write_idx(src / "train-labels-idx1-ubyte.gz", ytr)
    write_idx(src / "t10k-images-idx3-ubyte.gz", xte)
    write_idx(src / "t10k-labels-idx1-ubyte.gz", yte)
    return src, xtr, ytr, xte, yte


# ---------------------------------------------------------------- selection
def test_legacy_shuffle_stream_is_frozen_and_global_seed_equals_private_randomstate():
    a = np.arange(10)
    np.random.RandomState(0).shuffle(a)
    assert a.tolist() == [2, 8, 4, 9, 1, 6, 7, 3, 0, 5]  # NumPy's legacy MT19937 stream, seed 0
    state = np.random.get_state()
    try:
        np.random.seed(0)
        b, c = np.arange(37), np.arange(5)
        np.random.shuffle(b), np.random.shuffle(c)
    finally:
        np.random.set_state(state)
    rs = np.random.RandomState(0)
    b2, c2 = np.arange(37), np.arange(5)
    rs.shuffle(b2), rs.shuffle(c2)
    assert b.tolist() == b2.tolist() and c.tolist() == c2.tolist()


def test_select_long_tail_shuffles_each_class_positions_with_one_seeded_generator():
    labels = _balanced_labels(200, 4, 9)
    counts = [50, 20, 8, 2]
    kept, leftover = select_long_tail(labels, counts, seed=3)
    state = np.random.get_state()
    try:
        np.random.seed(3)  # the original recipe: global legacy generator, seeded once
        for c, n in enumerate(counts):
            idx = np.where(labels == c)[0]
            np.random.shuffle(idx)
            assert kept[c].tolist() == idx[:n].tolist()
            assert leftover[c].tolist() == idx[n:].tolist()
    finally:
        np.random.set_state(state)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # global generator untouched by us


def test_select_long_tail_first_mode_keeps_file_order():
    labels = np.array([1, 0, 1, 0, 0, 1, 0, 1, 1, 0])
    kept, leftover = select_long_tail(labels, [3, 2], mode="first")
    assert kept[0].tolist() == [1, 3, 4] and leftover[0].tolist() == [6, 9]
    assert kept[1].tolist() == [0, 2] and leftover[1].tolist() == [5, 7, 8]


def test_select_long_tail_rejects_too_few_images_and_bad_labels():
    with pytest.raises(UserError, match="class 1 has 2 images"):
        select_long_tail(np.array([0, 0, 0, 1, 1]), [3, 3])
    with pytest.raises(UserError, match="labels must lie"):
        select_long_tail(np.array([0, 2]), [1, 1])
    with pytest.raises(UserError, match="selection"):
        select_long_tail(np.array([0, 1]), [1, 1], mode="random")


@pytest.mark.parametrize("imb, sizes", [(100, (12406, 10847)), (50, (13996, 12608)), (10, (20431, 19573))])
def test_cifar_lt_sizes_on_real_shaped_pickles(real_shaped_cifar, imb, sizes):
    dataset, data = real_shaped_cifar
    C = 10 if dataset == "cifar10" else 100
    labels = data["train"][1]
    plan = cifar_tool.plan_cifar_lt(labels, C, imb)
    assert plan["n_max"] == 50000 / C
    assert plan["train"].size == sizes[0 if dataset == "cifar10" else 1]
    assert np.bincount(labels[plan["train"]], minlength=C).tolist() == exponential_counts(50000 / C, imb, C)
    assert "size check passed" in cifar_tool.check_expected_sizes(dataset, imb, data, plan)
    again = cifar_tool.plan_cifar_lt(labels, C, imb)
    assert np.array_equal(plan["train"], again["train"])  # identical across runs
    # class 0 comes first: the first n_0 of an explicit RandomState(0) shuffle of class 0's positions
    idx0 = np.flatnonzero(labels == 0)
    np.random.RandomState(0).shuffle(idx0)
    n0 = int(50000 / C)
    assert plan["train"][:n0].tolist() == idx0[:n0].tolist()


def test_cifar_lt_per_class_counts_match_the_spec_lists():
    assert exponential_counts(5000, 100, 10) == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert exponential_counts(5000, 50, 10) == [5000, 3237, 2096, 1357, 878, 568, 368, 238, 154, 100]
    c100 = exponential_counts(500, 100, 100)
    assert c100[:10] == [500, 477, 455, 434, 415, 396, 378, 361, 344, 328] and c100[-5:] == [6, 5, 5, 5, 5]
    assert [len(g) for g in shot_groups(c100).values()] == [35, 35, 30]
    assert format_imb_factor(100.0) == "100" and format_imb_factor(12.5) == "12.5"


def test_validation_from_leftover_is_disjoint_and_head_class_gets_none():
    labels = _balanced_labels(500, 5, 4)
    counts = exponential_counts(100, 10, 5)  # 100 ... 10: class 0 keeps all of its images
    kept, leftover = select_long_tail(labels, counts, seed=0)
    kept_before = [k.copy() for k in kept]
    val, report = validation_from_leftover(leftover, 30)
    assert [r["taken"] for r in report] == [0, 30, 30, 30, 30]
    assert report[0] == {"class": 0, "requested": 30, "available": 0, "taken": 0}
    assert set(np.concatenate(val)).isdisjoint(np.concatenate(kept))
    assert all(v.tolist() == p[:30].tolist() for v, p in zip(val, leftover))  # first k of the shuffled pool
    assert all(np.array_equal(a, b) for a, b in zip(kept, kept_before))  # training set unchanged
    # a class with a small pool gets what is there
    val, report = validation_from_leftover([np.arange(3), np.arange(10)], 5)
    assert [len(v) for v in val] == [3, 5]
    # seeded variant permutes copies and is deterministic
    pool = [np.arange(20)]
    a, _ = validation_from_leftover(pool, 5, seed=1)
    b, _ = validation_from_leftover(pool, 5, seed=1)
    assert a[0].tolist() == b[0].tolist() != list(range(5)) and pool[0].tolist() == list(range(20))


# ---------------------------------------------------------------- make_cifar_lt.py end to end
def _cifar_small(tmp_path):
    root = tmp_path / "cifar"
    rand = lambda shape, dtype: np.random.RandomState(7).randint(0, 256, shape).astype(dtype)
    return root, write_cifar_pickles(root, "cifar10", 300, 30, data_fn=rand)


def _anns(path):
    with open(path) as f:
        return json.load(f)["annotations"]


def test_make_cifar_lt_writes_loadable_jsons_and_lossless_pngs(tmp_path, capsys):
    root, (xtr, ytr, xte, yte) = _cifar_small(tmp_path)
    out = tmp_path / "out"
    assert cifar_tool.main(["--cifar_root", str(root), "--dataset", "cifar10", "--imb_factor", "10",
                            "--output_path", str(out), "--val-per-class", "4"]) == 0
    assert "not CIFAR-shaped" in capsys.readouterr().out
    prefix = "cao_cifar10_imbalance10"
    folder = out / prefix
    assert sorted(p.name for p in out.iterdir()) == [prefix]  # no .partial left behind
    counts = exponential_counts(30, 10, 10)  # n_max = N / C = 30
    entries, C = load_annotations(folder / f"{prefix}_train.json")
    assert C == 10 and class_counts([e["label"] for e in entries], 10) == counts
    assert [e["image_id"] for e in entries] == list(range(sum(counts)))
    assert all(not os.path.isabs(e["fpath"]) and e["im_height"] == e["im_width"] == 32 for e in entries)
    e = entries[-1]
    img = np.asarray(Image.open(e["path"]))
    assert img.shape == (32, 32, 3)
    assert np.array_equal(img, xtr[e["source_index"]].reshape(3, 32, 32).transpose(1, 2, 0))
    assert ytr[e["source_index"]] == e["label"]
    val, _ = load_annotations(folder / f"{prefix}_val.json")
    assert class_counts([v["label"] for v in val], 10) == [0] + [4] * 9  # head class keeps everything
    assert {v["source_index"] for v in val}.isdisjoint({t["source_index"] for t in entries})
    test, _ = load_annotations(folder / f"{prefix}_test.json")
    assert len(test) == 30 and [t["source_index"] for t in test] == list(range(30))
    assert np.array_equal(np.asarray(Image.open(test[5]["path"])), xte[5].reshape(3, 32, 32).transpose(1, 2, 0))


def test_make_cifar_lt_training_set_is_the_same_with_and_without_val(tmp_path):
    root, _ = _cifar_small(tmp_path)
    base = ["--cifar_root", str(root), "--dataset", "cifar10", "--imb_factor", "10"]
    cifar_tool.main(base + ["--output_path", str(tmp_path / "a")])
    cifar_tool.main(base + ["--output_path", str(tmp_path / "b"), "--val-per-class", "3"])
    name = "cao_cifar10_imbalance10/cao_cifar10_imbalance10_train.json"
    assert _anns(tmp_path / "a" / name) == _anns(tmp_path / "b" / name)
    assert not (tmp_path / "a" / "cao_cifar10_imbalance10" / "cao_cifar10_imbalance10_val.json").exists()


def test_make_cifar_lt_first_selection_and_dry_run(tmp_path, capsys):
    root, (xtr, ytr, _, _) = _cifar_small(tmp_path)
    argv = ["--cifar_root", str(root), "--dataset", "cifar10", "--imb_factor", "10", "--output_path",
            str(tmp_path / "out"), "--selection", "first"]
    cifar_tool.main(argv + ["--dry-run"])
    assert not (tmp_path / "out").exists() and "train counts: 30 23" in capsys.readouterr().out
    cifar_tool.main(argv)
    anns = _anns(tmp_path / "out" / "wb_cifar10_imbalance10" / "wb_cifar10_imbalance10_train.json")
    cls1 = [a["source_index"] for a in anns if a["category_id"] == 1]
    assert cls1 == np.flatnonzero(ytr == 1)[:len(cls1)].tolist()


def test_make_cifar_lt_missing_pickles_is_a_user_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cifar_tool.main(["--cifar_root", str(tmp_path), "--dataset", "cifar100", "--imb_factor", "100",
                         "--output_path", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "cifar-100-python" in err and err.count("\n") == 1


def test_encode_png_round_trips_gray_and_rgb():
    rs = np.random.RandomState(0)
    for img, mode in ((rs.randint(0, 256, (5, 7)), "L"), (rs.randint(0, 256, (4, 6, 3)), "RGB")):
        img = img.astype(np.uint8)
        im = Image.open(io.BytesIO(encode_png(img)))
        assert im.mode == mode and np.array_equal(np.asarray(im), img)


# ---------------------------------------------------------------- build_fashion_mnist_lt.py
def test_build_fashion_mnist_lt_on_fake_idx_files(tmp_path, fake_fmnist, capsys):
    src, xtr, ytr, xte, yte = fake_fmnist
    out = tmp_path / "out"
    argv = ["--source", str(src), "--output_path", str(out), "--n_max", "20", "--imb_factor", "10",
            "--val-per-class", "5"]
    assert fmnist_tool.main(argv) == 0
    folder = out / "fmnist_lt_if10"
    counts = exponential_counts(20, 10, 10)
    train, C = load_annotations(folder / "fmnist_lt_if10_train.json")
    assert C == 10 and class_counts([e["label"] for e in train], 10) == counts
    val, _ = load_annotations(folder / "fmnist_lt_if10_val.json")
    assert class_counts([e["label"] for e in val], 10) == [5] * 10
    assert {e["source_index"] for e in val}.isdisjoint({e["source_index"] for e in train})
    test, _ = load_annotations(folder / "fmnist_lt_if10_test.json")
    assert len(test) == 30
    for e, x in ((train[3], xtr), (val[-1], xtr), (test[7], xte)):
        im = Image.open(e["path"])
        assert im.mode == "L" and np.array_equal(np.asarray(im), x[e["source_index"]])
    with open(folder / "classes.json") as f:
        names = json.load(f)
    assert len(names) == 10 and names[0] == "T-shirt/top" and names[9] == "Ankle boot"
    # idempotent: same parameters -> nothing rewritten
    mtime = os.stat(folder / "fmnist_lt_if10_train.json").st_mtime_ns
    capsys.readouterr()
    assert fmnist_tool.main(argv) == 0
    assert "already built" in capsys.readouterr().out
    assert os.stat(folder / "fmnist_lt_if10_train.json").st_mtime_ns == mtime
    assert fmnist_tool.main(argv + ["--force"]) == 0
    assert "already built" not in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["fmnist_lt_if10"]


def test_build_fashion_mnist_lt_missing_source_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "nowhere"
    r = subprocess.run([sys.executable, "tools/build_fashion_mnist_lt.py", "--source", str(missing),
                        "--output_path", str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and str(missing) in r.stderr
    assert "apt-get install -y dataset-fashion-mnist" in r.stderr
    assert not (tmp_path / "out").exists()


def test_read_idx_rejects_a_wrong_magic(tmp_path):
    path = tmp_path / "bad.gz"
    write_idx(path, np.zeros((2, 3), np.uint8))  # 2 dims: not an image file
    with pytest.raises(UserError, match="IDX"):
        fmnist_tool.read_idx(str(path), 3)


@pytest.mark.skipif(not (REAL_FMNIST / "train-labels-idx1-ubyte.gz").exists(),
                    reason="Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist)")
def test_real_fashion_mnist_lt_selection_counts():
    labels = fmnist_tool.read_idx(str(REAL_FMNIST / "train-labels-idx1-ubyte.gz"), 1).astype(np.int64)
    assert labels.size == 60000
    plan = fmnist_tool.plan_fashion_mnist_lt(labels)  # n_max 1000, IF 100, val 100, seed 0
    assert plan["train"].size == 2478 and plan["counts"][0] == 1000 and plan["counts"][-1] == 10
    assert np.bincount(labels[plan["train"]], minlength=10).tolist() == plan["counts"]
    assert [len(g) for g in shot_groups(plan["counts"]).values()] == [5, 3, 2]
    assert plan["val"].size == 1000 and not set(plan["val"]) & set(plan["train"])
    assert fmnist_tool.plan_fashion_mnist_lt(labels, n_max=5000)["train"].size == 12406
