"""Every default of the framework, one key per line with what it does.

Key names follow BagofTricks-LT / ACE / NCL where those exist (docs/methods/baselines.md), so
their YAMLs read naturally. A method module may add one node of its own (named after the
method, e.g. `WB`) through `add_config(cfg)`; see lib/methods/base.py.
"""
from yacs.config import CfgNode as CN

from ..utils.unused_keys import accept_unused, value_of
from .compat import CORE_UNUSED

_C = CN()

_C.NAME = "default"  # run name: outputs go to OUTPUT_DIR/NAME/
_C.OUTPUT_DIR = "./output"  # root of all run folders
_C.METHOD = "ce"  # method module (lib/methods registry): ce, ...
_C.SEED = 42  # python/numpy/torch seed (the originals' 42)
_C.DETERMINISTIC = False  # torch.use_deterministic_algorithms + cudnn.deterministic (slower)
_C.DEVICE = "auto"  # auto | cpu | cuda
_C.GPUS = []  # DataParallel device ids (set by data_parallel_train.sh); [] = single device
_C.VALID_STEP = 1  # validate every N epochs (and always at the last epoch)
_C.SAVE_STEP = 5  # keep epoch_<e>.pth every N epochs (0 = never); latest/best are always written
_C.SHOW_STEP = 20  # log a line every N iterations in the log file
_C.PIN_MEMORY = True
_C.INPUT_SIZE = (224, 224)  # (height, width) fed to the network
_C.COLOR_SPACE = "RGB"  # RGB (3 channels) or L (grayscale, 1 channel)
_C.RESUME_MODEL = ""  # checkpoint to resume from: a file in OUTPUT_DIR/NAME/models/ or a path
_C.RESUME_MODE = "all"  # all: weights+optimizer+scheduler+epoch+RNG; state_dict: weights only
_C.AUTO_RESUME = False  # resume from models/latest.pth if present (the --ar / --resume flag)
_C.EVAL_MODE = False  # accepted for BoT compatibility; unused (a notice when set)
_C.CPU_MODE = False  # accepted for BoT compatibility; same as DEVICE cpu

# ---------------------------------------------------------------- dataset
_C.DATASET = CN()
_C.DATASET.DATASET = "json"  # accepted for compatibility; every dataset is read from JSON (a notice when set)
_C.DATASET.ROOT = ""  # relative fpaths resolve against this (else against the JSON's folder)
_C.DATASET.TRAIN_JSON = ""  # training annotations; class counts n_c always come from here
_C.DATASET.VALID_JSON = ""  # model selection split ("best" checkpoint); "" = none
_C.DATASET.TEST_JSON = ""  # final evaluation split; "" = none
_C.DATASET.NUM_CLASSES = 0  # 0 = take num_classes from TRAIN_JSON; else must match it
_C.DATASET.CHECK_IMAGES = True  # check every image file exists at start-up
_C.DATASET.EXIF_TRANSPOSE = False  # apply the EXIF orientation tag (off: ignored, as the original loaders)
_C.DATASET.REORDER_CLASSES = False  # rank classes by training count (descending) at load time
_C.DATASET.IMBALANCECIFAR = CN()  # accepted for BoT compatibility (a notice when set; tools/make_cifar_lt.py)
_C.DATASET.IMBALANCECIFAR.RATIO = 0.01
_C.DATASET.IMBALANCECIFAR.RANDOM_SEED = 0

# ---------------------------------------------------------------- network
_C.NETWORK = CN()
_C.NETWORK.PRETRAINED = False  # initialise the whole method from NETWORK.PRETRAINED_MODEL
_C.NETWORK.PRETRAINED_MODEL = ""  # a checkpoint of this framework (stage two: cRT, LWS, WB)

