"""Every LOSS_TYPE against a value written out by hand on a 3-class example (docs/methods/baselines.md),
its reduction to plain CE where docs/methods/baselines.md says so, and the DRW switch at epoch > START_EPOCH."""
import math

import pytest
import torch

from lib.config import build_config
from lib.losses import LOSSES, build_loss
from lib.utils.errors import UserError

COUNTS = [40, 10, 2]  # n_max 40, n_min 2, N 52
Z = [[2.0, 0.5, -1.0], [0.1, 1.2, 0.3], [-0.5, 0.2, 1.5], [1.0, -0.3, 0.4]]
Y = [0, 1, 2, 2]
FEAT = [[0.5, 1.0], [2.0, 0.0], [0.1, 0.3], [1.0, 1.0]]


def make(loss_type, *opts, counts=COUNTS, epoch=1):
    cfg = build_config("", ["LOSS.LOSS_TYPE", loss_type, *map(str, opts)])
    loss = build_loss(cfg, counts)
    loss.update(epoch)
    return loss


def value(loss, z=Z, y=Y, **kw):
    return loss(torch.tensor(z), torch.tensor(y), **kw).item()


# ---------------------------------------------------------------- plain-math references
def log_softmax(row):
    m = max(row)
    lse = m + math.log(sum(math.exp(v - m) for v in row))
    return [v - lse for v in row]


def ce_terms(z=Z, y=Y):
    return [-log_softmax(row)[t] for row, t in zip(z, y)]


def mean(xs):
    return sum(xs) / len(xs)


def weighted_mean(terms, y, w):
    return sum(w[t] * l for t, l in zip(y, terms)) / sum(w[t] for t in y)


def plain_ce(z=Z, y=Y):
    return mean(ce_terms(z, y))


def cb_weights(counts, beta):
    w = [(1 - beta) / (1 - beta ** n) for n in counts]
    return [x / sum(w) * len(counts) for x in w]


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def focal(z, y, gamma, w=None):
    total = 0.0
    for row, t in zip(z, y):
        for c, v in enumerate(row):
            q, yc = sigmoid(v), 1.0 if c == t else 0.0
            bce = -(yc * math.log(q) + (1 - yc) * math.log(1 - q))
            total += (w[t] if w else 1.0) * bce * ((1 - q) * yc + q * (1 - yc)) ** gamma
    return total / len(z)


# ---------------------------------------------------------------- hand-computed values
def test_cross_entropy_is_the_mean_negative_log_likelihood():
    assert value(make("CrossEntropy")) == pytest.approx(plain_ce(), rel=1e-6)


def test_cost_sensitive_ce_weights_by_n_min_over_n_to_gamma_with_weighted_mean():
    w = [(2 / n) ** 0.5 for n in COUNTS]
    got = value(make("CostSensitiveCE", "LOSS.CostSensitiveCE.GAMMA", 0.5))
    assert got == pytest.approx(weighted_mean(ce_terms(), Y, w), rel=1e-6)


def test_class_balance_ce_uses_normalised_effective_number_weights():
    got = value(make("ClassBalanceCE", "LOSS.ClassBalanceCE.BETA", 0.9))
    assert got == pytest.approx(weighted_mean(ce_terms(), Y, cb_weights(COUNTS, 0.9)), rel=1e-6)


def test_class_balance_ce_with_beta_zero_is_plain_ce():
    assert value(make("ClassBalanceCE", "LOSS.ClassBalanceCE.BETA", 0.0)) == pytest.approx(plain_ce(), rel=1e-6)


def test_focal_loss_sums_modulated_sigmoid_bce_over_classes_divided_by_batch():
    got = value(make("FocalLoss", "LOSS.FocalLoss.GAMMA", 2.0))
    assert got == pytest.approx(focal(Z, Y, 2.0), rel=1e-5)


def test_focal_loss_with_gamma_zero_is_summed_sigmoid_bce():
    bce = sum(-math.log(sigmoid(v)) if c == t else -math.log(1 - sigmoid(v))
              for row, t in zip(Z, Y) for c, v in enumerate(row)) / len(Z)
    assert value(make("FocalLoss", "LOSS.FocalLoss.GAMMA", 0.0)) == pytest.approx(bce, rel=1e-6)


def test_focal_loss_is_stable_for_large_logits():
    loss = make("FocalLoss")
    z = torch.tensor([[80.0, -80.0, 0.0]], requires_grad=True)
    out = loss(z, torch.tensor([1]))
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(z.grad).all()


