"""Your own images, end to end: a folder of class folders (real Fashion-MNIST PNGs, with a corrupt file, a
truncated PNG, an empty file, a duplicate, a stray file and an empty class) -> JSONs -> one training epoch ->
predictions on a folder with bad images in it -> an exported model whose outputs equal the eager method's
(CE, ACE, NCL, CADEL)."""
import contextlib
import csv
import io
import json
import os
import shutil

import pytest
import torch

from conftest import PY, ROOT, load_tool, run_cli
from lib.config import build_config
from lib.data.annotations import read_table
from lib.deploy.export import load_torchscript
from lib.deploy.inputs import ImageList, collate_good_and_bad, list_inputs
from lib.deploy.trained import TrainedRun
from lib.engine.trainer import train
from lib.evaluation.evaluator import posthoc_logits, predict_batch

build_tool, predict_tool, export_tool = (load_tool(n) for n in ("build_json_from_folders", "predict", "export"))
PER_CLASS = 12  # tiny_lt's train counts capped at 12: 106 images
BAD = {"Bag/corrupt.png": b"this is not an image", "Coat/empty.png": b""}


def run_quiet(main, argv):
    """(return value, stdout) of a tool's main run in this process."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        value = main(argv)
    return value, out.getvalue()


def copy_real_images(table, dest, names, cap):
    """Copy up to `cap` images per class of an annotation table into dest/<class name>/; returns the paths."""
    per, out = {}, []
    for i in range(len(table)):
        c = int(table.category_ids[i])
        if per.get(c, 0) < cap:
            per[c] = per.get(c, 0) + 1
            folder = dest / names[c].replace("/", "_")
            folder.mkdir(parents=True, exist_ok=True)
            out.append(shutil.copy(table.path(i), folder))
    return out


@pytest.fixture(scope="module")
def tree(tiny_lt, tmp_path_factory):
    root = tmp_path_factory.mktemp("own") / "photos"
    names = json.loads((tiny_lt["folder"] / "classes.json").read_text())
    copied = copy_real_images(read_table(tiny_lt["train"]), root, names, PER_CLASS)
    for rel, data in BAD.items():
        (root / rel).write_bytes(data)
    (root / "Coat" / "truncated.png").write_bytes(open(copied[-1], "rb").read()[:120])
    shutil.copy(copied[0], root / "T-shirt_top" / "again.png")  # same bytes: a duplicate
    (root / "notes.txt").write_text("not a class")
    (root / "Empty class").mkdir()
    return root, len(copied)


@pytest.fixture(scope="module")
def built(tree):
    root, _ = tree
    out = root.parent / "json"
    _, text = run_quiet(build_tool.main, [str(root), "--output-dir", str(out), "--seed", "1"])
    return out, text


def train_run(built, method, name, with_eval):
    out, _ = built
    opts = ["OUTPUT_DIR", str(out.parent / "runs"), "NAME", name, "DATASET.TRAIN_JSON", str(out / "train.json"),
            "DATASET.VALID_JSON", str(out / "val.json") if with_eval else "",
            "DATASET.TEST_JSON", str(out / "test.json") if with_eval else "", "TRAIN.MAX_EPOCH", "1",
            "TRAIN.BATCH_SIZE", "32", "TRAIN.NUM_WORKERS", "0", "TEST.NUM_WORKERS", "0", "TEST.BATCH_SIZE", "64",
            "TRAIN.CHANNELS_LAST", "False", "SHOW_STEP", "0", "TRAIN.OPTIMIZER.BASE_LR", "0.01"]
    if method == "ace":
        opts += ["TRAIN.UNMIX_EPOCH", "0"]
    with contextlib.redirect_stdout(io.StringIO()):
        train(build_config(os.path.join(ROOT, "configs", "fashion_mnist_lt", f"{method}_res32.yaml"), opts))
    return out.parent / "runs" / name


@pytest.fixture(scope="module")
def ce_run(built):
    """One CE epoch with val + test: the run the README's four commands make."""
    return train_run(built, "ce", "ce", with_eval=True)