_C.BACKBONE = CN()
_C.BACKBONE.TYPE = "res32_cifar"  # res32_cifar, res34_cifar, res10, res50, res152, resnext50, vit_b16, vit_tiny_p4
_C.BACKBONE.IN_CHANNELS = 0  # 0 = from COLOR_SPACE (3 for RGB, 1 for L)
_C.BACKBONE.INIT = "kaiming"  # kaiming | pytorch (NCL's res50/res152)
_C.BACKBONE.PRETRAINED_MODEL = ""  # local state-dict file for the backbone only; never downloaded
_C.BACKBONE.FREEZE = False  # freeze backbone parameters and keep its BN in eval mode
_C.BACKBONE.FREEZE_BN = True  # with FREEZE: BN statistics frozen too (False replicates WB's train-mode BN)
_C.BACKBONE.DROP_PATH = 0.0  # ViTs: stochastic depth rate of the last block (linear from 0 over the blocks)
_C.BACKBONE.BN_EVAL = False  # keep the backbone's BatchNorm in eval mode (fixed statistics, affine still trains)

_C.MODULE = CN()
_C.MODULE.TYPE = "GAP"  # accepted for compatibility; pooling is global average pooling (a notice when set)

_C.CLASSIFIER = CN()
_C.CLASSIFIER.TYPE = "FC"  # FC, cos, FCNorm, LWS, CosNorm
_C.CLASSIFIER.BIAS = True
_C.CLASSIFIER.COS_SCALE = 16.0  # s for the cos / CosNorm heads
_C.CLASSIFIER.REINIT = False  # re-initialise the head after loading NETWORK.PRETRAINED_MODEL (cRT)
_C.CLASSIFIER.LWS_FREEZE_LINEAR = False  # LWS stage two: W, b frozen, only the scales sigma train (ACE: False)

# ---------------------------------------------------------------- loss (BoT names, docs/methods/baselines.md)
_C.LOSS = CN()
_C.LOSS.LOSS_TYPE = "CrossEntropy"
_C.LOSS.CostSensitiveCE = CN({"GAMMA": 1.0})
_C.LOSS.ClassBalanceCE = CN({"BETA": 0.999})
_C.LOSS.FocalLoss = CN({"GAMMA": 2.0})
_C.LOSS.ClassBalanceFocal = CN({"BETA": 0.999, "GAMMA": 0.5})
_C.LOSS.CrossEntropy = CN()
_C.LOSS.CrossEntropy.DRW_WEIGHTS = True  # under DRW: w_c = n_min / n_c after START_EPOCH (BoT before 32b7fdf, ACE's fork); False: BoT's HEAD (no re-weighting)
_C.LOSS.LDAMLoss = CN({"SCALE": 30.0, "MAX_MARGIN": 0.5, "DRW_BETA": 0.9999})
_C.LOSS.LDAMLoss.DRW_AT_START_EPOCH = True  # BoT's LDAM switches its DRW weights at epoch >= START_EPOCH (one epoch before the other losses); False: > START_EPOCH
_C.LOSS.CDT = CN({"GAMMA": 0.2})
_C.LOSS.SEQL = CN({"GAMMA": 0.9, "LAMBDA": 0.005})
_C.LOSS.CrossEntropyLabelSmooth = CN({"EPSILON": 0.1})
_C.LOSS.CrossEntropyLabelAwareSmooth = CN({"SMOOTH_HEAD": 0.4, "SMOOTH_TAIL": 0.1, "SHAPE": "concave"})
_C.LOSS.InfluenceBalancedLoss = CN({"ALPHA": 1000.0})
_C.LOSS.ClassBalanceSoftmaxBCE = CN({"BETA": 0.9999})  # Cui et al. "softmax" CB loss (WB stage two)

# ---------------------------------------------------------------- training
_C.TRAIN = CN()
_C.TRAIN.BATCH_SIZE = 32  # GLOBAL batch: DDP divides it by the world size (docs/training.md)
_C.TRAIN.MAX_EPOCH = 60
_C.TRAIN.SHUFFLE = True
_C.TRAIN.NUM_WORKERS = 4
_C.TRAIN.DROP_LAST = False
_C.TRAIN.DISTRIBUTED = False  # accepted for compatibility (a notice when set); DDP is detected from torchrun
_C.TRAIN.SYNCBN = False  # convert BatchNorm to SyncBatchNorm under DDP
_C.TRAIN.APEX = False  # NVIDIA apex is superseded by torch.amp: True means AMP on, with a notice
_C.TRAIN.USE_AMP = False  # ACE's key: same as AMP.ENABLE
_C.TRAIN.CHANNELS_LAST = False  # channels_last memory format for model and inputs
_C.TRAIN.NONFINITE_LOSS = "stop"  # stop | skip: what a NaN/inf loss does
_C.TRAIN.SEEDED_AUGMENTATION = True  # augmentation of image i in epoch e seeded by (SEED, e, i): exact resume
_C.TRAIN.AMP = CN()
_C.TRAIN.AMP.ENABLE = False  # autocast: fp16 + GradScaler on CUDA, bf16 on CPU
_C.TRAIN.AMP.DTYPE = "auto"  # auto | float16 | bfloat16
_C.TRAIN.TENSORBOARD = CN({"ENABLE": True})

