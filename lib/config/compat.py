"""The core's keys accepted only so that the originals' YAMLs run (BoT's DATASET.DATASET, IMBALANCECIFAR.*,
EVAL_MODE, MODULE.TYPE, TRAIN.DISTRIBUTED, TRAIN.SAMPLER.BBN_SAMPLER.TYPE), with what a user who sets one is
told. They are registered at the end of lib/config/defaults.py; the mechanism (accept_unused, notices) is
lib/utils/unused_keys.py, below the methods, which register their releases' keys with it too.
"""
import os


# ---------------------------------------------------------------- the core's compatibility-only keys
def _data(cfg, run):
    """'DATASET.TRAIN_JSON (<file>: 10 classes, 2,478 images, IF 100)'; the counts only at start-up."""
    name = os.path.basename(cfg.DATASET.TRAIN_JSON) or "(empty)"
    if run is None:
        return f"DATASET.TRAIN_JSON ({name})"
    return (f"DATASET.TRAIN_JSON ({name}: {run['num_classes']} classes, {run['train_images']:,} images, "
            f"IF {run['imbalance_factor']:.3g})")


def _says_dataset(cfg, value, run=None):
    return f"every dataset is read from its annotation JSONs; this run trains on {_data(cfg, run)}"


def _says_imbalance_ratio(cfg, value, run=None):
    factor = f"{1 / value:.3g}" if value > 0 else "IF"
    text = (f"an imbalanced set is built by tools/make_cifar_lt.py --imb_factor {factor} (or converted by "
            f"tools/convert_from_tfrecords.py); this run uses {_data(cfg, run)} as it is")
    if run is not None and value > 0 and abs(run["imbalance_factor"] * value - 1) > 0.05:
        text += f", not the IF {factor} this key asks for"
    return text


def _says_imbalance_seed(cfg, value, run=None):
    return f"the selection seed is tools/make_cifar_lt.py --seed; this run uses {_data(cfg, run)} as it was built"


def _says_sampler(cfg, value, run=None):
    return (f"BBN's two-branch sampling is not implemented; TRAIN.SAMPLER.TYPE ({cfg.TRAIN.SAMPLER.TYPE!r}) "
            f"chooses this run's sampler (BBN's reversed sampler: TRAIN.SAMPLER.TYPE 'weighted sampler' with "
            f"TRAIN.SAMPLER.WEIGHTED_SAMPLER.TYPE reverse)")


CORE_UNUSED = {  # key -> what a user who sets it is told
    "EVAL_MODE": "main/train.py always trains; evaluate a run with python3 valid.py CONFIG",
    "DATASET.DATASET": _says_dataset,
    "DATASET.IMBALANCECIFAR.RATIO": _says_imbalance_ratio,
    "DATASET.IMBALANCECIFAR.RANDOM_SEED": _says_imbalance_seed,
    "MODULE.TYPE": "the pooling is always global average pooling (GAP)",
    "TRAIN.DISTRIBUTED": "DDP is on when torchrun starts the run: bash distributed_data_parallel_train.sh CONFIG "
                         "NUM_GPUS GPU_IDS",
    "TRAIN.SAMPLER.BBN_SAMPLER.TYPE": _says_sampler,
}
