"""The bad-input matrix (README "Reliability"): each case gives a one-line error naming the culprit,
exit code 2, and leaves an existing run folder untouched."""
import hashlib
import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import PY, ROOT, run_cli
from lib.config import build_config
from lib.engine.trainer import train

train_main = None


def snapshot(folder):
    out = {}
    for dirpath, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(dirpath, f)
            out[p] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def env(tiny_lt, tmp_path_factory):
    """A finished run folder (to prove nothing gets overwritten) and a checkpoint of another config."""
    global train_main
    d = tmp_path_factory.mktemp("bad")
    template = open(os.path.join(ROOT, "tests", "tiny_template.yaml")).read()
    cfg_path = d / "cfg.yaml"
    cfg_path.write_text(template.format(out=d / "out", train=tiny_lt["train"], val=tiny_lt["val"], test=tiny_lt["test"]))
    base = ["TRAIN.MAX_EPOCH", "1", "DATASET.TEST_JSON", ""]
    train(build_config(str(cfg_path), ["NAME", "existing"] + base))
    train(build_config(str(cfg_path), ["NAME", "other", "TRAIN.OPTIMIZER.WEIGHT_DECAY", "0.1"] + base))
    train_main = load_tool_main()
    return {"dir": d, "cfg": cfg_path, "run": d / "out" / "existing", "tiny": tiny_lt,
            "other_ckpt": d / "out" / "other" / "models" / "latest.pth"}


def load_tool_main():
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_entry", os.path.join(ROOT, "main", "train.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def json_variant(env, name, edit):
    data = json.load(open(env["tiny"]["train"]))
    data = edit(data)
    p = env["dir"] / f"{name}.json"
    p.write_text(data if isinstance(data, str) else json.dumps(data))
    return ["DATASET.TRAIN_JSON", str(p), "DATASET.ROOT", str(env["tiny"]["folder"])]


def set_ann(i, key, value):
    def edit(d):
        d["annotations"][i][key] = value
        return d

    return edit


def drop(key):
    def edit(d):
        del d[key]
        return d

    return edit


def corrupt_image(env):
    (env["dir"] / "corrupt.png").write_bytes(b"\x89PNG but not really")
    return set_ann(2, "fpath", str(env["dir"] / "corrupt.png"))


def zero_class(d):
    d["annotations"] = [a for a in d["annotations"] if a["category_id"] != 9]
    return d


CASES = {
    # name: (args builder, expected text in the error)
    "malformed YAML": (lambda e: ["--cfg", str(write(e, "bad.yaml", "TRAIN: [1,\n"))], "malformed YAML"),
    "missing config": (lambda e: ["--cfg", str(e["dir"] / "nope.yaml")], "config file not found"),
    "unknown key": (lambda e: ["TRAIN.BATCH_SIZ", "8"], "unknown config key 'TRAIN.BATCH_SIZ'"),
    "wrong value type": (lambda e: ["TRAIN.BATCH_SIZE", "big"], "'TRAIN.BATCH_SIZE' expects 'int'"),
    "unknown method": (lambda e: ["METHOD", "magic"], "unknown method 'magic'"),
    "unknown loss": (lambda e: ["LOSS.LOSS_TYPE", "Magic"], "unknown loss 'Magic' (LOSS.LOSS_TYPE)"),
    "missing JSON": (lambda e: ["DATASET.TRAIN_JSON", str(e["dir"] / "none.json")], "annotation file not found"),
    "malformed JSON": (lambda e: json_variant(e, "malformed", lambda d: '{"annotations": ['), "malformed JSON"),
    "no annotations key": (lambda e: json_variant(e, "noann", drop("annotations")), "missing key 'annotations'"),
    "no num_classes key": (lambda e: json_variant(e, "nonc", drop("num_classes")), "missing key 'num_classes'"),
    "negative category_id": (lambda e: json_variant(e, "neg", set_ann(4, "category_id", -1)),
                             "annotation 4 (images/train/0"),
    "category_id >= C": (lambda e: json_variant(e, "big", set_ann(5, "category_id", 10)), "category_id 10 out of range [0, 10)"),
    "category_id not int": (lambda e: json_variant(e, "str", set_ann(6, "category_id", "3")), "'category_id' must be an integer"),
    "duplicate image_id": (lambda e: json_variant(e, "dup", set_ann(7, "image_id", 0)), "annotation 7 (images/train"),
    "empty dataset": (lambda e: json_variant(e, "empty", lambda d: {"annotations": [], "num_classes": 10}),
                      "'annotations' is empty"),
    "zero-count class with log-counts": (lambda e: json_variant(e, "zero", zero_class) + ["LOSS.LOSS_TYPE", "BalancedSoftmaxCE"],
                                         "class 9 has no training images"),
    "missing image": (lambda e: json_variant(e, "missing", set_ann(3, "fpath", "no/such.png")), "annotation 3: image not found"),
    "corrupt image": (lambda e: json_variant(e, "corrupt", corrupt_image(e)), "annotation 2: cannot read image"),
    "GPU ids without CUDA": (lambda e: ["DEVICE", "cuda", "GPUS", "[0]"], "CUDA is not available"),
    "batch larger than dataset with drop_last": (lambda e: ["TRAIN.BATCH_SIZE", "4096", "TRAIN.DROP_LAST", "True"],
                                                 "larger than the training set"),
    "resume from another config": (lambda e: ["--resume", str(e["other_ckpt"])],
                                   "belongs to another config (TRAIN.OPTIMIZER.WEIGHT_DECAY"),
    "resume from a missing checkpoint": (lambda e: ["--resume", "nope.pth"], "--resume: checkpoint not found"),
    "output folder not writable": (lambda e: ["OUTPUT_DIR", str(write(e, "a_file", "x")) + "/sub"], "is not writable"),
    "odd number of overrides": (lambda e: ["TRAIN.MAX_EPOCH"], "KEY VALUE pairs"),
}


