"""Config-driven transforms (docs/data.md)."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from lib.config.defaults import get_defaults
from lib.data.transforms import TRANSFORMS, Cutout, build_transform, build_transforms
from lib.utils.errors import UserError



def make_cfg(color_space="RGB", size=(8, 8), normalize="none"):
    cfg = get_defaults()
    cfg.COLOR_SPACE = color_space
    cfg.INPUT_SIZE = size
    cfg.TRANSFORMS.NORMALIZE = normalize
    return cfg


def random_image(mode, h=12, w=12, seed=0):
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def constant_image(mode, value, h=8, w=8):
    return Image.new(mode, (w, h), value)


@pytest.mark.parametrize("mode,channels", [("RGB", 3), ("L", 1)])
@pytest.mark.parametrize("name", TRANSFORMS.names())
def test_each_named_transform_gives_float_chw_tensor_of_input_size(name, mode, channels):
    """Image size rule: whatever op and input size, the pipeline ends at INPUT_SIZE."""
    torch.manual_seed(0)
    cfg = make_cfg(mode, size=(16, 16), normalize="imagenet")
    for h, w in ((12, 12), (20, 9)):
        out = build_transform([name], cfg)(random_image(mode, h, w))
        assert type(out) is torch.Tensor and out.dtype == torch.float32
        assert out.shape == (channels, 16, 16)


def test_random_crop_pads_small_images_up_to_input_size():
    cfg = make_cfg("L", size=(32, 32))
    out = build_transform(["random_crop"], cfg)(random_image("L", 28, 28))
    assert out.shape == (1, 32, 32)


def test_test_pipeline_resizes_shorter_side_then_center_crops():
    cfg = make_cfg("RGB", size=(14, 14))
    out = build_transform(["shorter_resize_for_crop", "center_crop"], cfg)(random_image("RGB", 20, 30))
    assert out.shape == (3, 14, 14)


def test_empty_list_is_to_tensor_only():
    img = random_image("RGB", 5, 7)
    out = build_transform([], make_cfg("RGB", size=(5, 7)))(img)
    expected = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("normalize,mean,std", [
    ("cifar", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    ("imagenet", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("inat", (0.466, 0.471, 0.380), (0.195, 0.194, 0.192)),
    ("fashion_mnist", (0.2860,) * 3, (0.3530,) * 3),
])
def test_constant_rgb_image_normalises_to_expected_value(normalize, mean, std):
    cfg = make_cfg("RGB", normalize=normalize)
    out = build_transform([], cfg)(constant_image("RGB", (51, 102, 204)))
    for c, v in enumerate((0.2, 0.4, 0.8)):
        assert torch.allclose(out[c], torch.full((8, 8), (v - mean[c]) / std[c]), atol=1e-5)


def test_grayscale_averages_three_value_constants():
    cfg = make_cfg("L", size=(8, 8), normalize="imagenet")
    out = build_transform([], cfg)(constant_image("L", 102))
    mean, std = (0.485 + 0.456 + 0.406) / 3, (0.229 + 0.224 + 0.225) / 3
    assert out.shape == (1, 8, 8)
    assert torch.allclose(out, torch.full_like(out, (0.4 - mean) / std), atol=1e-5)


def test_grayscale_fashion_mnist_constants():
    out = build_transform([], make_cfg("L", normalize="fashion_mnist"))(constant_image("L", 102))
    assert torch.allclose(out, torch.full_like(out, (0.4 - 0.2860) / 0.3530), atol=1e-5)


def test_custom_normalisation_reads_mean_and_std():
    cfg = make_cfg("RGB", normalize="custom")
    cfg.TRANSFORMS.MEAN, cfg.TRANSFORMS.STD = [0.5, 0.5, 0.5], [0.25, 0.5, 1.0]
    out = build_transform([], cfg)(constant_image("RGB", (255, 255, 255)))
    assert torch.allclose(out[:, 0, 0], torch.tensor([2.0, 1.0, 0.5]))


def test_custom_normalisation_without_values_is_a_user_error():
    cfg = make_cfg("RGB", normalize="custom")
    with pytest.raises(UserError, match="TRANSFORMS.MEAN"):
        build_transform([], cfg)


def test_unknown_normalisation_is_a_user_error():
    with pytest.raises(UserError, match="TRANSFORMS.NORMALIZE"):
        build_transform([], make_cfg("RGB", normalize="mnist"))


def centre_for_seed(seed, h, w):
    """The (y, x) centre Cutout draws right after torch.manual_seed(seed)."""
    torch.manual_seed(seed)
    return int(torch.randint(h, ())), int(torch.randint(w, ()))


def test_cutout_zeros_a_full_square_inside_the_image():
    seed = next(s for s in range(100) if all(4 <= v <= 28 for v in centre_for_seed(s, 32, 32)))
    y, x = centre_for_seed(seed, 32, 32)
    img = torch.ones(3, 32, 32)
    torch.manual_seed(seed)
    out = Cutout(length=8, holes=1)(img)
    zeros = out == 0
    assert int(zeros.sum()) == 3 * 8 * 8
    assert bool(zeros[:, y - 4:y + 4, x - 4:x + 4].all())
    assert img.min() == 1  # the input is not modified in place


def test_cutout_square_is_clipped_at_the_border():
    seed = next(s for s in range(100) if centre_for_seed(s, 32, 32)[0] < 4)
    y, x = centre_for_seed(seed, 32, 32)
    torch.manual_seed(seed)
    out = Cutout(length=8, holes=1)(torch.ones(1, 32, 32))
    rows = min(32, y + 4) - max(0, y - 4)
    cols = min(32, x + 4) - max(0, x - 4)
    assert rows < 8 and int((out == 0).sum()) == rows * cols


def test_cutout_runs_before_normalisation():
    cfg = make_cfg("RGB", size=(8, 8), normalize="cifar")
    cfg.TRANSFORMS.PROCESS_DETAIL.CUTOUT.LENGTH = 4
    torch.manual_seed(1)
    out = build_transform(["cutout"], cfg)(constant_image("RGB", (255, 255, 255)))
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2023, 0.1994, 0.2010])
    cut_value = (-mean / std).view(3, 1, 1)  # a zeroed pixel after normalisation
    assert bool(torch.isclose(out, cut_value.expand_as(out), atol=1e-5).any())


def test_unknown_transform_name_lists_valid_names_and_key():
    cfg = make_cfg()
    with pytest.raises(UserError, match=r"TRANSFORMS.TEST_TRANSFORMS.*random_crop"):
        build_transform(["random_flip"], cfg, "TRANSFORMS.TEST_TRANSFORMS")
    cfg.TRANSFORMS.TRAIN_TRANSFORMS = ("random_crop", "nope")
    with pytest.raises(UserError, match="TRANSFORMS.TRAIN_TRANSFORMS"):
        build_transforms(cfg)


def test_build_transforms_returns_train_test_and_optional_second_view():
    cfg = make_cfg("RGB", size=(16, 16), normalize="cifar")
    cfg.TRANSFORMS.TRAIN_TRANSFORMS = ("random_crop", "random_horizontal_flip")
    cfg.TRANSFORMS.TEST_TRANSFORMS = ()
    ts = build_transforms(cfg)
    assert ts["second_view"] is None
    assert ts["train"](random_image("RGB", 16, 16)).shape == (3, 16, 16)
    cfg.TRANSFORMS.SECOND_VIEW_TRANSFORMS = ("random_resized_crop", "color_jitter", "random_grayscale",
                                             "gaussian_blur")
    assert build_transforms(cfg)["second_view"](random_image("RGB", 20, 20)).shape == (3, 16, 16)


def test_strong_cifar_pipeline_survives_pickling():
    cfg = make_cfg("RGB", size=(16, 16), normalize="cifar")
    names = ["random_crop", "random_horizontal_flip", "autoaugment", "randaugment", "color_jitter",
             "gaussian_blur", "random_grayscale", "cutout"]
    cfg.TRANSFORMS.PROCESS_DETAIL.COLOR_JITTER.P = 0.8
    t = pickle.loads(pickle.dumps(build_transform(names, cfg)))
    img = random_image("RGB", 16, 16)
    torch.manual_seed(3)
    a = t(img)
    torch.manual_seed(3)
    b = build_transform(names, cfg)(img)
    assert a.shape == (3, 16, 16) and torch.equal(a, b)


@pytest.mark.slow
def test_pipeline_unpickles_in_a_fresh_interpreter(tmp_path):
    """Spawned DataLoader workers unpickle the transform before importing anything of ours."""
    import subprocess
    import sys

    cfg = make_cfg("RGB", size=(16, 16), normalize="cifar")
    path = tmp_path / "t.pkl"
    path.write_bytes(pickle.dumps(build_transform(["random_crop", "autoaugment", "cutout"], cfg)))
    code = ("import pickle, sys; from PIL import Image; t = pickle.load(open(sys.argv[1], 'rb')); "
            "print(tuple(t(Image.new('RGB', (16, 16))).shape))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "(3, 16, 16)"


def test_gaussian_blur_is_pils_radius_sigma_blur_as_in_the_ncl_release():
    import numpy as np
    from PIL import Image, ImageFilter

    from lib.data.transforms import PILGaussianBlur

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8))
    for sigma in (1.0, 2.0):
        ours = np.asarray(PILGaussianBlur((sigma, sigma))(img))
        assert np.array_equal(ours, np.asarray(img.filter(ImageFilter.GaussianBlur(radius=sigma))))
    assert np.asarray(PILGaussianBlur((2.0, 2.0))(img)).std() < 15  # a 3x3 kernel leaves ~26 of the noise's 73