def test_class_balance_focal_weights_each_sample_by_its_class():
    got = value(make("ClassBalanceFocal", "LOSS.ClassBalanceFocal.BETA", 0.9, "LOSS.ClassBalanceFocal.GAMMA", 0.5))
    assert got == pytest.approx(focal(Z, Y, 0.5, cb_weights(COUNTS, 0.9)), rel=1e-5)


def test_ldam_subtracts_the_true_class_margin_then_scales():
    s, max_m = 2.0, 0.5
    raw = [n ** -0.25 for n in COUNTS]
    m = [r * max_m / max(raw) for r in raw]  # largest margin (rarest class) = 0.5
    assert m[2] == pytest.approx(0.5)
    z = [[s * (v - (m[t] if c == t else 0.0)) for c, v in enumerate(row)] for row, t in zip(Z, Y)]
    got = value(make("LDAMLoss", "LOSS.LDAMLoss.SCALE", s, "LOSS.LDAMLoss.MAX_MARGIN", max_m))
    assert got == pytest.approx(plain_ce(z), rel=1e-6)


def test_ldam_with_zero_margin_and_unit_scale_is_plain_ce():
    got = value(make("LDAMLoss", "LOSS.LDAMLoss.SCALE", 1.0, "LOSS.LDAMLoss.MAX_MARGIN", 0.0))
    assert got == pytest.approx(plain_ce(), rel=1e-6)


def test_cdt_divides_logits_by_class_temperatures():
    a = [(40 / n) ** 0.2 for n in COUNTS]
    z = [[v / a[c] for c, v in enumerate(row)] for row in Z]
    assert value(make("CDT", "LOSS.CDT.GAMMA", 0.2)) == pytest.approx(plain_ce(z), rel=1e-6)


def test_cdt_with_gamma_zero_is_plain_ce():
    assert value(make("CDT", "LOSS.CDT.GAMMA", 0.0)) == pytest.approx(plain_ce(), rel=1e-6)


def test_balanced_softmax_adds_log_counts_to_the_logits():
    z = [[v + math.log(COUNTS[c]) for c, v in enumerate(row)] for row in Z]
    assert value(make("BalancedSoftmaxCE")) == pytest.approx(plain_ce(z), rel=1e-6)


def test_balanced_softmax_with_uniform_counts_is_plain_ce():
    assert value(make("BalancedSoftmaxCE", counts=[7, 7, 7])) == pytest.approx(plain_ce(), rel=1e-6)


def test_seql_drops_tail_negatives_from_the_denominator():
    # f = n / N = (0.77, 0.19, 0.038): with lambda 0.05 only class 2 is a tail class; gamma 1 drops it always
    loss = make("SEQL", "LOSS.SEQL.GAMMA", 1.0, "LOSS.SEQL.LAMBDA", 0.05)
    expected = []
    for row, t in zip(Z, Y):
        kept = [v for c, v in enumerate(row) if c != 2 or c == t]
        expected.append(-(row[t] - math.log(sum(math.exp(v) for v in kept))))
    assert value(loss) == pytest.approx(mean(expected), rel=1e-6)
    z = torch.tensor(Z, requires_grad=True)
    loss(z, torch.tensor(Y)).backward()
    assert torch.isfinite(z.grad).all() and z.grad[0, 2] == 0  # a dropped logit gets no gradient


def test_seql_with_gamma_zero_is_plain_ce():
    assert value(make("SEQL", "LOSS.SEQL.GAMMA", 0.0, "LOSS.SEQL.LAMBDA", 0.5)) == pytest.approx(plain_ce(), rel=1e-6)


def test_label_smoothing_mixes_the_one_hot_target_with_uniform():
    eps = 0.1
    expected = mean([-sum(((1 - eps) * (c == t) + eps / 3) * lp for c, lp in enumerate(log_softmax(row)))
                     for row, t in zip(Z, Y)])
    got = value(make("CrossEntropyLabelSmooth", "LOSS.CrossEntropyLabelSmooth.EPSILON", eps))
    assert got == pytest.approx(expected, rel=1e-6)


def test_label_smoothing_with_epsilon_zero_is_plain_ce():
    got = value(make("CrossEntropyLabelSmooth", "LOSS.CrossEntropyLabelSmooth.EPSILON", 0.0))
    assert got == pytest.approx(plain_ce(), rel=1e-6)


