"""The contract between a method and the trainer.

The trainer (lib/engine/trainer.py) calls only what is listed here and never asks which
method runs. A method is one module in lib/methods/ that subclasses `Method` and registers
itself with `@METHODS.register("name")`; it is selected by the config key `METHOD`.

    __init__(cfg, counts)        build the networks from the config and the training counts n_c
    forward(batch) -> outputs    the network pass (runs under DataParallel/DDP and autocast);
                                 `batch` is a dict: image, [image2], label, index, + what
                                 prepare_batch added. Outputs: a tensor, list or dict of tensors
    prepare_batch(batch, epoch)  before forward, on the device, outside DataParallel: mixup etc.
    loss(outputs, batch, epoch)  -> (scalar loss, {name: float tensor} logged per epoch)
    predict(outputs)             -> {"logits": B x C, "members": {name: B x C}}: one prediction
                                 for evaluation plus each expert's/head's own, for reporting
    param_groups()               -> [{"params": [...], "lr_scale": s, "name": str, ["weight_decay"]}]
                                 the scheduler sets lr = BASE_LR * schedule(epoch) * lr_scale
    on_epoch_start(epoch)        epoch-dependent state (DRW switches, CADEL's T); epochs are 1-based
    on_epoch_end(epoch)          -> optional {name: value} logged for the epoch
    after_optimizer_step()       after every optimizer step (MaxNorm projection, EMA updates)
    classifier_heads()           heads with .weight/.bias, for post-hoc tau-norm and reports
    after_pretrained_loaded()    stage two: called after NETWORK.PRETRAINED_MODEL is loaded
    epochs                       number of epochs the trainer runs (default TRAIN.MAX_EPOCH; ACE adds
                                 its un-mixed epochs)
    lr_scales(batch)             -> None or {group name: lr_scale}, asked before every optimizer step
                                 (a per-iteration LR ratio, e.g. ACE's batch_share rule)
    describe()                   -> lines the trainer logs once at start-up (e.g. ACE's expert splits)
    add_config(cfg) [static]     add the method's own config node (e.g. cfg.WB) to the defaults, and the
                                 release's keys it accepts (lib/config/compat.py: accept_unused)
    matches_release_config(cfg) [static]  True if a YAML without METHOD is this method's original
                                 release config (then METHOD is set to this method, with a notice)
    adapt_config(cfg, explicit) [static]  translate the release's spellings in place before the config
                                 is frozen (explicit = dotted keys the YAML / command line set);
                                 returns notices for the log. Must be idempotent.
"""
import torch
from torch import nn

from ..utils.registry import Registry

METHODS = Registry("method")


class Method(nn.Module):
    def __init__(self, cfg, counts):
        super().__init__()
        self.cfg = cfg
        self.num_classes = len(counts)
        self.register_buffer("class_counts", torch.tensor(counts, dtype=torch.float32), persistent=False)

    @staticmethod
    def add_config(cfg):
        """Add this method's config node; the default adds nothing."""

    @staticmethod
    def matches_release_config(cfg):
        return False

    @staticmethod
    def adapt_config(cfg, explicit):
        return []

    @staticmethod
    def loss_name(cfg):
        """The loss this config trains with, for reports (a method with its own loss overrides it)."""
        return cfg.LOSS.LOSS_TYPE

    @property
    def epochs(self):
        return self.cfg.TRAIN.MAX_EPOCH

    def lr_scales(self, batch):
        return None

    def describe(self):
        return []

    def prepare_batch(self, batch, epoch):
        return batch

    def forward(self, batch):
        raise NotImplementedError

    def loss(self, outputs, batch, epoch):
        raise NotImplementedError

    def predict(self, outputs):
        return {"logits": outputs, "members": {}}

    def param_groups(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr_scale": 1.0, "name": "all"}]

    def on_epoch_start(self, epoch):
        pass

    def on_epoch_end(self, epoch):
        return {}

    def after_optimizer_step(self):
        pass

    def classifier_heads(self):
        return []

    def after_pretrained_loaded(self):
        pass
