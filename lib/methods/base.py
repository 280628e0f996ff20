"""The contract between a method and the rest of the framework: this docstring is its one table.

The trainer, the tools and valid.py call only what is listed here and never ask which method runs. A
method is one module in lib/methods/ that subclasses `Method` and registers itself with
`@METHODS.register("name")`; the config key `METHOD` selects it. Every member has a default below, so a
method overrides only what it needs.

Config (static, called on the class before any method exists)
    add_config(cfg)              add the method's own config node (e.g. cfg.WB) to the defaults, and the
                                 release's keys it accepts (lib/utils/unused_keys.py: accept_unused)
    matches_release_config(cfg)  True if a YAML without METHOD is this method's original release config
                                 (then METHOD is set to this method, with a notice)
    adapt_config(cfg, explicit)  translate the release's spellings in place before the config is frozen
                                 (explicit = dotted keys the YAML / command line set); returns notices for
                                 the log. Must be idempotent
    resume_may_change(cfg)       -> config keys (dotted; a node covers its keys) a full resume may change
                                 besides the run-control ones (ACE: TRAIN.UNMIX_EPOCH); default ()
    loss_name(cfg)               -> the loss this config trains with, for reports (default LOSS.LOSS_TYPE)
    total_epochs(cfg)            -> the number of epochs a run of this config trains (default TRAIN.MAX_EPOCH;
                                 ACE adds TRAIN.UNMIX_EPOCH); the `epochs` property of a built method

Building and loading
    __init__(cfg, counts)        build the networks from the config and the training counts n_c
    epochs                       number of epochs the trainer runs: total_epochs(cfg)
    describe()                   -> lines the trainer logs once at start-up (e.g. ACE's expert splits)
    pretrained_may_lack          key substrings a NETWORK.PRETRAINED_MODEL may lack (LWS's scales); ()
    pretrained_may_mismatch      key substrings after_pretrained_loaded re-initialises, so a
                                 NETWORK.PRETRAINED_MODEL's may differ in shape or be absent; ()
    after_pretrained_loaded()    stage two: called after NETWORK.PRETRAINED_MODEL is loaded
    pretrained_reports()         -> lines saying what BACKBONE.PRETRAINED_MODEL loaded into each backbone

Training step (the order of lib/engine/trainer.py: train_step)
    prepare_batch(batch, epoch)  before forward, on the device, outside DataParallel: mixup etc.
    lr_scales(batch)             -> None or {group name: lr_scale}, asked before every optimizer step
                                 (a per-iteration LR ratio, e.g. ACE's batch_share rule)
    forward(batch) -> outputs    the network pass (runs under DataParallel/DDP and autocast);
                                 `batch` is a dict: image, [image2], label, index, + what
                                 prepare_batch added. Outputs: a tensor, list or dict of tensors
    loss(outputs, batch, epoch)  -> (scalar loss, {name: float tensor} logged per epoch)
    after_optimizer_step()       after every optimizer step (MaxNorm projection, EMA updates)
    param_groups()               -> [{"params": [...], "lr_scale": s, "name": str, ["weight_decay"]}]
                                 the scheduler sets lr = BASE_LR * schedule(epoch) * lr_scale
    on_epoch_start(epoch)        epoch-dependent state (DRW switches, CADEL's T); epochs are 1-based
    on_epoch_end(epoch)          -> optional {name: value} logged for the epoch

Prediction and reports
    predict(outputs)             -> {"logits": B x C, "members": {name: B x C}}: one prediction
                                 for evaluation plus each expert's/head's own, for reporting
    prediction_name              what predict's "logits" is, shown in tables as `main (<name>)`
                                 ("last head", "mean of experts' logits"); "" shows plain `main`
    classifier_heads()           heads with .weight/.bias, for post-hoc tau-norm and reports
    tau_normalize(tau)           post-hoc tau-normalisation of classifier_heads() in place (TEST.TAU_NORM)
    posthoc_taus                 the tau grid tools/posthoc_tau.py searches; () = its default grid

Anything a method must remember across a resume belongs in registered buffers or parameters, so that
checkpoints carry it.
"""
import torch
from torch import nn

from ..models.posthoc import tau_normalize_
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
    def resume_may_change(cfg):
        return ()

    @staticmethod
    def loss_name(cfg):
        return cfg.LOSS.LOSS_TYPE

    @staticmethod
    def total_epochs(cfg):
        return int(cfg.TRAIN.MAX_EPOCH)

    pretrained_may_lack = ()
    pretrained_may_mismatch = ()
    prediction_name = ""
    posthoc_taus = ()

    @property
    def epochs(self):
        return type(self).total_epochs(self.cfg)

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

    def tau_normalize(self, tau):
        for head in self.classifier_heads():
            tau_normalize_(head, tau)

    def after_pretrained_loaded(self):
        pass

    def pretrained_reports(self):
        return sorted({m.pretrained_report for m in self.modules() if getattr(m, "pretrained_report", "")})
