"""DDP-aware, resumable training samplers (docs/data.md, docs/methods/baselines.md).

Every sampler produces N = len(labels) draws per epoch (the epoch length is unchanged):
  - instance (`default`): a permutation of the N images (p_c = n_c / N), without replacement;
  - class-aware: N draws with replacement, first a class c ~ p_c, then an image of c uniformly:
      balance      p_c = 1/C                                   (q = 0 in p_c ∝ n_c^q)
      square       p_c = √n_c / Σ_j √n_j                       (q = 1/2)
      reverse      p_c = (n_max/n_c) / Σ_j (n_max/n_j) ∝ 1/n_c (BBN)
      progressive  p_c(e) = (e/E)·(1/C) + (1 − e/E)·(n_c/N)    (e: 1-based epoch, E: max epoch)
    Classes with n_c = 0 get p_c = 0 and the rest is renormalised (C counts non-empty classes).

Distribution: each epoch's global sequence is drawn from a torch.Generator seeded from (seed, epoch),
so every rank computes the same sequence; like DistributedSampler it is padded by wrapping around
(or truncated with drop_last) to a multiple of num_replicas, and rank r takes positions r, r+R, r+2R, ...
No index is duplicated across ranks the way independent per-rank WeightedRandomSamplers would.
Call `set_epoch(e)` (1-based) before each epoch (a resumed run sets it from the checkpoint's epoch).
"""
import math

import torch
from torch.utils.data import Sampler

from ..utils.errors import UserError
from ..utils.registry import choose
from ..utils.seeding import derive_seed

CLASS_AWARE_KINDS = ("balance", "square", "reverse", "progressive")


def class_probabilities(counts, kind, epoch=None, max_epoch=None):
    """p_c (float64 tensor, sums to 1) for `kind` in instance | balance | square | reverse | progressive.

    `progressive` needs `epoch` e and `max_epoch` E; e/E is clipped to [0, 1]. Empty classes get 0.
    """
    n = torch.as_tensor(counts, dtype=torch.float64).flatten()
    if n.numel() == 0 or bool((n < 0).any()) or float(n.sum()) <= 0:
        raise ValueError(f"class counts must be non-negative with a positive sum, got {counts}")
    present = n > 0
    uniform = present.double() / present.sum()
    instance = n / n.sum()
    if kind == "instance":
        return instance
    if kind == "balance":
        return uniform
    if kind == "square":
        w = n.sqrt()  # √n_c once: NCL's weighted_square takes the root twice (n_c^¼), a bug not replicated
        return w / w.sum()
    if kind == "reverse":
        w = torch.where(present, n.max() / n.clamp(min=1), torch.zeros_like(n))
        return w / w.sum()
    if kind == "progressive":
        if epoch is None or not max_epoch or max_epoch <= 0:
            raise ValueError("progressive probabilities need epoch and max_epoch > 0")
        t = min(max(float(epoch) / float(max_epoch), 0.0), 1.0)
        return t * uniform + (1.0 - t) * instance
    choose(kind, ("instance",) + CLASS_AWARE_KINDS, "sampling kind", ValueError)


def epoch_generator(seed, epoch):
    """A torch.Generator for the draws of `epoch` (derive_seed(seed, "sampler", epoch))."""
    g = torch.Generator()
    g.manual_seed(derive_seed(seed, "sampler", epoch))
    return g


class _EpochSampler(Sampler):
    """Shared machinery: labels, (seed, epoch), and the DistributedSampler-style shard of a global sequence."""

    def __init__(self, labels, num_classes, seed=0, num_replicas=1, rank=0, drop_last=False):
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if labels.numel() == 0:
            raise ValueError("a sampler needs at least one label")
        if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
            raise ValueError(f"labels must lie in [0, {num_classes}), got [{int(labels.min())}, {int(labels.max())}]")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"invalid rank {rank} for num_replicas {num_replicas}")
        if int(seed) < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.labels = labels
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.drop_last = bool(drop_last)
        self.epoch = 1
        n = labels.numel()
        if self.drop_last and n % self.num_replicas:
            self.num_samples = n // self.num_replicas
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    @property
    def counts(self):
        return torch.bincount(self.labels, minlength=self.num_classes)

    def set_epoch(self, epoch):
        """Epoch e (1-based) of the draws to come."""
        self.epoch = int(epoch)

    def global_indices(self, epoch=None):
        """This epoch's full sequence of N dataset indices (identical on every rank)."""
        e = self.epoch if epoch is None else int(epoch)
        return self._draw(epoch_generator(self.seed, e), e)

    def _draw(self, generator, epoch):
        raise NotImplementedError

    def __iter__(self):
        idx = self.global_indices()
        if len(idx) < self.total_size:  # pad by wrapping around, as DistributedSampler does
            reps = math.ceil((self.total_size - len(idx)) / len(idx))
            idx = torch.cat([idx] + [idx] * reps)
        idx = idx[: self.total_size]
        return iter(idx[self.rank : self.total_size : self.num_replicas].tolist())

    def __len__(self):
        return self.num_samples

    def state_dict(self):
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state):
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])


