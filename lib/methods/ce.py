"""Plain cross-entropy and the classic re-balancing baselines on one network.

The loss is chosen by LOSS.LOSS_TYPE (lib/losses), the sampler by TRAIN.SAMPLER (the data
pipeline), batch mixing by TRAIN.COMBINER.TYPE (default, mix_up, remix, manifold_mix_up; helpers
in mixing.py). Stage two of decoupled training (cRT, WB) is this method with
NETWORK.PRETRAINED_MODEL, BACKBONE.FREEZE and CLASSIFIER.REINIT.
"""
import torch

from ..utils import distributed as dist_utils
from ..losses import build_loss
from ..models.heads import build_head
from ..models.network import Network
from ..utils.errors import UserError
from ..utils.registry import choose
from . import mixing
from .base import METHODS, Method

COMBINERS = ("default",) + mixing.MIXING_COMBINERS
REMIX_WEIGHTINGS = ("batch_mean", "per_sample")


@METHODS.register("ce")
class CrossEntropyMethod(Method):
    def __init__(self, cfg, counts):
        super().__init__(cfg, counts)
        self.net = Network(cfg, self.num_classes)
        self.criterion = build_loss(cfg, counts)
        self.combiner = choose(cfg.TRAIN.COMBINER.TYPE, COMBINERS, "TRAIN.COMBINER.TYPE")
        comb = cfg.TRAIN.COMBINER
        self.alpha = comb.ALPHA
        if self.combiner != "default" and not self.alpha > 0:
            raise UserError(f"TRAIN.COMBINER.ALPHA must be > 0 for {self.combiner} (lambda ~ Beta(alpha, alpha)), "
                            f"got {self.alpha}")
        self.kappa, self.tau = float(comb.REMIX.KAPPA), float(comb.REMIX.TAU)
        self.remix_weighting = choose(comb.REMIX.WEIGHTING, REMIX_WEIGHTINGS, "TRAIN.COMBINER.REMIX.WEIGHTING")
        self.mix_location = comb.MANIFOLD_MIX_UP.LOCATION
        # BoT's release forwards only layers 1-3 to its mixing backbone: at layer4 only the labels are mixed
        self.mix_features = self.mix_location != "layer4" or bool(comb.MANIFOLD_MIX_UP.MIX_LAYER4)
        if self.combiner == "manifold_mix_up":
            mixing.check_location(self.mix_location, self.net.backbone)
        # a loss that needs the pooled feature (IB) gets {"logits", "features"} from forward
        self.needs_features = getattr(self.criterion, "needs_features", False)
        # -- LWS stage two (Kang et al.; docs/methods/baselines.md): W and b frozen, only sigma trains
        if cfg.CLASSIFIER.LWS_FREEZE_LINEAR:
            if not hasattr(self.net.head, "freeze_linear"):
                raise UserError(f"CLASSIFIER.LWS_FREEZE_LINEAR needs CLASSIFIER.TYPE LWS, got {cfg.CLASSIFIER.TYPE!r}")
            self.net.head.freeze_linear()

    def _replica_chunks(self, image):
        """How DataParallel will split the batch (manifold mixup pairs samples inside a replica)."""
        gpus = len(self.cfg.GPUS)
        return gpus if image.is_cuda and gpus > 1 and not dist_utils.is_distributed() else 1

    def prepare_batch(self, batch, epoch):
        """Mixing combiners (training only): lam ~ Beta(alpha, alpha) once per batch, a random pairing
        a -> b = perm(a); adds label_b, lam and mix_weight (per-sample weight of L(z, y_a): lam, or
        Remix's lam_y). mix_up / remix mix the images here; manifold_mix_up adds mix_index and mixes
        the hidden features inside forward."""
        if self.combiner == "default" or not self.training:
            return batch
        image, label = batch["image"], batch["label"]
        lam = mixing.sample_lambda(self.alpha)
        chunks = self._replica_chunks(image) if self.combiner == "manifold_mix_up" else 1
        perm, local = mixing.pair_permutation(image.shape[0], image.device, chunks)
        label_b = label[perm]
        out = dict(batch, label_b=label_b, lam=lam, mix_weight=self.mix_weight(label, label_b, lam))
        if self.combiner == "manifold_mix_up":
            if self.mix_features:
                out["mix_index"] = local
        else:  # x = lam * x_a + (1 - lam) * x_b
            out["image"] = mixing.mix(image, lam, perm)
        return out

    def mix_weight(self, label, label_b, lam):
        """Per-sample weight of L(z, y_a): lam, or Remix's lam_y (REMIX.WEIGHTING per_sample) or their batch mean
        (batch_mean, BoT's release: its batch-mean losses times the per-sample weights, averaged)."""
        if self.combiner != "remix":
            return torch.full(label.shape, lam, device=label.device)
        w = mixing.remix_label_weights(self.class_counts, label, label_b, lam, self.kappa, self.tau)
        return w if self.remix_weighting == "per_sample" else w.mean().expand_as(w)

    def forward(self, batch):
        """Logits (B, C), or {"logits", "features"} when the loss needs the pooled feature."""
        x = batch["image"]
        if "mix_index" in batch:
            logits, f = mixing.forward_manifold_mixup(self.net, x, self.mix_location, batch["lam"], batch["mix_index"])
        elif self.needs_features:
            f = self.net.features(x)
            logits = self.net.head(f)
        else:
            return self.net(x)
        return {"logits": logits, "features": f} if self.needs_features else logits

    def predict(self, outputs):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs
        return {"logits": logits, "members": {}}

    def loss(self, outputs, batch, epoch):
        logits, f = (outputs["logits"], outputs["features"]) if isinstance(outputs, dict) else (outputs, None)
        if "label_b" in batch:  # sum_i lam_i * L_i(z, y_a) + (1 - lam_i) * L_i(z, y_b)
            loss = mixing.mixed_loss(self.criterion, logits, batch["label"], batch["label_b"], batch["mix_weight"], f)
        else:
            loss = self.criterion(logits, batch["label"], features=f)
        return loss, {}

    def on_epoch_start(self, epoch):
        self.criterion.update(epoch)

    def classifier_heads(self):
        return [self.net.head]

    @property
    def pretrained_may_lack(self):
        """Keys a NETWORK.PRETRAINED_MODEL may lack (the trainer passes them to load_weights' allow_missing).
        -- LWS stage two: an FC checkpoint has W, b under the same keys but no sigma (initialised to 1)."""
        return ("net.head.scales",) if self.cfg.CLASSIFIER.TYPE == "LWS" else ()

    @property
    def pretrained_may_mismatch(self):
        """Keys after_pretrained_loaded re-initialises, so a NETWORK.PRETRAINED_MODEL's may differ in shape (or be
        absent or extra) and are skipped with a log line: the head under CLASSIFIER.REINIT (cRT onto a dataset
        with another class count). Every other key must fit (lib/engine/checkpoint.py: load_weights)."""
        return ("net.head.",) if self.cfg.CLASSIFIER.REINIT else ()

    def after_pretrained_loaded(self):
        if self.cfg.CLASSIFIER.REINIT:  # cRT: a fresh classifier on the loaded features
            old = self.net.head
            self.net.head = build_head(
                self.cfg.CLASSIFIER.TYPE, old.weight.shape[1], self.num_classes,
                bias=self.cfg.CLASSIFIER.BIAS, scale=self.cfg.CLASSIFIER.COS_SCALE,
            ).to(old.weight.device)
