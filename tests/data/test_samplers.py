"""DDP-aware samplers (docs/data.md, docs/methods/baselines.md)."""
import math

import pytest
import torch

from lib.config.defaults import get_defaults
from lib.data.samplers import (ClassAwareSampler, DeferredSampler, InstanceSampler, build_sampler,
                               class_probabilities)
from lib.utils.errors import UserError

COUNTS = [1000, 400, 100, 25, 0]  # class 4 is empty
LABELS = [c for c, n in enumerate(COUNTS) for _ in range(n)]  # N = 1525
N, C = len(LABELS), len(COUNTS)


def class_frequencies(sampler, epochs):
    drawn = []
    for e in epochs:
        sampler.set_epoch(e)
        drawn += list(sampler)
    labels = torch.tensor(LABELS)[torch.tensor(drawn)]
    return torch.bincount(labels, minlength=C).double() / len(drawn)


def expected(values):
    p = torch.tensor(values, dtype=torch.float64)
    return p / p.sum()


def test_class_probabilities_formulas():
    assert torch.allclose(class_probabilities(COUNTS, "instance"), expected(COUNTS))
    assert torch.allclose(class_probabilities(COUNTS, "balance"), expected([1, 1, 1, 1, 0]))
    assert torch.allclose(class_probabilities(COUNTS, "square"), expected([1000 ** 0.5, 20, 10, 5, 0]))
    assert torch.allclose(class_probabilities(COUNTS, "reverse"), expected([1 / 1000, 1 / 400, 1 / 100, 1 / 25, 0]))
    p = class_probabilities(COUNTS, "progressive", epoch=30, max_epoch=120)
    assert torch.allclose(p, 0.25 * expected([1, 1, 1, 1, 0]) + 0.75 * expected(COUNTS))


def test_progressive_probabilities_run_from_instance_to_balanced():
    assert torch.allclose(class_probabilities(COUNTS, "progressive", epoch=0, max_epoch=10), expected(COUNTS))
    assert torch.allclose(class_probabilities(COUNTS, "progressive", epoch=10, max_epoch=10),
                          expected([1, 1, 1, 1, 0]))


def test_unknown_probability_kind_is_rejected():
    with pytest.raises(ValueError, match="unknown sampling kind"):
        class_probabilities(COUNTS, "cubic")


@pytest.mark.parametrize("kind,p", [
    ("balance", [1, 1, 1, 1, 0]),
    ("square", [1000 ** 0.5, 20, 10, 5, 0]),
    ("reverse", [1 / 1000, 1 / 400, 1 / 100, 1 / 25, 0]),
])
def test_weighted_sampler_draws_classes_with_expected_frequency(kind, p):
    s = ClassAwareSampler(LABELS, C, kind=kind, seed=3)
    freq = class_frequencies(s, range(1, 14))  # ~20k draws
    assert torch.allclose(freq, expected(p), atol=0.015)


def test_progressive_sampler_is_balanced_at_last_epoch_and_instance_early():
    s = ClassAwareSampler(LABELS, C, kind="progressive", max_epoch=1000, seed=0)
    assert torch.allclose(class_frequencies(s, range(988, 1001)), expected([1, 1, 1, 1, 0]), atol=0.015)
    assert torch.allclose(class_frequencies(s, range(1, 14)), expected(COUNTS), atol=0.015)


def test_instance_sampler_is_a_permutation_per_epoch():
    s = InstanceSampler(LABELS, C, seed=1)
    idx = list(s)
    assert sorted(idx) == list(range(N)) and idx != list(range(N))


def test_instance_sampler_without_shuffle_keeps_order():
    assert list(InstanceSampler(LABELS, C, shuffle=False)) == list(range(N))


def test_balanced_sampler_reaches_every_image_of_a_small_class():
    s = ClassAwareSampler(LABELS, C, kind="balance", seed=0)
    drawn = set(list(s))
    assert set(range(1500, 1525)) <= drawn  # the 25 images of class 3


@pytest.mark.parametrize("make", [
    lambda **kw: InstanceSampler(LABELS, C, **kw),
    lambda **kw: ClassAwareSampler(LABELS, C, kind="square", **kw),
])
def test_len_is_this_ranks_share(make):
    assert len(make()) == N == len(list(make()))
    assert len(make(num_replicas=2, rank=1)) == math.ceil(N / 2) == len(list(make(num_replicas=2, rank=1)))
    assert len(make(num_replicas=2, rank=0, drop_last=True)) == N // 2
    assert len(list(make(num_replicas=2, rank=1, drop_last=True))) == N // 2


@pytest.mark.parametrize("make", [
    lambda seed: InstanceSampler(LABELS, C, seed=seed),
    lambda seed: ClassAwareSampler(LABELS, C, kind="balance", seed=seed),
    lambda seed: ClassAwareSampler(LABELS, C, kind="progressive", max_epoch=10, seed=seed),
])
def test_same_seed_and_epoch_repeat_and_other_epochs_differ(make):
    a, b = make(7), make(7)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b)
    b.set_epoch(4)
    assert list(a) != list(b)
    c = make(8)
    c.set_epoch(3)
    assert list(a) != list(c)


