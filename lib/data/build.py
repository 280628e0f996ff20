"""Datasets and loaders from the config: train/valid/test JSONs, transforms, samplers."""
import itertools
import os

import numpy as np
import torch

from ..utils.atomic import write_json
from ..utils.errors import UserError
from .annotations import class_counts, peek_image_root, read_json, read_table
from .dataset import JsonDataset
from .reorder import invert, rank_classes_by_count
from .samplers import build_sampler
from .transforms import build_transforms


class ShardSampler(torch.utils.data.Sampler):
    """Evaluation order for one rank: indices rank, rank + W, ... (no padding, no duplicates)."""

    def __init__(self, n, num_replicas=1, rank=0):
        self.indices = list(range(rank, n, num_replicas))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class SkipFirst(torch.utils.data.Sampler):
    """Wraps a sampler; `skip(n)` drops the first n indices of the next epoch only (mid-epoch resume)."""

    def __init__(self, sampler):
        self.sampler = sampler
        self.to_skip = 0

    def skip(self, n):
        self.to_skip = int(n)

    def __iter__(self):
        n, self.to_skip = self.to_skip, 0
        return itertools.islice(iter(self.sampler), n, None)

    def __len__(self):
        return len(self.sampler) - self.to_skip

    def set_epoch(self, epoch):
        self.sampler.set_epoch(epoch)


def _require(path, key):
    if not path:
        raise UserError(f"{key} is empty: set it in the config or on the command line")
    if not os.path.isfile(path):
        raise UserError(f"{key}: annotation file not found: {path}")


class DataSplits:
    """Train / valid / test datasets sharing one label map and the training class counts."""

    def __init__(self, cfg, need_train=True):
        d = cfg.DATASET
        _require(d.TRAIN_JSON, "DATASET.TRAIN_JSON")  # counts always come from the train JSON
        for key in ("VALID_JSON", "TEST_JSON"):
            if d[key]:
                _require(d[key], f"DATASET.{key}")
        if d.CHECK_IMAGES:  # a moved image root: reported before any (large) JSON is parsed
            for path in (d.TRAIN_JSON if need_train else "", d.VALID_JSON, d.TEST_JSON):
                if path:
                    peek_image_root(path, d.ROOT)
        tf = build_transforms(cfg)
        self.label_map = None
        train_table = read_table(d.TRAIN_JSON, d.ROOT)  # read once: counts here, images in self.train
        C = train_table.num_classes
        if d.NUM_CLASSES and d.NUM_CLASSES != C:
            raise UserError(f"DATASET.NUM_CLASSES is {d.NUM_CLASSES} but {d.TRAIN_JSON} has num_classes {C}")
        raw_counts = class_counts(train_table.category_ids, C)
        if d.REORDER_CLASSES:
            self.label_map = rank_classes_by_count(raw_counts)
        self.num_classes = C
        self.train_json = d.TRAIN_JSON
        self.counts = [raw_counts[old] for old in invert(self.label_map)] if self.label_map else raw_counts
        common = dict(root=d.ROOT, color_space=cfg.COLOR_SPACE, check_images=d.CHECK_IMAGES,
                      label_map=self.label_map, num_classes=C, exif_transpose=d.EXIF_TRANSPOSE,
                      folder_listing={})  # one listing per image folder, shared by the splits
        self.train = (JsonDataset(d.TRAIN_JSON, transform=tf["train"], second_transform=tf["second_view"],
                                  table=train_table, **common)
                      if need_train else None)
        del train_table
        self.valid = None
        self.test = None
        if d.VALID_JSON:
            self.valid = JsonDataset(d.VALID_JSON, transform=tf["test"], **common)
        if d.TEST_JSON:
            self.test = JsonDataset(d.TEST_JSON, transform=tf["test"], **common)

    def class_names(self):
        """Names from a classes.json (list of C strings) beside TRAIN_JSON, in the (re-ordered) label order."""
        path = os.path.join(os.path.dirname(os.path.abspath(self.train_json)), "classes.json")
        if not os.path.isfile(path):
            return None
        names = read_json(path)
        if isinstance(names, dict):
            names = names.get("classes") or names.get("names")
        if not isinstance(names, list) or len(names) != self.num_classes:
            return None
        return [names[old] for old in invert(self.label_map)] if self.label_map else names

    def save_label_map(self, run_dir):
        if self.label_map:
            write_json(os.path.join(run_dir, "class_order.json"),
                       {"new_id_of_original": self.label_map, "original_of_new_id": invert(self.label_map)})