_C.TRAIN.COMBINER = CN()  # batch-level mixing (docs/methods/baselines.md)
_C.TRAIN.COMBINER.TYPE = "default"  # default, mix_up, manifold_mix_up, remix
_C.TRAIN.COMBINER.ALPHA = 1.0  # lambda ~ Beta(alpha, alpha)
_C.TRAIN.COMBINER.MANIFOLD_MIX_UP = CN({"LOCATION": "pool"})
_C.TRAIN.COMBINER.MANIFOLD_MIX_UP.MIX_LAYER4 = False  # LOCATION layer4: False = BoT's release (labels mixed, features not); True mixes layer4's output
_C.TRAIN.COMBINER.REMIX = CN({"KAPPA": 3.0, "TAU": 0.5})
_C.TRAIN.COMBINER.REMIX.WEIGHTING = "batch_mean"  # batch_mean: mean(lam_y) L(y_a) + mean(1 - lam_y) L(y_b) (BoT's release) | per_sample (the Remix paper)

_C.TRAIN.TWO_STAGE = CN()  # deferred switches, active when epoch > START_EPOCH
_C.TRAIN.TWO_STAGE.DRW = False
_C.TRAIN.TWO_STAGE.DRS = False
_C.TRAIN.TWO_STAGE.START_EPOCH = 1

_C.TRAIN.SAMPLER = CN()
_C.TRAIN.SAMPLER.TYPE = "default"  # default (instance) | weighted sampler
_C.TRAIN.SAMPLER.WEIGHTED_SAMPLER = CN({"TYPE": "balance"})  # balance | square | progressive | reverse
_C.TRAIN.SAMPLER.BBN_SAMPLER = CN({"TYPE": "reverse"})  # accepted for compatibility (a notice when set)

_C.TRAIN.OPTIMIZER = CN()
_C.TRAIN.OPTIMIZER.TYPE = "SGD"  # SGD | ADAM | ADAMW
_C.TRAIN.OPTIMIZER.BASE_LR = 0.001
_C.TRAIN.OPTIMIZER.MOMENTUM = 0.9
_C.TRAIN.OPTIMIZER.NESTEROV = True  # BoT/NCL default
_C.TRAIN.OPTIMIZER.WEIGHT_DECAY = 1e-4  # applied to every parameter, BN and bias included
_C.TRAIN.OPTIMIZER.BETAS = (0.9, 0.999)  # Adam / AdamW
_C.TRAIN.OPTIMIZER.LAYER_DECAY = 1.0  # < 1: layer-wise LR decay d^(L+1-i) for layer i (ViTs, BEiT/MAE); 1 = off
_C.TRAIN.OPTIMIZER.NO_WEIGHT_DECAY_1D = False  # no weight decay on biases, norm weights, pos_embed, cls_token

_C.TRAIN.LR_SCHEDULER = CN()
_C.TRAIN.LR_SCHEDULER.TYPE = "multistep"  # multistep | warmup | cosine | constant (per epoch) | warmup_cosine (per iteration)
_C.TRAIN.LR_SCHEDULER.LR_STEP = [40, 50]  # epochs (1-based) from which the LR is multiplied by LR_FACTOR
_C.TRAIN.LR_SCHEDULER.LR_FACTOR = 0.1
_C.TRAIN.LR_SCHEDULER.WARM_EPOCH = 5  # warmup: w(e) = (1/3)(1 - e/W) + e/W for e < W; warmup_cosine: linear from 0 over W epochs
_C.TRAIN.LR_SCHEDULER.COSINE_DECAY_END = 0  # cosine period T_max in epochs; 0 = MAX_EPOCH
_C.TRAIN.LR_SCHEDULER.ETA_MIN = 0.0  # cosine floor (absolute LR)
_C.TRAIN.LR_SCHEDULER.STEP_AT_EPOCH_START = True  # BoT: epoch e uses t = e; False: t = e - 1 (PyTorch end-of-epoch)
_C.TRAIN.LR_SCHEDULER.EPOCH_OFFSET = 0.0  # warmup_cosine: added to t = e - 1 + i/n (1 = CADEL-ViT's release, 1-based epochs)