@pytest.fixture(scope="module")
def new_images(tiny_lt, tmp_path_factory):
    """20 real test images (never trained on) plus four bad files, in a folder with a sub-folder."""
    folder = tmp_path_factory.mktemp("new") / "incoming"
    table = read_table(tiny_lt["test"])
    names = [f"c{c}" for c in range(10)]
    good = copy_real_images(table, folder / "batch1", names, 2)
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (folder / "zero.png").write_bytes(b"")
    (folder / "readme.txt").write_text("hello")
    (folder / "cut.png").write_bytes(open(good[0], "rb").read()[:100])
    return folder, sorted(good)


# ---------------------------------------------------------------- 1. data from folders
def test_build_json_skips_bad_input_one_line_each_and_reports_the_splits(tree, built):
    root, n_images = tree
    out, text = built
    for line in ("skip (unreadable): " + str(root / "Bag" / "corrupt.png"), "skip (unreadable): " +
                 str(root / "Coat" / "empty.png"), "skip (unreadable): " + str(root / "Coat" / "truncated.png"),
                 "skip (duplicate): " + str(root / "T-shirt_top"), "skip (stray): " + str(root / "notes.txt"),
                 "skip (empty): " + str(root / "Empty class")):
        assert sum(ln.startswith(line) for ln in text.splitlines()) == 1, line
    assert "left out: 1 duplicate, 1 empty, 1 stray, 3 unreadable (5 files)" in text
    assert "many (n > 100)" in text and "groups by                training counts of train.json" in text
    classes = json.loads((out / "classes.json").read_text())
    assert classes == sorted(classes) and len(classes) == 10 and "Empty class" not in classes
    tables = {s: read_table(out / f"{s}.json") for s in ("train", "val", "test")}
    paths = {s: set(t.paths()) for s, t in tables.items()}
    assert sum(map(len, paths.values())) == n_images and not (paths["train"] & (paths["val"] | paths["test"]))
    # stratified: floor(n * 0.1) per class for val and test; classes of fewer than 10 images stay in train
    count = {s: [int((t.category_ids == c).sum()) for c in range(10)] for s, t in tables.items()}
    totals = [sum(count[s][c] for s in count) for c in range(10)]
    assert count["val"] == count["test"] == [n // 10 for n in totals] and totals[:2] == [6, 7]  # Ankle boot, Bag
    assert "note: 2 classes have too few images for one val 0.1 and test 0.1 image each: all their images stay in " \
           "train: Ankle boot (6), Bag (7)" in text


def test_build_json_split_trees_long_tail_and_a_val_class_missing_from_train(tree, tmp_path):
    root, _ = tree
    split_root = tmp_path / "split"
    for cls in ("Trouser", "Bag", "Sandal"):
        shutil.copytree(root / cls, split_root / "train" / cls)
    shutil.copytree(root / "Dress", split_root / "val" / "Dress")  # not in train
    shutil.copytree(root / "Trouser", split_root / "val" / "Trouser", ignore=shutil.ignore_patterns("train_6*"))
    _, text = run_quiet(build_tool.main, [str(split_root), "--output-dir", str(tmp_path / "o"), "--imb-factor", "2",
                                          "--n-max", "6", "--rank-by-count"])
    assert sum("skip (unknown): " + str(split_root / "val" / "Dress") in ln for ln in text.splitlines()) == 1
    assert "skip (duplicate)" in text  # val/Trouser repeats train/Trouser's bytes: not kept twice
    counts = json.loads((tmp_path / "o" / "build_info.json").read_text())["counts"]
    assert counts["train"] == [6, 4, 3]  # exponential_counts(6, 2, 3), classes in name order Bag, Sandal, Trouser
    assert json.loads((tmp_path / "o" / "classes.json").read_text()) == ["Bag", "Sandal", "Trouser"]


def test_build_json_fails_cleanly_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "empty_root" / "cls").mkdir(parents=True)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as e:
        build_tool.main([str(tmp_path / "empty_root"), "--output-dir", str(out)])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("error: ") and "no class folder with a readable image" in err
    assert not out.exists() and not list(tmp_path.glob(".*partial"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    with pytest.raises(SystemExit):
        build_tool.main([str(tmp_path / "empty_root"), "--output-dir", str(mine)])
    assert (mine / "thesis.tex").read_text() == "keep me"


# ---------------------------------------------------------------- 2. predictions on new images
def eager_logits(run_dir, paths, tau=0.0, temperature=1.0, opts=()):
    """(the images of `paths` as one batch, the eager method's prediction of them as valid.py computes it:
    method.predict, then the post-hoc options, the class names)."""
    run = TrainedRun(str(run_dir), ["DEVICE", "cpu", *opts])
    images = collate_good_and_bad([ImageList(paths, run.transform, run.cfg.COLOR_SPACE)[i]
                                   for i in range(len(paths))])["image"]
    with torch.no_grad():
        z = predict_batch(run.method, run.method, {"image": images})["logits"].float()
    return images, posthoc_logits(z, run.counts, tau, temperature), run.class_names


def test_predict_writes_topk_rows_warns_per_bad_image_and_matches_the_eager_method(ce_run, new_images, tmp_path):
    folder, good = new_images
    csv_path = tmp_path / "preds.csv"
    (done, bad), text = run_quiet(predict_tool.main, [str(ce_run), str(folder), "--members", "--topk", "3",
                                                      "--output", str(csv_path), "TEST.NUM_WORKERS", "0"])
    warnings = [ln for ln in text.splitlines() if ln.startswith("warning: ")]
    assert done == len(good) == 20 and len(bad) == len(warnings) == 4
    assert "skipped 4 unreadable files" in text and "images/s" in text
    rows = list(csv.DictReader(open(csv_path)))
    assert [r["path"] for r in rows] == good and list(rows[0])[:3] == ["path", "class_1", "prob_1"]
    probs = [[float(r[f"prob_{k}"]) for k in (1, 2, 3)] for r in rows]
    assert all(p[0] >= p[1] >= p[2] and sum(p) <= 1 + 1e-6 for p in probs)
    _, logits, names = eager_logits(ce_run, good)
    assert [r["class_1"] for r in rows] == [names[c] for c in logits.argmax(1).tolist()]
    assert torch.allclose(torch.tensor([p[0] for p in probs]), logits.softmax(1).max(1).values, atol=1e-6)


def test_predict_exits_nonzero_only_when_nothing_could_be_predicted(ce_run, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"")
    with pytest.raises(SystemExit) as e:
        predict_tool.main([str(ce_run), str(tmp_path), "--output", str(tmp_path / "p.csv"), "TEST.NUM_WORKERS", "0"])
    assert e.value.code == 1 and "error: no image could be predicted" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        predict_tool.main([str(ce_run)])
    assert e.value.code == 2 and capsys.readouterr().err.count("\n") == 1


def test_inputs_from_lists_resolve_against_the_list_folder(new_images, tmp_path):
    folder, good = new_images
    rel = [os.path.relpath(p, folder) for p in good[:3]]
    (folder / "list.json").write_text(json.dumps(rel))
    (folder / "list.csv").write_text("path,label\n" + "".join(f"{p},x\n" for p in rel))
    assert list_inputs([str(folder / "list.json"), str(folder / "list.csv")]) == good[:3] * 2
    os.remove(folder / "list.json")
    os.remove(folder / "list.csv")


# ---------------------------------------------------------------- 3. export, 4. calibrated post-hoc
@pytest.mark.parametrize("method", ["ce", "ace", "ncl", "cadel"])
def test_exported_model_equals_the_eager_method(method, built, ce_run, new_images, tmp_path):
    run_dir = ce_run if method == "ce" else train_run(built, method, method, with_eval=False)
    opts = [] if method == "ce" else ["--checkpoint", "latest.pth"]
    sidecar, text = run_quiet(export_tool.main, [str(run_dir), "--output", str(tmp_path / "m.pt"), *opts])
    module, inside = load_torchscript(str(tmp_path / "m.pt"))
    assert inside == json.loads((tmp_path / "m.pt.json").read_text()) == sidecar
    assert sidecar["preprocessing"]["input_size"] == [28, 28] and sidecar["preprocessing"]["mean"] == [0.286] * 3
    assert len(sidecar["class_names"]) == 10 and sidecar["method"] == method
    _, good = new_images  # images the trace never saw, in batches of 20 and 1, run as a user would
    images, eager, _ = eager_logits(run_dir, good, opts=["TEST.MODEL_FILE", "latest.pth"] if opts else [])
    with torch.no_grad():
        assert (module(images) - eager).abs().max().item() <= 1e-5
        assert (module(images[3:4]) - eager[3:4]).abs().max().item() <= 1e-5


def test_posthoc_tau_and_temperature_reach_predict_and_export(ce_run, new_images, tmp_path):
    posthoc = load_tool("posthoc_tau")
    run_quiet(posthoc.main, [str(ce_run / "config.yaml"), "--temperature", "--out", str(tmp_path / "ph")])
    chosen = json.loads((tmp_path / "ph" / "results.json").read_text())
    tau, t = chosen["tau"]["main"], chosen["temperature"]["main"]
    assert t > 0 and chosen["ece"] is not None
    _, good = new_images
    run_quiet(predict_tool.main, [str(ce_run), *good, "--posthoc", str(tmp_path / "ph"), "--topk", "1",
                                  "--output", str(tmp_path / "p.csv")])
    images, eager, _ = eager_logits(ce_run, good, tau, t)
    got = torch.tensor([float(r["prob_1"]) for r in csv.DictReader(open(tmp_path / "p.csv"))])
    assert torch.allclose(got, eager.softmax(1).max(1).values, atol=1e-6)
    sidecar, _ = run_quiet(export_tool.main, [str(ce_run), "--posthoc", str(tmp_path / "ph"),
                                              "--output", str(tmp_path / "m.pt")])
    assert sidecar["posthoc"]["logit_adjust_tau"] == tau and sidecar["posthoc"]["temperature"] == t
    module, _ = load_torchscript(str(tmp_path / "m.pt"))
    with torch.no_grad():
        assert (module(images) - eager).abs().max().item() <= 1e-5


def test_onnx_export_matches_through_onnxruntime(ce_run, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    sidecar, _ = run_quiet(export_tool.main, [str(ce_run), "--format", "onnx", "--output", str(tmp_path / "m.onnx")])
    assert sidecar["verified_with"] == "onnxruntime" and (tmp_path / "m.onnx").stat().st_size > 0
    assert sidecar["max_abs_difference_vs_eager"] <= 1e-4 * max(1.0, sidecar["max_abs_logit"])


@pytest.mark.slow
def test_predict_and_build_as_a_user_types_them(ce_run, new_images, tmp_path):
    folder, _ = new_images
    r = run_cli([PY, "tools/predict.py", str(ce_run), str(folder), "--output", str(tmp_path / "p.csv"),
                 "TEST.NUM_WORKERS", "0"])
    assert r.returncode == 0 and r.stdout.count("warning: ") == 4 and "images/s" in r.stdout
    r = run_cli([PY, "tools/build_json_from_folders.py", str(tmp_path / "nothing"), "--output-dir", str(tmp_path / "o")])
    assert r.returncode == 2 and r.stderr.startswith("error: ") and r.stderr.count("\n") == 1