class CheckedCollate:
    """default_collate, except that images of different shapes (a transform list that does not fix the size,
    e.g. one registered by a method) give one line naming the JSON, the entry, the file and its size instead
    of torch's `stack expects each tensor to be equal size`."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __call__(self, batch):
        try:
            return torch.utils.data.default_collate(batch)
        except RuntimeError:
            odd = odd_item(batch)
            if odd is None:
                raise
            raise self.error(*odd) from None

    def error(self, item, key, common):
        from PIL import Image

        ds, i = self.dataset, int(item["index"])
        path = ds.path(i)
        try:
            with Image.open(path) as im:
                size = f"{im.width}x{im.height} pixels"
        except Exception:  # noqa: BLE001 - the message still names the file
            size = "size unknown"
        return UserError(
            f"{ds.json_path}: annotation {i}: image {path} ({size}) gives a {key} tensor of shape "
            f"{tuple(item[key].shape)} but the rest of the batch is {tuple(common)}; the transforms must end at "
            f"INPUT_SIZE (see docs/data.md, 'Image size')")


def odd_item(batch):
    """(item, key, most common shape) for the first item whose image tensor differs in shape, else None."""
    from collections import Counter

    for key in ("image", "image2"):
        if not all(isinstance(b, dict) and torch.is_tensor(b.get(key)) for b in batch):
            continue
        shapes = Counter(tuple(b[key].shape) for b in batch)
        if len(shapes) > 1:
            common = shapes.most_common(1)[0][0]
            return next(b for b in batch if tuple(b[key].shape) != common), key, common
    return None


def seed_worker(worker_id):
    """numpy in each worker follows the torch seed the DataLoader gave the worker."""
    np.random.seed(torch.initial_seed() % 2**32)


def train_loader(cfg, dataset, world_size, rank, seed):
    per_process = cfg.TRAIN.BATCH_SIZE // world_size
    if cfg.TRAIN.BATCH_SIZE % world_size:
        raise UserError(f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} (global) is not divisible by {world_size} processes")
    sampler = SkipFirst(build_sampler(cfg, dataset.labels, dataset.num_classes, num_replicas=world_size, rank=rank,
                                      seed=seed))
    if cfg.TRAIN.SEEDED_AUGMENTATION:
        dataset.seed_augmentation(seed)
    if cfg.TRAIN.DROP_LAST and len(sampler) < per_process:
        raise UserError(f"TRAIN.BATCH_SIZE {cfg.TRAIN.BATCH_SIZE} is larger than the training set "
                        f"({len(dataset)} images) with TRAIN.DROP_LAST True: no batch would be produced")
    return torch.utils.data.DataLoader(
        dataset, batch_size=per_process, sampler=sampler, num_workers=cfg.TRAIN.NUM_WORKERS,
        pin_memory=cfg.PIN_MEMORY and torch.cuda.is_available(), drop_last=cfg.TRAIN.DROP_LAST,
        worker_init_fn=seed_worker, generator=torch.Generator(), persistent_workers=False,
        collate_fn=CheckedCollate(dataset),
    )


def eval_loader(cfg, dataset, world_size=1, rank=0):
    return torch.utils.data.DataLoader(
        dataset, batch_size=cfg.TEST.BATCH_SIZE, sampler=ShardSampler(len(dataset), world_size, rank),
        num_workers=cfg.TEST.NUM_WORKERS, pin_memory=cfg.PIN_MEMORY and torch.cuda.is_available(),
        collate_fn=CheckedCollate(dataset),
    )