@pytest.mark.parametrize("shape", ["concave", "linear", "convex"])
def test_label_aware_smoothing_epsilon_runs_from_tail_to_head(shape):
    counts = [9, 5, 1]  # u = (1, 0.5, 0)
    head, tail = 0.4, 0.1
    mid = {"concave": tail + (head - tail) * math.sin(math.pi / 4),
           "linear": tail + (head - tail) * 0.5,
           "convex": tail + (head - tail) * (1 - math.cos(math.pi / 4))}[shape]
    eps = [head, mid, tail]
    loss = make("CrossEntropyLabelAwareSmooth", "LOSS.CrossEntropyLabelAwareSmooth.SMOOTH_HEAD", head,
                "LOSS.CrossEntropyLabelAwareSmooth.SMOOTH_TAIL", tail, "LOSS.CrossEntropyLabelAwareSmooth.SHAPE",
                shape, counts=counts)
    assert loss.epsilons.tolist() == pytest.approx(eps, abs=1e-6)
    expected = mean([(1 - eps[t]) * -log_softmax(row)[t] + eps[t] * mean([-lp for lp in log_softmax(row)])
                     for row, t in zip(Z, Y)])
    assert value(loss) == pytest.approx(expected, rel=1e-6)


def test_label_aware_smoothing_with_equal_counts_uses_the_tail_epsilon():
    loss = make("CrossEntropyLabelAwareSmooth", counts=[5, 5, 5])
    assert loss.epsilons.tolist() == pytest.approx([0.1, 0.1, 0.1])


def test_label_aware_smoothing_rejects_an_unknown_shape():
    with pytest.raises(UserError, match="SHAPE 'wavy'"):
        make("CrossEntropyLabelAwareSmooth", "LOSS.CrossEntropyLabelAwareSmooth.SHAPE", "wavy")


def test_influence_balanced_loss_divides_weighted_ce_by_gradient_times_feature_norms():
    alpha = 10.0
    inv = [1 / n for n in COUNTS]
    w = [x / sum(inv) * 3 for x in inv]
    expected = []
    for row, t, f in zip(Z, Y, FEAT):
        p = [math.exp(v) for v in log_softmax(row)]
        grad = sum(abs(p[c] - (c == t)) for c in range(3))
        expected.append(w[t] * -math.log(p[t]) * alpha / (grad * sum(abs(x) for x in f) + 1e-3))
    loss = make("InfluenceBalancedLoss", "LOSS.InfluenceBalancedLoss.ALPHA", alpha,
                "TRAIN.TWO_STAGE.DRW", True, "TRAIN.TWO_STAGE.START_EPOCH", 3, epoch=4)
    assert loss.needs_features
    assert value(loss, features=torch.tensor(FEAT)) == pytest.approx(mean(expected), rel=1e-5)


def test_influence_balanced_loss_without_drw_is_ib_from_the_first_epoch_as_released():
    loss = make("InfluenceBalancedLoss")
    assert loss.active and loss.weight is not None


def test_class_balance_softmax_bce_averages_weighted_bce_over_all_elements():
    beta = 0.9
    w = cb_weights(COUNTS, beta)
    total = 0.0
    for row, t in zip(Z, Y):
        p = [math.exp(v) for v in log_softmax(row)]
        total += sum(w[t] * -(math.log(p[c]) if c == t else math.log(1 - p[c])) for c in range(3))
    got = value(make("ClassBalanceSoftmaxBCE", "LOSS.ClassBalanceSoftmaxBCE.BETA", beta))
    assert got == pytest.approx(total / (len(Z) * 3), rel=1e-5)


# ---------------------------------------------------------------- DRW: off at START_EPOCH, on at START_EPOCH + 1
def _before_after():
    w_inv = [2 / n for n in COUNTS]
    w_cb = cb_weights(COUNTS, 0.999)
    raw = [n ** -0.25 for n in COUNTS]
    m = [r * 0.5 / max(raw) for r in raw]
    ldam_z = [[30 * (v - (m[t] if c == t else 0.0)) for c, v in enumerate(row)] for row, t in zip(Z, Y)]
    ldam_terms = ce_terms(ldam_z)
    a = [(40 / n) ** 0.2 for n in COUNTS]
    return {
        "CrossEntropy": (plain_ce(), weighted_mean(ce_terms(), Y, w_inv)),
        "CostSensitiveCE": (plain_ce(), weighted_mean(ce_terms(), Y, w_inv)),  # GAMMA 1
        "ClassBalanceCE": (plain_ce(), weighted_mean(ce_terms(), Y, w_cb)),
        "FocalLoss": (focal(Z, Y, 2.0), focal(Z, Y, 2.0, w_inv)),
        "ClassBalanceFocal": (focal(Z, Y, 0.5), focal(Z, Y, 0.5, w_cb)),
        "LDAMLoss": (mean(ldam_terms), weighted_mean(ldam_terms, Y, cb_weights(COUNTS, 0.9999))),
        "CDT": (plain_ce(), plain_ce([[v / a[c] for c, v in enumerate(row)] for row in Z])),
        "BalancedSoftmaxCE": (plain_ce(), plain_ce([[v + math.log(COUNTS[c]) for c, v in enumerate(row)] for row in Z])),
    }


