"""The JSON annotation dataset (docs/data.md) and the image decoding rules.

Decoding (`decode_image`), the same for every split and both colour spaces:
  - 16/32-bit grayscale is rescaled to 8 bits (I;16: v / 65535 * 255; I: v / max * 255);
  - transparency (RGBA, LA, PA, a palette or RGB/L image with a transparent colour) is composited on
    BLACK: out = alpha/255 * colour, so a fully transparent pixel is 0 in RGB and in L alike;
  - then the image is converted to COLOR_SPACE ("RGB" or "L", Pillow's ITU-R 601-2 luma for L);
  - EXIF orientation is ignored by default, as in the original loaders (OpenCV's and Pillow's plain
    decoders), so published numbers stay comparable; DATASET.EXIF_TRANSPOSE True rotates / flips the
    image as its EXIF Orientation tag says (PIL.ImageOps.exif_transpose) before anything else.
"""
import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from ..utils.errors import UserError
from ..utils.seeding import derive_seed
from .annotations import check_image_files, class_counts, read_table

ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def has_transparency(im):
    return im.mode in ALPHA_MODES or "transparency" in im.info


def decode_image(path, color_space="RGB", exif_transpose=False):
    """Pillow decode to `color_space` ("RGB" or "L") by the rules in the module docstring."""
    try:
        with Image.open(path) as im:
            im.load()
            if exif_transpose:
                im = ImageOps.exif_transpose(im)
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: rescale to 8 bits
                arr = torch.from_numpy(np.asarray(im, dtype=np.float32))
                peak = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
                im = Image.fromarray((arr / peak * 255.0).round().clamp(0, 255).byte().numpy(), mode="L")
            if has_transparency(im):  # composite on black, whatever the colour space
                im = im.convert("RGBA")
                im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im)
            return im.convert(color_space)
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None


class JsonDataset(torch.utils.data.Dataset):
    """Images + labels from an annotation JSON.

    Items are dicts: {"image": tensor, ["image2": tensor], "label": int, "index": int}.
    `label_map` (old id -> new id) remaps labels at load time (class re-ordering); `labels` is an int64
    array (N,). The entries are an AnnotationTable (compact columns, see annotations.py).
    After `seed_augmentation(seed)` + `set_epoch(e)`, the random transforms of item i in epoch e
    draw from torch's RNG seeded by (seed, e, i), whichever worker or rank loads it: a resumed or
    re-sharded run sees exactly the same augmented images.
    """

    def __init__(self, json_path, root="", transform=None, second_transform=None, color_space="RGB",
                 check_images=True, label_map=None, num_classes=None, exif_transpose=False, table=None,
                 folder_listing=None):
        self.json_path = json_path
        self.table = table if table is not None else read_table(json_path, root)
        self.num_classes = self.table.num_classes
        if num_classes is not None and num_classes != self.num_classes:
            raise UserError(
                f"{json_path}: num_classes is {self.num_classes} but the training set has {num_classes}"
            )
        if check_images:
            check_image_files(self.table, json_path, root, folder_listing)
        ids = self.table.category_ids
        self.labels = np.asarray(label_map, dtype=np.int64)[ids] if label_map is not None else ids
        self.transform = transform
        self.second_transform = second_transform
        self.color_space = color_space
        self.exif_transpose = bool(exif_transpose)
        self.aug_seed = None
        self.epoch = 0

    def seed_augmentation(self, seed):
        self.aug_seed = int(seed)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.table)

    def path(self, index):
        return self.table.path(index)

    def class_counts(self):
        return class_counts(self.labels, self.num_classes)

    def __getitem__(self, index):
        try:
            img = decode_image(self.table.path(index), self.color_space, self.exif_transpose)
        except UserError as e:  # name the JSON and the entry (header checks are sampled on large sets)
            raise UserError(f"{self.json_path}: annotation {index}: {e}") from None
        item = {"label": int(self.labels[index]), "index": index}
        if self.aug_seed is None:
            self._transform(item, img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.aug_seed, "augment", self.epoch, index))
                self._transform(item, img)
        return item

    def _transform(self, item, img):
        item["image"] = self.transform(img) if self.transform else img
        if self.second_transform is not None:
            item["image2"] = self.second_transform(img)
