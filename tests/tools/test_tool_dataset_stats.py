"""tools/dataset_stats.py: images, IF and many/medium/few of an annotation JSON (docs/data.md)."""
import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import load_tool
from lib.data.longtail import exponential_counts

REPO = Path(__file__).resolve().parents[2]




tool = load_tool("dataset_stats")


def _write_json(path, counts):
    """Annotation JSON with counts[c] entries of class c; fpaths are fake (stats never open images)."""
    anns = [{"image_id": i, "fpath": f"/fake/{c}/{i}.png", "category_id": c}
            for i, c in enumerate(c for c, n in enumerate(counts) for _ in range(n))]
    path.write_text(json.dumps({"annotations": anns, "num_classes": len(counts)}))
    return path


@pytest.fixture
def cifar100_if100(tmp_path):
    return _write_json(tmp_path / "cifar100_imbalance100_train.json", exponential_counts(500, 100, 100))


def test_cifar100_if100_table_reports_size_imbalance_and_35_35_30_groups(cifar100_if100, capsys):
    assert tool.main([str(cifar100_if100)]) == 0
    out = capsys.readouterr().out
    lines = {line.split("  ")[0].strip(): line for line in out.splitlines()}
    assert lines["images"].endswith("10,847")
    assert lines["max / min per class"].endswith("500 / 5")
    assert lines["imbalance factor"].endswith("100")
    assert "35 classes" in lines["many (n > 100)"]
    assert "35 classes" in lines["medium (20 <= n <= 100)"]
    assert "30 classes" in lines["few (n < 20)"]
    # aligned: every value starts in the same column
    assert len({len(line) - len(line[len(key):].lstrip()) for key, line in lines.items()}) == 1


def test_json_output_is_machine_readable(cifar100_if100, capsys):
    tool.main([str(cifar100_if100), "--json"])
    s = json.loads(capsys.readouterr().out)
    assert s["images"] == 10847 and s["classes"] == 100
    assert s["imbalance_factor"] == 100
    assert s["group_classes"] == {"many": 35, "medium": 35, "few": 30}
    assert s["class_counts"] == exponential_counts(500, 100, 100)


def test_plot_writes_a_png(cifar100_if100, tmp_path):
    out = tmp_path / "counts.png"
    tool.main([str(cifar100_if100), "--plot", str(out)])
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 100


def test_groups_of_a_test_json_come_from_train_json(cifar100_if100, tmp_path, capsys):
    test_json = _write_json(tmp_path / "test.json", [100] * 100)  # balanced, as the CIFAR test set
    tool.main([str(test_json), "--train-json", str(cifar100_if100), "--json"])
    s = json.loads(capsys.readouterr().out)
    assert s["images"] == 10000 and s["imbalance_factor"] == 1
    assert s["group_classes"] == {"many": 35, "medium": 35, "few": 30}
    assert s["group_images"] == {"many": 3500, "medium": 3500, "few": 3000}
    tool.main([str(test_json), "--json"])  # by its own counts every class has 100 images: all medium
    assert json.loads(capsys.readouterr().out)["group_classes"] == {"many": 0, "medium": 100, "few": 0}


def test_empty_groups_and_classes_are_reported_as_na(tmp_path, capsys):
    path = _write_json(tmp_path / "a.json", [150, 120, 0])
    tool.main([str(path)])
    out = capsys.readouterr().out
    assert "n/a (a class has 0 images)" in out
    assert "(1 empty)" in out
    assert "n/a (0 classes)" in out  # medium is empty (the empty class counts as few)


def test_invalid_json_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"annotations": [], "num_classes": 3}))
    with pytest.raises(SystemExit) as e:
        tool.main([str(path)])
    assert e.value.code == 2 and "'annotations' is empty" in capsys.readouterr().err