@pytest.mark.parametrize("loss_type", sorted(_before_after()))
def test_drw_switches_on_only_after_start_epoch(loss_type):
    before, after = _before_after()[loss_type]
    loss = make(loss_type, "TRAIN.TWO_STAGE.DRW", True, "TRAIN.TWO_STAGE.START_EPOCH", 3,
                "LOSS.LDAMLoss.DRW_AT_START_EPOCH", False)
    for epoch, expected in ((1, before), (3, before), (4, after), (5, after)):
        loss.update(epoch)
        assert value(loss) == pytest.approx(expected, rel=1e-5), epoch


def test_ldam_switches_at_start_epoch_as_bots_release_by_default():
    before, after = _before_after()["LDAMLoss"]
    loss = make("LDAMLoss", "TRAIN.TWO_STAGE.DRW", True, "TRAIN.TWO_STAGE.START_EPOCH", 3)
    for epoch, expected in ((2, before), (3, after), (4, after)):
        loss.update(epoch)
        assert value(loss) == pytest.approx(expected, rel=1e-5), epoch


def test_crossentropy_drw_weights_false_is_bots_head_where_drw_changes_nothing():
    loss = make("CrossEntropy", "TRAIN.TWO_STAGE.DRW", True, "TRAIN.TWO_STAGE.START_EPOCH", 3,
                "LOSS.CrossEntropy.DRW_WEIGHTS", False)
    loss.update(4)
    assert loss.weight is None and value(loss) == pytest.approx(_before_after()["CrossEntropy"][0], rel=1e-6)


@pytest.mark.parametrize("loss_type", ["CostSensitiveCE", "ClassBalanceCE", "ClassBalanceFocal", "CDT",
                                       "BalancedSoftmaxCE"])
def test_without_drw_the_rebalancing_applies_from_epoch_one(loss_type):
    _, after = _before_after()[loss_type]
    assert value(make(loss_type, epoch=1)) == pytest.approx(after, rel=1e-5)


def test_influence_balanced_loss_is_plain_ce_until_the_switch():
    loss = make("InfluenceBalancedLoss", "TRAIN.TWO_STAGE.DRW", True, "TRAIN.TWO_STAGE.START_EPOCH", 3, epoch=3)
    assert value(loss, features=torch.tensor(FEAT)) == pytest.approx(plain_ce(), rel=1e-6)
    loss.update(4)
    assert value(loss, features=torch.tensor(FEAT)) != pytest.approx(plain_ce(), rel=1e-3)


def test_ldam_and_focal_keep_uniform_weights_without_drw():
    assert make("LDAMLoss", epoch=5).weight is None
    assert make("FocalLoss", epoch=5).weight is None


# ---------------------------------------------------------------- per-sample weights (mixup / Remix)
@pytest.mark.parametrize("loss_type", LOSSES.names())
def test_sample_weights_split_a_loss_linearly_between_two_label_sets(loss_type):
    opts = ["TRAIN.TWO_STAGE.DRW", True, "TRAIN.TWO_STAGE.START_EPOCH", 0]  # every re-weighting on
    loss = make(loss_type, *opts)
    z, y, y_b = torch.tensor(Z), torch.tensor(Y), torch.tensor([2, 0, 1, 1])
    f = torch.tensor(FEAT)

    def run(target, **kw):
        torch.manual_seed(0)  # SEQL draws its Bernoulli masks from the global RNG
        return loss(z, target, features=f, **kw)

    lam = 0.3
    ones = torch.ones(4)
    assert run(y, sample_weight=ones).item() == pytest.approx(run(y).item(), rel=1e-6)
    mixed = run(y, sample_weight=lam * ones) + run(y_b, sample_weight=(1 - lam) * ones)
    assert mixed.item() == pytest.approx(lam * run(y).item() + (1 - lam) * run(y_b).item(), rel=1e-5)


def test_ldam_drw_end_to_end_on_tiny_fashion_mnist(tiny_cfg):
    from lib.engine.trainer import train

    cfg = build_config(str(tiny_cfg), ["NAME", "ldam_drw", "LOSS.LOSS_TYPE", "LDAMLoss", "CLASSIFIER.TYPE", "FCNorm",
                                       "TRAIN.TWO_STAGE.DRW", "True", "TRAIN.TWO_STAGE.START_EPOCH", "1"])
    results = train(cfg)
    assert 0.0 <= results["top1"] <= 100.0


def test_balanced_softmax_names_a_class_without_training_images():
    with pytest.raises(UserError, match="class 1 has no training images"):
        make("BalancedSoftmaxCE", counts=[5, 0, 3])
