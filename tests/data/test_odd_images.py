"""Images that do not fit the pipeline (issue 15 §2), on real PNG/JPEG files written with Pillow:
- size: every pipeline ends at INPUT_SIZE (a final resize unless the transforms fix the size), so any
  image reaches a batch; a batch that still mixes shapes is one line naming JSON, entry, file and size;
- transparency: composited on black in both colour spaces;
- EXIF orientation: ignored by default, applied with DATASET.EXIF_TRANSPOSE True."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import ROOT
from lib.config import build_config
from lib.config.defaults import get_defaults
from lib.data.build import DataSplits, eval_loader, train_loader
from lib.data.dataset import JsonDataset, decode_image
from lib.data.transforms import build_transform, needs_final_resize
from lib.engine.trainer import train
from lib.utils.errors import exit_on_user_error
from lib.utils.tv import v2

RNG = np.random.default_rng(0)


def noise(mode, w, h):
    if mode == "L":
        return Image.fromarray(RNG.integers(0, 256, (h, w), dtype=np.uint8), "L")
    if mode == "I;16":
        return Image.fromarray(RNG.integers(0, 65536, (h, w), dtype=np.uint16))
    if mode == "P":
        return Image.fromarray(RNG.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").convert("P")
    ch = {"RGB": 3, "RGBA": 4, "LA": 2}[mode]
    return Image.fromarray(RNG.integers(0, 256, (h, w, ch), dtype=np.uint8), mode)


# (mode, width, height, format) of the odd images mixed into a 28x28 grayscale set
ODD = [("L", 40, 28, "png"), ("RGB", 17, 50, "jpg"), ("RGBA", 28, 29, "png"), ("P", 64, 64, "png"),
       ("I;16", 20, 20, "png"), ("LA", 9, 9, "png")]


def odd_set(folder, n_regular=10):
    """A JSON of 28x28 L images with one image of each ODD kind at entries n_regular, n_regular + 1, ..."""
    folder.mkdir(parents=True, exist_ok=True)
    anns = []
    kinds = [("L", 28, 28, "png")] * n_regular + ODD
    for i, (mode, w, h, fmt) in enumerate(kinds):
        name = f"{i}_{mode.replace(';', '')}_{w}x{h}.{fmt}"
        noise(mode, w, h).save(folder / name)
        anns.append({"image_id": i, "fpath": name, "category_id": i % 2})
    path = folder / "odd.json"
    path.write_text(json.dumps({"annotations": anns, "num_classes": 2}))
    return path


def cfg_for(json_path, color_space="L", train=("random_crop", "random_horizontal_flip"), test=()):
    cfg = get_defaults()
    cfg.INPUT_SIZE = (28, 28)
    cfg.COLOR_SPACE = color_space
    cfg.DATASET.TRAIN_JSON = cfg.DATASET.VALID_JSON = cfg.DATASET.TEST_JSON = str(json_path)
    cfg.TRANSFORMS.TRAIN_TRANSFORMS = train
    cfg.TRANSFORMS.TEST_TRANSFORMS = test
    cfg.TRANSFORMS.NORMALIZE = "fashion_mnist"
    cfg.TRAIN.BATCH_SIZE = cfg.TEST.BATCH_SIZE = 16
    cfg.TRAIN.NUM_WORKERS = cfg.TEST.NUM_WORKERS = 0
    return cfg


# ---------------------------------------------------------------- size
@pytest.mark.parametrize("names, appended", [
    ((), True), (("random_horizontal_flip", "color_jitter"), True), (("shorter_resize_for_crop",), True),
    (("center_crop", "shorter_resize_for_crop"), True), (("shorter_resize_for_crop", "center_crop"), False),
    (("random_crop", "random_horizontal_flip", "cutout"), False), (("random_resized_crop",), False),
    (("normal_resize", "autoaugment"), False),
])
def test_final_resize_is_appended_unless_the_last_size_changing_op_fixes_the_size(names, appended):
    assert needs_final_resize(list(names)) is appended


def test_final_resize_leaves_images_of_input_size_unchanged():
    cfg = cfg_for("x.json", "RGB")
    cfg.TRANSFORMS.NORMALIZE = "none"
    img = noise("RGB", 28, 28)
    pipeline = build_transform([], cfg)
    assert any(isinstance(t, v2.Resize) for t in pipeline.transforms)
    without = v2.Compose([t for t in pipeline.transforms if not isinstance(t, v2.Resize)])
    assert torch.equal(pipeline(img), without(img))


@pytest.mark.parametrize("color_space", ["L", "RGB"])
@pytest.mark.parametrize("test", [(), ("random_horizontal_flip",), ("shorter_resize_for_crop",)])
def test_any_image_reaches_an_evaluation_batch_at_input_size(tmp_path, color_space, test):
    """Odd sizes, modes and formats in an evaluation JSON whose transforms do not fix the size."""
    path = odd_set(tmp_path / "set")
    cfg = cfg_for(path, color_space, test=test)
    batches = list(eval_loader(cfg, DataSplits(cfg).test))
    channels = 1 if color_space == "L" else 3
    assert [tuple(b["image"].shape) for b in batches] == [(16, channels, 28, 28)]
    assert torch.isfinite(batches[0]["image"]).all()


def test_any_image_reaches_a_training_batch_at_input_size(tmp_path):
    path = odd_set(tmp_path / "set")
    cfg = cfg_for(path, "RGB", train=("random_horizontal_flip",))
    data = DataSplits(cfg)
    shapes = [tuple(b["image"].shape) for b in train_loader(cfg, data.train, 1, 0, 0)]
    assert shapes == [(16, 3, 28, 28)]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_batch_of_mixed_shapes_is_one_line_naming_json_entry_file_and_size(tmp_path, capsys, workers):
    """A transform that does not end at INPUT_SIZE (built by hand here, as a method could) never reaches
    torch.stack's raw error: the user sees the JSON, the entry, the file and its size (also when a
    DataLoader worker raises it)."""
    path = odd_set(tmp_path / "set", n_regular=3)
    to_tensor = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.ToPureTensor()])
    ds = JsonDataset(str(path), transform=to_tensor, color_space="L")
    cfg = cfg_for(path)
    cfg.TEST.NUM_WORKERS = workers
    with pytest.raises(SystemExit) as e:
        exit_on_user_error(lambda: list(eval_loader(cfg, ds)))()
    assert e.value.code == 2
    odd_file = tmp_path / "set" / "3_L_40x28.png"
    assert capsys.readouterr().err.strip() == (
        f"error: {path}: annotation 3: image {odd_file} (40x28 pixels) gives a image tensor of shape (1, 28, 40) "
        f"but the rest of the batch is (1, 28, 28); the transforms must end at INPUT_SIZE "
        f"(see docs/data.md, 'Image size')")


def test_training_with_odd_images_in_train_valid_and_test_json_completes(tmp_path):
    """Before: a raw `stack expects each tensor to be equal size` after epoch 1, nothing saved."""
    path = odd_set(tmp_path / "set", n_regular=20)
    template = open(os.path.join(ROOT, "tests", "tiny_template.yaml")).read()
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(template.format(out=tmp_path / "out", train=path, val=path, test=path))
    cfg = build_config(str(cfg_path), ["TRAIN.MAX_EPOCH", "1", "TRAIN.BATCH_SIZE", "8", "COLOR_SPACE", "L"])
    results = train(cfg)
    assert results["num_images"] == 26
    assert os.path.isfile(tmp_path / "out" / "tiny" / "models" / "best_model.pth")


# ---------------------------------------------------------------- transparency
def transparent_images(folder):
    """Files whose pixel (0, 0) is fully transparent WHITE, (1, 0) opaque (200, 100, 50), (2, 0) half
    transparent (200, 100, 50, 128); returns {name: path}."""
    folder.mkdir(exist_ok=True)
    rgba = Image.new("RGBA", (3, 1))
    rgba.putdata([(255, 255, 255, 0), (200, 100, 50, 255), (200, 100, 50, 128)])
    paths = {"rgba": folder / "rgba.png"}
    rgba.save(paths["rgba"])
    la = Image.new("LA", (3, 1))
    la.putdata([(255, 0), (130, 255), (130, 128)])
    paths["la"] = folder / "la.png"
    la.save(paths["la"])
    pal = Image.new("P", (3, 1))
    pal.putpalette([255, 255, 255, 200, 100, 50] + [0] * 762)
    pal.putdata([0, 1, 1])
    paths["palette"] = folder / "palette.png"
    pal.save(paths["palette"], transparency=0)  # palette index 0 (white) is transparent
    rgb_key = Image.new("RGB", (3, 1))
    rgb_key.putdata([(255, 255, 255), (200, 100, 50), (200, 100, 50)])
    paths["rgb_colour_key"] = folder / "key.png"
    rgb_key.save(paths["rgb_colour_key"], transparency=(255, 255, 255))
    return paths


def luma(rgb):
    return Image.new("RGB", (1, 1), rgb).convert("L").getpixel((0, 0))


@pytest.mark.parametrize("kind", ["rgba", "la", "palette", "rgb_colour_key"])
def test_transparent_pixels_are_black_in_rgb_and_in_l(tmp_path, kind):
    path = transparent_images(tmp_path)[kind]
    rgb = decode_image(str(path), "RGB")
    gray = decode_image(str(path), "L")
    assert rgb.mode == "RGB" and gray.mode == "L"
    assert rgb.getpixel((0, 0)) == (0, 0, 0) and gray.getpixel((0, 0)) == 0
    opaque = rgb.getpixel((1, 0))
    assert opaque == ((130, 130, 130) if kind == "la" else (200, 100, 50))
    assert gray.getpixel((1, 0)) == luma(opaque)
    if kind in ("rgba", "la"):  # half transparent: alpha-weighted towards black, the same in both spaces
        half = rgb.getpixel((2, 0))
        assert all(abs(h - round(o * 128 / 255)) <= 1 for h, o in zip(half, opaque))
        assert abs(gray.getpixel((2, 0)) - luma(half)) <= 1


def test_opaque_images_decode_as_before(tmp_path):
    img = noise("RGB", 5, 4)
    img.save(tmp_path / "a.png")
    assert np.array_equal(np.asarray(decode_image(str(tmp_path / "a.png"), "RGB")), np.asarray(img))
    assert np.array_equal(np.asarray(decode_image(str(tmp_path / "a.png"), "L")), np.asarray(img.convert("L")))


# ---------------------------------------------------------------- EXIF orientation
def exif_rotated_jpeg(path, orientation=6):
    """A 30x20 (w x h) JPEG, left half bright, right half dark, tagged with EXIF Orientation."""
    arr = np.zeros((20, 30, 3), dtype=np.uint8)
    arr[:, :15] = 230
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    return path


def test_exif_orientation_is_ignored_by_default_and_applied_on_request(tmp_path):
    path = str(exif_rotated_jpeg(tmp_path / "rot.jpg"))
    plain = decode_image(path, "L")
    assert plain.size == (30, 20) and plain.getpixel((2, 10)) > 200  # as stored: bright on the left
    turned = decode_image(path, "L", exif_transpose=True)
    assert turned.size == (20, 30)  # orientation 6: rotate 90 degrees clockwise to display
    assert turned.getpixel((10, 2)) > 200 and turned.getpixel((10, 27)) < 40  # bright on top


def test_exif_option_reaches_every_split(tmp_path):
    path = tmp_path / "set.json"
    exif_rotated_jpeg(tmp_path / "rot.jpg")
    path.write_text(json.dumps({"annotations": [{"image_id": 0, "fpath": "rot.jpg", "category_id": 0}],
                                "num_classes": 1}))
    cfg = cfg_for(path, "L", train=(), test=())
    cfg.INPUT_SIZE = (30, 20)  # the final resize is then the identity for the turned image
    for exif, shape in ((False, (1, 30, 20)), (True, (1, 30, 20))):
        cfg.DATASET.EXIF_TRANSPOSE = exif
        data = DataSplits(cfg)
        assert {data.train.exif_transpose, data.valid.exif_transpose, data.test.exif_transpose} == {exif}
        item = data.test[0]["image"]
        assert tuple(item.shape) == shape
        top_bright = bool(item[0, :3].mean() > item[0, -3:].mean())
        assert top_bright is exif  # turned: bright on top; as stored (and stretched): bright on the left