def write(env, name, text):
    p = env["dir"] / name
    p.write_text(text)
    return p


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_overwrites_nothing(env, case, capsys):
    build, expected = CASES[case]
    extra = build(env)
    if extra and extra[0] == "--cfg":
        argv = extra
    elif extra and extra[0] == "--resume":
        argv = ["--cfg", str(env["cfg"]), "--resume", extra[1], "NAME", "existing", "TRAIN.MAX_EPOCH", "1",
                "DATASET.TEST_JSON", ""]
    else:
        argv = ["--cfg", str(env["cfg"]), "NAME", "existing", "TRAIN.MAX_EPOCH", "1", "DATASET.TEST_JSON", ""] + extra
    if case == "GPU ids without CUDA":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
    before = snapshot(env["run"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        train_main(argv)
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2
    assert err.startswith("error: ") and "\n" not in err, err
    assert expected in err, err
    assert snapshot(env["run"]) == before


def test_launcher_num_gpus_must_match_the_ids(env):
    r = run_cli(["bash", "distributed_data_parallel_train.sh", str(env["cfg"]), "3", "0,1"])
    assert r.returncode == 2 and r.stderr.strip() == "error: NUM_GPUS is 3 but GPU_IDS '0,1' lists 2 id(s)"


def test_ddp_launcher_with_gpu_ids_on_a_machine_without_cuda_is_one_line_before_torchrun(env):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = run_cli(["bash", "distributed_data_parallel_train.sh", str(env["cfg"]), "2", "0,1"])
    err = r.stderr.strip()
    assert r.returncode == 2 and "\n" not in err, err  # not torchrun's per-rank tracebacks
    assert err.startswith("error: GPU_IDS 0,1 given, but CUDA is not available") and "cpu as GPU_IDS" in err, err


def test_valid_py_without_a_trained_checkpoint_names_the_file_and_says_to_train_first(env):
    r = run_cli([PY, "valid.py", str(env["cfg"]), "NAME", "never_trained"])
    err = r.stderr.strip()
    models = os.path.join(str(env["dir"] / "out"), "never_trained", "models")
    assert r.returncode == 2 and "\n" not in err, err
    assert err == (f"error: no checkpoint best_model.pth in {models}{os.sep} (TEST.MODEL_FILE): train first "
                   "(python main/train.py CONFIG) or pass --checkpoint PATH"), err


def test_grayscale_rgba_and_16bit_images_train(env, tmp_path):
    """Mixed image modes are converted on load and train like any other image."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    anns = []
    rng = np.random.default_rng(0)
    for i in range(24):
        kind = i % 3
        if kind == 0:
            im = Image.fromarray(rng.integers(0, 255, (28, 28), dtype=np.uint8), mode="L")
        elif kind == 1:
            im = Image.fromarray(rng.integers(0, 255, (28, 28, 4), dtype=np.uint8), mode="RGBA")
        else:
            im = Image.fromarray(rng.integers(0, 65535, (28, 28), dtype=np.uint16))
        im.save(folder / f"{i}.png")
        anns.append({"image_id": i, "fpath": f"{i}.png", "category_id": i % 2})
    (folder / "train.json").write_text(json.dumps({"annotations": anns, "num_classes": 2}))
    cfg = build_config(str(env["cfg"]), ["NAME", "mixed", "TRAIN.MAX_EPOCH", "1", "DATASET.TRAIN_JSON",
                                         str(folder / "train.json"), "DATASET.VALID_JSON", str(folder / "train.json"),
                                         "DATASET.TEST_JSON", ""])
    results = train(cfg)
    assert results["num_images"] == 24