class InstanceSampler(_EpochSampler):
    """Instance sampling: a random permutation of all N images each epoch (p_c = n_c / N);
    shuffle=False keeps dataset order (still sharded across ranks)."""

    def __init__(self, labels, num_classes, seed=0, num_replicas=1, rank=0, drop_last=False, shuffle=True):
        super().__init__(labels, num_classes, seed, num_replicas, rank, drop_last)
        self.shuffle = bool(shuffle)

    def _draw(self, generator, epoch):
        n = self.labels.numel()
        return torch.randperm(n, generator=generator) if self.shuffle else torch.arange(n)


class ClassAwareSampler(_EpochSampler):
    """N draws with replacement: c ~ p_c (see `class_probabilities(kind)`), then an image of c uniformly.

    kind: balance (p_c ∝ n_c^0), square (∝ n_c^½), reverse (∝ 1/n_c), progressive (needs max_epoch E).
    """

    def __init__(self, labels, num_classes, seed=0, num_replicas=1, rank=0, drop_last=False,
                 kind="balance", max_epoch=None):
        super().__init__(labels, num_classes, seed, num_replicas, rank, drop_last)
        choose(kind, CLASS_AWARE_KINDS, "class-aware kind", ValueError)
        if kind == "progressive" and (not max_epoch or max_epoch <= 0):
            raise ValueError("the progressive sampler needs max_epoch > 0")
        self.kind = kind
        self.max_epoch = max_epoch
        counts = self.counts
        # images grouped by class: class c owns by_class[offsets[c] : offsets[c] + counts[c]]
        self._by_class = torch.argsort(self.labels, stable=True)
        self._offsets = torch.cumsum(counts, 0) - counts
        self._counts = counts

    def probabilities(self, epoch=None):
        e = self.epoch if epoch is None else epoch
        return class_probabilities(self._counts, self.kind, epoch=e, max_epoch=self.max_epoch)

    def _draw(self, generator, epoch):
        n = self.labels.numel()
        p = self.probabilities(epoch)
        classes = torch.multinomial(p, n, replacement=True, generator=generator)
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        sizes = self._counts[classes]
        within = torch.minimum((u * sizes).long(), sizes - 1)  # uniform in [0, n_c)
        return self._by_class[self._offsets[classes] + within]


class DeferredSampler(Sampler):
    """DRS (deferred re-sampling): `before` while epoch <= start_epoch, `after` when epoch > start_epoch."""

    def __init__(self, before, after, start_epoch):
        if len(before) != len(after):
            raise ValueError(f"DeferredSampler: lengths differ ({len(before)} vs {len(after)})")
        self.before, self.after = before, after
        self.start_epoch = int(start_epoch)
        self.epoch = 1
        self.set_epoch(1)

    @property
    def active(self):
        return self.after if self.epoch > self.start_epoch else self.before

    @property
    def seed(self):
        return self.before.seed

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        self.before.set_epoch(epoch)
        self.after.set_epoch(epoch)

    def __iter__(self):
        return iter(self.active)

    def __len__(self):
        return len(self.active)

    def state_dict(self):
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state):
        for s in (self.before, self.after):
            s.load_state_dict(state)
        self.epoch = int(state["epoch"])


def build_sampler(cfg, labels, num_classes, num_replicas=1, rank=0, seed=None, drop_last=False):
    """The training sampler named by TRAIN.SAMPLER.TYPE (+ WEIGHTED_SAMPLER.TYPE), DRS-wrapped when
    TRAIN.TWO_STAGE.DRS (instance up to START_EPOCH, weighted after). seed=None uses cfg.SEED."""
    seed = cfg.SEED if seed is None else seed
    common = dict(seed=seed, num_replicas=num_replicas, rank=rank, drop_last=drop_last)
    instance = InstanceSampler(labels, num_classes, shuffle=cfg.TRAIN.SHUFFLE, **common)
    kind = cfg.TRAIN.SAMPLER.TYPE
    drs = cfg.TRAIN.TWO_STAGE.DRS
    if kind == "default":
        if drs:
            raise UserError("TRAIN.TWO_STAGE.DRS needs TRAIN.SAMPLER.TYPE 'weighted sampler' (got 'default')")
        return instance
    if kind == "bbn sampler":
        raise UserError("TRAIN.SAMPLER.TYPE 'bbn sampler' (BoT's extra reverse-sampled image per item) is not "
                        "supported; use 'weighted sampler' with TRAIN.SAMPLER.WEIGHTED_SAMPLER.TYPE reverse")
    choose(kind, ("default", "weighted sampler"), "TRAIN.SAMPLER.TYPE")
    weighted = choose(cfg.TRAIN.SAMPLER.WEIGHTED_SAMPLER.TYPE, CLASS_AWARE_KINDS, "TRAIN.SAMPLER.WEIGHTED_SAMPLER.TYPE")
    sampler = ClassAwareSampler(labels, num_classes, kind=weighted, max_epoch=cfg.TRAIN.MAX_EPOCH, **common)
    if drs:
        return DeferredSampler(instance, sampler, cfg.TRAIN.TWO_STAGE.START_EPOCH)
    return sampler
