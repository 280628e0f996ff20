"""Convert Cui et al.'s CIFAR-LT TFRecords to images + annotation JSONs (docs/data.md).

Input: <input_path>/cifar-{10,100}-data-im-{0.01,0.02}/{train,eval}.tfrecords; each record is a
tf.train.Example with `image` = 3072 raw bytes (channel-first 3x32x32 RGB) and `label` (int64).
Output per present subdirectory, e.g. prefix cifar100_imbalance100:
    <out>/<prefix>/images/<label>/<mode>_<step>.<ext>
    <out>/<prefix>/<prefix>_<mode>.json
where mode is `train` (train.tfrecords) or `valid` (eval.tfrecords, the balanced test set) and
step counts from 0 in each file. Each prefix is built in <out>/.<prefix>.partial and renamed to
<out>/<prefix> only once both files converted, so a failed run never leaves a folder that looks
complete. Reads records with the `tfrecord` package; no TensorFlow.

    python tools/convert_from_tfrecords.py --input_path data/cui_tfrecords --output_path data/cifar_lt
"""
import os
import shutil
from collections import Counter

import numpy as np
from PIL import Image

from lib.data.annotations import validate_annotations
from lib.data.longtail import exponential_counts
from lib.utils import cli
from lib.utils.atomic import write_json
from lib.utils.errors import UserError, exit_on_user_error

# input subdirectory -> (output prefix, C, imbalance factor)
KNOWN_SUBDIRS = {
    "cifar-10-data-im-0.02": ("cifar10_imbalance50", 10, 50),
    "cifar-10-data-im-0.01": ("cifar10_imbalance100", 10, 100),
    "cifar-100-data-im-0.02": ("cifar100_imbalance50", 100, 50),
    "cifar-100-data-im-0.01": ("cifar100_imbalance100", 100, 100),
}
# source file -> mode name used in the output (the originals call the test set "valid")
MODES = (("train.tfrecords", "train"), ("eval.tfrecords", "valid"))
IMAGE_BYTES = 3 * 32 * 32


def get_parser():
    p = cli.ArgumentParser(
        description="Convert Cui et al.'s CIFAR-LT TFRecords (cifar-{10,100}-data-im-{0.01,0.02}/"
        "{train,eval}.tfrecords) into <out>/<prefix>/images/<label>/<mode>_<step>.<ext> and "
        "<out>/<prefix>/<prefix>_{train,valid}.json. No TensorFlow needed.")
    p.add_argument("--input_path", required=True,
                   help="folder holding one or more cifar-*-data-im-* subdirectories")
    p.add_argument("--output_path", required=True, help="folder to write <prefix>/ folders into")
    p.add_argument("--format", choices=("png", "jpg"), default="png",
                   help="png (default): lossless. jpg: JPEG quality 95, which replicates the original "
                   "converter's lossy conversion; the ACE, NCL and old BoT numbers were trained on it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing <output_path>/<prefix> folder (otherwise it is an error)")
    return p


def read_records(path):
    """Yield (step, HWC uint8 RGB array, label) for every record of one TFRecord file.

    The `tfrecord` reader checks the framing lengths but not the CRCs (it offers no option), so a
    truncated file is caught here; a corrupt payload is caught by the Example parse or the checks on
    the `image`/`label` features below. Any of these becomes one UserError naming the file.
    """
    from google.protobuf.message import DecodeError
    from tfrecord.reader import tfrecord_loader

    step = -1
    try:
        for step, ex in enumerate(tfrecord_loader(path, None, {"image": "byte", "label": "int"})):
            img, lab = ex["image"], ex["label"]
            if not isinstance(img, bytes) or len(img) != IMAGE_BYTES:
                n = len(img) if isinstance(img, bytes) else f"{len(img)} values"
                raise UserError(f"{path}: record {step}: 'image' must be one bytes value of "
                                f"{IMAGE_BYTES} bytes (3x32x32), got {n}")
            if lab.shape != (1,):
                raise UserError(f"{path}: record {step}: 'label' must be one int64, got {lab.tolist()}")
            # channel-first (3,32,32) RGB -> HWC RGB
            arr = np.frombuffer(img, dtype=np.uint8).reshape(3, 32, 32).transpose(1, 2, 0)
            yield step, arr, int(lab[0])
    except (KeyError, TypeError) as e:  # raised by the reader for a missing / mistyped feature
        raise UserError(f"{path}: record {step + 1}: {e} (expected features 'image' (bytes) "
                        f"and 'label' (int64))") from None
    except (RuntimeError, DecodeError, ValueError, IndexError, MemoryError, OverflowError) as e:
        raise UserError(f"{path}: truncated or corrupt TFRecord file at record {step + 1} "
                        f"({type(e).__name__}: {e})") from None


