"""The JSON annotation dataset (specs/datasets.md §1)."""
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..utils.errors import UserError
from .annotations import class_counts, load_annotations


def decode_image(path, color_space="RGB"):
    """Pillow decode to `color_space` ("RGB" or "L"); grayscale, RGBA, palette and 16-bit inputs are converted."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grayscale: rescale to 8 bits
                arr = torch.from_numpy(np.asarray(im, dtype=np.float32))
                peak = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
                im = Image.fromarray((arr / peak * 255.0).round().clamp(0, 255).byte().numpy(), mode="L")
            if im.mode in ("RGBA", "LA", "P") and color_space == "RGB":
                im = im.convert("RGBA")
                bg = Image.new("RGBA", im.size, (0, 0, 0, 255))
                im = Image.alpha_composite(bg, im)
            return im.convert(color_space)
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(f"cannot read image {path}: {e}") from None


class JsonDataset(torch.utils.data.Dataset):
    """Images + labels from an annotation JSON.

    Items are dicts: {"image": tensor, ["image2": tensor], "label": int, "index": int}.
    `label_map` (old id -> new id) remaps labels at load time (class re-ordering).
    After `seed_augmentation(seed)` + `set_epoch(e)`, the random transforms of item i in epoch e
    draw from torch's RNG seeded by (seed, e, i), whichever worker or rank loads it: a resumed or
    re-sharded run sees exactly the same augmented images.
    """

    def __init__(self, json_path, root="", transform=None, second_transform=None, color_space="RGB",
                 check_images=True, label_map=None, num_classes=None):
        self.json_path = json_path
        self.entries, self.num_classes = load_annotations(json_path, root=root, check_images=check_images)
        if num_classes is not None and num_classes != self.num_classes:
            raise UserError(
                f"{json_path}: num_classes is {self.num_classes} but the training set has {num_classes}"
            )
        if label_map is not None:
            for e in self.entries:
                e["label"] = label_map[e["category_id"]]
        self.labels = [e["label"] for e in self.entries]
        self.transform = transform
        self.second_transform = second_transform
        self.color_space = color_space
        self.aug_seed = None
        self.epoch = 0

    def seed_augmentation(self, seed):
        self.aug_seed = int(seed)

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
    def __len__(self):
        return len(self.entries)

    def class_counts(self):
        return class_counts(self.labels, self.num_classes)

    def __getitem__(self, index):
        entry = self.entries[index]
        img = decode_image(entry["path"], self.color_space)
        item = {"label": entry["label"], "index": index}
        if self.aug_seed is None:
            self._transform(item, img)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed((self.aug_seed * 1_000_003 + self.epoch) * 10_000_019 + index)
                self._transform(item, img)
        return item

    def _transform(self, item, img):
        item["image"] = self.transform(img) if self.transform else img
        if self.second_transform is not None:
            item["image2"] = self.second_transform(img)

