"""tools/convert_from_tfrecords.py on tiny TFRecord fixtures in Cui et al.'s layout (docs/data.md)."""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import load_tool
from lib.data.annotations import read_json, validate_annotations

REPO = Path(__file__).resolve().parents[2]
SUBDIR, PREFIX = "cifar-10-data-im-0.01", "cifar10_imbalance100"




tool = load_tool("convert_from_tfrecords")


def _write_records(path, images, labels):
    from tfrecord import TFRecordWriter

    w = TFRecordWriter(str(path))
    for img, lab in zip(images, labels):
        # Cui's layout: channel-first 3x32x32 RGB raw bytes
        w.write({"image": (img.transpose(2, 0, 1).tobytes(), "byte"), "label": (int(lab), "int")})
    w.close()


@pytest.fixture
def cui_dir(tmp_path):
    """cifar-10-data-im-0.01 with 30 train and 20 eval records; returns (root, {mode: (images, labels)})."""
    rng = np.random.default_rng(0)
    src = tmp_path / "in" / SUBDIR
    src.mkdir(parents=True)
    data = {}
    for fname, mode, n in (("train.tfrecords", "train", 30), ("eval.tfrecords", "valid", 20)):
        images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)  # HWC RGB
        labels = rng.integers(0, 10, size=n)
        _write_records(src / fname, images, labels)
        data[mode] = (images, labels)
    return tmp_path / "in", data


def test_png_conversion_keeps_pixels_labels_and_writes_valid_json(cui_dir, tmp_path):
    src, data = cui_dir
    out = tmp_path / "out"
    assert tool.main(["--input_path", str(src), "--output_path", str(out)]) == 0
    root = out / PREFIX
    assert sorted(os.listdir(out)) == [PREFIX]  # no .partial folder left
    for mode, (images, labels) in data.items():
        obj = read_json(root / f"{PREFIX}_{mode}.json")
        anns, C = validate_annotations(obj)
        assert C == 10 and len(anns) == len(labels)
        for step, a in enumerate(anns):
            expected_path = root / "images" / str(labels[step]) / f"{mode}_{step}.png"
            assert a == {"image_id": step, "fpath": str(expected_path), "category_id": int(labels[step]),
                         "im_height": 32, "im_width": 32}
            assert os.path.isabs(a["fpath"])
            np.testing.assert_array_equal(np.asarray(Image.open(a["fpath"])), images[step])


def test_jpg_format_writes_jpeg_files(cui_dir, tmp_path):
    src, data = cui_dir
    out = tmp_path / "out"
    tool.main(["--input_path", str(src), "--output_path", str(out), "--format", "jpg"])
    anns = read_json(out / PREFIX / f"{PREFIX}_train.json")["annotations"]
    assert all(a["fpath"].endswith(".jpg") for a in anns)
    with Image.open(anns[0]["fpath"]) as im:
        assert im.format == "JPEG" and im.size == (32, 32)


def test_per_class_counts_are_logged(cui_dir, tmp_path, capsys):
    src, data = cui_dir
    tool.main(["--input_path", str(src), "--output_path", str(tmp_path / "out")])
    counts = np.bincount(data["train"][1], minlength=10)
    assert f"{PREFIX} train: 30 images, per-class counts: {' '.join(map(str, counts))}" in capsys.readouterr().out


def test_existing_output_is_refused_without_overwrite(cui_dir, tmp_path):
    src, _ = cui_dir
    args = ["--input_path", str(src), "--output_path", str(tmp_path / "out")]
    tool.main(args)
    with pytest.raises(SystemExit) as e:
        tool.main(args)
    assert e.value.code == 2
    assert tool.main(args + ["--overwrite"]) == 0


def test_no_known_subdirectory_is_an_error(tmp_path, capsys):
    (tmp_path / "in" / "something-else").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        tool.main(["--input_path", str(tmp_path / "in"), "--output_path", str(tmp_path / "out")])
    assert e.value.code == 2
    assert "none of the known subdirectories" in capsys.readouterr().err


def _truncate_inside_record_5(path):
    raw = path.read_bytes()
    record_len = len(raw) // 20  # 20 equal-size eval records
    path.write_bytes(raw[: 5 * record_len + record_len // 2])


def test_truncated_record_file_is_one_user_error_and_leaves_no_output(cui_dir, tmp_path, capsys):
    src, _ = cui_dir
    bad = src / SUBDIR / "eval.tfrecords"
    _truncate_inside_record_5(bad)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        tool.main(["--input_path", str(src), "--output_path", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "record 5" in err[0]
    assert os.listdir(out) == []  # neither <prefix> nor .<prefix>.partial


def test_wrong_image_size_in_a_record_is_reported_with_its_index(tmp_path, capsys):
    from tfrecord import TFRecordWriter

    src = tmp_path / "in" / SUBDIR
    src.mkdir(parents=True)
    _write_records(src / "train.tfrecords", np.zeros((3, 32, 32, 3), np.uint8), [0, 1, 2])
    w = TFRecordWriter(str(src / "eval.tfrecords"))
    w.write({"image": (bytes(100), "byte"), "label": (0, "int")})
    w.close()
    with pytest.raises(SystemExit):
        tool.main(["--input_path", str(tmp_path / "in"), "--output_path", str(tmp_path / "out")])
    assert "eval.tfrecords: record 0: 'image' must be one bytes value of 3072 bytes" in capsys.readouterr().err
    assert not (tmp_path / "out" / PREFIX).exists()


@pytest.mark.slow  # a fresh interpreter imports tfrecord (which imports torch): a few seconds
def test_truncated_record_file_exits_2_with_one_line_from_the_command_line(cui_dir, tmp_path):
    src, _ = cui_dir
    bad = src / SUBDIR / "eval.tfrecords"
    _truncate_inside_record_5(bad)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "tools/convert_from_tfrecords.py", "--input_path", str(src),
                        "--output_path", str(out)], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(bad) in err[0]
    assert not (out / PREFIX).exists() and not (out / f".{PREFIX}.partial").exists()