def save_image(arr, path, fmt):
    img = Image.fromarray(np.ascontiguousarray(arr))
    if fmt == "jpg":
        # quality 95 with 4:2:0 chroma subsampling: decodes to the same pixels as OpenCV's
        # imwrite(IMWRITE_JPEG_QUALITY=95) used by the original converter.
        img.save(path, format="JPEG", quality=95, subsampling="4:2:0")
    else:
        img.save(path, format="PNG")


def convert_file(tfrecord_path, mode, num_classes, work_dir, final_dir, prefix, fmt):
    """Write the images of one file into work_dir and its JSON; return the per-class counts."""
    annotations, created = [], set()
    for step, arr, label in read_records(tfrecord_path):
        if not 0 <= label < num_classes:
            raise UserError(f"{tfrecord_path}: record {step}: label {label} out of range [0, {num_classes})")
        rel = os.path.join("images", str(label), f"{mode}_{step}.{fmt}")
        if label not in created:
            os.makedirs(os.path.join(work_dir, "images", str(label)), exist_ok=True)
            created.add(label)
        save_image(arr, os.path.join(work_dir, rel), fmt)
        # fpath is absolute (as the originals) and points at the final, renamed folder
        annotations.append({"image_id": step, "fpath": os.path.join(final_dir, rel),
                            "category_id": label, "im_height": 32, "im_width": 32})
    if not annotations:
        raise UserError(f"{tfrecord_path}: no records")
    obj = {"annotations": annotations, "num_classes": num_classes}
    json_path = os.path.join(work_dir, f"{prefix}_{mode}.json")
    validate_annotations(obj, source=json_path)
    write_json(json_path, obj)
    counts = Counter(a["category_id"] for a in annotations)
    return [counts.get(c, 0) for c in range(num_classes)]


def log_counts(prefix, mode, counts, imb_factor):
    n_max = 50000 / len(counts)  # Cao/LDAM's n_max: 5000 (CIFAR-10), 500 (CIFAR-100)
    print(f"{prefix} {mode}: {sum(counts)} images, per-class counts: {' '.join(map(str, counts))}")
    if mode == "train":
        expected = exponential_counts(n_max, imb_factor, len(counts))
        if counts == expected:
            print(f"{prefix} train: counts match the exponential profile n_max={n_max:g}, IF={imb_factor}")
        else:
            print(f"warning: {prefix} train: counts differ from the expected exponential profile "
                  f"(n_max={n_max:g}, IF={imb_factor}): {' '.join(map(str, expected))}")


def convert_subdir(src_dir, out_root, prefix, num_classes, imb_factor, fmt, overwrite):
    final_dir = os.path.join(out_root, prefix)
    work_dir = os.path.join(out_root, f".{prefix}.partial")
    if os.path.exists(final_dir) and not overwrite:
        raise UserError(f"{final_dir} already exists; delete it or pass --overwrite")
    if os.path.exists(work_dir):  # left over from an interrupted run
        shutil.rmtree(work_dir)
    os.makedirs(work_dir)
    try:
        for fname, mode in MODES:
            counts = convert_file(os.path.join(src_dir, fname), mode, num_classes,
                                  work_dir, final_dir, prefix, fmt)
            log_counts(prefix, mode, counts, imb_factor)
        if os.path.exists(final_dir):
            shutil.rmtree(final_dir)
        os.rename(work_dir, final_dir)
    except BaseException:
        shutil.rmtree(work_dir, ignore_errors=True)
        raise
    print(f"wrote {final_dir}")


@exit_on_user_error
def main(argv=None):
    args = get_parser().parse_args(argv)
    if not os.path.isdir(args.input_path):
        raise UserError(f"--input_path {args.input_path} is not a folder")
    present = [d for d in KNOWN_SUBDIRS if os.path.isdir(os.path.join(args.input_path, d))]
    if not present:
        raise UserError(f"{args.input_path}: none of the known subdirectories is present "
                        f"(expected one or more of {', '.join(KNOWN_SUBDIRS)})")
    for d in present:  # check every input before converting anything
        for fname, _ in MODES:
            f = os.path.join(args.input_path, d, fname)
            if not os.path.isfile(f):
                raise UserError(f"{f}: file not found (each subdirectory needs train.tfrecords and eval.tfrecords)")
    out_root = os.path.abspath(args.output_path)
    os.makedirs(out_root, exist_ok=True)
    for d in present:
        prefix, num_classes, imb_factor = KNOWN_SUBDIRS[d]
        convert_subdir(os.path.join(args.input_path, d), out_root, prefix, num_classes,
                       imb_factor, args.format, args.overwrite)
    return 0


if __name__ == "__main__":
    main()
