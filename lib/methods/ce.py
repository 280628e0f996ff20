"""Plain cross-entropy and the classic re-balancing baselines on one network.

The loss is chosen by LOSS.LOSS_TYPE (lib/losses), the sampler by TRAIN.SAMPLER (the data
pipeline), batch mixing by TRAIN.COMBINER.TYPE. Stage two of decoupled training (cRT, WB) is
this method with NETWORK.PRETRAINED_MODEL, BACKBONE.FREEZE and CLASSIFIER.REINIT.
"""
import torch

from ..losses import build_loss
from ..models.heads import build_head
from ..models.network import Network
from ..utils.errors import UserError
from .base import METHODS, Method

COMBINERS = ("default", "mix_up")


@METHODS.register("ce")
class CrossEntropyMethod(Method):
    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        self.net = Network(cfg, self.num_classes)
        self.criterion = build_loss(cfg, counts)
        self.combiner = cfg.TRAIN.COMBINER.TYPE
        if self.combiner not in COMBINERS:
            raise UserError(f"unknown TRAIN.COMBINER.TYPE {self.combiner!r}; valid: {', '.join(COMBINERS)}")
        self.alpha = cfg.TRAIN.COMBINER.ALPHA

    def prepare_batch(self, batch, epoch):
        if self.combiner == "mix_up" and self.training:
            # x = lam * x_a + (1 - lam) * x_b, lam ~ Beta(alpha, alpha) once per batch
            alpha = torch.tensor(float(self.alpha))
            lam = float(torch.distributions.Beta(alpha, alpha).sample())
            perm = torch.randperm(batch["image"].shape[0], device="cpu").to(batch["image"].device)
            batch = dict(batch, image=lam * batch["image"] + (1 - lam) * batch["image"][perm],
                         label_b=batch["label"][perm], lam=lam)
        return batch

    def forward(self, batch):
        return self.net(batch["image"])

    def loss(self, outputs, batch, epoch):
        loss = self.criterion(outputs, batch["label"])
        if "label_b" in batch:  # lam * L(z, y_a) + (1 - lam) * L(z, y_b)
            lam = batch["lam"]
            loss = lam * loss + (1 - lam) * self.criterion(outputs, batch["label_b"])
        return loss, {}

    def on_epoch_start(self, epoch):
        self.criterion.update(epoch)

    def classifier_heads(self):
        return [self.net.head]

    def after_pretrained_loaded(self):
        if self.cfg.CLASSIFIER.REINIT:  # cRT: a fresh classifier on the loaded features
            old = self.net.head
            self.net.head = build_head(
                self.cfg.CLASSIFIER.TYPE, old.weight.shape[1], self.num_classes,
                bias=self.cfg.CLASSIFIER.BIAS, scale=self.cfg.CLASSIFIER.COS_SCALE,
            ).to(old.weight.device)