def test_instance_shards_on_two_replicas_are_disjoint_and_cover():
    labels = LABELS[:-1]  # N even: no padding
    shards = []
    for rank in range(2):
        s = InstanceSampler(labels, C, seed=5, num_replicas=2, rank=rank)
        s.set_epoch(2)
        shards.append(list(s))
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == list(range(len(labels)))


def test_instance_shards_pad_like_distributed_sampler_when_not_divisible():
    shards = [list(InstanceSampler(LABELS, C, seed=5, num_replicas=2, rank=r)) for r in range(2)]
    together = shards[0] + shards[1]
    assert len(together) == N + 1 and set(together) == set(range(N))  # one wrapped-around repeat


@pytest.mark.parametrize("kind", ["balance", "square", "reverse", "progressive"])
def test_weighted_shards_together_equal_the_single_replica_sequence(kind):
    labels = LABELS[:-1]
    single = ClassAwareSampler(labels, C, kind=kind, max_epoch=10, seed=2)
    single.set_epoch(4)
    shards = []
    for rank in range(2):
        s = ClassAwareSampler(labels, C, kind=kind, max_epoch=10, seed=2, num_replicas=2, rank=rank)
        s.set_epoch(4)
        shards.append(list(s))
    interleaved = [i for pair in zip(*shards) for i in pair]
    assert interleaved == list(single)


def test_drs_switches_to_weighted_sampling_only_after_start_epoch():
    before = InstanceSampler(LABELS, C, seed=0)
    after = ClassAwareSampler(LABELS, C, kind="balance", seed=0)
    drs = DeferredSampler(before, after, start_epoch=3)
    reference = ClassAwareSampler(LABELS, C, kind="balance", seed=0)
    for epoch in (1, 3):
        drs.set_epoch(epoch)
        assert sorted(drs) == list(range(N))  # instance: a permutation
    for epoch in (4, 5):
        drs.set_epoch(epoch)
        reference.set_epoch(epoch)
        assert list(drs) == list(reference)


@pytest.mark.parametrize("make", [
    lambda: InstanceSampler(LABELS, C, seed=11),
    lambda: ClassAwareSampler(LABELS, C, kind="square", seed=11),
    lambda: DeferredSampler(InstanceSampler(LABELS, C, seed=11),
                            ClassAwareSampler(LABELS, C, kind="balance", seed=11), start_epoch=2),
])
def test_state_dict_round_trip_resumes_the_same_sequence(make):
    a = make()
    a.set_epoch(6)
    state = a.state_dict()
    assert state == {"seed": 11, "epoch": 6}
    b = make()
    b.load_state_dict(state)
    assert list(b) == list(a)


def sampler_cfg(kind="default", weighted="balance", drs=False, start=2):
    cfg = get_defaults()
    cfg.TRAIN.SAMPLER.TYPE = kind
    cfg.TRAIN.SAMPLER.WEIGHTED_SAMPLER.TYPE = weighted
    cfg.TRAIN.TWO_STAGE.DRS = drs
    cfg.TRAIN.TWO_STAGE.START_EPOCH = start
    cfg.TRAIN.MAX_EPOCH = 10
    return cfg


def test_build_sampler_reads_the_config():
    assert isinstance(build_sampler(sampler_cfg(), LABELS, C), InstanceSampler)
    cfg = sampler_cfg()
    cfg.TRAIN.SHUFFLE = False
    assert list(build_sampler(cfg, LABELS, C)) == list(range(N))
    s = build_sampler(sampler_cfg("weighted sampler", "progressive"), LABELS, C, num_replicas=2, rank=1, seed=4)
    assert isinstance(s, ClassAwareSampler)
    assert (s.kind, s.max_epoch, s.seed, s.rank, len(s)) == ("progressive", 10, 4, 1, math.ceil(N / 2))
    drs = build_sampler(sampler_cfg("weighted sampler", "reverse", drs=True, start=3), LABELS, C)
    assert isinstance(drs, DeferredSampler) and drs.start_epoch == 3 and drs.after.kind == "reverse"


@pytest.mark.parametrize("kind,weighted,drs,key", [
    ("weighted", "balance", False, "TRAIN.SAMPLER.TYPE"),
    ("bbn sampler", "balance", False, "TRAIN.SAMPLER.TYPE"),
    ("weighted sampler", "sqrt", False, "TRAIN.SAMPLER.WEIGHTED_SAMPLER.TYPE"),
    ("default", "balance", True, "TRAIN.TWO_STAGE.DRS"),
])
def test_build_sampler_config_errors_name_the_key(kind, weighted, drs, key):
    with pytest.raises(UserError, match=key):
        build_sampler(sampler_cfg(kind, weighted, drs), LABELS, C)