# ---------------------------------------------------------------- evaluation
_C.TEST = CN()
_C.TEST.BATCH_SIZE = 128
_C.TEST.NUM_WORKERS = 2
_C.TEST.MODEL_FILE = "best_model.pth"  # valid.py default checkpoint (in OUTPUT_DIR/NAME/models/)
_C.TEST.SPLIT = "test"  # valid.py: test | valid
_C.TEST.SHOT_RULE = "standard"  # many/medium/few rule: standard (>100, 20-100, <20) | ace | ncl
_C.TEST.FLIP_TTA = False  # average logits with the horizontally flipped image
_C.TEST.TAU_NORM = CN({"USE_TAU_NORM": False, "TAU": 1.0})  # post-hoc w_c / ||w_c||^tau
_C.TEST.LOGIT_ADJUST = CN({"TAU": 0.0})  # post-hoc z - tau * log(prior)
_C.TEST.TEMPERATURE = 1.0  # post-hoc temperature scaling z / T of the main prediction (1.0 = off; argmax unchanged)

# ---------------------------------------------------------------- transforms (docs/data.md)
_C.TRANSFORMS = CN()
_C.TRANSFORMS.TRAIN_TRANSFORMS = ("random_resized_crop", "random_horizontal_flip")
_C.TRANSFORMS.TEST_TRANSFORMS = ("shorter_resize_for_crop", "center_crop")
_C.TRANSFORMS.SECOND_VIEW_TRANSFORMS = ()  # a second augmented view (NCL's MoCo); () = one view
_C.TRANSFORMS.NORMALIZE = "imagenet"  # imagenet | cifar | inat | fashion_mnist | custom (MEAN/STD) | none
_C.TRANSFORMS.MEAN = []
_C.TRANSFORMS.STD = []
_C.TRANSFORMS.PROCESS_DETAIL = CN()
_C.TRANSFORMS.PROCESS_DETAIL.RANDOM_CROP = CN({"PADDING": 4})
_C.TRANSFORMS.PROCESS_DETAIL.RANDOM_RESIZED_CROP = CN({"SCALE": (0.08, 1.0), "RATIO": (0.75, 1.333333333)})
_C.TRANSFORMS.PROCESS_DETAIL.COLOR_JITTER = CN(
    {"BRIGHTNESS": 0.4, "CONTRAST": 0.4, "SATURATION": 0.4, "HUE": 0.0, "P": 1.0}
)
_C.TRANSFORMS.PROCESS_DETAIL.RANDOM_GRAYSCALE = CN({"P": 0.2})
_C.TRANSFORMS.PROCESS_DETAIL.GAUSSIAN_BLUR = CN({"P": 0.5, "SIGMA": (0.1, 2.0)})
_C.TRANSFORMS.PROCESS_DETAIL.CUTOUT = CN({"LENGTH": 16, "HOLES": 1})
_C.TRANSFORMS.PROCESS_DETAIL.AUTOAUGMENT = CN({"POLICY": "cifar10", "FILL": 128})
_C.TRANSFORMS.PROCESS_DETAIL.RANDAUGMENT = CN({"NUM_OPS": 2, "MAGNITUDE": 10})
_C.TRANSFORMS.PROCESS_DETAIL.SHORTER_RESIZE_RATIO = 0.875  # Resize(S / 0.875) before a centre crop

# ---------------------------------------------------------------- accepted for compatibility only
# Keys of the originals' YAMLs that do nothing here (marked "accepted for compatibility" above): each
# prints one notice at start-up when set to anything but its default, saying what it does here
# (the texts: lib/config/compat.py CORE_UNUSED).
for _key, _says in CORE_UNUSED.items():
    accept_unused(_C, _key, value_of(_C, _key), _says)


def get_defaults():
    """A fresh, mutable copy of the defaults (method nodes added by the caller)."""
    return _C.clone()
